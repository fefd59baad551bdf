"""Certificate reload on SIGHUP, in a real daemon, over real TLS.

A localserve daemon (listeners on free loopback ports) serves certificate A, signed by a
test CA; the client is Python's ``smtplib``/``ssl`` verifying against that CA and the
host name.  The test writes certificate B (same name, another serial and expiry) over
the configured files and sends SIGHUP: after the daemon logs the reload, new
connections on the submissions (implicit TLS) and submission (STARTTLS) ports get B,
while a connection made before keeps A and still works.  Then garbage and SIGHUP: the
daemon logs an error, stays up and keeps serving B.  The same under ``twist``; and a
bad certificate at startup stops the daemon with a clear message.
"""

from __future__ import annotations

import datetime
import os
import signal
import smtplib
import ssl
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import ROOT, Daemon, localserve_config
from tests.test_tls import cert_pem, key_pem, make_ca, make_cert, new_key, write_pair

reactor: Any = _reactor

TWIST = str(Path(sys.executable).parent / "twist")


class Twist(Daemon):
    """``twist moxtw ARGS`` (the foreground runner systemd units use) instead of twistd."""

    def start(self) -> Daemon:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [TWIST, "--log-format=text", "moxtw", *self.args]
        self.process = reactor.spawnProcess(self.proto, TWIST, argv, env=env, path=str(ROOT))
        self.testcase.addCleanup(self.kill)
        return self


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def ignores(pid: int, signum: int) -> bool:
    """Whether process ``pid`` ignores ``signum`` (the SigIgn mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    raise AssertionError(f"no SigIgn for {pid}")


def peer_serial(der: bytes | None) -> int:
    assert der is not None, "no peer certificate"
    return int(x509.load_der_x509_certificate(der).serial_number)


class TLSReloadTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.ports = localserve_config(self.directory)
        self.cert_file = self.directory / "tls" / "localhost.crt"
        self.key_file = self.directory / "tls" / "localhost.key"
        self.ca = make_ca()
        ca_file = self.directory / "ca.pem"
        ca_file.write_bytes(cert_pem(self.ca[0]))
        # The client verifies the chain up to the test CA and the name 127.0.0.1 (in the SAN).
        self.client_context = ssl.create_default_context(cafile=str(ca_file))
        self.open: list[smtplib.SMTP] = []
        self.addCleanup(self.close_all)
        self.install(0xA, days=90)

    def install(self, serial: int, days: int) -> None:
        """Write a certificate (with the CA, as a full chain) and its new key."""
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        leaf = make_cert(key, serial=serial, not_after=now + datetime.timedelta(days=days),
                         not_before=now - datetime.timedelta(days=1), ca=self.ca)
        write_pair(self.cert_file, self.key_file, cert_pem(leaf, self.ca[0]), key_pem(key))

    def close_all(self) -> Any:
        def close() -> None:
            for client in self.open:
                try:
                    client.close()
                except OSError:
                    pass

        return deferToThread(close)

    async def implicit_tls(self) -> tuple[int, smtplib.SMTP]:
        """A submissions (port 465 style) connection: (certificate serial, open client)."""

        def connect() -> tuple[int, smtplib.SMTP]:
            client = smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], context=self.client_context, timeout=30)
            self.open.append(client)
            code, _ = client.ehlo("tester")
            assert code == 250, code
            assert isinstance(client.sock, ssl.SSLSocket)
            return peer_serial(client.sock.getpeercert(binary_form=True)), client

        return await deferToThread(connect)

    async def starttls(self) -> int:
        """A submission connection upgraded with STARTTLS: the certificate serial."""

        def connect() -> int:
            client = smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30)
            self.open.append(client)
            client.ehlo("tester")
            code, _ = client.starttls(context=self.client_context)
            assert code == 220, code
            assert isinstance(client.sock, ssl.SSLSocket)
            serial = peer_serial(client.sock.getpeercert(binary_form=True))
            assert client.ehlo("tester")[0] == 250
            client.quit()
            return serial

        return await deferToThread(connect)

    async def noop(self, client: smtplib.SMTP) -> int:
        code: int = (await deferToThread(client.noop))[0]
        return code

    async def start(self, runner: type[Daemon] = Daemon) -> Daemon:
        daemon = runner(self, "localserve", "--dir", str(self.directory)).start()
        for name in ("submission", "submissions", "http"):
            await daemon.wait_for_port(self.ports[name])
        await daemon.wait_for_output(f"TLS certificate loaded from {self.cert_file}")
        return daemon

    async def test_sighup_reloads_and_bad_files_keep_the_certificate(self) -> None:
        daemon = await self.start()
        self.assertIn("serial 0A,", daemon.output)
        serial, before = await self.implicit_tls()
        self.assertEqual(serial, 0xA)
        self.assertEqual(await self.starttls(), 0xA)

        self.install(0xB, days=60)
        daemon.process.signalProcess("HUP")
        await daemon.wait_for_output(f"TLS certificate reloaded from {self.cert_file}: subject CN=localhost, "
                                     "names DNS:localhost, IP:127.0.0.1, serial 0B,")
        self.assertEqual((await self.implicit_tls())[0], 0xB)
        self.assertEqual(await self.starttls(), 0xB)
        # The connection made before the reload still has A and still works.
        assert isinstance(before.sock, ssl.SSLSocket)
        self.assertEqual(peer_serial(before.sock.getpeercert(binary_form=True)), 0xA)
        self.assertEqual(await self.noop(before), 250)

        # The webapi worker process (no TLS) ignores SIGHUP: one sent to every process
        # of the daemon (pkill -HUP) must not stop it.
        await daemon.wait_for_output("serving the webapi on")
        workers = children(daemon.process.pid)
        self.assertEqual(len(workers), 1, workers)
        self.assertTrue(ignores(workers[0], signal.SIGHUP))
        self.assertFalse(ignores(daemon.process.pid, signal.SIGHUP))

        # Garbage (a half-written file): an error, the daemon stays up and keeps B.
        self.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIDazCCAlOgAwIBAgIU")
        daemon.process.signalProcess("HUP")
        await daemon.wait_for_output("TLS certificate not reloaded, still using the previous one (serial 0B, ")
        self.assertIn(f"tls.cert_file: {self.cert_file}: incomplete or malformed PEM block", daemon.output)
        self.assertFalse(daemon.proto.ended.called)
        self.assertEqual((await self.implicit_tls())[0], 0xB)
        self.assertEqual(await self.starttls(), 0xB)
        self.assertEqual(await self.noop(before), 250)

        await self.close_all()
        self.open.clear()
        self.assertEqual(await daemon.stop(), -15)
        self.assertNotIn("Traceback", daemon.output)

    async def test_sighup_under_twist(self) -> None:
        daemon = await self.start(Twist)
        self.assertEqual((await self.implicit_tls())[0], 0xA)
        self.install(0xC, days=30)
        daemon.process.signalProcess("HUP")
        await daemon.wait_for_output(f"TLS certificate reloaded from {self.cert_file}")
        self.assertIn("serial 0C,", daemon.output)
        self.assertEqual((await self.implicit_tls())[0], 0xC)
        self.assertEqual(await self.starttls(), 0xC)
        await self.close_all()
        self.open.clear()
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)

    async def test_bad_certificate_stops_startup(self) -> None:
        self.cert_file.write_bytes(b"not a certificate\n")
        daemon = Daemon(self, "localserve", "--dir", str(self.directory)).start()
        code = await daemon.proto.ended
        self.assertEqual(code, 1, daemon.output)
        self.assertIn(
            f"tls.cert_file: {self.cert_file}: no PEM certificate (-----BEGIN CERTIFICATE-----) found", daemon.output
        )
        self.assertNotIn("Traceback", daemon.output)

