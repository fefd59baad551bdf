"""Real peers on loopback for delivery tests: a twisted.names DNS server with an in-memory
zone, and a scriptable ESMTP server (replies per command, STARTTLS, hangs and drops)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.ssl import PrivateCertificate, trustRootFromCertificates
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase
from twisted.protocols.basic import LineReceiver
from twisted.python.threadpool import ThreadPool

from moxtw.config import DNSConfig
from moxtw.delivery import Resolver
from moxtw.localserve import generate_certificate
from tests.helpers import free_port

reactor: Any = _reactor

# --- DNS ------------------------------------------------------------------------------


class ServFail(Exception):
    pass


class _Factory(server.DNSServerFactory):
    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        if failure.check(ServFail):  # answer SERVFAIL without logging an error
            self.sendReply(protocol, self._responseFromMessage(message=message, rCode=dns.ESERVER), address)
            return
        super().gotResolverError(failure, protocol, message, address)


class Zone(ResolverBase):
    """An authority answering from ``records``: {(name, type): [payload, ...]}.

    Names not present under any type are NXDOMAIN; names in ``servfail`` fail with
    SERVFAIL; a known name without records of the asked type is NOERROR/NODATA.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], list[Any]] = {}
        self.servfail: set[str] = set()
        self.queries: list[tuple[str, int]] = []

    def add(self, name: str, type_: int, *payloads: Any) -> None:
        self.records.setdefault((name.lower(), type_), []).extend(payloads)

    def mx(self, name: str, *pairs: tuple[int, str]) -> None:
        self.add(name, dns.MX, *(dns.Record_MX(pref, target.encode()) for pref, target in pairs))

    def a(self, name: str, *ips: str) -> None:
        self.add(name, dns.A, *(dns.Record_A(ip) for ip in ips))

    def aaaa(self, name: str, *ips: str) -> None:
        self.add(name, dns.AAAA, *(dns.Record_AAAA(ip) for ip in ips))

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        name = query.name.name.decode().lower().rstrip(".")
        self.queries.append((name, query.type))
        if name in self.servfail:
            return defer.fail(ServFail(name))
        if not any(n == name for n, _ in self.records):
            return defer.fail(error.AuthoritativeDomainError(query))
        answers = [
            dns.RRHeader(name=name, type=query.type, cls=dns.IN, ttl=60, payload=p, auth=True)
            for p in self.records.get((name, query.type), [])
        ]
        return defer.succeed((answers, [], []))


class DNSServer:
    """``zone`` served over UDP and TCP on 127.0.0.1:``port`` until the test ends."""

    def __init__(self, testcase: Any) -> None:
        self.zone = Zone()
        factory = _Factory(authorities=[self.zone])
        factory.noisy = False
        for _ in range(20):
            self.port = free_port()
            try:
                udp = reactor.listenUDP(self.port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
            except Exception:
                continue
            break
        testcase.addCleanup(udp.stopListening)
        tcp = reactor.listenTCP(self.port, factory, interface="127.0.0.1")
        testcase.addCleanup(tcp.stopListening)

    def config(self, timeout: float = 2.0) -> DNSConfig:
        return DNSConfig(nameservers=(("127.0.0.1", self.port),), timeout=timeout)


class _Silent(DatagramProtocol):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


def silent_dns_port(testcase: Any) -> int:
    """A UDP port on 127.0.0.1 that never answers (for DNS timeouts)."""
    port = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return int(port.getHost().port)


def make_resolver(testcase: Any, config: DNSConfig) -> Resolver:
    pool = ThreadPool(minthreads=0, maxthreads=2, name="test-dns")
    pool.start()
    testcase.addCleanup(pool.stop)
    return Resolver.from_config(config, pool, reactor)


# --- TLS ------------------------------------------------------------------------------


class Certs:
    """A self-signed certificate for ``hostname``: server options and a client trust root."""

    def __init__(self, testcase: Any, hostname: str) -> None:
        directory = Path(testcase.mktemp())
        directory.mkdir(parents=True)
        cert, key = directory / "cert.pem", directory / "key.pem"
        generate_certificate(cert, key, hostname)
        self.cert_pem = cert.read_bytes()
        private = PrivateCertificate.loadPEM(self.cert_pem + b"\n" + key.read_bytes())
        self.server_options = private.options()
        self.trust_root = trustRootFromCertificates([private])


# --- SMTP -----------------------------------------------------------------------------

#: A reply: "250 2.0.0 ok" (multi-line with "\n"), None for no reply, DROP to close.
DROP = "DROP"
Reply = str | None
Handler = Callable[[str], Reply] | Reply


class Session:
    def __init__(self) -> None:
        self.commands: list[str] = []
        self.tls = False
        self.messages: list[tuple[str, list[str], bytes]] = []


class ScriptedSMTP(LineReceiver):
    transport: Any
    """One connection of :class:`SMTPServer`."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, srv: SMTPServer) -> None:
        self.srv = srv
        self.session = Session()
        self.data: list[bytes] | None = None
        self.mail_from = ""
        self.rcpts: list[str] = []
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.garbage = False
        self.tls_stalled = False
        self.dropped = False

    def connectionMade(self) -> None:
        self.srv.sessions.append(self.session)
        self.srv.protocols.append(self)
        self.send(self.srv.greeting)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def send(self, reply: Reply) -> None:
        if reply is None:
            return
        if reply == DROP:
            self.transport.loseConnection()
            return
        lines = reply.split("\n")
        code = lines[0][:3]
        out = [f"{code}-{line[4:] if line.startswith(code) else line}" for line in lines[:-1]]
        out.append(lines[-1] if lines[-1].startswith(code) else f"{code} {lines[-1]}")
        for line in out:
            self.sendLine(line.encode())

    def handler(self, verb: str, default: Reply, arg: str) -> None:
        h = self.srv.replies.get(verb, default)
        self.send(h(arg) if callable(h) else h)

    def dataReceived(self, data: bytes) -> None:
        if self.tls_stalled:  # swallow the client's TLS hello, never answer
            return
        if self.garbage:
            self.transport.write(b"this is not tls\r\n" * 20)
            self.transport.loseConnection()
            return
        if not self.dropped:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.dropped:
            return
        if self.data is not None:
            if line == b".":
                data, self.data = b"".join(self.data), None
                self.session.messages.append((self.mail_from, list(self.rcpts), data))
                self.handler("END", "250 2.0.0 queued", data.decode("utf-8", "replace"))
                return
            self.data.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
            if self.srv.drop_after_data_lines is not None and len(self.data) >= self.srv.drop_after_data_lines:
                self.dropped = True
                self.transport.abortConnection()
            return
        text = line.decode("utf-8", "replace")
        self.session.commands.append(text)
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            ext = self.srv.tls_extensions if self.session.tls else self.srv.extensions
            self.handler("EHLO", "\n".join(["250 mx.test", *ext]), arg)
        elif verb == "HELO":
            self.handler("HELO", "250 mx.test", arg)
        elif verb == "STARTTLS":
            h = self.srv.replies.get("STARTTLS", "220 2.0.0 go ahead")
            reply = h(arg) if callable(h) else h
            self.send(reply)
            if reply is not None and reply.startswith("220"):
                if self.srv.tls_garbage:  # answer the client's TLS hello with junk
                    self.garbage = True
                    return
                if self.srv.tls_stall:  # accept STARTTLS, then never take part in the handshake
                    self.tls_stalled = True
                    return
                self.transport.startTLS(self.srv.certs.server_options)  # type: ignore[union-attr]
                self.session.tls = True
        elif verb == "MAIL":
            self.mail_from = arg
            self.rcpts = []
            self.handler("MAIL", "250 2.1.0 ok", arg)
        elif verb == "RCPT":
            h = self.srv.replies.get("RCPT", "250 2.1.5 ok")
            reply = h(arg) if callable(h) else h
            if reply is not None and reply.startswith("2"):
                self.rcpts.append(arg)
            self.send(reply)
        elif verb == "DATA":
            h = self.srv.replies.get("DATA", "354 go")
            reply = h(arg) if callable(h) else h
            if reply is not None and reply.startswith("354"):
                self.data = []
            self.send(reply)
        elif verb == "RSET":
            self.send("250 2.0.0 ok")
        elif verb == "QUIT":
            self.send("221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.send("500 5.5.2 unknown command")


class SMTPServer(Factory):
    """A scripted ESMTP server on ``interface``:``port`` (stopped, with every connection
    closed, when the test ends).  ``replies`` maps a command verb ("EHLO", "STARTTLS",
    "MAIL", "RCPT", "DATA", and "END" for the final dot) to a reply or a function of the
    command's argument returning one."""

    def __init__(
        self,
        testcase: Any,
        *,
        port: int = 0,
        interface: str = "127.0.0.1",
        extensions: tuple[str, ...] = ("PIPELINING", "SIZE 10000000", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"),
        tls_extensions: tuple[str, ...] | None = None,
        certs: Certs | None = None,
        replies: dict[str, Handler] | None = None,
        greeting: Reply = "220 mx.test ESMTP scripted",
    ) -> None:
        self.extensions = list(extensions)
        if certs is not None:
            self.extensions.append("STARTTLS")
        self.tls_extensions = list(tls_extensions if tls_extensions is not None else (*extensions, "REQUIRETLS"))
        self.certs = certs
        self.replies: dict[str, Handler] = replies or {}
        self.greeting = greeting
        self.tls_garbage = False
        self.tls_stall = False
        self.drop_after_data_lines: int | None = None
        self.sessions: list[Session] = []
        self.protocols: list[ScriptedSMTP] = []
        self.listening = reactor.listenTCP(port, self, interface=interface)
        self.port = int(self.listening.getHost().port)
        testcase.addCleanup(self.stop)

    def buildProtocol(self, addr: Any) -> ScriptedSMTP:
        return ScriptedSMTP(self)

    @property
    def messages(self) -> list[tuple[str, list[str], bytes]]:
        return [m for s in self.sessions for m in s.messages]

    async def stop(self) -> None:
        if self.listening.connected:
            await self.listening.stopListening()
        for p in self.protocols:
            if not p.closed.called:
                p.transport.abortConnection()
        await defer.gatherResults([p.closed for p in self.protocols])
