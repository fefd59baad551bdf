"""HTTP plumbing of the web interface: who is asking over what, same-origin checks,
forms, cookies and headers.

Transport rules (:func:`transport`), decided for the login pages and every page after:

- a TLS connection to moxtw itself is secure;
- a connection from a loopback address (or a UNIX socket) is a *local proxy* if it has
  ``X-Forwarded-Proto`` or ``X-Forwarded-For``: secure when the first
  ``X-Forwarded-Proto`` value is ``https``, otherwise plain HTTP from somewhere else;
  without either header it is a browser on this machine (local);
- any other connection is plain HTTP from another machine; forwarding headers from it
  are ignored (anyone can send them).

Outside localserve the web interface answers only secure or local requests (others get
a 403 page asking for HTTPS), so passwords and session cookies never cross a network
in clear text.  Cookies get ``Secure`` on secure requests.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet.address import UNIXAddress
from twisted.web.server import Request

from ..webapi.errors import WebAPIError
from ..webapi.http import parse_form

#: Content-Security-Policy of every page: no inline script, nothing from elsewhere, no
#: framing, forms only to this site.
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Fields = dict[str, list[str]]


@attrs.frozen
class Transport:
    """How the browser reached us (see the module's rules)."""

    #: The browser's connection is TLS, directly or up to a local proxy.
    secure: bool
    #: The browser runs on this machine and talks to us directly.
    local: bool
    #: The request came through a local proxy (its forwarding headers are trusted).
    proxied: bool

    def allowed(self, localserve: bool) -> bool:
        return self.secure or self.local or localserve


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    text: str = value.decode("latin-1")
    return text


def _first(value: str | None) -> str:
    """The first entry of a comma-separated forwarding header (the client side's)."""
    return "" if value is None else value.split(",", 1)[0].strip()


def is_loopback_peer(request: Any) -> bool:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if isinstance(peer, UNIXAddress):  # a UNIX socket: on this machine
        return True
    if host is None:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def transport(request: Any) -> Transport:
    if request.isSecure():
        return Transport(secure=True, local=False, proxied=False)
    if not is_loopback_peer(request):
        return Transport(secure=False, local=False, proxied=False)
    proto = _header(request, b"x-forwarded-proto")
    if proto is None and _header(request, b"x-forwarded-for") is None:
        return Transport(secure=False, local=True, proxied=False)
    return Transport(secure=_first(proto).lower() == "https", local=False, proxied=True)


def _origin_parts(scheme: str, hostport: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{hostport}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or parts.username is not None:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(request: Any, via: Transport) -> bool:
    """Whether a state-changing request comes from one of our own pages.

    With an ``Origin`` header, it must be this site's origin (scheme from the transport,
    host from ``Host``, or ``X-Forwarded-Host`` through a local proxy).  Without one,
    ``Sec-Fetch-Site`` must be absent, ``same-origin`` or ``none``.  Non-browser clients
    send neither, and still need the CSRF token.
    """
    origin = _header(request, b"origin")
    if origin is None:
        site = _header(request, b"sec-fetch-site")
        return site is None or site.strip().lower() in ("same-origin", "none")
    host = _first(_header(request, b"x-forwarded-host")) if via.proxied else ""
    host = host or (_header(request, b"host") or "")
    scheme = "https" if via.secure else "http"
    try:
        given = urlsplit(origin.strip())
    except ValueError:
        return False
    if given.scheme not in ("http", "https") or given.path or given.query or given.fragment:
        return False
    theirs = _origin_parts(given.scheme, given.netloc)
    ours = _origin_parts(scheme, host)
    return theirs is not None and theirs == ours


def query(request: Any) -> Fields:
    """The query string's fields (never the body's)."""
    raw = urlsplit(request.uri.decode("latin-1")).query
    return parse_qs(raw, keep_blank_values=True) if raw else {}


class BadForm(Exception):
    """The request body is not a form we can read; ``str()`` says why."""


def form(request: Any) -> Fields:
    """The POST body's fields (urlencoded or multipart)."""
    if getattr(request, "too_large", False):
        raise BadForm("request body too large")
    if getattr(request, "original_content_type", None) is None and not request.requestHeaders.hasHeader(
        b"content-type"
    ):
        return {}
    try:
        return parse_form(request).fields
    except WebAPIError as e:
        raise BadForm(e.message) from None


def field(fields: Fields, name: str, default: str = "") -> str:
    """The first value of a field, stripped of surrounding white space."""
    values = fields.get(name)
    return values[0].strip() if values else default


def page_headers(request: Request | Any) -> None:
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-frame-options", b"deny")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")


def set_cookie(request: Any, name: str, value: str, path: str, max_age: int, secure: bool) -> None:
    """A cookie only our own pages at ``path`` get: HttpOnly, SameSite=Strict, Secure
    over TLS.  ``max_age`` 0 removes it."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if max_age <= 0:
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    if secure:
        parts.append("Secure")
    request.responseHeaders.addRawHeader(b"set-cookie", "; ".join(parts).encode("ascii"))


def cookie(request: Any, name: str) -> str:
    value = request.getCookie(name.encode("ascii"))
    if value is None:
        return ""
    try:
        text: str = value.decode("ascii")
    except UnicodeDecodeError:
        return ""
    return text


def safe_next(path: str, base: str) -> str | None:
    """``path`` if it is a local path below ``base`` (to go to after login), else None."""
    if not path.startswith(base) or path.startswith("//") or "\\" in path:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return None
    return path
