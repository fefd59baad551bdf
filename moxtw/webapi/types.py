"""The webapi request/response types and webhook payloads, as Go structs.

Each class mirrors the Go struct of mox's ``webapi`` or ``webhook`` package: same
name, same fields in the same order (that is the JSON order), and field types that map
to the Go types (see :mod:`moxtw.webapi.gojson`).  Instances are frozen, keyword-only
dataclasses; read fields as attributes (``req.MsgID``, ``req.To``).  Zero values:
``""``, ``False``, ``0``, ``None`` for pointers, slices and maps (nil),
:data:`~moxtw.webapi.gojson.ZERO_TIME` for times.  Decode a request with
:func:`~moxtw.webapi.gojson.decode_request`, encode results with
:func:`~moxtw.webapi.gojson.encode_response` / :func:`~moxtw.webapi.gojson.encode_webhook`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated

from moxtw.webapi.gojson import ZERO_TIME, Go, GoInt, gostruct

__all__ = [
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "Error",
    "File",
    "Incoming",
    "IncomingMeta",
    "Message",
    "MessageDeleteRequest",
    "MessageDeleteResult",
    "MessageFlagsAddRequest",
    "MessageFlagsAddResult",
    "MessageFlagsRemoveRequest",
    "MessageFlagsRemoveResult",
    "MessageGetRequest",
    "MessageGetResult",
    "MessageMeta",
    "MessageMoveRequest",
    "MessageMoveResult",
    "MessagePartGetRequest",
    "MessageRawGetRequest",
    "NameAddress",
    "Outgoing",
    "OutgoingEvent",
    "Request",
    "SendRequest",
    "SendResult",
    "Structure",
    "Submission",
    "Suppression",
    "SuppressionAddRequest",
    "SuppressionAddResult",
    "SuppressionListRequest",
    "SuppressionListResult",
    "SuppressionPresentRequest",
    "SuppressionPresentResult",
    "SuppressionRemoveRequest",
    "SuppressionRemoveResult",
    "WebhookNameAddress",
]

# ---------------------------------------------------------------------------------------
# package webhook


@gostruct("webhook", name="NameAddress")
class WebhookNameAddress:
    """``webhook.NameAddress`` (same fields as ``webapi.NameAddress``)."""

    Name: str = ""
    Address: str = ""


@gostruct("webhook")
class Structure:
    """``webhook.Structure``: the MIME tree of a message (also used by MessageGet)."""

    ContentType: str = ""
    ContentTypeParams: dict[str, str] | None = None
    ContentID: str = ""
    ContentDisposition: str = ""
    Filename: str = ""
    DecodedSize: int = 0
    Parts: list[Structure] | None = None


OutgoingEvent = Annotated[str, Go("webhook.OutgoingEvent")]
"""``webhook.OutgoingEvent``: delivered, suppressed, delayed, failed, relayed, expanded,
canceled or unrecognized."""


@gostruct("webhook")
class Outgoing:
    """``webhook.Outgoing``: payload of outgoing delivery event webhooks (spec §3.5)."""

    Version: GoInt = 0
    Event: OutgoingEvent = ""
    DSN: bool = False
    Suppressing: bool = False
    QueueMsgID: int = 0
    FromID: str = ""
    MessageID: str = ""
    Subject: str = ""
    WebhookQueued: datetime = ZERO_TIME
    SMTPCode: GoInt = 0
    SMTPEnhancedCode: str = ""
    Error: str = ""
    Extra: dict[str, str] | None = None


@gostruct("webhook")
class IncomingMeta:
    """``webhook.IncomingMeta``."""

    MsgID: int = 0
    MailFrom: str = ""
    MailFromValidated: bool = False
    MsgFromValidated: bool = False
    RcptTo: str = ""
    DKIMVerifiedDomains: list[str] | None = None
    RemoteIP: str = ""
    Received: datetime = ZERO_TIME
    MailboxName: str = ""
    Automated: bool = False


_Structure = Structure
_IncomingMeta = IncomingMeta


@gostruct("webhook")
class Incoming:
    """``webhook.Incoming``: payload of incoming message webhooks (spec §3.7)."""

    Version: GoInt = 0
    From: list[WebhookNameAddress] | None = None
    To: list[WebhookNameAddress] | None = None
    CC: list[WebhookNameAddress] | None = None
    BCC: list[WebhookNameAddress] | None = None
    ReplyTo: list[WebhookNameAddress] | None = None
    Subject: str = ""
    MessageID: str = ""
    InReplyTo: str = ""
    References: list[str] | None = None
    Date: datetime | None = None
    Text: str = ""
    HTML: str = ""
    Structure: _Structure = _Structure()
    Meta: _IncomingMeta = _IncomingMeta()


# ---------------------------------------------------------------------------------------
# package webapi


@gostruct("webapi")
class Error:
    """``webapi.Error``: body of every 400 response (spec §1.4)."""

    Code: str = ""
    Message: str = ""


@gostruct("webapi")
class NameAddress:
    Name: str = ""
    Address: str = ""


@gostruct("webapi")
class Message:
    """``webapi.Message`` (part of MessageGetResult; inlined in SendRequest)."""

    From: list[NameAddress] | None = None
    To: list[NameAddress] | None = None
    CC: list[NameAddress] | None = None
    BCC: list[NameAddress] | None = None
    ReplyTo: list[NameAddress] | None = None
    MessageID: str = ""
    References: list[str] | None = None
    Date: datetime | None = None
    Subject: str = ""
    Text: str = ""
    HTML: str = ""


@gostruct("webapi")
class File:
    Name: str = ""
    ContentType: str = ""
    ContentID: str = ""
    Data: str = ""  # standard base64


@gostruct("webapi")
class SendRequest:
    """``webapi.SendRequest``: the fields of the embedded ``Message``, then the rest."""

    From: list[NameAddress] | None = None
    To: list[NameAddress] | None = None
    CC: list[NameAddress] | None = None
    BCC: list[NameAddress] | None = None
    ReplyTo: list[NameAddress] | None = None
    MessageID: str = ""
    References: list[str] | None = None
    Date: datetime | None = None
    Subject: str = ""
    Text: str = ""
    HTML: str = ""
    Extra: dict[str, str] | None = None
    Headers: list[tuple[str, str]] | None = None
    AlternativeFiles: list[File] | None = None
    InlineFiles: list[File] | None = None
    AttachedFiles: list[File] | None = None
    RequireTLS: bool | None = None
    FutureRelease: datetime | None = None
    SaveSent: bool = False

    @property
    def message(self) -> Message:
        """The embedded ``Message`` (Go's ``req.Message``)."""
        return Message(
            From=self.From,
            To=self.To,
            CC=self.CC,
            BCC=self.BCC,
            ReplyTo=self.ReplyTo,
            MessageID=self.MessageID,
            References=self.References,
            Date=self.Date,
            Subject=self.Subject,
            Text=self.Text,
            HTML=self.HTML,
        )


@gostruct("webapi")
class Submission:
    Address: str = ""
    QueueMsgID: int = 0
    FromID: str = ""


@gostruct("webapi")
class SendResult:
    MessageID: str = ""
    Submissions: list[Submission] | None = None


@gostruct("webapi")
class Suppression:
    ID: int = 0
    Created: datetime = ZERO_TIME
    Account: str = ""
    BaseAddress: str = ""
    OriginalAddress: str = ""
    Manual: bool = False
    Reason: str = ""


@gostruct("webapi")
class SuppressionListRequest:
    pass


@gostruct("webapi")
class SuppressionListResult:
    Suppressions: list[Suppression] | None = None


@gostruct("webapi")
class SuppressionAddRequest:
    EmailAddress: str = ""
    Manual: bool = False
    Reason: str = ""


@gostruct("webapi")
class SuppressionAddResult:
    pass


@gostruct("webapi")
class SuppressionRemoveRequest:
    EmailAddress: str = ""


@gostruct("webapi")
class SuppressionRemoveResult:
    pass


@gostruct("webapi")
class SuppressionPresentRequest:
    EmailAddress: str = ""


@gostruct("webapi")
class SuppressionPresentResult:
    Present: bool = False


@gostruct("webapi")
class MessageGetRequest:
    MsgID: int = 0


@gostruct("webapi")
class MessageMeta:
    Size: int = 0
    DSN: bool = False
    Flags: list[str] | None = None
    MailFrom: str = ""
    MailFromValidated: bool = False
    RcptTo: str = ""
    MsgFrom: str = ""
    MsgFromValidated: bool = False
    DKIMVerifiedDomains: list[str] | None = None
    RemoteIP: str = ""
    MailboxName: str = ""


_Message = Message
_MessageMeta = MessageMeta


@gostruct("webapi")
class MessageGetResult:
    Message: _Message = _Message()
    Structure: _Structure = _Structure()
    Meta: _MessageMeta = _MessageMeta()


@gostruct("webapi")
class MessageRawGetRequest:
    MsgID: int = 0


@gostruct("webapi")
class MessagePartGetRequest:
    MsgID: int = 0
    PartPath: list[GoInt] | None = None


@gostruct("webapi")
class MessageDeleteRequest:
    MsgID: int = 0


@gostruct("webapi")
class MessageDeleteResult:
    pass


@gostruct("webapi")
class MessageFlagsAddRequest:
    MsgID: int = 0
    Flags: list[str] | None = None


@gostruct("webapi")
class MessageFlagsAddResult:
    pass


@gostruct("webapi")
class MessageFlagsRemoveRequest:
    MsgID: int = 0
    Flags: list[str] | None = None


@gostruct("webapi")
class MessageFlagsRemoveResult:
    pass


@gostruct("webapi")
class MessageMoveRequest:
    MsgID: int = 0
    DestMailboxName: str = ""


@gostruct("webapi")
class MessageMoveResult:
    pass


Request = (
    SendRequest
    | SuppressionListRequest
    | SuppressionAddRequest
    | SuppressionRemoveRequest
    | SuppressionPresentRequest
    | MessageGetRequest
    | MessageRawGetRequest
    | MessagePartGetRequest
    | MessageDeleteRequest
    | MessageFlagsAddRequest
    | MessageFlagsRemoveRequest
    | MessageMoveRequest
)
"""Any webapi request."""

REQUEST_TYPES: Mapping[str, type[Request]] = {
    "Send": SendRequest,
    "SuppressionList": SuppressionListRequest,
    "SuppressionAdd": SuppressionAddRequest,
    "SuppressionRemove": SuppressionRemoveRequest,
    "SuppressionPresent": SuppressionPresentRequest,
    "MessageGet": MessageGetRequest,
    "MessageRawGet": MessageRawGetRequest,
    "MessagePartGet": MessagePartGetRequest,
    "MessageDelete": MessageDeleteRequest,
    "MessageFlagsAdd": MessageFlagsAddRequest,
    "MessageFlagsRemove": MessageFlagsRemoveRequest,
    "MessageMove": MessageMoveRequest,
}
"""The 12 webapi methods (exact, case-sensitive names) and their request types."""

RESPONSE_TYPES: Mapping[str, type | None] = {
    "Send": SendResult,
    "SuppressionList": SuppressionListResult,
    "SuppressionAdd": SuppressionAddResult,
    "SuppressionRemove": SuppressionRemoveResult,
    "SuppressionPresent": SuppressionPresentResult,
    "MessageGet": MessageGetResult,
    "MessageRawGet": None,  # the raw message bytes
    "MessagePartGet": None,  # the part's decoded content
    "MessageDelete": MessageDeleteResult,
    "MessageFlagsAdd": MessageFlagsAddResult,
    "MessageFlagsRemove": MessageFlagsRemoveResult,
    "MessageMove": MessageMoveResult,
}
"""Response type per method; ``None`` for methods answering with a byte stream."""
