"""The webapi's Message* methods over the account message store (spec §2.7-2.12).

Every method takes the authenticated :class:`~moxtw.accounts.Login` and the decoded
request, like :class:`~moxtw.webapi.methods.Methods`.  MessageRawGet and MessagePartGet
answer with a :class:`RawResult` (bytes and a content type) instead of a JSON object.

moxtw's fix 13: a missing or expunged message is ``messageNotFound`` in every method
(mox answers ``user`` for an expunged message in Delete/Flags/Move).  MsgID 0 names no
message, so it is ``messageNotFound`` too (mox: ``server``/``user``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from .. import message as m
from ..accounts import Login
from ..store import Store
from ..store import messages as sm
from . import types as t
from .errors import WebAPIError

__all__ = ["MessageMethods", "RawResult"]


@attrs.frozen
class RawResult:
    """A non-JSON answer: the body and its Content-Type."""

    data: bytes
    content_type: str

    def write(self, request: IRequest) -> bytes:
        """Set the headers on ``request`` and return the body to answer with."""
        request.setHeader(b"content-type", self.content_type.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % len(self.data))
        return self.data


def _not_found(e: sm.MessageNotFound, prefix: str = "getting message: ") -> WebAPIError:
    return WebAPIError("messageNotFound", prefix + str(e))


def _names(values: list[m.NameAddress]) -> list[t.NameAddress]:
    return [t.NameAddress(Name=v.name, Address=v.address) for v in values]


def to_structure(node: m.StructureNode) -> t.Structure:
    return t.Structure(
        ContentType=node.content_type,
        ContentTypeParams=dict(node.content_type_params),
        ContentID=node.content_id,
        ContentDisposition=node.content_disposition,
        Filename=node.filename,
        DecodedSize=node.decoded_size,
        Parts=[to_structure(p) for p in node.parts],
    )


@attrs.define(eq=False)
class MessageMethods:
    store: Store
    #: mox's pedantic mode (localserve): a keyword given twice is an error.
    pedantic: bool = False

    log = Logger()

    async def _load(self, login: Login, msg_id: int) -> tuple[sm.MessageRow, bytes]:
        """Row and contents for Get/RawGet/PartGet ("message not found" otherwise)."""
        try:
            row = await self.store.db.run("get message", sm.get_message, login.account.name, msg_id)
        except sm.MessageNotFound:
            raise WebAPIError("messageNotFound", "message not found") from None
        try:
            data = await self.store.blobs.get(row.blob)
        except KeyError:
            self.log.error("message {id} has no file {blob}", id=msg_id, blob=row.blob)
            raise WebAPIError("server", "get message: message file missing") from None
        return row, data

    async def MessageGet(self, login: Login, req: t.MessageGetRequest) -> t.MessageGetResult:
        row, data = await self._load(login, req.MsgID)
        part = m.parse(data)
        env = m.envelope(part)
        text, html, _ = m.readable_parts(part)
        message = t.Message(
            From=_names(env.from_),
            To=_names(env.to),
            CC=_names(env.cc),
            BCC=_names(env.bcc),
            ReplyTo=_names(env.reply_to),
            MessageID=env.message_id,
            References=list(env.references),
            Date=env.date,
            Subject=env.subject,
            Text=text,
            HTML=html,
        )
        meta = t.MessageMeta(
            Size=row.size,
            DSN=row.dsn,
            Flags=row.all_flags,
            MailFrom=row.mail_from,
            MailFromValidated=row.mail_from_validated,
            RcptTo=row.rcpt_to,
            MsgFrom=row.msg_from,
            MsgFromValidated=row.msg_from_validated,
            DKIMVerifiedDomains=list(row.dkim_domains),
            RemoteIP=row.remote_ip,
            MailboxName=row.mailbox_name,
        )
        return t.MessageGetResult(Message=message, Structure=to_structure(m.structure(part)), Meta=meta)

    async def MessageRawGet(self, login: Login, req: t.MessageRawGetRequest) -> RawResult:
        _, data = await self._load(login, req.MsgID)
        return RawResult(data, "text/plain")

    async def MessagePartGet(self, login: Login, req: t.MessagePartGetRequest) -> RawResult:
        _, data = await self._load(login, req.MsgID)
        try:
            part = m.find_part(m.parse(data), req.PartPath or [])
        except m.PartNotFound as e:
            raise WebAPIError("partNotFound", str(e)) from None
        content = part.content()
        return RawResult(content, m.sniff_content_type(content))

    async def MessageDelete(self, login: Login, req: t.MessageDeleteRequest) -> t.MessageDeleteResult:
        try:
            blob = await self.store.db.run_batched(
                "expunge message", sm.expunge_message, login.account.name, req.MsgID
            )
        except sm.MessageNotFound as e:
            raise _not_found(e) from None
        try:
            await self.store.blobs.delete([blob])
        except Exception:
            self.log.failure("removing file of expunged message {id}", id=req.MsgID)
        return t.MessageDeleteResult()

    def _flags(self, values: list[str] | None) -> tuple[frozenset[str], list[str]]:
        try:
            return sm.parse_flags(values or [], pedantic=self.pedantic)
        except sm.FlagsError as e:
            raise WebAPIError("user", f"parsing flags: {e}") from None

    async def _update_flags(self, login: Login, msg_id: int, values: list[str] | None, add: bool) -> None:
        columns, keywords = self._flags(values)
        try:
            await self.store.db.run_batched(
                "update flags", sm.update_flags, login.account.name, msg_id, columns, keywords, add
            )
        except sm.MessageNotFound as e:
            raise _not_found(e) from None

    async def MessageFlagsAdd(self, login: Login, req: t.MessageFlagsAddRequest) -> t.MessageFlagsAddResult:
        await self._update_flags(login, req.MsgID, req.Flags, True)
        return t.MessageFlagsAddResult()

    async def MessageFlagsRemove(
        self, login: Login, req: t.MessageFlagsRemoveRequest
    ) -> t.MessageFlagsRemoveResult:
        await self._update_flags(login, req.MsgID, req.Flags, False)
        return t.MessageFlagsRemoveResult()

    async def MessageMove(self, login: Login, req: t.MessageMoveRequest) -> t.MessageMoveResult:
        try:
            await self.store.db.run_batched(
                "move message", sm.move_message, login.account.name, req.MsgID, req.DestMailboxName
            )
        except sm.MessageNotFound as e:
            raise _not_found(e) from None
        except sm.MailboxNotFound:
            raise WebAPIError("user", "looking up mailbox name: not found") from None
        except sm.AlreadyInMailbox as e:
            raise WebAPIError("user", f"moving message: {e}") from None
        return t.MessageMoveResult()


def received_time(row: sm.MessageRow) -> datetime:
    """The row's receive time as an aware datetime (for webhooks' ``Meta.Received``)."""
    return datetime.fromtimestamp(row.received, UTC)
