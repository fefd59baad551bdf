"""Fault injection on outgoing delivery: the real queue, store and SMTP client against
misbehaving peers on loopback (a scripted ESMTP server and a twisted.names DNS server).

Every fault is classified as the queue specifies (spec §4.3, §5.3): *retry* (the message
stays queued, its attempt recorded as temporary), *fail* (retired, ``failed`` event) or
*fail + suppress* (also added to the sender account's suppression list: 521/550/551/553/
556, or 5xx with enhanced code 1.1, 1.2, 1.3, 1.6, 2.1 or 7.1).  Then 1,000 faulty
sessions through the delivery client must leave no connection open and no timer
pending.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, reactor, tcp
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.config import QueueConfig
from moxtw.delivery import Timeouts, deliver
from moxtw.queue.smtp_transport import SMTPTransport
from moxtw.store.suppressions import list_suppressions
from tests.delivery.peers import DROP, Certs, DNSServer, SMTPServer, make_resolver, silent_dns_port
from tests.queue.harness import FakeTransport, Harness

#: Short timeouts, so that stalls end quickly (the classification does not depend on them).
FAST = Timeouts(connect=1.0, command=0.4, data=0.4)

RETRY, FAIL, SUPPRESS, DELIVERED = "retry", "fail", "fail+suppress", "delivered"


@attrs.frozen
class Fault:
    name: str
    #: Sets the fault up on the scripted server (and the DNS zone).
    apply: Callable[[SMTPServer, Any], None]
    expected: str


def reply(verb: str, text: str | None) -> Callable[[SMTPServer, Any], None]:
    def apply(srv: SMTPServer, zone: Any) -> None:
        srv.replies[verb] = text

    return apply


def greeting(text: str | None) -> Callable[[SMTPServer, Any], None]:
    def apply(srv: SMTPServer, zone: Any) -> None:
        srv.greeting = text

    return apply


def attr(name: str, value: Any) -> Callable[[SMTPServer, Any], None]:
    def apply(srv: SMTPServer, zone: Any) -> None:
        setattr(srv, name, value)

    return apply


def dns_servfail(srv: SMTPServer, zone: Any) -> None:
    zone.servfail.add("example.test")


def dns_nxdomain(srv: SMTPServer, zone: Any) -> None:
    del zone.records[("example.test", 15)]
    zone.records.pop(("example.test", 1), None)


def both(*applies: Callable[[SMTPServer, Any], None]) -> Callable[[SMTPServer, Any], None]:
    def apply(srv: SMTPServer, zone: Any) -> None:
        for a in applies:
            a(srv, zone)

    return apply


FAULTS = [
    # 4xx/5xx at each command.
    Fault("greeting 421", greeting("421 4.3.2 not now"), RETRY),
    Fault("greeting 554", greeting("554 5.3.2 go away"), FAIL),
    Fault("EHLO and HELO 421", both(reply("EHLO", "421 4.3.2 busy"), reply("HELO", "421 4.3.2 busy")), RETRY),
    Fault("EHLO and HELO 550", both(reply("EHLO", "550 5.7.1 no"), reply("HELO", "550 5.7.1 no")), SUPPRESS),
    Fault("MAIL 451", reply("MAIL", "451 4.3.0 try later"), RETRY),
    Fault("MAIL 553", reply("MAIL", "553 5.1.8 bad sender"), SUPPRESS),
    Fault("MAIL 552", reply("MAIL", "552 5.3.4 too big"), FAIL),
    Fault("RCPT 450", reply("RCPT", "450 4.2.1 mailbox busy"), RETRY),
    Fault("RCPT 550 5.1.1", reply("RCPT", "550 5.1.1 no such user"), SUPPRESS),
    Fault("RCPT 554 5.7.1", reply("RCPT", "554 5.7.1 policy"), SUPPRESS),
    Fault("RCPT 552 5.2.2", reply("RCPT", "552 5.2.2 mailbox full"), FAIL),
    Fault("DATA 451", reply("DATA", "451 4.3.0 not now"), RETRY),
    Fault("DATA 554", reply("DATA", "554 5.0.0 no"), FAIL),
    Fault("end of data 452", reply("END", "452 4.3.1 no space"), RETRY),
    Fault("end of data 550", reply("END", "550 5.7.0 rejected"), SUPPRESS),
    Fault("end of data 554 5.6.0", reply("END", "554 5.6.0 bad content"), FAIL),
    # Dropped connections.
    Fault("drop at greeting", greeting(DROP), RETRY),
    Fault("drop at EHLO", reply("EHLO", DROP), RETRY),
    Fault("drop at RCPT", reply("RCPT", DROP), RETRY),
    Fault("drop at DATA", reply("DATA", DROP), RETRY),
    Fault("drop mid-DATA", attr("drop_after_data_lines", 2), RETRY),
    Fault("drop after the body", reply("END", DROP), RETRY),
    # Stalls.
    Fault("stall at greeting", greeting(None), RETRY),
    Fault("stall at MAIL", reply("MAIL", None), RETRY),
    Fault("stall after DATA", reply("END", None), RETRY),
    # Garbage.
    Fault("garbage greeting", greeting("hello there, I am not SMTP"), RETRY),
    Fault("garbage reply to RCPT", reply("RCPT", "2xx maybe"), RETRY),
    Fault("bad reply code 999", reply("MAIL", "999 what"), RETRY),
    # DNS.
    Fault("DNS SERVFAIL", dns_servfail, RETRY),
    Fault("DNS NXDOMAIN", dns_nxdomain, FAIL),
]

TLS_FAULTS = [
    # Opportunistic STARTTLS: a handshake that fails is retried without TLS (as mox does).
    Fault("TLS handshake answered with garbage", attr("tls_garbage", True), DELIVERED),
    Fault("stall during TLS handshake", attr("tls_stall", True), DELIVERED),
]


class QueueFaultTests(TestCase):
    async def classify(self, fault: Fault, *, certs: Certs | None = None, dns_port: int | None = None) -> str:
        dns = DNSServer(self)
        dns.zone.mx("example.test", (10, "mx.example.test"))
        dns.zone.a("mx.example.test", "127.0.0.1")
        srv = SMTPServer(self, certs=certs)
        fault.apply(srv, dns.zone)
        config = dns.config(timeout=0.5)
        if dns_port is not None:
            config = attrs.evolve(config, nameservers=(("127.0.0.1", dns_port),))
        h = Harness(self, queue=QueueConfig(port=srv.port))
        h.open()
        transport = SMTPTransport(h.config, reactor, make_resolver(self, config), timeouts=FAST)
        (msg_id,) = await h.queue("rcpt@example.test")
        q = h.service(transport)
        # The queue runs on a test clock; the delivery on the real reactor.
        for _ in range(1000):
            history = await h.history(msg_id)
            if history and history[-1].duration is not None:
                break
            await deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail(f"{fault.name}: no attempt finished")
        await q.settle()
        retired = await h.retired(msg_id)
        if retired is None:
            queued = await h.queued(msg_id)
            assert queued is not None
            self.assertEqual(queued.attempts, 1, fault.name)
            self.assertGreater(queued.next_attempt, h.clock.seconds(), fault.name)
            return RETRY
        if retired.success:
            return DELIVERED
        suppressions = await h.run(list_suppressions, "mox")
        kinds = [e.kind for e in await h.events() if e.queue_msg_id == msg_id]
        self.assertEqual(kinds[-1], "failed", fault.name)
        return SUPPRESS if suppressions else FAIL

    async def test_faults_are_classified(self) -> None:
        expected = {f.name: f.expected for f in FAULTS}
        got = {}
        for fault in FAULTS:
            got[fault.name] = await self.classify(fault)
        self.assertEqual({k: v for k, v in got.items() if v != expected[k]}, {}, "faults classified otherwise")

    async def test_tls_faults_fall_back_to_plain_text(self) -> None:
        certs = Certs(self, "mx.example.test")
        got = {}
        for fault in TLS_FAULTS:
            got[fault.name] = await self.classify(fault, certs=certs)
        self.assertEqual(got, {f.name: f.expected for f in TLS_FAULTS})

    async def test_dns_timeout_is_retried(self) -> None:
        fault = Fault("DNS timeout", lambda srv, zone: None, RETRY)
        self.assertEqual(await self.classify(fault, dns_port=silent_dns_port(self)), RETRY)

    async def test_fake_transport_is_not_what_is_measured(self) -> None:
        # The harness's FakeTransport delivers: a sanity check that classify() tells
        # delivered from retry (a misconfigured harness would classify everything alike).
        h = Harness(self)
        h.open()
        (msg_id,) = await h.queue("rcpt@example.test")
        q = h.service(FakeTransport())
        await q.settle()
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertTrue(retired.success)


def connections() -> set[Any]:
    """The TCP connections the reactor watches."""
    return {c for c in [*reactor.getReaders(), *reactor.getWriters()] if isinstance(c, tcp.Connection)}


class LeakTests(TestCase):
    """1,000 faulty sessions through the delivery client, 25 at a time."""

    SESSIONS = 1000

    async def test_no_connections_or_timers_left_after_1000_faulty_sessions(self) -> None:
        dns = DNSServer(self)
        resolver = make_resolver(self, dns.config(timeout=0.5))
        servers = []
        for i, fault in enumerate(FAULTS[:-2]):  # every SMTP fault, each on its own server
            srv = SMTPServer(self)
            fault.apply(srv, dns.zone)
            domain = f"d{i}.example.test"
            dns.zone.mx(domain, (10, f"mx{i}.example.test"))
            dns.zone.a(f"mx{i}.example.test", "127.0.0.1")
            servers.append((domain, srv))
        baseline = connections()
        baseline_calls = {id(c) for c in reactor.getDelayedCalls()}
        cases = itertools.islice(itertools.cycle(servers), self.SESSIONS)
        semaphore = defer.DeferredSemaphore(25)
        outcomes: dict[str, int] = {}

        async def one(domain: str, srv: SMTPServer) -> None:
            result = await deliver(reactor, resolver, domain=domain, mail_from="a@sender.test",
                                   recipients=["x@" + domain], data=b"Subject: x\r\n\r\nbody\r\n",
                                   ehlo_hostname="moxtw.test", port=srv.port, timeouts=FAST)  # fmt: skip
            r = result.recipients[0]
            kind = DELIVERED if r.ok else ("permanent" if r.permanent else "temporary")
            outcomes[kind] = outcomes.get(kind, 0) + 1

        await defer.gatherResults(
            [semaphore.run(lambda d=d, s=s: defer.Deferred.fromCoroutine(one(d, s))) for d, s in cases],
            consumeErrors=True,
        )
        self.assertEqual(sum(outcomes.values()), self.SESSIONS)
        # Let closing connections finish closing.
        for _ in range(200):
            if all(not p.transport.connected for _, s in servers for p in s.protocols):
                break
            await deferLater(reactor, 0.01, lambda: None)
        open_server_side = sum(1 for _, s in servers for p in s.protocols if p.transport.connected)
        self.assertEqual(open_server_side, 0)
        self.assertEqual(connections() - baseline, set())
        left = [c for c in reactor.getDelayedCalls() if id(c) not in baseline_calls and c.active()
                and not getattr(c.func, "__module__", "").startswith("twisted.trial")]  # the test's own timeout
        self.assertEqual(left, [], [repr(c) for c in left])
        print(f"\n{self.SESSIONS} faulty SMTP sessions: {outcomes}")
