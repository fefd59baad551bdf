"""Transport and same-origin rules, local paths after login, mounting around the admin API."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from moxtw.web import Branch, mount
from moxtw.webui.http import Transport, safe_next, same_origin, transport


class FakeRequest:
    def __init__(self, peer: Any = None, *, secure: bool = False, **headers: str) -> None:
        self.peer = peer if peer is not None else IPv4Address("TCP", "127.0.0.1", 5000)
        self.secure = secure
        self.headers = {k.replace("_", "-").lower().encode(): v.encode() for k, v in headers.items()}

    def isSecure(self) -> bool:
        return self.secure

    def getClientAddress(self) -> Any:
        return self.peer

    def getHeader(self, name: bytes) -> bytes | None:
        return self.headers.get(name.lower())


REMOTE = IPv4Address("TCP", "192.0.2.7", 5000)


class TransportTests(SynchronousTestCase):
    def test_rules(self) -> None:
        cases = [
            (FakeRequest(), Transport(secure=False, local=True, proxied=False)),
            (FakeRequest(IPv6Address("TCP", "::1", 1)), Transport(False, True, False)),
            (FakeRequest(IPv6Address("TCP", "::ffff:127.0.0.2", 1)), Transport(False, True, False)),
            (FakeRequest(UNIXAddress(b"/run/moxtw.sock")), Transport(False, True, False)),
            (FakeRequest(REMOTE), Transport(False, False, False)),
            (FakeRequest(REMOTE, secure=True), Transport(True, False, False)),
            # Forwarding headers count from a local proxy only.
            (FakeRequest(x_forwarded_proto="https"), Transport(True, False, True)),
            (FakeRequest(x_forwarded_proto="HTTPS, http"), Transport(True, False, True)),
            (FakeRequest(x_forwarded_proto="http"), Transport(False, False, True)),
            (FakeRequest(x_forwarded_for="192.0.2.9"), Transport(False, False, True)),
            (FakeRequest(REMOTE, x_forwarded_proto="https"), Transport(False, False, False)),
        ]
        for request, expected in cases:
            self.assertEqual(transport(request), expected, (request.peer, request.headers))

    def test_allowed(self) -> None:
        self.assertTrue(Transport(True, False, False).allowed(localserve=False))
        self.assertTrue(Transport(False, True, False).allowed(localserve=False))
        self.assertFalse(Transport(False, False, True).allowed(localserve=False))
        self.assertTrue(Transport(False, False, False).allowed(localserve=True))


class OriginTests(SynchronousTestCase):
    def check(self, request: FakeRequest) -> bool:
        return same_origin(request, transport(request))

    def test_origin_header(self) -> None:
        self.assertTrue(self.check(FakeRequest(host="localhost:1080", origin="http://localhost:1080")))
        self.assertTrue(self.check(FakeRequest(host="LocalHost", origin="http://localhost:80")))
        self.assertFalse(self.check(FakeRequest(host="localhost:1080", origin="http://localhost:1081")))
        self.assertFalse(self.check(FakeRequest(host="localhost", origin="http://evil.example")))
        self.assertFalse(self.check(FakeRequest(host="localhost", origin="https://localhost")))
        self.assertFalse(self.check(FakeRequest(host="localhost", origin="null")))
        self.assertFalse(self.check(FakeRequest(host="localhost", origin="http://localhost/path")))
        self.assertFalse(self.check(FakeRequest(host="localhost", origin="javascript://localhost")))
        self.assertFalse(self.check(FakeRequest(origin="http://localhost")))  # no Host
        # Through a TLS proxy: https, and the host the browser used.
        proxied = FakeRequest(host="127.0.0.1:1080", origin="https://mail.example.org",
                              x_forwarded_proto="https", x_forwarded_host="mail.example.org")  # fmt: skip
        self.assertTrue(self.check(proxied))
        spoofed = FakeRequest(REMOTE, host="localhost", origin="http://evil.example", x_forwarded_host="evil.example")
        self.assertFalse(self.check(spoofed))

    def test_fetch_metadata_without_origin(self) -> None:
        self.assertTrue(self.check(FakeRequest(host="localhost")))
        self.assertTrue(self.check(FakeRequest(host="localhost", sec_fetch_site="same-origin")))
        self.assertTrue(self.check(FakeRequest(host="localhost", sec_fetch_site="none")))
        self.assertFalse(self.check(FakeRequest(host="localhost", sec_fetch_site="cross-site")))
        self.assertFalse(self.check(FakeRequest(host="localhost", sec_fetch_site="same-site")))


class NextTests(SynchronousTestCase):
    def test_safe_next(self) -> None:
        self.assertEqual(safe_next("/admin/queue/?to=x", "/admin/"), "/admin/queue/?to=x")
        for bad in ("", "/account/", "//evil.example/admin/", "https://evil.example/admin/",
                    "/admin/\\evil", "/admin/\nx", "admin/"):  # fmt: skip
            self.assertIsNone(safe_next(bad, "/admin/"), bad)


class MountTests(SynchronousTestCase):
    def test_either_order(self) -> None:
        api, pages = Resource(), Resource()
        for order in ([("/admin/api/", api, False), ("/admin/", pages, True)],
                      [("/admin/", pages, True), ("/admin/api/", api, False)]):  # fmt: skip
            root = Resource()
            for path, child, below in order:
                mount(root, path, child, below=below)
            admin = root.children[b"admin"]
            assert isinstance(admin, Branch)
            self.assertIs(admin.children[b"api"], api)
            self.assertIs(admin.fallback, pages)
