"""The HTTP listener's root resource: webapi below its configured path, the admin API, the
web interface (admin and account pages)."""

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
            '<li><a href="/admin/">admin pages</a> (log in with the admin password)</li>'
            '<li><a href="/account/">account pages</a> (log in with a login address)</li>'
            "</ul></body></html>"
        ).encode()


def mount(root: Resource, path: str, child: Resource, *, below: bool = False) -> None:
    """Put ``child`` at ``path`` (such as ``/webapi/``) below ``root``, creating levels.

    With ``below``, ``child`` (a Klein app, say) serves ``path`` itself and everything
    below it that is not mounted more specifically: the admin pages at ``/admin/`` and
    the admin API at ``/admin/api/`` can be mounted in either order.
    """
    parts = [p.encode() for p in path.strip("/").split("/") if p]
    if not parts:
        raise ValueError("cannot mount at /")
    node = root
    for part in parts[:-1]:
        nxt = node.children.get(part)
        if nxt is None:
            nxt = Branch()
            node.putChild(part, nxt)
        node = nxt
    if not below:
        node.putChild(parts[-1], child)
        return
    existing = node.children.get(parts[-1])
    branch = existing if isinstance(existing, Branch) else Branch()
    if existing is not None and existing is not branch:
        branch.children.update(existing.children)
    branch.fallback = child
    node.putChild(parts[-1], branch)


class Branch(Resource):
    """A path level with children mounted by name and, optionally, a ``fallback``
    resource for the level itself and every other path below it."""

    def __init__(self) -> None:
        super().__init__()
        self.fallback: Resource | None = None

    def getChild(self, path: bytes, request: Request) -> Resource:
        if self.fallback is None:
            return super().getChild(path, request)  # type: ignore[no-any-return]
        if not self.fallback.isLeaf:
            return self.fallback.getChildWithDefault(path, request)  # type: ignore[no-any-return]
        # A leaf (a Klein app) routes on the rest of the path: hand the segment back.
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self.fallback

    def render(self, request: Request) -> bytes | int:
        if self.fallback is None:
            return super().render(request)  # type: ignore[no-any-return]
        return self.fallback.render(request)  # type: ignore[no-any-return]


class QuietSite(Site):
    """A ``Site`` without per-request access log lines (metrics count requests instead).

    At hundreds of webapi calls per second, formatting and writing an access log line per
    request costs a noticeable share of the reactor thread.
    """

    def log(self, request: http.Request) -> None:
        pass
