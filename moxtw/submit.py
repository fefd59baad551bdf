"""Queueing a submitted message: shared by webapi Send and SMTP submission.

Both paths end in :meth:`Submitter.submit`, so a message submitted over SMTP produces the
same queue entries as one sent with the webapi: one row per recipient sharing one message
file, the same MAIL FROM/FromID rules (spec §2.2.6), the same Received prefix rule (a
``for`` clause only with one recipient, moxtw's fix 9), the same daily limits and hold
rules, checked in the same transaction that inserts (group commit: the message file and
the rows are fsynced before :meth:`~Submitter.submit` returns).

With a :class:`~moxtw.dkim.Signer`, the message is DKIM-signed here, once, before it is
queued: the DKIM-Signature headers go into the stored prefix after the Received header
(spec §2.2.3), so every delivery attempt sends the same signature.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs
from twisted.logger import Logger

from .address import Address
from .config import AccountConfig, Config
from .metrics import child, messages_queued
from .store import Store
from .store.queue import LimitReached, NewMessage, SendLimits, insert_messages
from .webapi.compose import new_token, token_bytes

if TYPE_CHECKING:
    from .dkim import Signer

__all__ = ["Recipient", "SubmitError", "Submission", "Submitter", "received_header"]


class SubmitError(Exception):
    """Submission refused; ``code`` is the webapi error code (``user``, ``server``, or a
    :class:`~moxtw.store.queue.LimitReached` code), ``message`` mox's text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def received_header(
    hostname: str,
    recipients: Sequence[Address],
    now: datetime,
    smtputf8: bool,
    *,
    from_clause: str = "",
    with_clause: str = "",
) -> bytes:
    """The per-recipient Received header; a ``for`` clause only with one recipient (fix 9).

    ``from_clause`` defaults to ``hostname`` (webapi: the message originates here); SMTP
    submission passes the client's EHLO name and IP, and ``with_clause`` (``ESMTPSA``).
    """
    ident = new_token()
    line = f"Received: from {from_clause or hostname} by {hostname}"
    if with_clause:
        line += f" with {with_clause}"
    line += f" id {ident}"
    if len(recipients) == 1:
        line += f"\r\n\tfor <{recipients[0].smtp_form(smtputf8)}>"
    line += "; " + email.utils.format_datetime(now) + "\r\n"
    return line.encode("utf-8")


@attrs.frozen
class Recipient:
    address: Address
    #: The address as the client wrote it (webapi ``Address`` field, SMTP RCPT TO path).
    given: str


@attrs.frozen
class Submission:
    """Everything needed to queue one submitted message."""

    account: AccountConfig
    #: The From/MAIL FROM address before any FromID is added.
    sender: Address
    recipients: Sequence[Recipient]
    #: The message shared by all recipients (without the Received prefix).
    data: bytes
    prefix: bytes
    now: float
    next_attempt: float
    #: Whether the login address is a FromID login address of the account.
    use_fromid: bool = False
    #: SMTP: a FromID the client put in MAIL FROM itself (``base+<id>@domain``).
    explicit_from_id: str = ""
    message_id: str = ""
    subject: str = ""
    has_8bit: bool = False
    smtputf8: bool = False
    require_tls: bool | None = None
    future_release_request: str = ""
    extra: Mapping[str, str] | None = None


def is_fromid_conflict(exc: BaseException) -> bool:
    """Whether a queue insert failed on the unique FromID index."""
    text = str(exc).lower()
    return "from_id" in text and ("unique" in text or "duplicate" in text)


@attrs.define(eq=False)
class Submitter:
    config: Config
    store: Store
    random_bytes: Callable[[int], bytes] = token_bytes
    #: Called after messages were queued, so the queue can look at them right away.
    on_queued: Callable[[], None] = lambda: None
    #: DKIM-signs with the From domain's selectors; None: nothing is signed.
    signer: Signer | None = None

    log = Logger()

    def messages(self, s: Submission) -> list[NewMessage]:
        """The queue rows for ``s`` (FromIDs generated here); raises :class:`SubmitError`."""
        domain = self.config.domains.get(s.sender.domain)
        sender_local = s.sender.localpart
        from_ids = [""] * len(s.recipients)
        sep = ""
        if s.use_fromid:
            if domain is None or not domain.catchall_separators:
                name = domain.name if domain is not None else s.sender.domain
                raise SubmitError(
                    "user",
                    f"cannot use FromIDs: domain {name} of the from-address has no catchall separator",
                )
            sep = domain.catchall_separators[0]
            sender_local = sender_local.split(sep, 1)[0]
            if s.explicit_from_id:
                from_ids = [s.explicit_from_id] * len(s.recipients)
            else:
                from_ids = [new_token(self.random_bytes) for _ in s.recipients]
        return [
            NewMessage(
                account=s.account.name,
                sender_localpart=f"{sender_local}{sep}{from_id}" if from_id else sender_local,
                sender_domain=s.sender.domain,
                recipient_localpart=r.address.localpart,
                recipient_domain=r.address.domain,
                recipient_address=r.given,
                prefix=s.prefix,
                size=len(s.prefix) + len(s.data),
                message_id=s.message_id,
                subject=s.subject,
                from_id=from_id,
                has_8bit=s.has_8bit,
                smtputf8=s.smtputf8,
                require_tls=s.require_tls,
                future_release_request=s.future_release_request,
                extra=s.extra,
            )
            for r, from_id in zip(s.recipients, from_ids, strict=True)
        ]

    async def submit(self, s: Submission, source: str) -> tuple[list[NewMessage], list[int]]:
        """Queue ``s``: returns its rows and their queue IDs once durably committed.

        Raises :class:`SubmitError` (``user`` for FromID problems, a limit code, ``fromid``
        for a FromID that is already in use, ``server`` for anything else, logged, such
        as a message that cannot be DKIM-signed).
        """
        messages = self.messages(s)
        if self.signer is not None:
            try:
                signature = await self.signer.sign(s.prefix, s.data, s.sender)
            except Exception as e:
                self.log.failure("dkim signing message")
                raise SubmitError("server", f"dkim signing message: {e}") from None
            if signature:
                messages = [
                    attrs.evolve(m, prefix=m.prefix + signature, size=m.size + len(signature))
                    for m in messages
                ]
        limits = SendLimits(
            account=s.account.name,
            max_messages=s.account.max_outgoing_messages_per_day,
            max_first_time_recipients=s.account.max_first_time_recipients_per_day,
        )
        try:
            ids: list[int] = await self.store.run_with_blob(
                "queue messages",
                s.data,
                insert_messages,
                messages,
                now=s.now,
                next_attempt=s.next_attempt,
                hold_rules=self.config.hold_rules,
                limits=limits,
            )
        except LimitReached as e:
            raise SubmitError(e.code, e.message) from None
        except Exception as e:
            if s.explicit_from_id and is_fromid_conflict(e):
                raise SubmitError(
                    "fromid", f"fromid not unique: fromid {s.explicit_from_id!r} already present"
                ) from None
            self.log.failure("queueing message")
            raise SubmitError("server", "error queueing message") from None
        child(messages_queued, source).inc(len(ids))
        self.on_queued()
        return messages, ids

