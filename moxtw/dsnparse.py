"""Reading delivery status notifications (RFC 3464) and feedback reports (RFC 5965).

What comes back to a FromID address is one of: a DSN about the message we sent (a bounce,
a delay warning, a relay or delivery notice), an abuse/spam complaint in the Abuse
Reporting Format, or an ordinary message (an auto-reply, a human answering the bounce
address).  :func:`parse_report` tells them apart and extracts what the queue needs.

It is liberal where real MTAs differ from the RFC and mox is strict (moxtw's fix 7): any
part of the ``multipart/report`` may carry the status (not only the second), dates are not
parsed at all (we do not use them, so a weekday or an odd zone cannot spoil a report), a
recipient block with an unknown action is skipped rather than failing the report, and the
SMTP codes are taken from a ``Diagnostic-Code`` of any type (``smtp``, ``X-Postfix``,
Exchange's ``smtp;550 ...`` without a space) whose text starts with a reply code.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.message
import email.policy
import quopri
import re
from collections.abc import Sequence

import attrs

from .message import parse as parse_mime

#: The actions RFC 3464 defines, in the order we prefer them when a report lists several
#: recipients (one FromID address is one recipient, but gateways sometimes add blocks).
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")

_XTEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}|\+([0-9A-Fa-f]{2})")
_COMMENT = re.compile(r"\([^()]*\)")
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


class ReportError(Exception):
    """A ``multipart/report`` whose status part cannot be used; the text says why."""


@attrs.frozen
class RecipientStatus:
    """One per-recipient block of a DSN."""

    final_recipient: str
    action: str
    status: str  # "5.1.1", comment removed
    diagnostic: str = ""  # the Diagnostic-Code text, type removed ("550 5.1.1 no such user")
    code: int = 0  # SMTP reply code derived as mox does (and from Status when absent)
    secode: str = ""  # enhanced code without its class ("1.1")

    @property
    def enhanced_code(self) -> str:
        """The full enhanced code, class digit from the reply code ("5.1.1"), or ""."""
        if not self.secode:
            return ""
        return f"{self.code // 100 if self.code else self.status[:1]}.{self.secode}"


@attrs.frozen
class DeliveryReport:
    """A DSN: who reported, and the status of each recipient it is about."""

    reporting_mta: str
    recipients: tuple[RecipientStatus, ...]

    def primary(self) -> RecipientStatus:
        """The recipient block that decides the event: the most severe action."""
        return min(self.recipients, key=lambda r: ACTIONS.index(r.action))


@attrs.frozen
class FeedbackReport:
    """An ARF report (a complaint about a message we sent)."""

    feedback_type: str  # abuse, fraud, virus, other, not-spam, ...
    user_agent: str
    original_mail_from: str  # without <>
    original_rcpt_to: tuple[str, ...]
    #: Message-ID of the reported message, from the returned headers ("" if absent).
    original_message_id: str
    #: Return-Path of the reported message (our MAIL FROM), from the returned headers.
    original_return_path: str


Report = DeliveryReport | FeedbackReport


def _content_type(part: email.message.Message) -> str:
    return part.get_content_type().lower()


def parse_report(data: bytes) -> Report | None:
    """The report ``data`` carries; None when it is not a ``multipart/report`` at all.

    Raises :class:`ReportError` for a report that has no usable status part.
    """
    top = email.message_from_bytes(data, policy=email.policy.compat32)
    if _content_type(top) != "multipart/report" or not top.is_multipart():
        return None
    parts = [p for p in top.get_payload() if isinstance(p, email.message.Message)]
    raw = _raw_bodies(data, parts)
    for i, part in enumerate(parts):
        kind = _content_type(part)
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            return _delivery_report(part, raw[i])
        if kind == "message/feedback-report":
            return _feedback_report(part, parts, raw[i])
    raise ReportError("no message/delivery-status or message/feedback-report part in multipart/report")


# --- DSN -----------------------------------------------------------------------------


def _raw_bodies(data: bytes, parts: Sequence[email.message.Message]) -> list[bytes | None]:
    """The body bytes, as sent, of each top-level part, found by moxtw's own MIME parser.

    Python's parser takes a ``message/delivery-status`` body apart into header blocks, and
    writing those out again (``as_bytes``) is not faithful: a line without a colon (such as
    the continuation after a quoted-printable soft line break) gets a blank line put before
    it.  None for a part when the two parsers do not agree on the parts.
    """
    root = parse_mime(data)
    if len(root.parts) != len(parts) or any(
        r.content_type != _content_type(p) for r, p in zip(root.parts, parts, strict=True)
    ):
        return [None] * len(parts)
    return [r.raw_body for r in root.parts]


def _body(part: email.message.Message, raw: bytes | None = None) -> str:
    """The decoded text of a status part: from its ``raw`` body bytes when known, else
    however Python's parser took it apart (``message/*`` parts become sub-messages); the
    transfer encoding is undone here."""
    if raw is not None:
        body = raw.replace(b"\r\n", b"\n")
    else:
        head, sep, body = part.as_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")
        if not sep:
            body = b""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            body = base64.b64decode(b"".join(body.split()) + b"==", validate=False)
        except binascii.Error as e:
            raise ReportError(f"bad base64 in status part: {e}") from None
    elif cte == "quoted-printable":
        body = quopri.decodestring(body)
    # A transfer-encoded body keeps its own line ends: CRLF too, which the block split needs
    # as LF (else every block runs together and repeated recipient fields are lost).
    return body.decode("utf-8", "replace").replace("\r\n", "\n")


def _blocks(part: email.message.Message, raw: bytes | None) -> list[dict[str, str]]:
    """The header blocks of a status part: names lowercased, values unfolded, the first
    of a repeated field kept."""
    blocks = []
    for text in re.split(r"\n[ \t]*\n", _body(part, raw)):
        fields: dict[str, str] = {}
        name = ""
        for line in text.split("\n"):
            if not line.strip():
                continue
            if line[0] in " \t" and name:
                fields[name] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                continue
            name = key.strip().lower()
            if name in fields:
                name = ""  # a repeated field: ignore it and its continuation lines
                continue
            fields[name] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _unxtext(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        point = int(m.group(1) or m.group(2), 16)
        if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
            return m.group(0)  # not a character (or a lone surrogate, which cannot be stored)
        return chr(point)

    return _XTEXT.sub(replace, text)


def _typed(value: str) -> tuple[str, str]:
    """``"rfc822; a@b"`` → ("rfc822", "a@b"); a value without a type → ("", value)."""
    kind, sep, rest = value.partition(";")
    if not sep:
        return "", value.strip()
    return kind.strip().lower(), rest.strip()


_REPLY = re.compile(r"^(\d{3})(?:[ -]+([245]\.\d{1,3}\.\d{1,3})\b|\s|$)")


def derive_codes(diagnostic: str, status: str) -> tuple[int, str]:
    """(code, secode) as mox derives them (§6.3), liberal where servers differ.

    A reply code followed by an enhanced code gives both (``550 5.1.1 ...``, also the
    continuation form ``550-5.1.1`` Gmail quotes); a reply code alone takes the enhanced
    code from Status when their classes agree; no reply code: Status ``4.x.x`` or
    ``5.x.x`` gives 400 or 500 and its secode, as mox.
    """
    code, secode = 0, ""
    m = _REPLY.match(diagnostic.strip())
    if m:
        code = int(m.group(1))
        if m.group(2) and m.group(2)[0] in "45":
            secode = m.group(2)[2:]
    s = _STATUS.match(status)
    if code == 0 and s and s.group(1) in "45":
        code = int(s.group(1)) * 100
        secode = status[2:]
    elif code and not secode and s and s.group(1) == str(code // 100):
        secode = status[2:]
    return code, secode


def _delivery_report(part: email.message.Message, raw: bytes | None) -> DeliveryReport:
    blocks = _blocks(part, raw)
    if not blocks:
        raise ReportError("empty delivery-status part")
    per_message, per_recipient = blocks[0], blocks[1:]
    if "final-recipient" in per_message or "action" in per_message:
        # No per-message block (seen from broken gateways): every block is a recipient.
        per_message, per_recipient = {}, blocks
    reporting = _typed(per_message.get("reporting-mta", ""))[1]
    recipients: list[RecipientStatus] = []
    problems: list[str] = []
    for fields in per_recipient:
        action = fields.get("action", "").strip().lower()
        status = _COMMENT.sub("", fields.get("status", "")).strip()
        final = _unxtext(_typed(fields.get("final-recipient", "") or fields.get("original-recipient", ""))[1])
        if action not in ACTIONS:
            problems.append(f"unknown action {action!r}" if action else "recipient block without action")
            continue
        if not status:
            problems.append("recipient block without status")
            continue
        diagnostic = _typed(fields.get("diagnostic-code", ""))[1]
        code, secode = derive_codes(diagnostic, status)
        recipients.append(RecipientStatus(final, action, status, diagnostic, code, secode))
    if not recipients:
        raise ReportError("no usable recipient in delivery-status: " + ("; ".join(problems) or "none listed"))
    return DeliveryReport(reporting, tuple(recipients))


# --- ARF ----------------------------------------------------------------------------


def _angle(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        return value[1:-1].strip()
    return value


def _returned_headers(parts: Sequence[email.message.Message]) -> email.message.Message | None:
    for part in parts:
        kind = _content_type(part)
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                return inner[0]
        if kind in ("text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return email.message_from_bytes(raw, policy=email.policy.compat32)
    return None


def _feedback_report(
    part: email.message.Message, parts: Sequence[email.message.Message], raw: bytes | None
) -> FeedbackReport:
    blocks = _blocks(part, raw)
    if not blocks:
        raise ReportError("empty feedback-report part")
    fields = blocks[0]
    feedback_type = fields.get("feedback-type", "").strip().lower()
    if not feedback_type:
        raise ReportError("feedback report without Feedback-Type")
    rcpt_to = tuple(_angle(v) for k, v in _all_fields(part, raw) if k == "original-rcpt-to")
    headers = _returned_headers(parts)
    message_id = str(headers.get("Message-ID", "") or "").strip() if headers is not None else ""
    return_path = _angle(str(headers.get("Return-Path", "") or "")) if headers is not None else ""
    return FeedbackReport(
        feedback_type=feedback_type,
        user_agent=fields.get("user-agent", ""),
        original_mail_from=_angle(fields.get("original-mail-from", "")),
        original_rcpt_to=rcpt_to,
        original_message_id=message_id,
        original_return_path=return_path,
    )


def _all_fields(part: email.message.Message, raw: bytes | None) -> list[tuple[str, str]]:
    """Every (name, value) of the first block, repeated fields included."""
    first = re.split(r"\n[ \t]*\n", _body(part, raw).lstrip("\n"), maxsplit=1)[0]
    parsed = email.message_from_string(first + "\n\n", policy=email.policy.compat32)
    return [(k.lower(), str(v).strip()) for k, v in parsed.items()]
