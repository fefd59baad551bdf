"""The admin API's JSON types, as Go structs of mox's ``queue`` and ``dns`` packages
(spec §3.4, §4.1, §4.4–4.6), and their conversion from store rows.

Field names and order are mox's.  ``[]byte`` fields (``MsgPrefix``, ``DSNUTF8``) are
base64 strings in JSON, declared here as ``str | None`` (``null`` when nil).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ..address import domain_to_ascii
from ..store.admin import QueueItem, RetiredItem, StoredHoldRule
from ..store.outbox import AttemptRow
from ..store.webhooks import Hook as StoredHook
from ..store.webhooks import HookAttempt, RetiredHook
from ..webapi.gojson import ZERO_TIME, GoInt, gostruct

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_time(t: float) -> datetime:
    """UNIX seconds as a UTC time, rounded to whole microseconds (half away from zero,
    as the store's listings round when they compare and order times)."""
    return EPOCH + timedelta(microseconds=int(t * 1_000_000 + (0.5 if t >= 0 else -0.5)))


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of a time (the inverse of :func:`to_time`)."""
    return (dt - EPOCH) // timedelta(microseconds=1)


# --- package dns ---------------------------------------------------------------------------


@gostruct("dns")
class Domain:
    """``dns.Domain``: ``ASCII`` is the IDNA form, ``Unicode`` is "" for ASCII-only names."""

    ASCII: str = ""
    Unicode: str = ""


def domain(name: str) -> Domain:
    """A canonical (Unicode, lower-case) domain name as a ``dns.Domain``."""
    if not name:
        return Domain()
    ascii_name = domain_to_ascii(name)
    return Domain(ASCII=ascii_name, Unicode="" if ascii_name == name else name)


@gostruct("dns")
class IPDomain:
    IP: str = ""
    Domain: _Domain = Domain()


_Domain = Domain


# --- package queue -------------------------------------------------------------------------


@gostruct("queue")
class MsgResult:
    Start: datetime = ZERO_TIME
    Duration: int = 0  # nanoseconds
    Success: bool = False
    Code: GoInt = 0
    Secode: str = ""
    Error: str = ""


@gostruct("queue")
class Msg:
    ID: int = 0
    BaseID: int = 0
    Queued: datetime = ZERO_TIME
    Hold: bool = False
    SenderAccount: str = ""
    SenderLocalpart: str = ""
    SenderDomain: IPDomain = IPDomain()
    SenderDomainStr: str = ""
    FromID: str = ""
    RecipientLocalpart: str = ""
    RecipientDomain: IPDomain = IPDomain()
    RecipientDomainStr: str = ""
    Attempts: GoInt = 0
    MaxAttempts: GoInt = 0
    DialedIPs: dict[str, list[str]] | None = None
    NextAttempt: datetime = ZERO_TIME
    LastAttempt: datetime | None = None
    Results: list[MsgResult] | None = None
    Has8bit: bool = False
    SMTPUTF8: bool = False
    IsDMARCReport: bool = False
    IsTLSReport: bool = False
    Size: int = 0
    MessageID: str = ""
    MsgPrefix: str | None = None
    Subject: str = ""
    DSNUTF8: str | None = None
    Transport: str = ""
    RequireTLS: bool | None = None
    FutureReleaseRequest: str = ""
    Extra: dict[str, str] | None = None


@gostruct("queue")
class MsgRetired:
    ID: int = 0
    BaseID: int = 0
    Queued: datetime = ZERO_TIME
    SenderAccount: str = ""
    SenderLocalpart: str = ""
    SenderDomainStr: str = ""
    FromID: str = ""
    RecipientLocalpart: str = ""
    RecipientDomain: IPDomain = IPDomain()
    RecipientDomainStr: str = ""
    Attempts: GoInt = 0
    MaxAttempts: GoInt = 0
    DialedIPs: dict[str, list[str]] | None = None
    LastAttempt: datetime | None = None
    Results: list[MsgResult] | None = None
    Has8bit: bool = False
    SMTPUTF8: bool = False
    IsDMARCReport: bool = False
    IsTLSReport: bool = False
    Size: int = 0
    MessageID: str = ""
    Subject: str = ""
    Transport: str = ""
    RequireTLS: bool | None = None
    FutureReleaseRequest: str = ""
    Extra: dict[str, str] | None = None
    LastActivity: datetime = ZERO_TIME
    RecipientAddress: str = ""
    Success: bool = False
    KeepUntil: datetime = ZERO_TIME


@gostruct("queue")
class HoldRule:
    """A hold rule.  Input uses ``Account``, ``SenderDomainStr`` and
    ``RecipientDomainStr``; rules from the configuration file are listed with ID 0."""

    ID: int = 0
    Account: str = ""
    SenderDomain: Domain = Domain()
    RecipientDomain: Domain = Domain()
    SenderDomainStr: str = ""
    RecipientDomainStr: str = ""


@gostruct("queue")
class Filter:
    Max: GoInt = 0
    IDs: list[int] | None = None
    Account: str = ""
    From: str = ""
    To: str = ""
    Hold: bool | None = None
    Submitted: str = ""
    NextAttempt: str = ""
    Transport: str | None = None


@gostruct("queue")
class Sort:
    """``Last`` is the previous page's last value of the sort field, as an RFC 3339 time."""

    Field: str = ""
    LastID: int = 0
    Last: str = ""
    Asc: bool = False


@gostruct("queue")
class RetiredFilter:
    Max: GoInt = 0
    IDs: list[int] | None = None
    Account: str = ""
    From: str = ""
    To: str = ""
    Submitted: str = ""
    LastActivity: str = ""
    Transport: str | None = None
    Success: bool | None = None


@gostruct("queue")
class RetiredSort:
    Field: str = ""
    LastID: int = 0
    Last: str = ""
    Asc: bool = False


# --- webhooks (mox's queue.Hook, HookRetired, HookResult, HookFilter, HookSort) -------------


@gostruct("queue")
class HookResult:
    Start: datetime = ZERO_TIME
    Duration: int = 0  # nanoseconds
    URL: str = ""
    Success: bool = False
    Code: GoInt = 0
    Error: str = ""
    Response: str = ""


@gostruct("queue")
class Hook:
    ID: int = 0
    QueueMsgID: int = 0
    FromID: str = ""
    MessageID: str = ""
    Subject: str = ""
    Extra: dict[str, str] | None = None
    Account: str = ""
    URL: str = ""
    Authorization: str = ""
    IsIncoming: bool = False
    OutgoingEvent: str = ""
    Payload: str = ""
    Submitted: datetime = ZERO_TIME
    Attempts: GoInt = 0
    NextAttempt: datetime = ZERO_TIME
    Results: list[HookResult] | None = None


@gostruct("queue")
class HookRetired:
    ID: int = 0
    QueueMsgID: int = 0
    FromID: str = ""
    MessageID: str = ""
    Subject: str = ""
    Extra: dict[str, str] | None = None
    Account: str = ""
    URL: str = ""
    #: Whether the request had an Authorization header (the value is not kept).
    Authorization: bool = False
    IsIncoming: bool = False
    OutgoingEvent: str = ""
    Payload: str = ""
    Submitted: datetime = ZERO_TIME
    SupersededByID: int = 0
    Attempts: GoInt = 0
    Results: list[HookResult] | None = None
    Success: bool = False
    LastActivity: datetime = ZERO_TIME
    KeepUntil: datetime = ZERO_TIME


@gostruct("queue")
class HookFilter:
    """``Event``: an outgoing event name or ``incoming``."""

    Max: GoInt = 0
    IDs: list[int] | None = None
    Account: str = ""
    Submitted: str = ""
    NextAttempt: str = ""
    Event: str = ""


@gostruct("queue")
class HookSort:
    """``Field``: "" or ``NextAttempt`` (the default), ``Submitted``."""

    Field: str = ""
    LastID: int = 0
    Last: str = ""
    Asc: bool = False


@gostruct("queue")
class HookRetiredFilter:
    Max: GoInt = 0
    IDs: list[int] | None = None
    Account: str = ""
    Submitted: str = ""
    LastActivity: str = ""
    Event: str = ""


@gostruct("queue")
class HookRetiredSort:
    """``Field``: "" or ``LastActivity`` (the default), ``Submitted``."""

    Field: str = ""
    LastID: int = 0
    Last: str = ""
    Asc: bool = False


# --- conversion from store rows ------------------------------------------------------------


def _results(attempts: Sequence[AttemptRow]) -> list[MsgResult] | None:
    if not attempts:
        return None
    return [
        MsgResult(
            Start=to_time(a.start),
            Duration=0 if a.duration is None else int(round(a.duration * 1e9)),
            Success=a.success,
            Code=a.code,
            Secode=a.secode,
            Error=a.error,
        )
        for a in attempts
    ]


def _dialed(attempts: Sequence[AttemptRow]) -> dict[str, list[str]] | None:
    dialed: dict[str, list[str]] = {}
    for a in attempts:
        if a.remote_ip:
            ips = dialed.setdefault(a.remote_host or a.remote_ip, [])
            if a.remote_ip not in ips:
                ips.append(a.remote_ip)
    return dialed or None


def _extra(text: str | None) -> dict[str, str]:
    return {} if text is None else {str(k): str(v) for k, v in json.loads(text).items()}


def msg(item: QueueItem) -> Msg:
    r = item.row
    return Msg(
        ID=r.id,
        BaseID=r.base_id,
        Queued=to_time(r.queued),
        Hold=r.hold,
        SenderAccount=r.account,
        SenderLocalpart=r.sender_localpart,
        SenderDomain=IPDomain(Domain=domain(r.sender_domain)),
        SenderDomainStr=r.sender_domain,
        FromID=r.from_id,
        RecipientLocalpart=r.recipient_localpart,
        RecipientDomain=IPDomain(Domain=domain(r.recipient_domain)),
        RecipientDomainStr=r.recipient_domain,
        Attempts=r.attempts,
        MaxAttempts=r.max_attempts,
        DialedIPs=_dialed(item.attempts),
        NextAttempt=to_time(r.next_attempt),
        LastAttempt=None if r.last_attempt is None else to_time(r.last_attempt),
        Results=_results(item.attempts),
        Has8bit=r.has_8bit,
        SMTPUTF8=r.smtputf8,
        Size=r.size,
        MessageID=r.message_id,
        MsgPrefix=base64.b64encode(r.prefix).decode("ascii") if r.prefix else None,
        Subject=r.subject,
        Transport=r.transport,
        RequireTLS=r.require_tls,
        FutureReleaseRequest=r.future_release_request,
        Extra=_extra(r.extra),
    )


def msg_retired(item: RetiredItem) -> MsgRetired:
    r = item.row
    return MsgRetired(
        ID=r.id,
        BaseID=r.base_id,
        Queued=to_time(r.queued),
        SenderAccount=r.account,
        SenderLocalpart=r.sender_localpart,
        SenderDomainStr=r.sender_domain,
        FromID=r.from_id,
        RecipientLocalpart=r.recipient_localpart,
        RecipientDomain=IPDomain(Domain=domain(r.recipient_domain)),
        RecipientDomainStr=r.recipient_domain,
        Attempts=r.attempts,
        MaxAttempts=r.max_attempts,
        DialedIPs=_dialed(item.attempts),
        LastAttempt=None if r.last_attempt is None else to_time(r.last_attempt),
        Results=_results(item.attempts),
        Has8bit=r.has_8bit,
        SMTPUTF8=r.smtputf8,
        Size=r.size,
        MessageID=r.message_id,
        Subject=r.subject,
        Transport=r.transport,
        RequireTLS=r.require_tls,
        FutureReleaseRequest=r.future_release_request,
        Extra=_extra(r.extra),
        LastActivity=to_time(r.last_activity),
        RecipientAddress=r.recipient_address,
        Success=r.success,
        KeepUntil=to_time(r.keep_until),
    )


def hold_rule(rule_id: int, account: str, sender_domain: str, recipient_domain: str) -> HoldRule:
    return HoldRule(
        ID=rule_id,
        Account=account,
        SenderDomain=domain(sender_domain),
        RecipientDomain=domain(recipient_domain),
        SenderDomainStr=sender_domain,
        RecipientDomainStr=recipient_domain,
    )


def stored_hold_rule(rule: StoredHoldRule) -> HoldRule:
    return hold_rule(rule.id, rule.account, rule.sender_domain, rule.recipient_domain)


def _hook_results(attempts: Sequence[HookAttempt]) -> list[HookResult] | None:
    if not attempts:
        return None
    return [
        HookResult(
            Start=to_time(a.start),
            Duration=0 if a.duration is None else int(round(a.duration * 1e9)),
            URL=a.url,
            Success=a.success,
            Code=a.code,
            Error=a.error,
            # A Go string holding the first 512 bytes; JSON shows invalid UTF-8 as U+FFFD.
            Response=a.response.decode("utf-8", "replace"),
        )
        for a in attempts
    ]


def _hook_extra(text: str | None) -> dict[str, str] | None:
    """A webhook's Extra: ``null`` when the message had none (incoming webhooks)."""
    return None if text is None else _extra(text)


def hook(item: StoredHook) -> Hook:
    r = item.row
    return Hook(
        ID=r.id,
        QueueMsgID=r.queue_msg_id,
        FromID=r.from_id,
        MessageID=r.message_id,
        Subject=r.subject,
        Extra=_hook_extra(r.extra),
        Account=r.account,
        URL=r.url,
        Authorization=r.auth_header,
        IsIncoming=r.is_incoming,
        OutgoingEvent=r.event,
        Payload=r.payload,
        Submitted=to_time(r.created),
        Attempts=r.attempts,
        NextAttempt=to_time(r.next_attempt),
        Results=_hook_results(item.attempts),
    )


def hook_retired(r: RetiredHook) -> HookRetired:
    return HookRetired(
        ID=r.id,
        QueueMsgID=r.queue_msg_id,
        FromID=r.from_id,
        MessageID=r.message_id,
        Subject=r.subject,
        Extra=_hook_extra(r.extra),
        Account=r.account,
        URL=r.url,
        Authorization=r.authorization,
        IsIncoming=r.is_incoming,
        OutgoingEvent=r.event,
        Payload=r.payload,
        Submitted=to_time(r.submitted),
        SupersededByID=r.superseded_by_id,
        Attempts=r.attempts,
        Results=_hook_results(r.results),
        Success=r.success,
        LastActivity=to_time(r.last_activity),
        KeepUntil=to_time(r.keep_until),
    )
