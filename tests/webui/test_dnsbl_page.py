"""The admin DNSBL page: results from the state file (HTTP workers) and from the monitor
(main process), "Check now" in both, the state without zones, and a real daemon whose
HTTP worker passes "Check now" on to the main process's monitor."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock, deferLater
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from moxtw import dnsbl
from moxtw.dnsbl import DNSBLMonitor, DNSBLSource
from moxtw.localserve import ADMIN_PASSWORD, ensure_config
from moxtw.workers import HTTPWorkers, _WorkerProtocol
from tests.delivery.peers import DNSServer
from tests.helpers import Daemon, free_port
from tests.webui.fixture import WebUIFixture

reactor: Any = _reactor

ZONES = '[dnsbl]\nzones = ["bl.test", "other.test"]\nips = ["127.0.0.2", "127.0.0.3"]\n'


def with_zones(text: str) -> str:
    return re.sub(r"^\[dnsbl\]\nzones = \[\]( .*)?\nips = \[\]", ZONES.rstrip("\n"), text, count=1, flags=re.M)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(page: Any) -> list[list[str]]:
    """The status table's rows as cell texts (tags removed)."""
    body = page.text.split("<caption>DNSBL status</caption>", 1)[1].split("</tbody>", 1)[0].split("<tbody>", 1)[1]
    out = []
    for tr in body.split("<tr>")[1:]:
        cells = re.findall(r"<td>(.*?)</td>", tr, flags=re.S)
        out.append([re.sub(r"<[^>]+>", "", c) for c in cells])
    return out


class NotConfiguredTests(TestCase):
    async def test_no_zones(self) -> None:
        f = await WebUIFixture(self).start()
        b = f.browser()
        await b.login_admin()
        page = await b.get("/admin/dnsbl/")
        self.assertEqual(page.status, 200)
        self.assertIn("No DNSBL zones configured.", page.text)
        self.assertIn('href="/admin/dnsbl/" aria-current="page"', page.text)
        self.assertNotIn("Check now", page.text)
        self.assertNotIn("<caption>DNSBL status</caption>", page.text)
        reply = await b.post("/admin/dnsbl/", {"csrf_token": page.csrf()})
        self.assertEqual(reply.status, 400)
        self.assertIn("Cannot check now", reply.text)
        page = await b.get("/admin/dashboard/")
        self.assertIn("No DNSBL zones configured.", page.text.split(">DNSBL</h2>", 1)[1])

    async def test_zones_in_localserve(self) -> None:
        f = await WebUIFixture(self, edit=with_zones).start()
        self.assertEqual(f.config.dnsbl_zones, ("bl.test", "other.test"))
        b = f.browser()
        await b.login_admin()
        page = await b.get("/admin/dnsbl/")
        self.assertIn("Zones are configured (bl.test, other.test), but they are not checked in localserve.",
                      page.text)  # fmt: skip
        self.assertNotIn("Check now", page.text)


class StatusPageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self, localserve=False, edit=with_zones).start()
        self.b = self.f.browser()
        reply = await self.b.login_admin()
        self.assertEqual(reply.status, 303)

    async def test_from_the_state_file(self) -> None:
        # An HTTP worker's view (what build_parts gives every process).
        source = self.f.ui.dnsbl
        assert source is not None
        self.assertEqual((source.zones, source.monitoring, source.request_check), (("bl.test", "other.test"), True, None))
        page = await self.b.get("/admin/dnsbl/")
        self.assertEqual(page.status, 200)
        self.assertIn("No results yet", page.text)
        self.assertIn("<dt>Last check</dt><dd>not yet</dd>", page.text)
        self.assertIn("A check cannot be requested from this process.", page.text)
        self.assertNotIn(">Check now</button>", page.text)

        checked = self.f.ui.now() - 600
        results = {
            "127.0.0.2": {"bl.test": "fail: listed <b>for</b> spam, see https://bl.test/q?ip=127.0.0.2",
                          "other.test": "pass"},
            "127.0.0.3": {"bl.test": "pass", "other.test": "temperror: dnsbl: dns error: timeout"},
        }  # fmt: skip
        dnsbl.write_state(dnsbl.state_path(self.f.config), ["bl.test", "other.test"], results, checked)
        page = await self.b.get("/admin/dnsbl/")
        self.assertEqual(
            rows(page),
            [
                ["127.0.0.2", "bl.test", "listed", "listed &lt;b&gt;for&lt;/b&gt; spam, see https://bl.test/q?ip=127.0.0.2",
                 f"{iso(checked).replace('T', ' ')} (10m ago)"],
                ["127.0.0.2", "other.test", "not listed", "-", f"{iso(checked).replace('T', ' ')} (10m ago)"],
                ["127.0.0.3", "bl.test", "not listed", "-", f"{iso(checked).replace('T', ' ')} (10m ago)"],
                ["127.0.0.3", "other.test", "lookup failed", "dnsbl: dns error: timeout",
                 f"{iso(checked).replace('T', ' ')} (10m ago)"],
            ],
        )  # fmt: skip
        self.assertNotIn("<b>for</b>", page.text)
        self.assertIn(f'<dt>Last check</dt><dd><time datetime="{iso(checked)}">', page.text)
        self.assertIn("Listed: 127.0.0.2 in bl.test", page.text)
        dashboard = await self.b.get("/admin/dashboard/")
        self.assertIn("Listed: 127.0.0.2 in bl.test", dashboard.text.split(">DNSBL</h2>", 1)[1])

        # Delisted: not listed anywhere, one lookup failed.
        results["127.0.0.2"]["bl.test"] = "pass"
        dnsbl.write_state(dnsbl.state_path(self.f.config), ["bl.test", "other.test"], results, checked + 60)
        page = await self.b.get("/admin/dnsbl/")
        self.assertEqual([r[2] for r in rows(page)], ["not listed", "not listed", "not listed", "lookup failed"])
        self.assertIn("Not listed in any zone (4 IP/zone pair(s), 1 lookup(s) failed", page.text)
        self.assertNotIn("Listed:", page.text)
        dashboard = await self.b.get("/admin/dashboard/")
        self.assertIn("Not listed in any zone", dashboard.text.split(">DNSBL</h2>", 1)[1])

        # In a worker, "Check now" asks the main process (moxtw.worker sets this).
        asked: list[None] = []
        source.request_check = lambda: asked.append(None)
        page = await self.b.get("/admin/dnsbl/")
        self.assertIn(">Check now</button>", page.text)
        reply = await self.b.post("/admin/dnsbl/", {})
        self.assertEqual(reply.status, 403)
        reply = await self.b.post("/admin/dnsbl/", {"csrf_token": "wrong"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(asked, [])
        reply = await self.b.post("/admin/dnsbl/", {"csrf_token": page.csrf(1)})
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/dnsbl/?done=requested"))
        self.assertEqual(asked, [None])
        page = await self.b.get("/admin/dnsbl/?done=requested")
        self.assertIn("A check was requested", page.text)

    async def test_from_the_monitor(self) -> None:
        # The main process's view: the monitor itself, whose check "Check now" starts.
        clock = Clock()
        clock.advance(self.f.ui.now())
        status = {("127.0.0.2", "bl.test"): "fail: listed for testing"}
        lookups: list[tuple[str, str]] = []

        def lookup(ip: str, zone: str) -> defer.Deferred[str]:
            lookups.append((ip, zone))
            return defer.succeed(status.get((ip, zone), "pass"))

        monitor = DNSBLMonitor(zones=self.f.config.dnsbl_zones, ips=lambda: ["127.0.0.2", "127.0.0.3"],
                               lookup=lookup, clock=clock, pause=0.0)  # fmt: skip
        monitor.startService()
        self.addCleanup(monitor.stopService)
        self.f.ui.dnsbl = DNSBLSource.for_monitor(monitor)
        self.assertEqual(len(lookups), 4)
        page = await self.b.get("/admin/dnsbl/")
        self.assertEqual([r[2] for r in rows(page)], ["listed", "not listed", "not listed", "not listed"])
        self.assertIn(f'<dt>Last check</dt><dd><time datetime="{iso(clock.seconds())}">', page.text)

        del status[("127.0.0.2", "bl.test")]
        clock.advance(120)
        reply = await self.b.post("/admin/dnsbl/", {"csrf_token": page.csrf(1)})
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/dnsbl/?done=requested"))
        self.assertEqual(len(lookups), 8)
        self.assertEqual(monitor.last_check, clock.seconds())
        page = await self.b.get("/admin/dnsbl/?done=requested")
        self.assertEqual([r[2] for r in rows(page)], ["not listed"] * 4)
        self.assertIn(f'<dt>Last check</dt><dd><time datetime="{iso(clock.seconds())}">', page.text)

        # A stopped monitor: said so, nothing checked.
        await monitor.stopService()
        reply = await self.b.post("/admin/dnsbl/", {"csrf_token": page.csrf(1)})
        self.assertEqual(reply.status, 503)
        self.assertEqual(len(lookups), 8)


class WorkerLinkTests(SynchronousTestCase):
    def test_d_asks_for_a_check(self) -> None:
        workers = HTTPWorkers("moxtw.toml", [], 1, Clock())
        calls: list[str] = []
        workers.on_queued = lambda: calls.append("queued")
        workers.on_dnsbl_check = lambda: calls.append("dnsbl")
        workers.on_reload_request = lambda n: calls.append(f"reload {n}")
        proto = _WorkerProtocol(workers, 3)
        proto.outReceived(b"d")
        self.assertEqual(calls, ["dnsbl"])
        proto.outReceived(b"qcd")
        self.assertEqual(calls, ["dnsbl", "queued", "reload 3", "dnsbl"])


class DaemonTests(TestCase):
    timeout = 120

    async def test_check_now_through_the_http_worker(self) -> None:
        """A daemon with an HTTP worker: whichever process answers "Check now", the main
        process's monitor checks (its lookups reach the DNS server) and both processes
        show the new results (the worker from the state file)."""
        server = DNSServer(self)
        listed = "2.0.0.127.bl.test"
        server.zone.a(listed, "127.0.0.2")
        server.zone.add(listed, dns.TXT, dns.Record_TXT(b"listed for testing"))
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        text = path.read_text()
        ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        text = text.replace("localserve = true", "localserve = false")
        text = re.sub(r"^nameservers = \[\]", f'nameservers = ["127.0.0.1:{server.port}"]', text, flags=re.M)
        text = re.sub(r"^zones = \[\]", 'zones = ["bl.test"]', text, flags=re.M)
        text = re.sub(r"^ips = \[\]", 'ips = ["127.0.0.2", "127.0.0.3"]', text, flags=re.M)
        path.write_text(text)
        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_output("worker 0: ")
        base = f"http://127.0.0.1:{ports['http']}"
        # A new connection per request: the kernel spreads them over both processes.
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        cookies: dict[str, str] = {}

        async def request(method: str, url: str, fields: dict[str, str] | None = None) -> tuple[int, str]:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
            kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
            if fields is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                headers["Origin"] = base
                kwargs["data"] = urlencode(fields).encode()
            response = await client.request(method, base + url, **kwargs)
            body = (await response.content()).decode()
            for raw in response.headers.getRawHeaders("set-cookie") or []:
                name, _, rest = raw.partition("=")
                cookies[name] = rest.split(";", 1)[0]
            return response.code, body

        _, form = await request("GET", "/admin/login")
        token = re.findall(r'name="csrf_token" value="([^"]*)"', form)[0]
        status, _ = await request("POST", "/admin/login", {"csrf_token": token, "password": ADMIN_PASSWORD})
        self.assertEqual(status, 303)

        def last_check(page: str) -> str:
            found = re.findall(r"<dt>Last check</dt><dd><time datetime=\"([^\"]+)\"", page)
            return found[0] if found else ""

        async def checked_after(count: int, previous: str) -> str:
            """Wait for the lookups of a check (``count`` DNS queries in all), then for
            pages of both processes showing a check other than ``previous``; a page."""
            for _ in range(400):
                if len(server.zone.queries) >= count:
                    break
                await deferLater(reactor, 0.05, lambda: None)
            self.assertGreaterEqual(len(server.zone.queries), count, daemon.output)
            for _ in range(400):
                # Several requests: both processes must show it (and offer "Check now").
                pages = [(await request("GET", "/admin/dnsbl/"))[1] for _ in range(4)]
                if all(last_check(p) not in ("", previous) and ">Check now</button>" in p for p in pages):
                    return pages[-1]
                await deferLater(reactor, 0.05, lambda: None)
            raise AssertionError(f"the page does not show a new check:\n{pages[-1]}\n{daemon.output}")

        page = await checked_after(2, "")  # the check at startup
        csrf = re.findall(r'name="csrf_token" value="([^"]*)"', page)[1]
        for _ in range(6):
            before, previous = len(server.zone.queries), last_check(page)
            status, body = await request("POST", "/admin/dnsbl/", {"csrf_token": csrf})
            self.assertEqual(status, 303, body)
            # The A lookup of each IP: the check ran, whichever process got the click.
            page = await checked_after(before + 2, previous)
        self.assertIn("<strong>listed</strong>", page)
        self.assertIn("listed for testing", page)
        self.assertIn(await daemon.stop(), (0, -signal.SIGTERM), daemon.output)
