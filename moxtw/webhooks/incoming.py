"""Incoming webhook bodies: mox's ``webhook.Incoming`` (spec §3.7).

:func:`incoming_payload` builds the JSON body for a stored message from its bytes, with
the same parsing MessageGet uses (:mod:`moxtw.message`; ``Structure`` is MessageGet's).
:func:`incoming_hook` prepares the :class:`~moxtw.store.webhooks.IncomingHook` that
:func:`moxtw.store.messages.deliver` queues in the transaction storing the message (the
message ID, ``Meta.MsgID``, is only known there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from .. import message as m
from ..config import AccountConfig
from ..store.messages import DeliveryMeta
from ..store.webhooks import IncomingHook
from ..webapi import types as t
from ..webapi.gojson import encode_webhook
from ..webapi.messages import to_structure
from .signing import new_webhook_id

__all__ = ["incoming_body", "incoming_hook", "incoming_payload"]


def _names(values: list[m.NameAddress]) -> list[t.WebhookNameAddress]:
    return [t.WebhookNameAddress(Name=v.name, Address=v.address) for v in values]


def _time(value: float | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)


def incoming_body(
    data: bytes,
    *,
    msg_id: int = 0,
    mail_from: str = "",
    mail_from_validated: bool = False,
    msg_from_validated: bool = False,
    rcpt_to: str = "",
    dkim_domains: Sequence[str] = (),
    remote_ip: str = "",
    received: float | datetime,
    mailbox: str = "Inbox",
) -> t.Incoming:
    """The ``Incoming`` of a message (``data`` as stored, headers included)."""
    part = m.parse(data)
    env = m.envelope(part)
    text, html, _ = m.readable_parts(part)
    return t.Incoming(
        Version=0,
        From=_names(env.from_),
        To=_names(env.to),
        CC=_names(env.cc),
        BCC=_names(env.bcc),
        ReplyTo=_names(env.reply_to),
        Subject=env.subject,
        MessageID=env.message_id,
        InReplyTo=env.in_reply_to,
        References=list(env.referenced_ids),
        Date=env.date,
        Text=text,
        HTML=html,
        Structure=to_structure(m.structure(part)),
        Meta=t.IncomingMeta(
            MsgID=msg_id,
            MailFrom=mail_from,
            MailFromValidated=mail_from_validated,
            MsgFromValidated=msg_from_validated,
            RcptTo=rcpt_to,
            DKIMVerifiedDomains=list(dkim_domains),
            RemoteIP=remote_ip,
            Received=_time(received),
            MailboxName=mailbox,
            Automated=m.is_automated(part, mail_from),
        ),
    )


def encode_incoming(body: t.Incoming, msg_id: int | None = None) -> str:
    """JSON of ``body`` (with ``Meta.MsgID`` set to ``msg_id`` if given)."""
    if msg_id is not None:
        body = dataclasses.replace(body, Meta=dataclasses.replace(body.Meta, MsgID=msg_id))
    return encode_webhook(body).decode("utf-8")


def incoming_payload(
    data: bytes,
    *,
    msg_id: int,
    mail_from: str = "",
    mail_from_validated: bool = False,
    msg_from_validated: bool = False,
    rcpt_to: str = "",
    dkim_domains: Sequence[str] = (),
    remote_ip: str = "",
    received: float | datetime,
    mailbox: str = "Inbox",
) -> str:
    """The JSON body of the incoming webhook for message ``msg_id`` (``json.Marshal``:
    HTML-escaped, no newline)."""
    return encode_incoming(
        incoming_body(
            data,
            msg_id=msg_id,
            mail_from=mail_from,
            mail_from_validated=mail_from_validated,
            msg_from_validated=msg_from_validated,
            rcpt_to=rcpt_to,
            dkim_domains=dkim_domains,
            remote_ip=remote_ip,
            received=received,
            mailbox=mailbox,
        )
    )


def incoming_hook(
    account: AccountConfig | None,
    data: bytes,
    *,
    meta: DeliveryMeta,
    received: float,
    mailbox: str = "Inbox",
    from_id: str = "",
) -> IncomingHook | None:
    """The incoming webhook to queue with a message delivered over SMTP, or None when the
    account has no incoming webhook.  Parsing happens here, outside the transaction;
    only ``Meta.MsgID`` is filled in there."""
    if account is None or account.incoming_webhook is None or not account.incoming_webhook.url:
        return None
    config = account.incoming_webhook
    body = incoming_body(
        data,
        mail_from=meta.mail_from,
        mail_from_validated=meta.mail_from_validated,
        msg_from_validated=meta.msg_from_validated,
        rcpt_to=meta.rcpt_to,
        dkim_domains=meta.dkim_domains,
        remote_ip=meta.remote_ip,
        received=received,
        mailbox=mailbox,
    )
    return IncomingHook(
        url=config.url,
        authorization=config.authorization,
        payload=lambda msg_id: encode_incoming(body, msg_id),
        webhook_id=new_webhook_id(),
        from_id=from_id,
    )
