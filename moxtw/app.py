"""The composition root: ``build_service`` turns a :class:`Config` into the service tree.

``moxtw.tap.makeService`` calls it with the real reactor; tests call it with a
``MemoryReactorClock`` and assert which ports are listened on and in which order services
start and stop.  Nothing here reads the global reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.application.service import IService
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from . import metrics
from .accounts import Accounts
from .admin.api import AdminAPI
from .admin.ops import QueueAdmin
from .config import Config
from .delivery.mx import Resolver, make_dns_resolver
from .dkim import build_signer
from .dnsbl import DNSBLSource, build_monitor, file_results, monitoring_enabled
from .inbound import Inbound
from .mailauth import Authenticator, Evaluator
from .passwords import PasswordVerifier
from .queue import QueueService
from .queue.smtp_transport import SMTPTransport
from .ratelimit import failed_auth_limiter
from .service import OrderedMultiService, ThreadPoolService
from .settings import ConfigReloader, LiveSettings, SettingsOps
from .smtp import SMTPFactories, build_smtp_factories
from .smtp.incoming import Deliver
from .store import Store, StoreService, sqlite_store
from .submit import Submitter
from .tls import ServerTLS, TLSReloader, tls_context_from_config
from .web import ADMIN_PATH, QuietSite, Root, mount
from .webapi.app import WebAPI
from .webapi.http import CappedRequest
from .webapi.messages import MessageMethods
from .webapi.methods import Methods
from .webhooks import build_webhooks
from .webui.core import WebUI
from .webui.site import build_webui, mount_webui
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
    #: The admin API; its ``ops.on_changed`` must be wired to kick the queue.
    admin: AdminAPI
    #: The web interface (admin and account pages); it shares ``admin.ops``.
    webui: WebUI
    #: Account settings and configuration reloads (moxtw.settings), shared by the admin
    #: API and the web pages; ``settings.reload`` is wired by the process that runs them.
    settings: SettingsOps


def build_parts(config: Config, reactor: Any, *, store: Store | None = None) -> tuple[Parts, list[IService]]:
    """Build every component; returns them and the non-listener services in start order."""
    if store is None:
        store = sqlite_store(config.data_dir, reactor)
    accounts = Accounts.from_config(config)
    crypto_pool = ThreadPool(minthreads=0, maxthreads=2, name="moxtw-crypto")
    signer = build_signer(config, crypto_pool, reactor)
    methods = Methods(config=config, accounts=accounts, store=store, clock=reactor, signer=signer)
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
    # Reloads replace entries of config.accounts in place and rebuild `accounts`.
    live = LiveSettings(config, accounts)
    settings = SettingsOps(live, reactor)
    admin = AdminAPI(
        ops=QueueAdmin(store=store, config=config, clock=reactor),
        verifier=verifier,
        auth_limiter=webapi.auth_limiter,
        clock=reactor,
        password_hash=config.admin_password_hash,
        base_path=ADMIN_PATH,
        # In an HTTP worker the monitor's results come from its state file.
        dnsbl_zones=config.dnsbl_zones if monitoring_enabled(config) else (),
        dnsbl_results=file_results(config),
        settings=settings,
    )
    webui = build_webui(
        config,
        accounts=accounts,
        verifier=verifier,
        auth_limiter=webapi.auth_limiter,
        clock=reactor,
        queue=admin.ops,
        methods=methods,
        settings=settings,
        # As for the admin API: the main process replaces it with the monitor's view.
        dnsbl=DNSBLSource.from_file(config),
    )
    root = Root()
    mount(root, config.webapi.path, webapi.app.resource())
    mount(root, ADMIN_PATH, admin.app.resource())
    mount_webui(root, webui)
    site = QuietSite(root, requestFactory=CappedRequest)
    site.displayTracebacks = False
    site.max_request_size = config.webapi.max_request_size  # type: ignore[attr-defined]
    services: list[IService] = [StoreService(store), ThreadPoolService(crypto_pool)]

    def use_admin_password(new: Config) -> None:
        admin.password_hash = webui.admin_password_hash = new.admin_password_hash

    live.on_applied.append(use_admin_password)
    return Parts(config, store, accounts, verifier, webapi, site, admin, webui, settings), services


def build_smtp(parts: Parts, reactor: Any, deliver_incoming: Deliver, tls: ServerTLS | None) -> SMTPFactories:
    """The SMTP listeners' factories; ``deliver_incoming`` stores incoming mail, ``tls``
    (reloadable) serves STARTTLS and implicit TLS."""
    # One failed-login limiter for the webapi and SMTP AUTH, as mox has.
    return build_smtp_factories(
        parts.config,
        parts.accounts,
        parts.store,
        parts.verifier,
        reactor,
        deliver_incoming,
        tls_context_factory=tls,
        auth_limiter=parts.webapi.auth_limiter,
        submitter=Submitter(
            parts.config, parts.store, on_queued=parts.webapi.methods.on_queued, signer=parts.webapi.methods.signer
        ),
    )


def build_delivery(parts: Parts, reactor: Any) -> tuple[QueueService, Inbound, list[IService]]:
    """The outgoing queue with its SMTP transport, and incoming delivery into accounts,
    sharing the DNS thread pool (MX lookups; SPF, DKIM and DMARC checks)."""
    dns_pool = ThreadPool(minthreads=0, maxthreads=4, name="moxtw-dns")
    resolver = Resolver.from_config(parts.config.dns, dns_pool, reactor)
    transport = SMTPTransport(parts.config, reactor, resolver)
    queue = QueueService(parts.store, parts.config, transport, clock=reactor)
    # localserve only talks to itself on loopback: no SPF/DKIM/DMARC lookups in public DNS
    # (they would only slow delivery down, or hang on a machine without network).
    authenticator = None
    if not parts.config.localserve:
        authenticator = Authenticator(
            Evaluator(make_dns_resolver(parts.config.dns), timeout=parts.config.dns.timeout), dns_pool, reactor
        )
    inbound = Inbound(parts.config, parts.store, reactor, dns_pool, authenticator)
    return queue, inbound, [ThreadPoolService(dns_pool), queue]


def build_service(
    config: Config,
    reactor: Any,
    *,
    store: Store | None = None,
    adjust: Callable[[Config], Config] | None = None,
) -> IService:
    """The daemon: store first, workers in between, listeners last (so stopped first).

    ``adjust`` is applied to the configuration file each time it is reloaded
    (localserve's command-line flags override the file)."""
    top = OrderedMultiService()
    top.setName("moxtw")
    parts, services = build_parts(config, reactor, store=store)
    if adjust is not None:
        parts.settings.live.adjust = adjust
    queue, inbound, delivery_services = build_delivery(parts, reactor)
    (webhooks,) = webhook_services = build_webhooks(config, parts.store, reactor)
    dnsbl = build_monitor(config, reactor)
    if dnsbl is not None:
        # Checks early after many outgoing connections; DNSBLStatus shows its results.
        if isinstance(queue.transport, SMTPTransport):
            queue.transport.on_connections = dnsbl.count_connections
        parts.admin.dnsbl_results = dnsbl.snapshot
        parts.webui.dnsbl = DNSBLSource.for_monitor(dnsbl)
        delivery_services.append(dnsbl)

    def changed() -> None:
        # Messages queued or changed by an admin, here or in an HTTP worker: the queue
        # looks at them, and events an admin operation wrote go out as webhooks.
        queue.kick()
        webhooks.kick()

    parts.webapi.methods.on_queued = queue.kick
    parts.admin.ops.on_changed = changed
    queue.on_event = webhooks.kick
    inbound.on_event = webhooks.kick
    # The webhook sender stops before the queue (reverse order), the store last.
    for svc in [*services, *delivery_services, *webhook_services]:
        svc.setServiceParent(top)

    listeners: list[tuple[str, tuple[str, ...], Any]] = []
    tls_reloader: TLSReloader | None = None
    if config.listeners.smtp or config.listeners.submission or config.listeners.submissions:
        # The certificate is read here (checked before, in tap.Options); SIGHUP reloads it.
        tls = tls_context_from_config(config)
        if tls is not None:
            tls_reloader = TLSReloader(tls, reactor, install_signal=False)
            tls_reloader.setServiceParent(top)
        smtp = build_smtp(parts, reactor, inbound, tls)
        listeners.append(("smtp", config.listeners.smtp, smtp.smtp))
        listeners.append(("submission", config.listeners.submission, smtp.submission))
        if smtp.submissions is not None:
            listeners.append(("submissions", config.listeners.submissions, smtp.submissions))
    if config.listeners.http:
        listeners.append(("http", config.listeners.http, parts.site))
    # The one SIGHUP handler: the configuration file's account settings and the TLS
    # certificate; the admin API's ConfigReload and settings saves reload through it too.
    reloader = ConfigReloader(parts.settings.live, reactor, tls=tls_reloader)
    reloader.setServiceParent(top)
    parts.settings.reload = reloader.request_reload
    use_workers = bool(config.webapi.workers and config.source is not None)
    # HTTP workers' counters and histograms, added to this process's (moxtw.metrics).
    worker_metrics = str(config.data_dir / "worker-metrics") if use_workers else None
    if config.listeners.metrics:
        metrics_root = Resource()
        registry = metrics.exposition_registry(
            worker_dir=worker_metrics, collectors=[metrics.QueueStats(parts.store.db, reactor)]
        )
        metrics_root.putChild(b"metrics", MetricsResource(registry))
        listeners.append(("metrics", config.listeners.metrics, QuietSite(metrics_root)))

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
        workers.on_queued = changed
        workers.metrics_dir = worker_metrics
        # Reloads send the new configuration text to the workers; a worker that saved
        # settings asks for one.
        workers.on_reload_request = reloader.worker_request
        if dnsbl is not None:
            workers.on_dnsbl_check = dnsbl.request_check
        reloader.workers = workers
        workers.setServiceParent(top)
    return top
