"""The interface between the queue and whatever delivers its messages.

The queue hands a :class:`Batch` (one SMTP transaction's worth of claimed messages) to an
injected :data:`Transport` and gets back one :class:`RecipientOutcome` per message.  The
transport owns routing, MX lookup, connection handling, TLS and timeouts; the queue owns
claiming, retries, suppression, DSNs, retirement and events.  No database transaction or
row lock is open while a transport runs.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs

from ..address import Address


class Result(enum.Enum):
    DELIVERED = "delivered"
    #: 4xx, connection/DNS errors, timeouts: tried again later (until attempts run out).
    TEMPORARY = "temporary"
    #: 5xx marked permanent, permanent DNS error, REQUIRETLS impossible: no more attempts.
    PERMANENT = "permanent"


@attrs.frozen
class OutgoingMessage:
    """One recipient of a batch (one queue message)."""

    id: int
    account: str
    recipient: Address
    #: The recipient as the client gave it.
    recipient_address: str
    from_id: str
    message_id: str
    subject: str
    extra: Mapping[str, str]


@attrs.frozen
class Batch:
    """Claimed messages delivered in one SMTP transaction.

    All share MAIL FROM, the recipient domain, the message ``data`` (per-recipient prefix
    included: messages only share a batch when their prefix is the same), RequireTLS and
    transport.
    """

    messages: tuple[OutgoingMessage, ...]
    mail_from: Address
    #: Recipient domain (Unicode form, as stored).
    domain: str
    #: Prefix (Received, DKIM-Signature) followed by the message file's contents.
    data: bytes
    smtputf8: bool
    has_8bit: bool
    require_tls: bool | None
    #: Named transport ("": routing rules/direct delivery).
    transport: str
    #: The attempt number (1-based) this delivery is.
    attempt: int


@attrs.frozen
class RecipientOutcome:
    """What happened to one message of a batch."""

    msg_id: int
    result: Result
    #: SMTP reply code of the final reply for this recipient (250 when delivered), 0 if
    #: there was none (connection or DNS error).
    code: int = 0
    #: Enhanced status code as the server sent it, full form ("5.1.1"), "" if none.
    enhanced_code: str = ""
    #: Error text ("" when delivered), e.g. "remote smtp server sent unexpected response
    #: status code: got 550, expected 2xx, permanent: 550 5.1.0 nok".
    error: str = ""
    remote_host: str = ""
    remote_ip: str = ""
    tls: bool = False
    #: A timeout after the message body was sent (the message may have arrived); the
    #: queue treats it like any temporary failure and records it in the attempt.
    timeout_after_body: bool = False

    @property
    def secode(self) -> str:
        """Short enhanced code ("1.1"), as mox keeps it."""
        parts = self.enhanced_code.split(".", 1)
        return parts[1] if len(parts) == 2 and parts[0] in ("2", "4", "5") else ""


#: Deliver a batch; one outcome per message (by ``msg_id``).  A message without an outcome,
#: or an exception from the transport, counts as a temporary failure of every message
#: concerned.
Transport = Callable[[Batch], Awaitable[Sequence[RecipientOutcome]]]
