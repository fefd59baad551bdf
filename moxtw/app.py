"""The composition root: ``build_service`` turns a :class:`Config` into the service tree.

``moxtw.tap.makeService`` calls it with the real reactor; tests call it with a
``MemoryReactorClock`` and assert which ports are listened on and in which order services
start and stop.  Nothing here reads the global reactor.
"""

from __future__ import annotations

from typing import Any

import attrs
from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.application.service import IService
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from .accounts import Accounts
from .config import Config
from .delivery.mx import Resolver
from .passwords import PasswordVerifier
from .queue import QueueService
from .queue.smtp_transport import SMTPTransport
from .ratelimit import failed_auth_limiter
from .service import OrderedMultiService, ThreadPoolService
from .smtp import SMTPFactories, build_smtp_factories
from .smtp.incoming import IncomingMessage
from .store import Store, StoreService, sqlite_store
from .store.messages import deliver
from .submit import Submitter
from .web import QuietSite, Root, mount
from .webapi.app import WebAPI
from .webapi.http import CappedRequest
from .webapi.messages import MessageMethods
from .webapi.methods import Methods
from .workers import HTTPWorkers, ReusePortListener


@attrs.define(eq=False)
class Parts:
    """The objects of a running daemon, for tests and for wiring between services."""

    config: Config
    store: Store
    accounts: Accounts
    verifier: PasswordVerifier
    webapi: WebAPI
    site: Site


def build_parts(config: Config, reactor: Any, *, store: Store | None = None) -> tuple[Parts, list[IService]]:
    """Build every component; returns them and the non-listener services in start order."""
    if store is None:
        store = sqlite_store(config.data_dir, reactor)
    accounts = Accounts.from_config(config)
    crypto_pool = ThreadPool(minthreads=0, maxthreads=2, name="moxtw-crypto")
    methods = Methods(config=config, accounts=accounts, store=store, clock=reactor)
    verifier = PasswordVerifier(crypto_pool, reactor)
    webapi = WebAPI(
        methods=methods,
        messages=MessageMethods(store=store),
        accounts=accounts,
        verifier=verifier,
        auth_limiter=failed_auth_limiter(reactor),
        clock=reactor,
        base_path=config.webapi.path,
    )
    root = Root()
    mount(root, config.webapi.path, webapi.app.resource())
    site = QuietSite(root, requestFactory=CappedRequest)
    site.displayTracebacks = False
    site.max_request_size = config.webapi.max_request_size  # type: ignore[attr-defined]
    services: list[IService] = [StoreService(store), ThreadPoolService(crypto_pool)]
    return Parts(config, store, accounts, verifier, webapi, site), services


def build_smtp(parts: Parts, reactor: Any) -> SMTPFactories:
    """The SMTP listeners' factories; incoming mail goes into the recipient's Inbox."""
    store = parts.store

    async def deliver_incoming(message: IncomingMessage) -> None:
        await deliver(store, message.account, "Inbox", message.data, received=reactor.seconds())

    # One failed-login limiter for the webapi and SMTP AUTH, as mox has.
    return build_smtp_factories(
        parts.config,
        parts.accounts,
        store,
        parts.verifier,
        reactor,
        deliver_incoming,
        auth_limiter=parts.webapi.auth_limiter,
        submitter=Submitter(parts.config, store, on_queued=parts.webapi.methods.on_queued),
    )


def build_queue(parts: Parts, reactor: Any) -> tuple[QueueService, list[IService]]:
    """The outgoing queue with its SMTP transport (and the DNS thread pool it needs)."""
    dns_pool = ThreadPool(minthreads=0, maxthreads=4, name="moxtw-dns")
    resolver = Resolver.from_config(parts.config.dns, dns_pool, reactor)
    transport = SMTPTransport(parts.config, reactor, resolver)
    queue = QueueService(parts.store, parts.config, transport, clock=reactor)
    return queue, [ThreadPoolService(dns_pool), queue]


def build_service(config: Config, reactor: Any, *, store: Store | None = None) -> IService:
    """The daemon: store first, workers in between, listeners last (so stopped first)."""
    top = OrderedMultiService()
    top.setName("moxtw")
    parts, services = build_parts(config, reactor, store=store)
    queue, queue_services = build_queue(parts, reactor)
    parts.webapi.methods.on_queued = queue.kick
    for svc in [*services, *queue_services]:
        svc.setServiceParent(top)

    listeners: list[tuple[str, tuple[str, ...], Any]] = []
    if config.listeners.smtp or config.listeners.submission or config.listeners.submissions:
        smtp = build_smtp(parts, reactor)
        listeners.append(("smtp", config.listeners.smtp, smtp.smtp))
        listeners.append(("submission", config.listeners.submission, smtp.submission))
        if smtp.submissions is not None:
            listeners.append(("submissions", config.listeners.submissions, smtp.submissions))
    if config.listeners.http:
        listeners.append(("http", config.listeners.http, parts.site))
    if config.listeners.metrics:
        metrics_root = Resource()
        metrics_root.putChild(b"metrics", MetricsResource())
        listeners.append(("metrics", config.listeners.metrics, QuietSite(metrics_root)))

    use_workers = bool(config.webapi.workers and config.source is not None)
    shared: list[ReusePortListener] = []
    for name, endpoints, factory in listeners:
        for i, description in enumerate(endpoints):
            listener: IService
            if name == "http" and use_workers:
                shared_listener = ReusePortListener(description, factory, reactor)
                shared.append(shared_listener)
                listener = shared_listener
            else:
                listener = strports.service(description, factory, reactor=reactor)
            listener.setName(f"{name}-{i}")
            listener.setServiceParent(top)
    if shared:
        workers = HTTPWorkers(str(config.source), shared, config.webapi.workers, reactor)
        workers.on_queued = queue.kick
        workers.setServiceParent(top)
    return top
