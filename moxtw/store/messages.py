"""The account message store: mailboxes and messages (cursor functions), and :func:`deliver`.

Each account gets its default mailboxes (:data:`DEFAULT_MAILBOXES`) the first time one of
these functions touches it, so accounts from the configuration need no migration.  A
message's contents are a blob; its row holds the mailbox, flags, keywords and the
delivery metadata MessageGet's ``Meta`` shows.  Expunging marks the row (its ID is never
reused) and the caller removes the blob after the commit.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from .. import message as msg
from . import Store
from .webhooks import IncomingHook, insert_incoming

__all__ = [
    "DEFAULT_MAILBOXES",
    "SYSTEM_FLAGS",
    "AlreadyInMailbox",
    "DeliveryMeta",
    "FlagsError",
    "MailboxNotFound",
    "MessageNotFound",
    "MessageRow",
    "deliver",
    "ensure_mailboxes",
    "expunge_message",
    "get_message",
    "insert_message",
    "move_message",
    "parse_flags",
    "update_flags",
]

#: Name and special-use flag of the mailboxes every account has.
DEFAULT_MAILBOXES: tuple[tuple[str, str], ...] = (
    ("Inbox", ""),
    ("Sent", "\\Sent"),
    ("Archive", "\\Archive"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
)

#: System flags (lower case, as the webapi shows them) and their columns, in the order
#: of MessageGet's ``Meta.Flags``.
SYSTEM_FLAGS: tuple[tuple[str, str], ...] = (
    ("$forwarded", "forwarded"),
    ("$junk", "junk"),
    ("$mdnsent", "mdnsent"),
    ("$notjunk", "notjunk"),
    ("$phishing", "phishing"),
    ("\\answered", "answered"),
    ("\\deleted", "deleted"),
    ("\\draft", "draft"),
    ("\\flagged", "flagged"),
    ("\\seen", "seen"),
)
_FLAG_COLUMNS = dict(SYSTEM_FLAGS)
_COLUMN_NAMES = [c for _, c in SYSTEM_FLAGS]
#: Other well-known IMAP flags that cannot be keywords.
_RESERVED = frozenset({"\\recent"})

#: mox's automatic junk flags as localserve configures them: moving a message into a
#: mailbox matching the first sets $junk, the second clears both, anything else $notjunk.
JUNK_MAILBOX = re.compile(r"^(junk|spam)")
NEUTRAL_MAILBOX = re.compile(r"^(inbox|neutral|postmaster|dmarc|tlsrpt|rejects)")


class MessageNotFound(Exception):
    """No such message in the account, or (``removed``) it was expunged."""

    def __init__(self, msg_id: int, removed: bool = False) -> None:
        super().__init__("message was removed" if removed else "no such message")
        self.msg_id = msg_id
        self.removed = removed


class MailboxNotFound(Exception):
    pass


class AlreadyInMailbox(Exception):
    def __init__(self, msg_id: int) -> None:
        super().__init__(f"message {msg_id} already in destination mailbox")


class FlagsError(ValueError):
    """A flag or keyword that cannot be set; ``str()`` is mox's text after "parsing flags: "."""


def _check_keyword(kw: str) -> bool:
    if not kw or kw in _FLAG_COLUMNS or kw in _RESERVED:
        return False
    return all(" " < c <= "~" and c not in '(){%*"\\]' for c in kw)


def parse_flags(values: Iterable[str], *, pedantic: bool = False) -> tuple[frozenset[str], list[str]]:
    """mox's ``ParseFlagsKeywords``: (flag columns, sorted keywords); all lower-cased."""
    columns: set[str] = set()
    keywords: list[str] = []
    for value in values:
        f = value.lower()
        if f in _FLAG_COLUMNS:
            columns.add(_FLAG_COLUMNS[f])
        elif f in keywords:
            if pedantic:
                raise FlagsError(f"duplicate keyword {f}")
        elif not _check_keyword(f):
            raise FlagsError(f"invalid keyword {f}")
        else:
            keywords.append(f)
    return frozenset(columns), sorted(keywords)


@attrs.frozen
class DeliveryMeta:
    """What the delivering side knows about a message (MessageGet's ``Meta``)."""

    mail_from: str = ""
    mail_from_validated: bool = False
    rcpt_to: str = ""
    #: The From header's address; ``None``: taken from the message.
    msg_from: str | None = None
    msg_from_validated: bool = False
    dkim_domains: Sequence[str] = ()
    remote_ip: str = ""


@attrs.frozen
class MessageRow:
    id: int
    account: str
    mailbox_id: int
    mailbox_name: str
    uid: int
    blob: str
    size: int
    received: float
    flags: tuple[str, ...]  # system flags set, in Meta order
    keywords: tuple[str, ...]
    expunged: bool
    dsn: bool
    mail_from: str
    mail_from_validated: bool
    rcpt_to: str
    msg_from: str
    msg_from_validated: bool
    dkim_domains: tuple[str, ...]
    remote_ip: str
    message_id: str
    subject: str

    @property
    def all_flags(self) -> list[str]:
        """Meta.Flags: system flags in fixed order, then the keywords."""
        return [*self.flags, *self.keywords]


# --- mailboxes ----------------------------------------------------------------------


def ensure_mailboxes(cursor: Any, account: str, now: float = 0.0) -> None:
    """Create the account's default mailboxes if it has none yet."""
    cursor.execute("SELECT 1 FROM mailbox WHERE account = ? LIMIT 1", (account,))
    if cursor.fetchone() is not None:
        return
    for name, special_use in DEFAULT_MAILBOXES:
        cursor.execute(
            "INSERT INTO mailbox (account, name, special_use, created) VALUES (?, ?, ?, ?)",
            (account, name, special_use, now),
        )


def find_mailbox(cursor: Any, account: str, name: str) -> int | None:
    """The ID of the mailbox named exactly ``name`` (case-sensitive)."""
    ensure_mailboxes(cursor, account)
    cursor.execute("SELECT id FROM mailbox WHERE account = ? AND name = ?", (account, name))
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def list_mailboxes(cursor: Any, account: str) -> list[tuple[int, str, str]]:
    """(id, name, special use) of the account's mailboxes, by ID."""
    ensure_mailboxes(cursor, account)
    cursor.execute("SELECT id, name, special_use FROM mailbox WHERE account = ? ORDER BY id", (account,))
    return [(int(r[0]), r[1], r[2]) for r in cursor.fetchall()]


def _next_uid(cursor: Any, mailbox_id: int) -> int:
    cursor.execute("SELECT uid_next FROM mailbox WHERE id = ?", (mailbox_id,))
    (uid,) = cursor.fetchone()
    cursor.execute("UPDATE mailbox SET uid_next = uid_next + 1 WHERE id = ?", (mailbox_id,))
    return int(uid)


# --- messages -----------------------------------------------------------------------


def insert_message(
    cursor: Any,
    blob: str,
    account: str,
    mailbox: str,
    size: int,
    received: float,
    columns: frozenset[str],
    keywords: Sequence[str],
    meta: DeliveryMeta,
    *,
    dsn: bool = False,
    message_id: str = "",
    subject: str = "",
) -> int:
    """Add a message row to ``mailbox`` (created if it does not exist); its ID."""
    ensure_mailboxes(cursor, account, received)
    mailbox_id = find_mailbox(cursor, account, mailbox)
    if mailbox_id is None:
        cursor.execute(
            "INSERT INTO mailbox (account, name, created) VALUES (?, ?, ?)", (account, mailbox, received)
        )
        mailbox_id = int(cursor.lastrowid)
    uid = _next_uid(cursor, mailbox_id)
    names = ", ".join(_COLUMN_NAMES)
    marks = ", ".join("?" for _ in _COLUMN_NAMES)
    cursor.execute(
        f"INSERT INTO message (account, mailbox_id, uid, blob, size, received, {names}, keywords, dsn,"
        " mail_from, mail_from_validated, rcpt_to, msg_from, msg_from_validated, dkim_domains, remote_ip,"
        f" message_id, subject) VALUES (?, ?, ?, ?, ?, ?, {marks}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account,
            mailbox_id,
            uid,
            blob,
            size,
            received,
            *(int(c in columns) for c in _COLUMN_NAMES),
            json.dumps(sorted(set(keywords))),
            int(dsn),
            meta.mail_from,
            int(meta.mail_from_validated),
            meta.rcpt_to,
            meta.msg_from or "",
            int(meta.msg_from_validated),
            json.dumps(list(meta.dkim_domains)),
            meta.remote_ip,
            message_id,
            subject,
        ),
    )
    return int(cursor.lastrowid)


_SELECT = (
    "SELECT m.id, m.account, m.mailbox_id, b.name, m.uid, m.blob, m.size, m.received, "
    + ", ".join(f"m.{c}" for c in _COLUMN_NAMES)
    + ", m.keywords, m.expunged, m.dsn, m.mail_from, m.mail_from_validated, m.rcpt_to, m.msg_from,"
    " m.msg_from_validated, m.dkim_domains, m.remote_ip, m.message_id, m.subject"
    " FROM message m JOIN mailbox b ON b.id = m.mailbox_id WHERE m.account = ? AND m.id = ?"
)


def _row(r: Sequence[Any]) -> MessageRow:
    n = len(_COLUMN_NAMES)
    flag_values = r[8 : 8 + n]
    rest = r[8 + n :]
    return MessageRow(
        id=int(r[0]),
        account=r[1],
        mailbox_id=int(r[2]),
        mailbox_name=r[3],
        uid=int(r[4]),
        blob=r[5],
        size=int(r[6]),
        received=float(r[7]),
        flags=tuple(name for (name, _), v in zip(SYSTEM_FLAGS, flag_values, strict=True) if v),
        keywords=tuple(json.loads(rest[0])),
        expunged=bool(rest[1]),
        dsn=bool(rest[2]),
        mail_from=rest[3],
        mail_from_validated=bool(rest[4]),
        rcpt_to=rest[5],
        msg_from=rest[6],
        msg_from_validated=bool(rest[7]),
        dkim_domains=tuple(json.loads(rest[8])),
        remote_ip=rest[9],
        message_id=rest[10],
        subject=rest[11],
    )


def get_message(cursor: Any, account: str, msg_id: int) -> MessageRow:
    """The account's message ``msg_id``; :class:`MessageNotFound` if absent or expunged."""
    cursor.execute(_SELECT, (account, msg_id))
    r = cursor.fetchone()
    if r is None:
        raise MessageNotFound(msg_id)
    row = _row(r)
    if row.expunged:
        raise MessageNotFound(msg_id, removed=True)
    return row


def update_flags(
    cursor: Any, account: str, msg_id: int, columns: frozenset[str], keywords: Sequence[str], add: bool
) -> None:
    """Set (``add``) or clear flags and keywords; unchanged ones are left alone."""
    row = get_message(cursor, account, msg_id)
    current = set(row.keywords)
    new = current | set(keywords) if add else current - set(keywords)
    sets = [f"{c} = {int(add)}" for c in _COLUMN_NAMES if c in columns]
    sets.append("keywords = ?")
    cursor.execute(f"UPDATE message SET {', '.join(sets)} WHERE id = ?", (json.dumps(sorted(new)), msg_id))


def move_message(cursor: Any, account: str, msg_id: int, destination: str) -> None:
    """Move to the mailbox named exactly ``destination``; the message keeps its ID and
    gets a new UID; junk flags follow the destination (:data:`JUNK_MAILBOX`)."""
    row = get_message(cursor, account, msg_id)
    mailbox_id = find_mailbox(cursor, account, destination)
    if mailbox_id is None:
        raise MailboxNotFound(destination)
    if mailbox_id == row.mailbox_id:
        raise AlreadyInMailbox(msg_id)
    lower = destination.lower()
    if JUNK_MAILBOX.match(lower):
        junk, notjunk = 1, 0
    elif NEUTRAL_MAILBOX.match(lower):
        junk, notjunk = 0, 0
    else:
        junk, notjunk = 0, 1
    uid = _next_uid(cursor, mailbox_id)
    cursor.execute(
        "UPDATE message SET mailbox_id = ?, uid = ?, junk = ?, notjunk = ? WHERE id = ?",
        (mailbox_id, uid, junk, notjunk, msg_id),
    )


def expunge_message(cursor: Any, account: str, msg_id: int) -> str:
    """Mark the message expunged; returns its blob key, to remove after the commit."""
    row = get_message(cursor, account, msg_id)
    cursor.execute("UPDATE message SET expunged = 1 WHERE id = ?", (msg_id,))
    return row.blob


# --- delivery -----------------------------------------------------------------------


async def deliver(
    store: Store,
    account: str,
    mailbox: str,
    data: bytes,
    *,
    flags: Iterable[str] = (),
    received: float,
    meta: DeliveryMeta | None = None,
    incoming_webhook: IncomingHook | None = None,
    match: Callable[[Any], object | None] | None = None,
) -> int:
    """Store ``data`` as a new message in ``account``'s ``mailbox``; its message ID.

    The message file and the row are one group commit (:meth:`Store.run_with_blob`): on
    disk before this returns.  ``flags`` are flag and keyword names as the webapi takes
    them (``\\Seen``, ``$NotJunk``, keywords); :class:`FlagsError` for invalid ones.  The
    mailbox (any name, e.g. ``Inbox`` or ``Sent``) is created if the account lacks it.
    With ``incoming_webhook``, the incoming-message webhook is queued in the same
    transaction (:func:`moxtw.store.webhooks.insert_incoming`).  ``match(cursor)`` runs in
    that transaction too, after the message row is written: when it returns something (a
    report matched to a message we sent, :mod:`moxtw.store.dsnmatch`), no incoming webhook
    is queued.
    """
    columns, keywords = parse_flags(flags)
    meta = meta or DeliveryMeta()
    part = msg.parse(data)
    env = msg.envelope(part)
    if meta.msg_from is None:
        meta = attrs.evolve(meta, msg_from=env.from_[0].address if env.from_ else "")
    msg_id: int = await store.run_with_blob(
        "deliver message",
        data,
        insert_message
        if incoming_webhook is None and match is None
        else functools.partial(_insert_with_webhook, incoming_webhook, match),
        account,
        mailbox,
        len(data),
        received,
        columns,
        keywords,
        meta,
        dsn=part.is_dsn(),
        message_id=env.message_id,
        subject=env.subject,
    )
    return msg_id


def _insert_with_webhook(
    hook: IncomingHook | None,
    match: Callable[[Any], object | None] | None,
    cursor: Any,
    blob: str,
    account: str,
    mailbox: str,
    size: int,
    received: float,
    columns: frozenset[str],
    keywords: Sequence[str],
    meta: DeliveryMeta,
    *,
    dsn: bool = False,
    message_id: str = "",
    subject: str = "",
) -> int:
    """:func:`insert_message`, then ``match``, then (unless matched) the incoming webhook
    for the new message."""
    msg_id = insert_message(
        cursor, blob, account, mailbox, size, received, columns, keywords, meta,
        dsn=dsn, message_id=message_id, subject=subject,
    )  # fmt: skip
    if match is not None and match(cursor) is not None:
        return msg_id
    if hook is None:
        return msg_id
    insert_incoming(
        cursor,
        account=account,
        url=hook.url,
        authorization=hook.authorization,
        payload=hook.payload(msg_id),
        webhook_id=hook.webhook_id,
        created=received,
        from_id=hook.from_id,
        message_id=message_id,
        subject=subject,
    )
    return msg_id
