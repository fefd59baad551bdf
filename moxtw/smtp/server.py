"""The ESMTP server protocol shared by submission and incoming delivery.

:class:`SMTPServer` subclasses Twisted's :class:`twisted.mail.smtp.ESMTP` for its line
framing, reply formatting, ``TimeoutMixin`` and STARTTLS transport hand-off, and replaces
the command handlers because moxtw needs what Twisted's lack:

* replies with enhanced status codes (RFC 2034) and mox's texts;
* PIPELINING done right: while a command is being answered asynchronously (a password
  check, a database commit) later lines are queued and the transport is paused, so a
  pipelined ``RCPT`` never overtakes its ``MAIL``;
* SIZE, 8BITMIME, SMTPUTF8, REQUIRETLS, FUTURERELEASE (``HOLDFOR``/``HOLDUNTIL``,
  RFC 4865) and LIMITS parameters, checked at ``MAIL FROM``;
* AUTH PLAIN and LOGIN verified off the reactor thread with
  :class:`~moxtw.passwords.PasswordVerifier` and rate-limited per IP/network;
* a message read whole into memory, with the size limit enforced while reading, and
  handed to the backend once after the final dot (one commit for all recipients), so a
  client that drops mid-DATA leaves nothing behind.

What happens to envelopes and messages is decided by a :class:`Backend`
(``moxtw.smtp.submission`` or ``moxtw.smtp.incoming``).  Twisted's ``IMessageDelivery``
delivers one ``IMessage`` per recipient, line by line; moxtw's submission must check the
daily limits over all recipients and commit them in one transaction before a single 250,
so the backends implement this transaction-level interface instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITLSTransport
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from .. import metrics
from ..accounts import Accounts, Login
from ..address import Address, AddressError, parse_address
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter

__all__ = [
    "Backend",
    "HoldReply",
    "MailParams",
    "Reply",
    "ServerOptions",
    "Session",
    "SMTPServer",
    "SMTPServerFactory",
    "Transaction",
]

#: RFC 4865 FUTURERELEASE maximum interval we announce (60 days, as mox).
MAX_FUTURE_RELEASE = 60 * 24 * 3600


class Reply(Exception):
    """An SMTP reply; raised by backends to refuse a command."""

    def __init__(self, code: int, ecode: str, text: str) -> None:
        super().__init__(f"{code} {ecode} {text}")
        self.code = code
        self.ecode = ecode
        self.text = text


class HoldReply(Exception):
    """Answer ``reply`` only after the command timeout (localserve ``timeout`` special).

    mox sleeps an hour; moxtw holds the reply for ``ServerOptions.command_timeout`` on the
    injected clock, by which time a well-behaved client has given up and disconnected.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@attrs.frozen
class ServerOptions:
    hostname: str
    #: Submission (AUTH required, REQUIRETLS/FUTURERELEASE) or incoming delivery.
    submission: bool
    max_message_size: int
    max_recipients: int = 1000
    #: Longest line (command or message line) accepted, without CRLF; longer: 500, close.
    max_line_length: int = 16 * 1024
    #: Idle time allowed between commands and between DATA lines.
    command_timeout: float = 300.0
    max_connections_per_ip: int = 20
    #: Allow AUTH without TLS (localserve, like mox's "STARTTLS not required").
    plaintext_auth: bool = False
    #: The connection is TLS from the start (submissions, port 465).
    implicit_tls: bool = False
    #: Delay before answering a failed AUTH (mox: 1 s).
    bad_auth_delay: float = 1.0


@attrs.define
class Session:
    """Per-connection state the backends see."""

    remote_ip: str
    helo: str = ""
    tls: bool = False
    login: Login | None = None


@attrs.define
class MailParams:
    size: int | None = None
    body_8bit: bool = False
    smtputf8: bool = False
    require_tls: bool = False
    #: FUTURERELEASE: absolute time (seconds) and mox's request text.
    hold_until: float | None = None
    future_release_request: str = ""


@attrs.define
class Transaction:
    """One MAIL FROM ... DATA exchange."""

    mail_from: Address | None  # None for the null reverse path <>
    mail_from_text: str
    params: MailParams
    recipients: list[tuple[Address, str]] = attrs.Factory(list)
    #: Backend-private state (e.g. the resolved account per recipient).
    state: dict[str, Any] = attrs.Factory(dict)


class Backend(Protocol):
    """What a server does with envelopes and messages; raise :class:`Reply` to refuse."""

    async def mail_from(self, session: Session, tx: Transaction) -> None: ...

    async def rcpt_to(self, session: Session, tx: Transaction, address: Address, given: str) -> None: ...

    async def data(self, session: Session, tx: Transaction, data: bytes) -> None: ...


_MAIL_RE = re.compile(r"^FROM:\s*<([^>]*)>(.*)$", re.IGNORECASE | re.DOTALL)
_RCPT_RE = re.compile(r"^TO:\s*<([^>]+)>(.*)$", re.IGNORECASE | re.DOTALL)


def _reply_bytes(ecode: str, text: str) -> bytes:
    return (f"{ecode} {text}" if ecode else text).encode("utf-8")


@attrs.define(eq=False)
class SMTPServerFactory(ServerFactory):
    """Builds :class:`SMTPServer` protocols and counts connections per IP."""

    #: No "Starting factory <repr>" log lines (the repr holds the whole configuration).
    noisy = False

    options: ServerOptions
    backend: Backend
    accounts: Accounts
    verifier: PasswordVerifier
    auth_limiter: Limiter
    clock: IReactorTime
    #: pyOpenSSL context factory for STARTTLS (None: STARTTLS not offered).
    tls_context_factory: Any = None
    connections: dict[str, int] = attrs.Factory(dict)

    def buildProtocol(self, addr: Any) -> SMTPServer:
        p = SMTPServer(self)
        p.factory = self
        return p


def set_no_delay(transport: Any) -> None:
    """Turn off Nagle's algorithm on ``transport`` (or, for TLS, the TCP transport under it)."""
    while transport is not None:
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)


class SMTPServer(smtp.ESMTP):
    """One SMTP connection; see the module docstring."""

    log = Logger()

    def __init__(self, factory: SMTPServerFactory) -> None:
        super().__init__(contextFactory=factory.tls_context_factory)
        self.smtp_factory = factory
        self.options = factory.options
        self.backend = factory.backend
        # TimeoutMixin schedules through callLater: use the injected clock.
        self.callLater = factory.clock.callLater  # type: ignore[method-assign,assignment]
        self.timeout = self.options.command_timeout  # type: ignore[assignment]
        self.MAX_LENGTH = self.options.max_line_length
        self.host = self.options.hostname.encode("idna")
        self.session = Session(remote_ip="")
        self.tx: Transaction | None = None
        self.ehlo = False  # EHLO (not HELO) given: extensions usable
        self.mode = "COMMAND"
        self._pending: list[bytes] = []
        self._drop_plaintext = False
        self._busy = False
        self._gone = False
        self._counted = False
        self._hold: IDelayedCall | None = None
        self._auth: _AuthExchange | None = None
        self._data: list[bytes] = []
        self._data_size = 0
        self._data_too_large = False
        self._data_bad_crlf = False

    @property
    def _t(self) -> Any:
        """The transport (TCP, TLS or in-memory; typed loosely: we need its TLS and
        producer methods, which ``ITransport`` does not declare)."""
        return self.transport

    # --- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:
        # Replies are small writes answering pipelined commands one by one: without
        # TCP_NODELAY, Nagle's algorithm holds each reply until the previous one is
        # acknowledged, and the client's delayed ACK makes that milliseconds per command.
        set_no_delay(self.transport)
        peer = self._t.getPeer()
        ip = str(getattr(peer, "host", ""))
        self.session = Session(remote_ip=ip, tls=self.options.implicit_tls)
        self.canStartTLS = (
            not self.options.implicit_tls
            and self.ctx is not None
            and ITLSTransport.providedBy(self.transport)
        )
        counts = self.smtp_factory.connections
        if counts.get(ip, 0) >= self.options.max_connections_per_ip:
            self.reply(421, "4.7.0", "too many connections from your ip, try again later")
            self._t.loseConnection()
            self._gone = True
            return
        counts[ip] = counts.get(ip, 0) + 1
        self._counted = True
        metrics.smtp_connections.labels(metrics.smtp_listener(self.options)).inc()
        self.reply(220, "", f"{self.options.hostname} ESMTP moxtw")
        self.setTimeout(self.timeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        self.setTimeout(None)
        if self._hold is not None and self._hold.active():
            self._hold.cancel()
        self._hold = None
        # A message still being read is simply dropped: nothing was stored yet.
        self._data = []
        self.tx = None
        self._pending = []
        if self._counted:
            ip = self.session.remote_ip
            counts = self.smtp_factory.connections
            counts[ip] -= 1
            if counts[ip] <= 0:
                del counts[ip]
            self._counted = False

    def timeoutConnection(self) -> None:
        self.reply(421, "4.4.2", f"{self.options.hostname} timeout, closing connection")
        self._t.loseConnection()

    def reply(self, code: int, ecode: str, text: str) -> None:
        if not self._gone:
            self.sendCode(code, _reply_bytes(ecode, text))

    def send_reply(self, r: Reply) -> None:
        self.reply(r.code, r.ecode, r.text)

    # --- line dispatch and pipelining ----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Bytes arriving after STARTTLS went through TLS; lines still being split from
        # the last plaintext read are injected (CVE-2011-0411 style) and are dropped.
        self._drop_plaintext = False
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._drop_plaintext:
            return
        self.resetTimeout()
        if self._busy:
            self._pending.append(line)
            return
        self._handle(line)

    def _handle(self, line: bytes) -> None:
        if self.mode == "DATA":
            self._data_line(line)
        elif self.mode == "AUTH":
            self._run(self._auth_line(line))
        else:
            self._command(line)

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an asynchronous command; queue later lines until it has answered."""
        self._busy = True
        self._t.pauseProducing()
        d = Deferred.fromCoroutine(coro)
        d.addErrback(self._unexpected)
        d.addBoth(self._done)

    def _unexpected(self, failure: Failure) -> None:
        if failure.check(HoldReply):
            assert isinstance(failure.value, HoldReply)
            self._start_hold(failure.value.reply)
            return
        self.log.failure("smtp command failed", failure)
        self.reply(451, "4.3.0", "internal error, try again later")

    def _start_hold(self, r: Reply) -> None:
        self.setTimeout(None)
        self._busy = True  # stays busy: later lines wait for the held reply

        def release() -> None:
            self._hold = None
            self.send_reply(r)
            self.setTimeout(self.timeout)
            self._done(None)

        self._hold = self.callLater(self.options.command_timeout, release)

    def _done(self, _: object) -> None:
        if self._hold is not None or self._gone:
            return
        self._busy = False
        self._t.resumeProducing()
        while self._pending and not self._busy and not self._gone:
            self._handle(self._pending.pop(0))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._data = []
        self.reply(500, "5.5.2", "line too long")
        self._t.loseConnection()

    def _command(self, line: bytes) -> None:
        parts = line.strip().split(None, 1)
        if not parts:
            self.reply(500, "5.5.2", "empty command")
            return
        name = parts[0].upper().decode("ascii", "replace")
        rest = parts[1] if len(parts) > 1 else b""
        handler = getattr(self, f"cmd_{name}", None) if name.isalpha() else None
        if handler is None:
            self.reply(500, "5.5.2", "unknown command")
            return
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            self.reply(501, "5.5.2", "invalid utf-8 in command")
            return
        try:
            result = handler(text)
        except Exception:
            # A bug, not the client's fault: logged, answered, the connection lives on.
            self.log.failure("smtp command failed")
            self.reply(451, "4.3.0", "internal error, try again later")
            return
        if result is not None:
            self._run(result)

    # --- commands ---------------------------------------------------------------------

    def extensions_list(self) -> list[str]:
        o = self.options
        ext = ["PIPELINING", f"SIZE {o.max_message_size}"]
        if self.canStartTLS and not self.session.tls:
            ext.append("STARTTLS")
        if self.session.tls:
            ext.append("REQUIRETLS")
        if o.submission and (self.session.tls or o.plaintext_auth):
            ext.append("AUTH PLAIN LOGIN")
        if o.submission:
            release = datetime.fromtimestamp(
                self.smtp_factory.clock.seconds() + MAX_FUTURE_RELEASE
            ).astimezone()
            ext.append(f"FUTURERELEASE {MAX_FUTURE_RELEASE} {_rfc3339_utc(release)}")
        ext += ["ENHANCEDSTATUSCODES", "8BITMIME", f"LIMITS RCPTMAX={o.max_recipients}", "SMTPUTF8"]
        return ext

    def cmd_EHLO(self, rest: str) -> None:
        if not rest.strip():
            self.reply(501, "5.5.4", "missing domain or address literal")
            return
        self.session.helo = rest.strip()
        self.ehlo = True
        self.tx = None
        self.sendCode(250, "\n".join([self.options.hostname, *self.extensions_list()]).encode("utf-8"))

    def cmd_HELO(self, rest: str) -> None:
        if not rest.strip():
            self.reply(501, "5.5.4", "missing domain")
            return
        self.session.helo = rest.strip()
        self.ehlo = False
        self.tx = None
        self.reply(250, "", self.options.hostname)

    def cmd_STARTTLS(self, rest: str) -> None:
        if self.session.tls:
            self.reply(503, "5.5.1", "already speaking tls")
        elif not self.canStartTLS:
            self.reply(502, "5.5.1", "tls not available")
        elif rest.strip():
            self.reply(501, "5.5.4", "no parameters allowed")
        else:
            self.reply(220, "2.0.0", "ok")
            self._t.startTLS(self.ctx)
            self.startedTLS = True
            self._drop_plaintext = True
            self._pending = []
            # RFC 3207 §4.2: forget everything learned before TLS.
            self.session = Session(remote_ip=self.session.remote_ip, tls=True)
            self.tx = None
            self.ehlo = False

    def cmd_NOOP(self, rest: str) -> None:
        self.reply(250, "2.0.0", "ok")

    def cmd_RSET(self, rest: str) -> None:
        self.tx = None
        self.reply(250, "2.0.0", "all clear")

    def cmd_QUIT(self, rest: str) -> None:
        self.reply(221, "2.0.0", "okay thanks bye")
        self._t.loseConnection()

    def cmd_VRFY(self, rest: str) -> None:
        self.reply(252, "2.5.0", "no address verification")

    def cmd_EXPN(self, rest: str) -> None:
        self.reply(502, "5.5.1", "expn not implemented")

    def cmd_HELP(self, rest: str) -> None:
        self.reply(214, "2.0.0", "see rfc 5321")

    # --- AUTH ---------------------------------------------------------------------------

    def cmd_AUTH(self, rest: str) -> Coroutine[Any, Any, None] | None:
        if not self.options.submission:
            self.reply(503, "5.5.1", "authentication not allowed on this port")
            return None
        if not self.session.helo:
            self.reply(503, "5.5.1", "missing EHLO")
            return None
        if self.session.login is not None:
            self.reply(503, "5.5.1", "already authenticated")
            return None
        if self.tx is not None:
            self.reply(503, "5.5.1", "authentication not allowed during mail transaction")
            return None
        if not self.session.tls and not self.options.plaintext_auth:
            self.reply(538, "5.7.11", "authentication requires tls, use STARTTLS")
            return None
        parts = rest.split(None, 1)
        mech = parts[0].upper() if parts else ""
        if mech not in ("PLAIN", "LOGIN"):
            self.reply(504, "5.7.4", "unrecognized authentication mechanism")
            return None
        self._auth = _AuthExchange(mech)
        self.mode = "AUTH"
        if len(parts) > 1:
            return self._auth_line(parts[1].encode("ascii", "replace"))
        self.reply(334, "", self._auth.challenge())
        return None

    async def _auth_line(self, line: bytes) -> None:
        exchange = self._auth
        assert exchange is not None
        if line.strip() == b"*":
            self._end_auth()
            self.reply(501, "5.0.0", "authentication aborted")
            return
        try:
            decoded = base64.b64decode(line.strip(), validate=True) if line.strip() != b"=" else b""
        except (binascii.Error, ValueError):
            self._end_auth()
            self.reply(501, "5.5.2", "bad base64 data")
            return
        done = exchange.response(decoded)
        if not done:
            self.reply(334, "", exchange.challenge())
            return
        self._end_auth()
        await self._authenticate(exchange.username, exchange.password, exchange.mechanism.lower())

    def _end_auth(self) -> None:
        self._auth = None
        self.mode = "COMMAND"

    async def _authenticate(self, username: str, password: str, mechanism: str = "plain") -> None:
        f = self.smtp_factory
        ip = self.session.remote_ip
        # Counted as a failure before the password check (parallel guesses), forgiven on
        # success; a peer without an IP address (not TCP) is not limited.
        counted = True
        try:
            limited = not await f.auth_limiter.begin_attempt(ip)
        except ValueError:
            limited = counted = False
        if limited:
            metrics.authentication_ratelimited.labels("smtp").inc()
            self.reply(421, "4.7.0", "too many authentication failures")
            self._t.loseConnection()
            return
        login = f.accounts.login(username)
        ok = False
        try:
            if login is not None and not login.account.login_disabled and login.account.password_hash:
                ok = await f.verifier.verify(password, login.account.password_hash)
        finally:
            if counted:
                f.auth_limiter.end_attempt(ip, ok and login is not None)
        if not ok or login is None:
            disabled = login is not None and login.account.login_disabled
            metrics.authentication("smtp", mechanism, "logindisabled" if disabled else "badcreds")
            if self.options.bad_auth_delay > 0:
                await deferLater(f.clock, self.options.bad_auth_delay)
            self.reply(535, "5.7.8", "bad user/pass")
            return
        metrics.authentication("smtp", mechanism, "ok")
        self.session.login = login
        self.authenticated = True
        self.reply(235, "2.7.0", "nice")

    # --- mail transaction -------------------------------------------------------------

    def cmd_MAIL(self, rest: str) -> Coroutine[Any, Any, None] | None:
        if not self.session.helo:
            self.reply(503, "5.5.1", "missing EHLO/HELO")
            return None
        if self.tx is not None:
            self.reply(503, "5.5.1", "already have MAIL FROM")
            return None
        if self.options.submission and self.session.login is None:
            self.reply(530, "5.7.0", "authentication required")
            return None
        m = _MAIL_RE.match(rest.strip())
        if m is None:
            self.reply(501, "5.5.4", "bad MAIL FROM syntax, expected FROM:<address>")
            return None
        path, param_text = m.group(1), m.group(2)
        try:
            params = self._mail_params(param_text.split())
        except Reply as r:
            self.send_reply(r)
            return None
        address: Address | None = None
        if path:
            try:
                address = parse_address(path)
            except AddressError as e:
                self.reply(501, "5.1.7", f"bad sender address: {e.detail}")
                return None
            if not address.localpart.isascii() and not params.smtputf8:
                self.reply(553, "5.6.7", "non-ascii address requires SMTPUTF8")
                return None
        return self._mail(Transaction(mail_from=address, mail_from_text=path, params=params))

    async def _mail(self, tx: Transaction) -> None:
        try:
            await self.backend.mail_from(self.session, tx)
        except Reply as r:
            self.send_reply(r)
            return
        self.tx = tx
        self.reply(250, "2.1.0", "looking good")

    def _mail_params(self, words: list[str]) -> MailParams:
        p = MailParams()
        clock = self.smtp_factory.clock
        for word in words:
            key, eq, value = word.partition("=")
            key = key.upper()
            if not self.ehlo:
                raise Reply(555, "5.5.4", "parameters require EHLO")
            if key == "SIZE" and eq:
                if not _is_number(value):
                    raise Reply(501, "5.5.4", "bad SIZE value")
                p.size = _number(value)
                if p.size > self.options.max_message_size:
                    raise Reply(552, "5.3.4", "message too large")
            elif key == "BODY" and eq:
                if value.upper() == "8BITMIME":
                    p.body_8bit = True
                elif value.upper() != "7BIT":
                    raise Reply(555, "5.5.4", f"unsupported BODY value {value!r}")
            elif key == "SMTPUTF8" and not eq:
                p.smtputf8 = True
            elif key == "REQUIRETLS" and not eq:
                if not self.session.tls:
                    raise Reply(530, "5.7.10", "REQUIRETLS only allowed over tls")
                p.require_tls = True
            elif key in ("HOLDFOR", "HOLDUNTIL") and eq and self.options.submission:
                if p.hold_until is not None:
                    raise Reply(501, "5.5.4", "duplicate HOLDFOR/HOLDUNTIL")
                now = clock.seconds()
                if key == "HOLDFOR":
                    if not _is_number(value):
                        raise Reply(501, "5.5.4", "bad HOLDFOR value")
                    seconds = _number(value)
                    p.future_release_request = f"for;{seconds}"
                else:
                    try:
                        when = datetime.fromisoformat(value)
                    except ValueError:
                        raise Reply(501, "5.5.4", "bad HOLDUNTIL value") from None
                    if when.tzinfo is None:
                        raise Reply(501, "5.5.4", "HOLDUNTIL needs a time zone")
                    seconds = int(when.timestamp() - now)
                    p.future_release_request = f"until;{value}"
                if seconds > MAX_FUTURE_RELEASE:
                    raise Reply(554, "5.5.4", "requested future release time is too far in the future")
                p.hold_until = now + max(seconds, 0)
            elif key == "AUTH" and eq:
                pass  # RFC 4954 AUTH= is informational
            else:
                raise Reply(555, "5.5.4", f"unrecognized parameter {key!r}")
        return p

    def cmd_RCPT(self, rest: str) -> Coroutine[Any, Any, None] | None:
        tx = self.tx
        if tx is None:
            self.reply(503, "5.5.1", "missing MAIL FROM")
            return None
        m = _RCPT_RE.match(rest.strip())
        if m is None:
            self.reply(501, "5.5.4", "bad RCPT TO syntax, expected TO:<address>")
            return None
        if m.group(2).strip():
            self.reply(555, "5.5.4", "unrecognized parameter")
            return None
        if len(tx.recipients) >= self.options.max_recipients:
            self.reply(452, "4.5.3", "max number of recipients reached")
            return None
        given = m.group(1)
        try:
            address = parse_address(given)
        except AddressError as e:
            self.reply(501, "5.1.3", f"bad recipient address: {e.detail}")
            return None
        if not address.localpart.isascii() and not tx.params.smtputf8:
            self.reply(553, "5.6.7", "non-ascii address requires SMTPUTF8")
            return None
        return self._rcpt(tx, address, given)

    async def _rcpt(self, tx: Transaction, address: Address, given: str) -> None:
        try:
            await self.backend.rcpt_to(self.session, tx, address, given)
        except Reply as r:
            self.send_reply(r)
            return
        tx.recipients.append((address, given))
        self.reply(250, "2.1.0", "now on the list")

    def cmd_DATA(self, rest: str) -> None:
        if self.tx is None:
            self.reply(503, "5.5.1", "missing MAIL FROM")
            return
        if not self.tx.recipients:
            self.reply(503, "5.5.1", "missing RCPT TO")
            return
        if rest.strip():
            self.reply(501, "5.5.4", "no parameters allowed")
            return
        self.mode = "DATA"
        self._data = []
        self._data_size = 0
        self._data_too_large = False
        self._data_bad_crlf = False
        self.reply(354, "", "see you at the bare dot")

    def _data_line(self, line: bytes) -> None:
        if line == b".":
            self.mode = "COMMAND"
            tx, self.tx = self.tx, None
            data, self._data = b"".join(self._data), []
            assert tx is not None
            if self._data_too_large:
                metrics.smtp_transaction(self.options, 552)
                self.reply(552, "5.3.4", "message too large")
                return
            if self._data_bad_crlf:
                metrics.smtp_transaction(self.options, 500)
                self.reply(500, "5.5.2", "invalid bare \\r or \\n, may be smtp smuggling")
                return
            self._run(self._message(tx, data))
            return
        # Like mox: a bare CR, or a bare LF next to a dot line ("\n.\n", "\n.\r\n",
        # "\r\n.\n"), fails the message (SMTP smuggling); other bare LFs become CRLF, so
        # the message we check (e.g. the submission From rule) is the message that a
        # mail program shows: "Subject: x\nFrom: someone-else" is two header lines.
        if b"\r" in line or line.startswith(b".\n") or b"\n.\n" in line or line.endswith(b"\n."):
            self._data_bad_crlf = True
        if line.startswith(b"."):
            line = line[1:]
        if b"\n" in line:
            line = line.replace(b"\n", b"\r\n")
        self._data_size += len(line) + 2
        if self._data_size > self.options.max_message_size:
            self._data_too_large = True
            self._data = []
        if not self._data_too_large:
            self._data.append(line + b"\r\n")

    async def _message(self, tx: Transaction, data: bytes) -> None:
        result: str | int = "error"  # an unexpected exception
        try:
            await self.backend.data(self.session, tx, data)
            result = 250
        except Reply as r:
            result = r.code
            self.send_reply(r)
            return
        except HoldReply as h:
            result = h.reply.code
            raise
        finally:
            metrics.smtp_transaction(self.options, result)
        self.reply(250, "2.2.0", "it is done")


@attrs.define
class _AuthExchange:
    """The SASL PLAIN or LOGIN exchange of one AUTH command."""

    mechanism: str
    step: int = 0
    username: str = ""
    password: str = ""

    def challenge(self) -> str:
        if self.mechanism == "PLAIN":
            return ""
        return base64.b64encode(b"Username:" if self.step == 0 else b"Password:").decode()

    def response(self, data: bytes) -> bool:
        """Take one client response; True when the credentials are complete."""
        text = data.decode("utf-8", "replace")
        if self.mechanism == "PLAIN":
            parts = text.split("\0")
            if len(parts) == 3:
                authz, self.username, self.password = parts
                if authz and authz != self.username:
                    self.username = ""  # proxy authorisation is not supported: fails
            return True
        if self.step == 0:
            self.username = text
            self.step = 1
            return False
        self.password = text
        return True


def _is_number(value: str) -> bool:
    """ASCII digits only ("²".isdigit() is true, but int() refuses it)."""
    return value.isascii() and value.isdigit()


def _number(value: str) -> int:
    """An ``_is_number`` value; more than 18 digits (beyond any limit, and beyond what
    int() converts in Python 3.11+ at 4300) counts as 10**18."""
    return int(value) if len(value) <= 18 else 10**18


def _rfc3339_utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
