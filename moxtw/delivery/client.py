"""Outgoing SMTP delivery: one attempt of one transaction to a recipient domain's MX hosts.

:func:`deliver` resolves the domain (:class:`~moxtw.delivery.mx.Resolver`), tries its hosts
in order of preference and each host's IPs in turn until one connects, and reports one
:class:`RecipientResult` per recipient in an :class:`AttemptResult`.  :func:`deliver_to`
does the same for one fixed host/IP (localserve, no DNS).

The SMTP conversation is :class:`DeliveryClient`, a ``twisted.mail.smtp.ESMTPClient``
subclass: Twisted's reply parsing, EHLO/HELO fallback and STARTTLS states, with our own
transaction (MAIL parameters, pipelined RCPTs, per-recipient results, enhanced status
codes, dot-stuffed body) and timeouts scheduled through the injected reactor's
``callLater`` (``TimeoutMixin``).

Policy, decided here and relied on by the queue:

* **Hosts.** A temporary failure of a whole transaction (connection or DNS trouble, 4xx
  greeting/EHLO/MAIL/DATA, every RCPT 4xx) makes us try the next MX host.  Anything
  final stops the host loop: a recipient delivered, a permanent (5xx) reply, or trouble
  after the message body was sent (a timeout or lost connection waiting for the reply to
  the final ".": the message may have arrived, so we do not send it again elsewhere).
  Within a host, only connection failures move on to the host's next IP.
* **TLS.** Opportunistic by default (``require_tls`` None or False, the latter is
  "TLS-Required: No"): STARTTLS when offered, certificate not verified; a refused STARTTLS
  continues in plain text on the same connection, a failed handshake is retried once on
  a new plain-text connection to the same IP.  ``require_tls=True`` (RFC 8689): STARTTLS
  with a verified certificate (service-identity, host name = MX name) and the server must
  announce REQUIRETLS, to which ``REQUIRETLS`` is passed on MAIL FROM.  A host without
  STARTTLS or REQUIRETLS fails temporarily; if that is why *every* host failed, the
  result is permanent 554 5.7.30 (as mox).  A failed handshake or verification under
  RequireTLS is temporary (code 0): it may be fixed by the receiver.
* **Extensions.** ``SIZE=`` when SIZE is offered (a message over the announced limit
  fails permanently, 552 5.3.4, without sending it); ``BODY=8BITMIME`` when the message
  has 8-bit data and the server offers it (not offered: temporary failure, as mox);
  ``SMTPUTF8`` when needed (not offered: permanent 554 5.6.7); PIPELINING: MAIL FROM and
  all RCPT TO are sent together, DATA after their replies; ENHANCEDSTATUSCODES: the code
  at the start of a reply is split off into ``enhanced``.
* **Per recipient.** A non-2xx reply to MAIL FROM applies to every recipient; each RCPT
  reply applies to its recipient; the DATA and final replies apply to the recipients
  whose RCPT was accepted.  A lost connection or timeout gives the recipients without a
  final reply a temporary result with code 0.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import metrics
from .mx import DNSError, Resolver

__all__ = [
    "AttemptResult",
    "DeliveryClient",
    "Recipient",
    "RecipientResult",
    "Timeouts",
    "deliver",
    "deliver_to",
]

log = Logger()

_ENHANCED_RE = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


@attrs.frozen
class Recipient:
    address: str


@attrs.frozen
class RecipientResult:
    """What the attempt did for one recipient.

    ``code`` is the SMTP reply code that decided it (250 when delivered; 0 when there was
    none: DNS or connection trouble, timeout, a policy failure decided by us),
    ``enhanced`` the full enhanced status code ("5.1.1", "" if none), ``text`` the reply
    text (enhanced code removed) and ``error`` a description for logs and DSNs ("" when
    delivered).
    """

    address: str
    ok: bool
    permanent: bool
    code: int = 0
    enhanced: str = ""
    text: str = ""
    error: str = ""

    @property
    def temporary(self) -> bool:
        return not self.ok and not self.permanent


@attrs.frozen
class AttemptResult:
    """One delivery attempt: a result per recipient (in the order given) and where it went.

    ``host``/``ip`` are the last host and IP tried ("" if none was reached), ``dialed``
    every IP dialled; ``tls`` whether the final transaction ran over TLS; ``error`` the
    reason the attempt as a whole failed ("" otherwise); ``after_data_timeout`` a timeout
    waiting for the reply to the end of the message (it may have been delivered);
    ``after_data`` any failure once the end of the message was sent (timeout or lost
    connection).
    """

    recipients: tuple[RecipientResult, ...]
    host: str = ""
    ip: str = ""
    tls: bool = False
    error: str = ""
    after_data_timeout: bool = False
    after_data: bool = False
    dialed: tuple[str, ...] = ()

    @property
    def delivered(self) -> bool:
        return any(r.ok for r in self.recipients)

    @property
    def permanent(self) -> bool:
        return any(r.permanent for r in self.recipients)


@attrs.frozen
class Timeouts:
    """Seconds: ``connect`` per TCP connect, ``command`` for each reply (greeting, EHLO,
    STARTTLS and TLS handshake, MAIL, RCPT, DATA, QUIT), ``data`` for the reply after the
    message body.  Defaults as mox's smtpclient (30 s dial; the final reply per RFC 5321
    §4.5.3.2.6 would allow 10 minutes, mox waits less)."""

    connect: float = 30.0
    command: float = 300.0
    data: float = 600.0


def _all(
    recipients: Sequence[str], *, permanent: bool, error: str, code: int = 0, enhanced: str = "", text: str = ""
) -> tuple[RecipientResult, ...]:
    return tuple(
        RecipientResult(a, ok=False, permanent=permanent, code=code, enhanced=enhanced, text=text, error=error)
        for a in recipients
    )


@functools.cache
def _unverified_context() -> SSL.Context:
    """One OpenSSL context for every opportunistic connection (building one per
    connection cost a noticeable share of the delivery CPU)."""
    return ssl.CertificateOptions(verify=False).getContext()


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """Client TLS with SNI and no certificate verification (opportunistic STARTTLS)."""

    def __init__(self, hostname: str) -> None:
        self._context = _unverified_context()
        self._sni: bytes | None = None
        if hostname and not _is_ip(hostname) and not hostname.startswith("["):
            try:
                self._sni = hostname.encode("idna")
            except UnicodeError:
                self._sni = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        conn.set_app_data(tlsProtocol)
        if self._sni is not None:
            conn.set_tlsext_host_name(self._sni)
        return conn


@functools.lru_cache(maxsize=1024)
def _unverified(hostname: str) -> _Unverified:
    """The (immutable) opportunistic TLS creator for ``hostname``, made once per host."""
    return _Unverified(hostname)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@attrs.frozen
class _Params:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    require_tls: bool | None
    smtputf8: bool
    has_8bit: bool
    size: int
    ehlo_hostname: str
    timeouts: Timeouts


@attrs.define
class _Outcome:
    """What one connection produced (mutable while the protocol runs)."""

    results: dict[int, RecipientResult] = attrs.Factory(dict)
    error: str = ""
    tls: bool = False
    tls_failed: bool = False
    requiretls_unsupported: bool = False
    after_data: bool = False
    after_data_timeout: bool = False


class DeliveryClient(smtp.ESMTPClient):
    """One SMTP connection delivering one transaction; ``done`` fires (never fails) with the
    :class:`_Outcome` once the connection is closed."""

    debug = False
    #: ESMTPClient routes every attribute assignment through a Python __setattr__ that
    #: only exists for the deprecated ``tlsMode`` (never used here); the state machine
    #: assigns attributes on every reply, so use plain assignment.
    __setattr__ = object.__setattr__

    def __init__(self, params: _Params, context: IOpenSSLClientConnectionCreator | None, clock: Any) -> None:
        super().__init__(secret=None, contextFactory=context, identity=params.ehlo_hostname.encode("idna"))
        self.params = params
        # TimeoutMixin schedules through callLater: use the injected reactor.
        self.callLater = clock.callLater  # type: ignore[method-assign]
        self.timeout = params.timeouts.command  # type: ignore[assignment]
        self.outcome = _Outcome()
        self.done: Deferred[_Outcome] = Deferred()
        self.extensions: dict[str, str] = {}
        self._tls_pending = False
        self._finished = False
        self._body_sent = False
        self._stage = "greeting"
        self._pending: deque[tuple[str, int]] = deque()
        self._unsent: deque[tuple[bytes, str, int]] = deque()
        self._accepted: list[int] = []
        self._mail_failed = False

    @property
    def _t(self) -> Any:
        """The transport, typed loosely (TLS and abort methods are not in ITransport)."""
        return self.transport

    # --- connection ------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self._tls_pending:  # data through TLS: the handshake worked
            self._tls_pending = False
            self.outcome.tls = True
        if line[:3].isdigit() and line[:1] not in (b"2", b"3", b"4", b"5"):
            # RFC 5321 §4.2: reply codes start with 2-5.  Anything else is a protocol
            # error (temporary), not a 9xx "permanent" failure.
            text = line[:80].decode("ascii", "replace")
            self.sendError(smtp.SMTPProtocolError(-1, f"invalid reply code from remote smtp server: {text!r}"))
            return
        super().lineReceived(line)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        super().connectionLost(reason)
        if not self._finished:
            what = reason.getErrorMessage() if reason is not None else "connection lost"
            if self._tls_pending:
                self.outcome.tls_failed = True
                self._fail_connection(f"tls handshake with remote smtp server failed: {what}")
            else:
                self._fail_connection(f"connection lost during {self._stage}: {what}")
        if not self.done.called:
            self.done.callback(self.outcome)

    def timeoutConnection(self) -> None:
        if not self._finished:
            if self._body_sent:
                self.outcome.after_data_timeout = True
            if self._tls_pending:
                self.outcome.tls_failed = True
            self._fail_connection(f"timeout waiting for remote smtp server during {self._stage}")
        self._t.abortConnection()

    def sendError(self, exc: Exception) -> None:
        if not self._finished:
            self._fail_connection(f"smtp error during {self._stage}: {exc}")
        self._t.abortConnection()

    def _fail_connection(self, error: str) -> None:
        """Every recipient without a final result fails temporarily with ``error``."""
        self._finished = True
        self.outcome.error = error
        if self._body_sent:
            self.outcome.after_data = True
        for i, address in enumerate(self.params.recipients):
            if i not in self.outcome.results or i in self._accepted:
                self.outcome.results[i] = RecipientResult(address, ok=False, permanent=False, error=error)

    def _fail_all(self, code: int, enhanced: str, text: str, error: str, permanent: bool | None = None) -> None:
        """Every recipient fails with this reply (or policy decision); then QUIT."""
        if permanent is None:
            permanent = code >= 500
        self.outcome.error = error
        for i, address in enumerate(self.params.recipients):
            self.outcome.results[i] = RecipientResult(
                address, ok=False, permanent=permanent, code=code, enhanced=enhanced, text=text, error=error
            )
        self._quit()

    def _quit(self) -> None:
        self._finished = True
        self._stage = "quit"
        self.setTimeout(self.params.timeouts.command)
        self._disconnectFromServer()

    # --- replies ----------------------------------------------------------------------

    def _parse(self, code: int, resp: bytes) -> tuple[str, str]:
        """(enhanced code, text) of a reply."""
        enhanced = ""
        lines = resp.split(b"\n")
        if "ENHANCEDSTATUSCODES" in self.extensions:
            for n, line in enumerate(lines):
                m = _ENHANCED_RE.match(line)
                if m and m.group(1) == str(code)[:1].encode():
                    if n == 0:
                        enhanced = b".".join(m.group(1, 2, 3)).decode()
                    lines[n] = line[m.end():]
        text = b" ".join(line.strip() for line in lines if line.strip())
        return enhanced, text.decode("utf-8", "replace")

    def _reply_error(self, code: int, resp: bytes, command: str) -> tuple[str, str, str]:
        enhanced, text = self._parse(code, resp)
        kind = "permanent" if code >= 500 else "temporary"
        line = " ".join(x for x in (str(code), enhanced, text) if x)
        return enhanced, text, f"remote smtp server rejected {command} ({kind}): {line}"

    def smtpConnectionFailed(self, code: int, resp: bytes) -> None:
        enhanced, text, error = self._reply_error(code, resp, "connection")
        self._fail_all(code, enhanced, text, error)

    def _ehlo_failed(self, code: int, resp: bytes) -> None:
        enhanced, text, error = self._reply_error(code, resp, "HELO")
        self._fail_all(code, enhanced, text, error)

    def esmtpState_ehlo(self, code: int, resp: bytes) -> None:
        self._stage = "EHLO"
        super().esmtpState_ehlo(code, resp)

    def smtpState_helo(self, code: int, resp: bytes) -> None:
        # EHLO refused: plain SMTP (no extensions, so no STARTTLS).
        self._stage = "HELO"
        self.extensions = {}
        super().smtpState_helo(code, resp)
        self._failresponse = self._ehlo_failed

    def smtpState_from(self, code: int, resp: bytes) -> None:
        # Reached after a successful HELO only (AUTH is never used).
        self._start_transaction()

    def tryTLS(self, code: int, resp: bytes, items: dict[bytes, bytes | None]) -> None:
        self.extensions = {
            k.decode("ascii", "replace").upper(): (v or b"").decode("ascii", "replace") for k, v in items.items()
        }
        if self._tlsMode or self.outcome.tls:
            self._start_transaction()
        elif self.context is not None and "STARTTLS" in self.extensions:
            self._stage = "STARTTLS"
            self._expected = [220]
            self._okresponse = self.esmtpState_starttls
            self._failresponse = self._starttls_refused
            self.sendLine(b"STARTTLS")
        else:
            self._start_transaction()

    def _starttls_refused(self, code: int, resp: bytes) -> None:
        if self.params.require_tls:
            enhanced, text, error = self._reply_error(code, resp, "STARTTLS")
            self.outcome.tls_failed = True
            self._fail_all(0, "", "", error, permanent=False)
            return
        # Opportunistic: go on in plain text on this connection.
        self._start_transaction()

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        self._stage = "TLS handshake"
        self._tls_pending = True
        # Anything that came with or after the 220 was sent before TLS: drop it
        # (command injection, CVE-2011-0411 style).
        self.clearLineBuffer()
        self._t.startTLS(self.context)
        self._tlsMode = True
        self.esmtpState_ehlo(code, resp)

    # --- the transaction --------------------------------------------------------------

    def _start_transaction(self) -> None:
        p = self.params
        ext = self.extensions
        if p.require_tls:
            if not self.outcome.tls:
                self.outcome.requiretls_unsupported = True
                self._fail_all(0, "", "", "remote smtp server does not offer STARTTLS, message requires TLS", permanent=False)
                return
            if "REQUIRETLS" not in ext:
                self.outcome.requiretls_unsupported = True
                self._fail_all(0, "", "", "remote smtp server does not support REQUIRETLS", permanent=False)
                return
        if p.smtputf8 and "SMTPUTF8" not in ext:
            self._fail_all(
                554, "5.6.7", "", "remote smtp server does not support SMTPUTF8, required for this message", permanent=True
            )
            return
        if p.has_8bit and "8BITMIME" not in ext:
            self._fail_all(
                0, "", "", "remote smtp server does not support 8BITMIME, required for this message", permanent=False
            )
            return
        params: list[bytes] = []
        if "SIZE" in ext:
            try:
                limit = int(ext["SIZE"] or "0")
            except ValueError:
                limit = 0
            if limit > 0 and p.size > limit:
                self._fail_all(
                    552, "5.3.4", "", f"message too large for remote smtp server ({p.size} > {limit} bytes)", permanent=True
                )
                return
            params.append(b"SIZE=%d" % p.size)
        if p.has_8bit:
            params.append(b"BODY=8BITMIME")
        if p.smtputf8:
            params.append(b"SMTPUTF8")
        if p.require_tls:
            params.append(b"REQUIRETLS")

        self._stage = "MAIL FROM"
        self._expected = range(0, 1000)  # type: ignore[assignment]
        self._okresponse = self._reply
        self._failresponse = self._reply
        commands = [(b" ".join([b"MAIL FROM:<" + p.mail_from.encode("utf-8") + b">", *params]), "MAIL", -1)]
        commands += [(b"RCPT TO:<" + a.encode("utf-8") + b">", "RCPT", i) for i, a in enumerate(p.recipients)]
        if "PIPELINING" in ext:
            for line, kind, i in commands:
                self._pending.append((kind, i))
                self.sendLine(line)
        else:
            self._unsent.extend(commands)
            self._send_next()

    def _send_next(self) -> None:
        line, kind, i = self._unsent.popleft()
        self._pending.append((kind, i))
        self.sendLine(line)

    def _reply(self, code: int, resp: bytes) -> None:
        if not self._pending:
            return  # a reply we did not ask for; ignore
        kind, i = self._pending.popleft()
        p = self.params
        if kind == "MAIL":
            if code // 100 != 2:
                self._mail_failed = True
                enhanced, text, error = self._reply_error(code, resp, "MAIL FROM")
                for j, address in enumerate(p.recipients):
                    self.outcome.results[j] = RecipientResult(
                        address, ok=False, permanent=code >= 500, code=code, enhanced=enhanced, text=text, error=error
                    )
                self.outcome.error = error
                self._unsent.clear()
            else:
                self._stage = "RCPT TO"
        elif kind == "RCPT":
            if not self._mail_failed:
                if code // 100 == 2:
                    self._accepted.append(i)
                else:
                    enhanced, text, error = self._reply_error(code, resp, f"RCPT TO <{p.recipients[i]}>")
                    self.outcome.results[i] = RecipientResult(
                        p.recipients[i], ok=False, permanent=code >= 500, code=code, enhanced=enhanced, text=text, error=error
                    )
        elif kind == "DATA":
            if code == 354:
                self._send_body()
            else:
                self._fail_accepted(code, resp, "DATA")
            return
        elif kind == "END":
            enhanced, text = self._parse(code, resp)
            if code // 100 == 2:
                for j in self._accepted:
                    self.outcome.results[j] = RecipientResult(
                        p.recipients[j], ok=True, permanent=False, code=code, enhanced=enhanced, text=text
                    )
                self._accepted = []
                self._quit()
            else:
                self._fail_accepted(code, resp, "message")
            return

        if self._unsent:
            self._send_next()
        elif not self._pending:
            # All MAIL/RCPT replies are in.
            if self._mail_failed:
                self._quit()
            elif not self._accepted:
                self.outcome.error = "no recipients accepted"
                self._quit()
            else:
                self._stage = "DATA"
                self._pending.append(("DATA", -1))
                self.sendLine(b"DATA")

    def _fail_accepted(self, code: int, resp: bytes, command: str) -> None:
        enhanced, text, error = self._reply_error(code, resp, command)
        for j in self._accepted:
            self.outcome.results[j] = RecipientResult(
                self.params.recipients[j], ok=False, permanent=code >= 500, code=code, enhanced=enhanced, text=text, error=error
            )
        self._accepted = []
        self.outcome.error = error
        self._quit()

    def _send_body(self) -> None:
        data = self.params.data
        if data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        self._stage = "reply after message"
        self._pending.append(("END", -1))
        self._t.write(data + b".\r\n")
        self._body_sent = True
        self.setTimeout(self.params.timeouts.data)


class _Factory(ClientFactory):
    #: No "Starting/Stopping factory" log lines: one factory per connection.
    noisy = False

    def __init__(self, proto: DeliveryClient) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> DeliveryClient:
        self.proto.factory = self
        return self.proto


async def _connect_once(
    reactor: Any, host: str, ip: str, port: int, params: _Params, tls: bool, trust_root: IOpenSSLTrustRoot | None
) -> tuple[_Outcome | None, str]:
    """One connection; (None, error) if it could not be made."""
    context: IOpenSSLClientConnectionCreator | None = None
    if tls:
        if params.require_tls:
            context = ssl.optionsForClientTLS(host, trustRoot=trust_root)
        else:
            context = _unverified(host)
    proto = DeliveryClient(params, context, reactor)
    endpoint_class = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
    endpoint = endpoint_class(reactor, ip, port, timeout=params.timeouts.connect)
    try:
        await endpoint.connect(_Factory(proto))
    except Exception as e:
        metrics.connection(e)
        return None, f"connecting to {ip} port {port}: {e}"
    metrics.connection(None)
    return await proto.done, ""


async def _deliver_host(
    reactor: Any,
    host: str,
    ips: Sequence[str],
    port: int,
    params: _Params,
    trust_root: IOpenSSLTrustRoot | None,
    dialed: list[str],
) -> tuple[AttemptResult, bool]:
    """Deliver to one host, trying its IPs until one connects; (result, requiretls unsupported)."""
    error = f"no addresses for {host}"
    for ip in ips:
        dialed.append(ip)
        outcome, error = await _connect_once(reactor, host, ip, port, params, True, trust_root)
        if outcome is None:
            log.info("delivery: cannot connect to {host} {ip}: {error}", host=host, ip=ip, error=error)
            continue
        if outcome.tls_failed and not params.require_tls:
            log.info("delivery: tls with {host} {ip} failed ({error}), retrying in plain text", host=host, ip=ip, error=outcome.error)
            metrics.queue_plaintext_fallback.inc()
            retry, retry_error = await _connect_once(reactor, host, ip, port, params, False, trust_root)
            if retry is None:
                return AttemptResult(_all(params.recipients, permanent=False, error=retry_error), host, ip, False, retry_error, dialed=tuple(dialed)), False
            outcome = retry
        results = tuple(
            outcome.results.get(i) or RecipientResult(a, ok=False, permanent=False, error=outcome.error or "no result")
            for i, a in enumerate(params.recipients)
        )
        return AttemptResult(
            results,
            host=host,
            ip=ip,
            tls=outcome.tls,
            error=outcome.error,
            after_data_timeout=outcome.after_data_timeout,
            after_data=outcome.after_data,
            dialed=tuple(dialed),
        ), outcome.requiretls_unsupported
    return AttemptResult(_all(params.recipients, permanent=False, error=error), host, "", False, error, dialed=tuple(dialed)), False


def _params(
    mail_from: str,
    recipients: Sequence[Recipient | str],
    data: bytes,
    require_tls: bool | None,
    smtputf8: bool,
    has_8bit: bool,
    size: int | None,
    ehlo_hostname: str,
    timeouts: Timeouts | None,
) -> _Params:
    return _Params(
        mail_from=mail_from,
        recipients=tuple(r.address if isinstance(r, Recipient) else r for r in recipients),
        data=data,
        require_tls=require_tls,
        smtputf8=smtputf8,
        has_8bit=has_8bit,
        size=len(data) if size is None else size,
        ehlo_hostname=ehlo_hostname,
        timeouts=timeouts or Timeouts(),
    )


def _final(result: AttemptResult) -> bool:
    """Whether the host loop stops here (see the module docstring)."""
    return result.delivered or result.permanent or result.after_data


async def deliver(
    reactor: Any,
    resolver: Resolver,
    *,
    domain: str,
    mail_from: str,
    recipients: Sequence[Recipient | str],
    data: bytes,
    ehlo_hostname: str,
    port: int = 25,
    require_tls: bool | None = None,
    smtputf8: bool = False,
    has_8bit: bool = False,
    size: int | None = None,
    timeouts: Timeouts | None = None,
    trust_root: IOpenSSLTrustRoot | None = None,
) -> AttemptResult:
    """Deliver ``data`` from ``mail_from`` (``""`` for the null sender) to ``recipients``
    (all in ``domain``) in one SMTP transaction at the domain's MX hosts, dialling
    ``port``.  ``reactor`` provides IReactorTCP and IReactorTime; ``trust_root`` replaces
    the platform's CAs when verifying (RequireTLS).  Never raises for delivery trouble:
    every outcome is in the returned :class:`AttemptResult`."""
    params = _params(mail_from, recipients, data, require_tls, smtputf8, has_8bit, size, ehlo_hostname, timeouts)
    try:
        hosts = await resolver.resolve_hosts(domain)
    except DNSError as e:
        return AttemptResult(_all(params.recipients, permanent=e.permanent, error=str(e)), error=str(e))
    dialed: list[str] = []
    last: AttemptResult | None = None
    requiretls_everywhere = True
    for host in hosts:
        if host.ip:
            ips = [host.ip]
        else:
            try:
                ips = await resolver.resolve_ips(host.name)
            except DNSError as e:
                # An MX target that does not resolve is one bad host among possibly
                # several: temporary.  Without MX records it is the domain itself.
                permanent = e.permanent and host.implicit
                last = AttemptResult(_all(params.recipients, permanent=permanent, error=str(e)), host=host.name, error=str(e), dialed=tuple(dialed))
                requiretls_everywhere = False
                if permanent:
                    return last
                continue
        result, requiretls_unsupported = await _deliver_host(reactor, host.name, ips, port, params, trust_root, dialed)
        if _final(result):
            return result
        requiretls_everywhere = requiretls_everywhere and requiretls_unsupported
        last = result
    assert last is not None  # resolve_hosts returns at least one host
    if require_tls and requiretls_everywhere:
        error = "no mx host supports REQUIRETLS (with STARTTLS), required for this message"
        return attrs.evolve(
            last, recipients=_all(params.recipients, permanent=True, error=error, code=554, enhanced="5.7.30"), error=error
        )
    return last


async def deliver_to(
    reactor: Any,
    host: str,
    ip: str,
    port: int,
    *,
    mail_from: str,
    recipients: Sequence[Recipient | str],
    data: bytes,
    ehlo_hostname: str,
    require_tls: bool | None = None,
    smtputf8: bool = False,
    has_8bit: bool = False,
    size: int | None = None,
    timeouts: Timeouts | None = None,
    trust_root: IOpenSSLTrustRoot | None = None,
) -> AttemptResult:
    """Like :func:`deliver`, to ``ip``:``port`` without DNS (localserve: 127.0.0.1:1025);
    ``host`` is the name used for TLS (SNI, verification) and in the result."""
    params = _params(mail_from, recipients, data, require_tls, smtputf8, has_8bit, size, ehlo_hostname, timeouts)
    result, requiretls_unsupported = await _deliver_host(reactor, host, [ip], port, params, trust_root, [])
    if require_tls and requiretls_unsupported:
        error = "remote smtp server does not support REQUIRETLS (with STARTTLS), required for this message"
        return attrs.evolve(
            result, recipients=_all(params.recipients, permanent=True, error=error, code=554, enhanced="5.7.30"), error=error
        )
    return result
