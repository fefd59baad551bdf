"""Builds the web interface and mounts it on the HTTP listener's root resource."""

from __future__ import annotations

import importlib.resources
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from ..accounts import Accounts
from ..admin.ops import QueueAdmin
from ..config import Config
from ..dnsbl import DNSBLSource
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter
from ..settings import SettingsOps
from ..web import mount
from ..webapi.methods import Methods
from .account.messages import MessagePages
from .account.settings import SettingsPages
from .account.suppressions import SuppressionPages
from .admin.accounts import AccountPages
from .admin.dashboard import DashboardPages
from .admin.dnsbl import DNSBLPages
from .admin.holdrules import HoldRulePages
from .admin.queue import QueuePages
from .admin.retired import RetiredPages
from .admin.webhooks import WebhookPages
from .core import ACCOUNT_AREA, ADMIN_AREA, WebUI
from .login import LoginPages
from .session import KEY_FILE, Sessions

#: The page groups of each area: (path below the area, navigation label, class).
ADMIN_GROUPS: list[tuple[str, str, Any]] = [
    ("dashboard/", "Dashboard", DashboardPages),
    ("queue/", "Queue", QueuePages),
    ("retired/", "Retired", RetiredPages),
    ("webhooks/", "Webhooks", WebhookPages),
    ("holdrules/", "Hold rules", HoldRulePages),
    ("accounts/", "Accounts", AccountPages),
    ("dnsbl/", "DNSBL", DNSBLPages),
]
ACCOUNT_GROUPS: list[tuple[str, str, Any]] = [
    ("messages/", "Messages", MessagePages),
    ("suppressions/", "Suppressions", SuppressionPages),
    ("settings/", "Settings", SettingsPages),
]

STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}


class StaticFile(Resource):
    """One file of ``moxtw/webui/static/``, kept in memory."""

    isLeaf = True

    def __init__(self, data: bytes, content_type: bytes) -> None:
        super().__init__()
        self.data = data
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"max-age=3600")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-length", b"%d" % len(self.data))
        return self.data

    render_HEAD = render_GET


def static_resource() -> Resource:
    static = Resource()
    folder = importlib.resources.files("moxtw.webui") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            static.putChild(entry.name.encode(), StaticFile(entry.read_bytes(), STATIC_TYPES[suffix]))
    return static


def mount_webui(root: Resource, ui: WebUI) -> None:
    """Mount the admin pages at ``/admin/`` (around the admin API at ``/admin/api/``) and
    the account pages at ``/account/``."""
    static = static_resource()
    for area, groups in ((ADMIN_AREA, ADMIN_GROUPS), (ACCOUNT_AREA, ACCOUNT_GROUPS)):
        mount(root, area.path, LoginPages(ui, area).app.resource(), below=True)
        mount(root, area.path + "static/", static)
        ui.nav[area.kind] = [(path, label) for path, label, _ in groups]
        for path, _, pages in groups:
            mount(root, area.path + path, pages(ui).app.resource())


def build_webui(config: Config, *, accounts: Accounts, verifier: PasswordVerifier, auth_limiter: Limiter,
                clock: Any, queue: QueueAdmin, methods: Methods,
                settings: SettingsOps | None = None, dnsbl: DNSBLSource | None = None) -> WebUI:  # fmt: skip
    """The web interface of a daemon (or an HTTP worker: same key file, same store)."""
    return WebUI(
        sessions=Sessions(config.data_dir / KEY_FILE, clock),
        accounts=accounts,
        verifier=verifier,
        auth_limiter=auth_limiter,
        clock=clock,
        admin_password_hash=config.admin_password_hash,
        queue=queue,
        methods=methods,
        localserve=config.localserve,
        settings=settings,
        dnsbl=dnsbl,
    )
