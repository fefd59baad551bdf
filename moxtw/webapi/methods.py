"""The webapi methods: Send and the suppression list.

Each method takes the authenticated :class:`~moxtw.accounts.Login` and the decoded request
and returns the response object, or raises :class:`~moxtw.webapi.errors.WebAPIError`.
Validation follows mox's order and codes (spec §2.2.1) with moxtw's fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.logger import Logger

from .. import __version__, metrics
from ..accounts import Accounts, Login
from ..address import Address, AddressError, base_address, has_control_chars, parse_address
from ..config import Config
from ..dkim import Signer
from ..store import Store
from ..store.messages import DeliveryMeta, deliver
from ..store.suppressions import (
    SuppressionError,
    add_suppression,
    list_suppressions,
    remove_suppression,
    suppression_present,
)
from ..submit import Recipient, Submission, SubmitError, Submitter, received_header
from . import compose as c
from . import types as t
from .compose import token_bytes
from .errors import WebAPIError
from .gojson import ZERO_TIME, format_time
from .http import UploadedFile

MAX_FUTURE_RELEASE = timedelta(days=60)

CONTROL_CHARS = "checking header values: control characters not allowed"


def _name_addresses(values: Sequence[t.NameAddress] | None) -> list[c.NameAddress]:
    out = []
    for v in values or ():
        if has_control_chars(v.Name):
            raise WebAPIError("user", CONTROL_CHARS)
        try:
            address = parse_address(v.Address)
        except AddressError as e:
            raise WebAPIError("badAddress", str(e)) from None
        out.append(c.NameAddress(name=v.Name, address=address))
    return out


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except AddressError as e:
        raise WebAPIError("badAddress", str(e)) from None


def _files(files: Sequence[t.File] | None, uploads: Sequence[UploadedFile], field: str) -> list[c.File]:
    out = []
    for f in files or ():
        try:
            data = c.decode_file_data(f.Data)
        except c.ComposeError as e:
            raise WebAPIError(e.code, e.message) from None
        out.append(c.File(name=f.Name, content_type=f.ContentType, content_id=f.ContentID, data=data))
    for u in uploads:
        if u.field == field:
            out.append(
                c.File(name=u.filename, content_type=u.content_type or "", content_id=u.content_id, data=u.data)
            )
    return out


@attrs.define(eq=False)
class Methods:
    config: Config
    accounts: Accounts
    store: Store
    clock: Any
    #: Called after messages were queued, so the queue can look at them right away.
    on_queued: Callable[[], None] = lambda: None
    random_bytes: Callable[[int], bytes] = token_bytes
    #: DKIM-signs Sends (None: nothing is signed); see :func:`moxtw.dkim.build_signer`.
    signer: Signer | None = None

    log = Logger()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    # --- Send --------------------------------------------------------------------

    async def Send(self, login: Login, req: t.SendRequest, uploads: Sequence[UploadedFile] = ()) -> t.SendResult:
        account = login.account
        if req.Text == "" and req.HTML == "":
            raise WebAPIError("missingBody", "at least text or html body required")
        from_values = req.From or [t.NameAddress(Name=account.full_name, Address=str(login.address))]
        if len(from_values) > 1:
            raise WebAPIError("multipleFrom", "multiple from-addresses not allowed")
        (sender,) = _name_addresses(from_values)
        to = _name_addresses(req.To)
        cc = _name_addresses(req.CC)
        bcc = _name_addresses(req.BCC)

        domain = self.accounts.domain(sender.address.domain)
        if not self.accounts.may_send_from(account, sender.address):
            metrics.submission("webapi", "badfrom")
            raise WebAPIError("badFrom", "from-address not configured for account")
        assert domain is not None
        if domain.disabled:
            metrics.submission("webapi", "domaindisabled")
            raise WebAPIError("domainDisabled", "domain of from-address is temporarily disabled")
        recipients = [*to, *cc, *bcc]
        if not recipients:
            raise WebAPIError("noRecipients", "no recipients")
        reply_to = _name_addresses(req.ReplyTo)

        now = self.now()
        inp = c.ComposeInput(
            from_=sender,
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            subject=req.Subject,
            text=req.Text,
            html=req.HTML,
            message_id=req.MessageID,
            references=req.References or [],
            date=None if req.Date is None or req.Date == ZERO_TIME else req.Date,
            headers=[(h[0], h[1]) for h in req.Headers or []],
            alternative_files=_files(req.AlternativeFiles, uploads, "alternativefile"),
            inline_files=_files(req.InlineFiles, uploads, "inlinefile"),
            attached_files=_files(req.AttachedFiles, uploads, "attachedfile"),
        )
        try:
            composed = c.compose(
                inp,
                hostname=self.config.hostname,
                now=now.astimezone(),
                max_size=self.config.max_message_size,
                version=__version__,
                random_bytes=self.random_bytes,
            )
        except c.ComposeError as e:
            raise WebAPIError(e.code, e.message) from None

        next_attempt = now
        future_release_request = ""
        if req.FutureRelease is not None and req.FutureRelease != ZERO_TIME:
            if req.FutureRelease - now > MAX_FUTURE_RELEASE:
                raise WebAPIError(
                    "user",
                    "scheduling delivery: date/time can not be further than 1440h0m0s in the future",
                )
            next_attempt = max(req.FutureRelease, now)
            future_release_request = "until;" + format_time(req.FutureRelease)

        shared_prefix = received_header(self.config.hostname, [r.address for r in recipients], now, composed.smtputf8)
        given = [v.Address for values in (req.To, req.CC, req.BCC) for v in values or ()]
        submission = Submission(
            account=account,
            sender=sender.address,
            recipients=[Recipient(r.address, g) for r, g in zip(recipients, given, strict=True)],
            data=composed.data,
            prefix=shared_prefix,
            now=now.timestamp(),
            next_attempt=next_attempt.timestamp(),
            use_fromid=login.fromid,
            message_id=composed.message_id,
            subject=req.Subject,
            has_8bit=composed.smtputf8,
            smtputf8=composed.smtputf8,
            require_tls=req.RequireTLS,
            future_release_request=future_release_request,
            extra=req.Extra,
        )
        submitter = Submitter(self.config, self.store, self.random_bytes, self.on_queued, self.signer)
        try:
            messages, ids = await submitter.submit(submission, "webapi")
        except SubmitError as e:
            metrics.submission("webapi", e.code)
            raise WebAPIError(e.code, e.message) from None
        if req.SaveSent:
            # The Sent copy carries the DKIM-Signature headers too, after Bcc (§2.2.5).
            signature = messages[0].prefix[len(submission.prefix) :]
            await self._save_sent(login, signature + composed.data, bcc, composed.smtputf8)
        metrics.submission("webapi", "ok")
        return t.SendResult(
            MessageID=composed.message_id,
            Submissions=[
                t.Submission(Address=m.recipient_address, QueueMsgID=i, FromID=m.from_id)
                for m, i in zip(messages, ids, strict=True)
            ],
        )

    async def _save_sent(self, login: Login, data: bytes, bcc: Sequence[c.NameAddress], utf8: bool) -> None:
        """A copy in the account's Sent mailbox, ``\\Seen`` and ``$NotJunk``, with a Bcc header.

        The message is already queued; a failure here is a ``server`` error, as in mox.
        """
        prefix = b""
        if bcc:
            prefix = ("Bcc: " + ", ".join(c.format_address(b.name, b.address, utf8) for b in bcc) + "\r\n").encode()
        try:
            await deliver(
                self.store,
                login.account.name,
                "Sent",
                prefix + data,
                flags=["\\Seen", "$NotJunk"],
                received=self.clock.seconds(),
                meta=DeliveryMeta(msg_from=""),
            )
        except Exception:
            self.log.failure("saving sent message")
            metrics.submission("webapi", "storesenterror")
            raise WebAPIError("server", "message was sent, but not stored in sent mailbox") from None

    # --- suppression list --------------------------------------------------------

    async def SuppressionList(self, login: Login, req: t.SuppressionListRequest) -> t.SuppressionListResult:
        rows = await self.store.db.run("list suppressions", list_suppressions, login.account.name)
        # mox lists an account's suppressions in the order of its (Account, BaseAddress)
        # index, i.e. by base address (bytewise), not by ID (golden special_mailfrom_permerror).
        rows = sorted(rows, key=lambda r: r.base_address.encode("utf-8"))
        return t.SuppressionListResult(
            Suppressions=[
                t.Suppression(
                    ID=r.id,
                    Created=datetime.fromtimestamp(r.created, UTC),
                    Account=r.account,
                    BaseAddress=r.base_address,
                    OriginalAddress=r.original_address,
                    Manual=r.manual,
                    Reason=r.reason,
                )
                for r in rows
            ]
        )

    async def SuppressionAdd(self, login: Login, req: t.SuppressionAddRequest) -> t.SuppressionAddResult:
        address = _address(req.EmailAddress)
        try:
            await self.store.db.run_batched(
                "add suppression",
                add_suppression,
                login.account.name,
                base_address(address),
                str(address),
                req.Manual,
                req.Reason,
                self.clock.seconds(),
            )
        except SuppressionError as e:
            raise WebAPIError("user", str(e)) from None
        metrics.suppressions_added.labels("api").inc()
        return t.SuppressionAddResult()

    async def SuppressionRemove(self, login: Login, req: t.SuppressionRemoveRequest) -> t.SuppressionRemoveResult:
        address = _address(req.EmailAddress)
        try:
            await self.store.db.run_batched(
                "remove suppression", remove_suppression, login.account.name, base_address(address)
            )
        except SuppressionError as e:
            raise WebAPIError("user", str(e)) from None
        return t.SuppressionRemoveResult()

    async def SuppressionPresent(self, login: Login, req: t.SuppressionPresentRequest) -> t.SuppressionPresentResult:
        address = _address(req.EmailAddress)
        present = await self.store.db.run(
            "suppression present", suppression_present, login.account.name, base_address(address)
        )
        return t.SuppressionPresentResult(Present=present)

