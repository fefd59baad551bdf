"""SMTP submission: authenticated clients queue messages exactly like webapi Send.

The envelope and the message are checked like mox does (MAIL FROM and the From header
must belong to the authenticated account), then :class:`moxtw.submit.Submitter` queues
one row per recipient, sharing one message file, with the same FromID, limit and hold
rules as the webapi; the 250 reply to DATA is sent only after that commit (message file
and rows fsynced).  ``X-Mox-Extra-*`` headers become Extra (spec §8) and stay in the
message.  localserve special recipient localparts are queued like any other and fail at
delivery (moxtw's fix 15).
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import os
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .. import metrics
from ..accounts import Accounts
from ..address import Address, AddressError, parse_address
from ..config import Config
from ..submit import Recipient, Submission, SubmitError, Submitter, received_header
from ..webapi.compose import new_token
from .extra import DuplicateExtraKey, header_fields, parse_extra
from .server import Reply, Session, Transaction

__all__ = ["SubmissionBackend", "decode_subject"]


def decode_subject(value: str) -> str:
    """RFC 2047-decode a Subject value (raw UTF-8 is kept as is)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


_LIMIT_REPLIES = {
    "messageLimitReached": Reply(451, "4.5.3", "max number of messages per day reached, try again later"),
    "recipientLimitReached": Reply(451, "4.5.3", "max number of new recipients per day reached, try again later"),
}


@attrs.define(eq=False)
class SubmissionBackend:
    config: Config
    accounts: Accounts
    submitter: Submitter
    clock: IReactorTime
    random_bytes: Callable[[int], bytes] = os.urandom

    log = Logger()

    async def mail_from(self, session: Session, tx: Transaction) -> None:
        login = session.login
        assert login is not None  # the server asks for AUTH first
        address = tx.mail_from
        if address is None or not self.accounts.may_send_from(login.account, address):
            metrics.submission("smtp", "badfrom")
            raise Reply(550, "5.7.1", "must match authenticated user")
        domain = self.accounts.domain(address.domain)
        if domain is not None and domain.disabled:
            metrics.submission("smtp", "domaindisabled")
            raise Reply(450, "4.7.0", "domain of mail from address is temporarily disabled")
        # A FromID login may pick its own FromID: MAIL FROM base+<id>@domain (mox does the
        # same).  MAIL FROM equal to the login address itself gets generated FromIDs, as in
        # a webapi Send whose From defaults to the login address.
        if login.fromid and domain is not None and domain.catchall_separators:
            sep = domain.catchall_separators[0]
            base, found, from_id = address.localpart.partition(sep)
            same_as_login = (
                address.domain == login.address.domain
                and address.localpart.lower() == login.address.localpart.lower()
            )
            if found and from_id and not same_as_login:
                tx.state["from_id"] = from_id

    async def rcpt_to(self, session: Session, tx: Transaction, address: Address, given: str) -> None:
        return None  # any recipient is queued; delivery decides

    async def data(self, session: Session, tx: Transaction, data: bytes) -> None:
        login = session.login
        assert login is not None and tx.mail_from is not None
        fields = header_fields(data)
        try:
            extra = parse_extra(fields)
        except DuplicateExtraKey as e:
            metrics.submission("smtp", "badmessage")
            raise Reply(554, "5.6.0", str(e)) from None
        values: dict[str, list[str]] = {}
        for name, value in fields:
            values.setdefault(name.lower(), []).append(value)
        froms = values.get("from", [])
        if len(froms) != 1:
            metrics.submission("smtp", "badmessage")
            raise Reply(550, "5.7.1", "message requires a single From header")
        addresses = email.utils.getaddresses(froms)
        if not addresses:
            metrics.submission("smtp", "badmessage")
            raise Reply(550, "5.7.1", "message requires a From address")
        for _, addr in addresses:
            try:
                parsed = parse_address(addr)
            except AddressError:
                metrics.submission("smtp", "badfrom")
                raise Reply(550, "5.7.1", "message from address must belong to authenticated user") from None
            if not self.accounts.may_send_from(login.account, parsed):
                metrics.submission("smtp", "badfrom")
                raise Reply(550, "5.7.1", "message from address must belong to authenticated user")

        now_s = self.clock.seconds()
        now = datetime.fromtimestamp(now_s, UTC)
        recipients = [addr for addr, _ in tx.recipients]
        smtputf8 = tx.params.smtputf8
        prefix = received_header(
            self.config.hostname,
            recipients,
            now,
            smtputf8,
            from_clause=f"{session.helo} ([{session.remote_ip}])",
            with_clause="ESMTPSA" if session.tls else "ESMTPA",
        )
        # Like mox, add Message-Id and Date when the client left them out.
        message_id = values.get("message-id", [""])[0].strip()
        if not message_id:
            message_id = f"<{new_token(self.random_bytes)}@{self.config.hostname}>"
            prefix += f"Message-Id: {message_id}\r\n".encode()
        if "date" not in values:
            prefix += f"Date: {email.utils.format_datetime(now.astimezone())}\r\n".encode()
        require_tls: bool | None = None
        if tx.params.require_tls:
            require_tls = True
        elif any(v.strip().lower() == "no" for v in values.get("tls-required", [])):
            require_tls = False
        submission = Submission(
            account=login.account,
            sender=tx.mail_from,
            recipients=[Recipient(addr, given) for addr, given in tx.recipients],
            data=data,
            prefix=prefix,
            now=now_s,
            next_attempt=tx.params.hold_until if tx.params.hold_until is not None else now_s,
            use_fromid=login.fromid,
            explicit_from_id=str(tx.state.get("from_id", "")),
            message_id=message_id,
            subject=decode_subject(values.get("subject", [""])[0]),
            has_8bit=not data.isascii(),
            smtputf8=smtputf8,
            require_tls=require_tls,
            future_release_request=tx.params.future_release_request,
            extra=extra,
        )
        try:
            await self.submitter.submit(submission, "smtp")
        except SubmitError as e:
            metrics.submission("smtp", e.code)
            if e.code in _LIMIT_REPLIES:
                raise _LIMIT_REPLIES[e.code] from None
            if e.code == "fromid":
                raise Reply(554, "5.1.7", f"bad fromid in smtp mail from address: {e.message}") from None
            if e.code == "user":
                raise Reply(554, "5.7.0", e.message) from None
            raise Reply(451, "4.3.0", "error queueing message, try again later") from None
        metrics.submission("smtp", "ok")
