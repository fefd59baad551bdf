"""The composition root: ``build_service`` turns a :class:`Config` into the service tree.

``moxtw.tap.makeService`` calls it with the real reactor; tests call it with a
``MemoryReactorClock`` and assert which ports are listened on and in which order services
start and stop.  Nothing here reads the global reactor.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.application.service import IService
from twisted.web.resource import Resource
from twisted.web.server import Site

from .config import Config
from .service import OrderedMultiService
from .store import Store, StoreService, sqlite_store
from .web import Root


def build_http_root(config: Config, store: Store, reactor: Any) -> Resource:
    return Root()


def build_service(config: Config, reactor: Any, *, store: Store | None = None) -> IService:
    """The daemon: store first, workers in between, listeners last (so stopped first)."""
    top = OrderedMultiService()
    top.setName("moxtw")
    if store is None:
        store = sqlite_store(config.data_dir, reactor)
    StoreService(store).setServiceParent(top)

    listeners: list[tuple[str, tuple[str, ...], Any]] = []
    if config.listeners.http:
        site = Site(build_http_root(config, store, reactor))
        site.displayTracebacks = False
        listeners.append(("http", config.listeners.http, site))
    if config.listeners.metrics:
        metrics_root = Resource()
        metrics_root.putChild(b"metrics", MetricsResource())
        listeners.append(("metrics", config.listeners.metrics, Site(metrics_root)))

    for name, endpoints, factory in listeners:
        for i, description in enumerate(endpoints):
            svc = strports.service(description, factory, reactor=reactor)
            svc.setName(f"{name}-{i}")
            svc.setServiceParent(top)
    return top
