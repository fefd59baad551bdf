"""Outgoing delivery: MX resolution (:mod:`.mx`) and the ESMTP client (:mod:`.client`)."""

from .client import AttemptResult, Recipient, RecipientResult, Timeouts, deliver, deliver_to
from .mx import DNSError, Host, Resolver, make_dns_resolver

__all__ = [
    "AttemptResult",
    "DNSError",
    "Host",
    "Recipient",
    "RecipientResult",
    "Resolver",
    "Timeouts",
    "deliver",
    "deliver_to",
    "make_dns_resolver",
]
