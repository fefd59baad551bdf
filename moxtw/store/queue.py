"""Outgoing queue rows: inserting what Send and submission queue (plain cursor functions).

Everything here runs inside a transaction handed over by :class:`~moxtw.store.Database`;
the daily limits are checked in the same transaction that inserts, so concurrent Sends
cannot together overshoot them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..address import DomainError, parse_domain
from ..config import HoldRule

DAY = 24 * 3600.0


class LimitReached(Exception):
    """A daily sending limit would be exceeded; ``code`` is the webapi error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class SendLimits:
    account: str
    max_messages: int
    max_first_time_recipients: int


@attrs.frozen
class NewMessage:
    """One queue entry: one recipient of a submitted message."""

    account: str
    sender_localpart: str
    sender_domain: str
    recipient_localpart: str
    recipient_domain: str
    recipient_address: str  # as given by the client
    prefix: bytes  # per-recipient headers (Received, DKIM-Signature)
    size: int  # prefix + shared message
    message_id: str = ""
    subject: str = ""
    from_id: str = ""
    has_8bit: bool = False
    smtputf8: bool = False
    require_tls: bool | None = None
    future_release_request: str = ""
    extra: Mapping[str, str] | None = None


@functools.lru_cache(maxsize=1024)
def rule_domain(text: str) -> str:
    """A hold rule's domain in the canonical Unicode form queue rows use ("" stays "").

    Rules from the API are stored normalised; configuration file rules may use A-labels.
    """
    if not text:
        return ""
    try:
        return parse_domain(text)
    except DomainError:
        return text.lower()


def holds(rules: Sequence[HoldRule], message: NewMessage) -> bool:
    """True when a rule matches: every non-empty field of it matches (moxtw's fix 4)."""
    for rule in rules:
        if rule.account and rule.account != message.account:
            continue
        if rule.sender_domain and rule_domain(rule.sender_domain) != message.sender_domain:
            continue
        if rule.recipient_domain and rule_domain(rule.recipient_domain) != message.recipient_domain:
            continue
        return True
    return False


def stored_hold_rules(cursor: Any) -> list[HoldRule]:
    """The hold rules added through the admin API (table ``hold_rule``)."""
    cursor.execute("SELECT account, sender_domain, recipient_domain FROM hold_rule")
    return [HoldRule(account=r[0], sender_domain=r[1], recipient_domain=r[2]) for r in cursor.fetchall()]


def check_limits(cursor: Any, limits: SendLimits, recipients: Sequence[str], now: float) -> list[bool]:
    """Raise :class:`LimitReached` if sending to ``recipients`` exceeds the daily limits.

    Returns, per recipient, whether it is a first-time recipient (never sent to by this
    account before), for the history rows.  Webapi and SMTP submissions both count
    (moxtw's fix 5).
    """
    since = now - DAY
    cursor.execute(
        "SELECT count(*), coalesce(sum(first_time), 0) FROM outgoing WHERE account = ? AND submitted > ?",
        (limits.account, since),
    )
    n, first_times = cursor.fetchone()
    if n + len(recipients) > limits.max_messages:
        raise LimitReached("messageLimitReached", "outgoing message rate limit reached")
    first: list[bool] = []
    seen: set[str] = set()
    for r in recipients:
        key = r.lower()
        if key in seen:
            first.append(False)
            continue
        seen.add(key)
        cursor.execute("SELECT 1 FROM outgoing WHERE account = ? AND recipient = ? LIMIT 1", (limits.account, key))
        first.append(cursor.fetchone() is None)
    if n + len(recipients) >= limits.max_first_time_recipients:
        if first_times + sum(first) > limits.max_first_time_recipients:
            raise LimitReached("recipientLimitReached", "outgoing new recipient rate limit reached")
    return first


_INSERT = """
INSERT INTO queue_msg (
    base_id, account, queued, sender_localpart, sender_domain, recipient_localpart,
    recipient_domain, recipient_address, from_id, message_id, subject, blob, prefix, size,
    has_8bit, smtputf8, require_tls, future_release_request, extra, hold, next_attempt
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def insert_messages(
    cursor: Any,
    blob: str,
    messages: Sequence[NewMessage],
    *,
    now: float,
    next_attempt: float,
    hold_rules: Sequence[HoldRule] = (),
    limits: SendLimits | None = None,
) -> list[int]:
    """Queue ``messages`` (one per recipient, sharing ``blob``); their queue IDs in order.

    When every message has the same MAIL FROM and prefix, all get the first one's ID as
    ``base_id`` so the queue may deliver them in one SMTP transaction per domain.

    A message is held when a rule of ``hold_rules`` (the configuration file's) or of the
    ``hold_rule`` table (added through the admin API, read in this transaction) matches.
    """
    if limits is not None:
        first = check_limits(cursor, limits, [m.recipient_address for m in messages], now)
        cursor.executemany(
            "INSERT INTO outgoing (account, recipient, first_time, submitted) VALUES (?, ?, ?, ?)",
            [(limits.account, m.recipient_address.lower(), int(f), now) for m, f in zip(messages, first, strict=True)],
        )
    shared = len({(m.sender_localpart, m.sender_domain, m.prefix) for m in messages}) == 1 and len(messages) > 1
    rules = [*hold_rules, *stored_hold_rules(cursor)]
    ids: list[int] = []
    base_id = 0
    for m in messages:
        cursor.execute(
            _INSERT,
            (
                base_id,
                m.account,
                now,
                m.sender_localpart,
                m.sender_domain,
                m.recipient_localpart,
                m.recipient_domain,
                m.recipient_address,
                m.from_id,
                m.message_id,
                m.subject,
                blob,
                m.prefix,
                m.size,
                int(m.has_8bit),
                int(m.smtputf8),
                None if m.require_tls is None else int(m.require_tls),
                m.future_release_request,
                None if m.extra is None else json.dumps(dict(m.extra), sort_keys=True),
                int(holds(rules, m)),
                next_attempt,
            ),
        )
        msg_id = int(cursor.lastrowid)
        ids.append(msg_id)
        if shared and base_id == 0:
            base_id = msg_id
            cursor.execute("UPDATE queue_msg SET base_id = ? WHERE id = ?", (base_id, msg_id))
    return ids


def count_queued(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM queue_msg")
    return int(cursor.fetchone()[0])
