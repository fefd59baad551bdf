"""The HTTP listener's root resource: webapi below its configured path, the admin API."""

from __future__ import annotations

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from . import __version__

#: Where the admin API is mounted (``moxtw queue ...`` defaults to it).
ADMIN_PATH = "/admin/api/"


class Root(Resource):
    """``/``: a small index; children (``webapi``, ``admin``) are mounted by path."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":  # "/" itself: this index
            return self
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            "<!doctype html><html><head><title>moxtw</title></head><body>"
            f"<h1>moxtw {__version__}</h1><ul>"
            '<li><a href="/webapi/v0/">webapi</a></li>'
            f'<li><a href="{ADMIN_PATH}">admin API</a> (queue and hold rules)</li>'
            "</ul></body></html>"
        ).encode()


def mount(root: Resource, path: str, child: Resource) -> None:
    """Put ``child`` at ``path`` (such as ``/webapi/``) below ``root``, creating levels."""
    parts = [p.encode() for p in path.strip("/").split("/") if p]
    if not parts:
        raise ValueError("cannot mount at /")
    node = root
    for part in parts[:-1]:
        nxt = node.children.get(part)
        if nxt is None:
            nxt = Resource()
            node.putChild(part, nxt)
        node = nxt
    node.putChild(parts[-1], child)


class QuietSite(Site):
    """A ``Site`` without per-request access log lines (metrics count requests instead).

    At hundreds of webapi calls per second, formatting and writing an access log line per
    request costs a noticeable share of the reactor thread.
    """

    def log(self, request: http.Request) -> None:
        pass
