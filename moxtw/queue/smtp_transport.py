"""The queue's transport over the SMTP delivery client (``moxtw.delivery``).

Production: the recipient domain's MX hosts, on ``[queue] port``.  localserve: this
daemon's own incoming SMTP listener (mox's localserve does the same), where the special
recipient localparts simulate failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .. import metrics
from ..config import Config
from ..delivery.client import AttemptResult, Timeouts, deliver, deliver_to
from ..delivery.mx import Resolver
from .transport import Batch, RecipientOutcome, Result


def localserve_address(config: Config) -> tuple[str, int]:
    """Where localserve delivers: the first ``listeners.smtp`` endpoint's IPv4 address."""
    from twisted.internet.endpoints import _parseServer

    for description in config.listeners.smtp:
        _, args, kw = _parseServer(description, None)
        interface = kw.get("interface") or "127.0.0.1"
        if ":" not in interface:
            return interface, int(args[0])
    return "127.0.0.1", 1025


@attrs.define(eq=False)
class SMTPTransport:
    config: Config
    reactor: Any
    resolver: Resolver
    #: Called with the number of SMTP connections an attempt dialled (the DNSBL monitor
    #: checks early after many).
    on_connections: Callable[[int], None] | None = None
    #: Connect and reply timeouts (mox's smtpclient defaults; tests use short ones).
    timeouts: Timeouts = attrs.Factory(Timeouts)

    async def __call__(self, batch: Batch) -> Sequence[RecipientOutcome]:
        if self.config.localserve and len(batch.messages) > 1:
            # localserve's own server fails DATA for the whole transaction when one
            # recipient is special; one transaction per recipient gives each its own
            # outcome (moxtw's fix 15).
            outcomes: list[RecipientOutcome] = []
            for message in batch.messages:
                outcomes.extend(await self._deliver(attrs.evolve(batch, messages=(message,))))
            return outcomes
        return await self._deliver(batch)

    async def _deliver(self, batch: Batch) -> Sequence[RecipientOutcome]:
        recipients = [m.recipient.smtp_form(batch.smtputf8) for m in batch.messages]
        mail_from = batch.mail_from.smtp_form(batch.smtputf8) if batch.mail_from.localpart else ""
        common: dict[str, Any] = {
            "mail_from": mail_from,
            "recipients": recipients,
            "data": batch.data,
            "ehlo_hostname": self.config.hostname,
            "require_tls": batch.require_tls,
            "smtputf8": batch.smtputf8,
            "has_8bit": batch.has_8bit,
            "timeouts": self.timeouts,
        }
        result: AttemptResult
        start = self.reactor.seconds()
        if self.config.localserve:
            ip, port = localserve_address(self.config)
            result = await deliver_to(self.reactor, "localhost", ip, port, **common)
        else:
            result = await deliver(
                self.reactor, self.resolver, domain=batch.domain, port=self.config.queue.port, **common
            )
        transport = batch.transport or ("localserve" if self.config.localserve else "direct")
        metrics.delivery_attempt(result, self.reactor.seconds() - start, transport, batch.require_tls)
        if self.on_connections is not None and result.dialed:
            self.on_connections(len(result.dialed))
        outcomes = []
        for message, r in zip(batch.messages, result.recipients, strict=False):
            if r.ok:
                kind = Result.DELIVERED
            elif r.permanent:
                kind = Result.PERMANENT
            else:
                kind = Result.TEMPORARY
            outcomes.append(
                RecipientOutcome(
                    msg_id=message.id,
                    result=kind,
                    code=r.code,
                    enhanced_code=r.enhanced,
                    error="" if r.ok else (r.error or r.text),
                    remote_host=result.host,
                    remote_ip=result.ip,
                    tls=result.tls,
                    timeout_after_body=result.after_data_timeout,
                )
            )
        return outcomes
