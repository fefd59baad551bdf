"""Incoming delivery (the MX port, no authentication).

Recipients are resolved to accounts through :meth:`moxtw.accounts.Accounts.lookup`
(addresses, catch-all, catchall separators); unknown recipients are refused at RCPT with
``550 5.1.1``.  After the final dot, the message (with a Received header prepended) is
handed to ``deliver`` once per recipient; the 250 is sent when every call has completed,
and ``451 4.3.0`` if any raised.

localserve (``config.localserve``, spec §7.3): recipients that resolve to no account are
delivered to the first configured account (mox: "unknown addresses are delivered to
mox@localhost"), and special localparts simulate failures:

* MAIL FROM localparts beginning with ``mailfrom`` and RCPT TO localparts beginning with
  ``rcptto`` fail at that command;
* any recipient with a special localpart fails DATA.  moxtw answers DATA with one reply
  (it does not do LMTP-style per-recipient replies), so in a transaction with several
  recipients the first special recipient's failure is the reply and the message is
  delivered to **nobody** (not even the normal recipients), so that the client's retry
  cannot duplicate it;
* ``timeout``: the reply ``451 4.3.0 timing out command due to special localpart`` is held
  for the server's command timeout on the injected clock (mox sleeps an hour), by which
  time a real client has timed out and disconnected; nothing is delivered.
"""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..accounts import Accounts
from ..address import Address
from ..config import Config
from ..webapi.compose import new_token
from .server import HoldReply, Reply, Session, Transaction

__all__ = ["IncomingBackend", "IncomingMessage", "special_code", "special_reply"]


@attrs.frozen
class IncomingMessage:
    """One message for one local recipient, as handed to the account message store."""

    account: str
    recipient: Address
    mail_from: str  # "" for the null reverse path
    data: bytes  # including the Received header prepended by moxtw
    remote_ip: str
    tls: bool
    helo: str = ""  # the client's EHLO/HELO name (SPF's identity for a null sender)


Deliver = Callable[[IncomingMessage], Awaitable[None]]


def special_code(localpart: str) -> int | str | None:
    """mox's localserve special localpart rule (spec §7.3): a code, "timeout" or None."""
    if localpart.endswith("temperror"):
        return 451
    if localpart.endswith("permerror"):
        return 550
    if localpart.endswith("timeout"):
        return "timeout"
    tail = localpart[-3:]
    # ASCII digits only, as Go's strconv (int("²²²") raises).  mox takes 400-600, but 600
    # is no SMTP reply code (RFC 5321 §4.2: the first digit is 2 to 5): 400-599 here.
    if len(tail) == 3 and tail.isascii() and tail.isdigit() and 400 <= int(tail) <= 599:
        return int(tail)
    return None


def special_reply(code: int | str) -> Reply | HoldReply:
    if code == "timeout":
        return HoldReply(Reply(451, "4.3.0", "timing out command due to special localpart"))
    assert isinstance(code, int)
    return Reply(code, f"{code // 100}.0.0", f"failure with code {code} due to special localpart")


def _raise_special(localpart: str) -> None:
    code = special_code(localpart)
    if code is not None:
        raise special_reply(code)


@attrs.define(eq=False)
class IncomingBackend:
    config: Config
    accounts: Accounts
    deliver: Deliver
    clock: IReactorTime

    log = Logger()

    async def mail_from(self, session: Session, tx: Transaction) -> None:
        if self.config.localserve and tx.mail_from is not None:
            local = tx.mail_from.localpart
            if local.startswith("mailfrom"):
                _raise_special(local)

    async def rcpt_to(self, session: Session, tx: Transaction, address: Address, given: str) -> None:
        if self.config.localserve and address.localpart.startswith("rcptto"):
            _raise_special(address.localpart)
        account = self.accounts.lookup(address)
        if account is None and self.config.localserve and self.config.accounts:
            account = next(iter(self.config.accounts.values()))
        if account is None:
            raise Reply(550, "5.1.1", "no such user")
        tx.state.setdefault("accounts", []).append(account.name)

    async def _deliver(self, message: IncomingMessage) -> None:
        await self.deliver(message)

    async def data(self, session: Session, tx: Transaction, data: bytes) -> None:
        if self.config.localserve:
            for address, _ in tx.recipients:
                _raise_special(address.localpart)
        now = datetime.fromtimestamp(self.clock.seconds(), UTC).astimezone()
        mail_from = "" if tx.mail_from is None else str(tx.mail_from)
        smtputf8 = tx.params.smtputf8
        calls: list[Deferred[None]] = []
        for (address, _), account in zip(tx.recipients, tx.state["accounts"], strict=True):
            with_ = "ESMTPS" if session.tls else "ESMTP"
            header = (
                f"Received: from {session.helo} ([{session.remote_ip}]) by {self.config.hostname}"
                f" with {with_} id {new_token()}\r\n\tfor <{address.smtp_form(smtputf8)}>;"
                f" {email.utils.format_datetime(now)}\r\n"
            ).encode()
            message = IncomingMessage(
                account=account,
                recipient=address,
                mail_from=mail_from,
                data=header + data,
                remote_ip=session.remote_ip,
                tls=session.tls,
                helo=session.helo,
            )
            calls.append(Deferred.fromCoroutine(self._deliver(message)))
        results = await DeferredList(calls, consumeErrors=True)
        failed = [r for ok, r in results if not ok]
        for failure in failed:
            self.log.failure("delivering incoming message", failure)
        if failed:
            raise Reply(451, "4.3.0", "error delivering message, try again later")
