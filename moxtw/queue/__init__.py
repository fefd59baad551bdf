"""The outgoing queue: delivery, retries, DSNs, retirement, events (mox spec §4)."""

from .service import QueueService, default_jitter
from .transport import Batch, OutgoingMessage, RecipientOutcome, Result, Transport

__all__ = [
    "Batch",
    "OutgoingMessage",
    "QueueService",
    "RecipientOutcome",
    "Result",
    "Transport",
    "default_jitter",
]
