"""Webhooks: the persisted webhook queue and its HTTP sender (spec §3).

:func:`build_webhooks` makes the daemon's :class:`WebhookService` with its own treq
client and connection pool.  Payload builders: :mod:`.payloads` (outgoing events),
:mod:`.incoming` (incoming messages); signatures: :mod:`.signing`.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..store import Store
from .http import make_client
from .service import DEFAULT_MAX_IN_FLIGHT, WebhookService

__all__ = ["WebhookService", "build_webhooks"]


def build_webhooks(config: Config, store: Store, reactor: Any) -> list[WebhookService]:
    """The webhook service (one, in a list to add to the service tree after the queue,
    so it stops before the store closes)."""
    limits = [
        hook.max_in_flight
        for account in config.accounts.values()
        for hook in (account.outgoing_webhook, account.incoming_webhook)
        if hook is not None
    ]
    client, pool = make_client(
        reactor,
        max_per_host=max([DEFAULT_MAX_IN_FLIGHT, *limits]),
        connect_timeout=config.webhooks.timeout,
    )
    return [WebhookService(store=store, config=config, client=client, clock=reactor, pool=pool)]
