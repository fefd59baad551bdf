"""The webapi: mox's webapi v0 over Klein (spec §1).

``POST <base>v0/<Method>`` with the JSON request in form field ``request`` (urlencoded or
multipart), HTTP basic auth with a login address.  200 with JSON on success; 400 with
``{"Code", "Message"}`` for every API error.  Unknown methods, wrong HTTP methods and
oversized bodies also get a JSON error (moxtw's choice where mox answers plain text).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from .. import metrics
from ..accounts import Accounts, Login
from ..metrics import webapi_requests
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter
from . import types as t
from .errors import WebAPIError
from .gojson import GoJSONError, decode_request, encode, encode_response
from .http import parse_form, set_security_headers, text_error
from .messages import MessageMethods, RawResult
from .methods import Methods
from .openapi import document_bytes

METHODS = sorted(t.REQUEST_TYPES)

UNAUTHORIZED = "401 - unauthorized - use http basic auth with email address as username"


def _json_error(request: IRequest | Request, code: str, message: str, status: int = 400) -> bytes:
    request.setResponseCode(status)
    return _json(request, encode_response(t.Error(Code=code, Message=message)))


def _json(request: IRequest | Request, body: bytes) -> bytes:
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


@attrs.define(eq=False)
class WebAPI:
    """The webapi resource; mount ``WebAPI(...).app.resource()`` at the base path."""

    methods: Methods
    messages: MessageMethods
    accounts: Accounts
    verifier: PasswordVerifier
    auth_limiter: Limiter
    clock: Any
    #: Delay before answering a failed login (slows down password guessing).
    bad_auth_delay: float = 1.0
    #: The path the webapi is mounted at (for redirects).
    base_path: str = "/webapi/"

    app: ClassVar[Klein] = Klein()
    log: ClassVar[Logger] = Logger()

    # --- routing ---------------------------------------------------------------------

    @app.route("/", branch=False)
    def base(self, request: Request) -> bytes:
        set_security_headers(request)
        if request.method != b"GET":
            request.setHeader(b"allow", b"GET")
            return text_error(request, 405, "405 - method not allow")
        return self._redirect(request, self.base_path + "v0/")

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: Request) -> bytes:
        """The OpenAPI 3.1 document of the webapi (no login needed, like the pages)."""
        set_security_headers(request)
        request.setHeader(b"access-control-allow-origin", b"*")
        return _json(request, document_bytes(self.base_path))

    def _redirect(self, request: IRequest | Request, location: str) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode())
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b""

    @app.route("/v0/", branch=False)
    def index(self, request: Request) -> bytes:
        set_security_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        items = "".join(f'<li><a href="{m}">{m}</a></li>' for m in METHODS)
        return (
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Webapi - moxtw</title></head>"
            "<body><h1>Webapi and webhooks</h1>"
            "<p>moxtw implements mox's webapi v0: POST a JSON request in form field "
            "<code>request</code> with HTTP basic auth. Documentation: "
            '<a href="https://pkg.go.dev/github.com/mjl-/mox/webapi/">mox webapi</a>; '
            '<a href="../openapi.json">OpenAPI document</a>.</p>'
            f"<ul>{items}</ul></body></html>"
        ).encode()

    @app.route("/v0/<string:method>", methods=["GET", "POST"])
    async def call(self, request: Request, method: str) -> bytes:
        set_security_headers(request)
        if method not in t.REQUEST_TYPES:
            webapi_requests.labels("(unknown)", "notfound").inc()
            return _json_error(request, "protocol", f"unknown method {json.dumps(method)}", 404)
        if request.method == b"GET":
            return self._method_page(request, method)
        if request.method != b"POST":  # HEAD, which werkzeug routes like GET
            request.setHeader(b"allow", b"GET, POST")
            return _json_error(request, "protocol", "method not allowed - use get or post", 405)
        start = time.monotonic()
        result = "ok"
        try:
            return await self._call(request, method)
        except WebAPIError as e:
            result = e.code
            return _json_error(request, e.code, e.message, e.status)
        except _Answered as a:
            result = a.result
            return a.body
        except Exception:
            result = "server"
            self.log.failure("webapi {method}", method=method)
            return _json_error(request, "server", "unhandled error")
        finally:
            metrics.webapi_call(method, result, time.monotonic() - start)

    @app.handle_errors(RequestRedirect)
    def slash(self, request: IRequest, failure: Failure) -> bytes:
        """``GET /webapi`` (no trailing slash): 303 to the base path, as mox."""
        set_security_headers(request)
        return self._redirect(request, self.base_path)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        set_security_headers(request)
        return _json_error(request, "protocol", "no such path; the webapi is at v0/<Method>", 404)

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        set_security_headers(request)
        assert isinstance(failure.value, MethodNotAllowed)
        allowed = sorted(m for m in failure.value.valid_methods or ["GET", "POST"] if m != "HEAD")
        request.setHeader(b"allow", ", ".join(allowed).encode())
        use = " or ".join(m.lower() for m in allowed)
        return _json_error(request, "protocol", f"method not allowed - use {use}", 405)

    @app.handle_errors(Exception)
    def unhandled(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("webapi request", failure=failure)
        return _json_error(request, "server", "unhandled error")

    # --- a call ----------------------------------------------------------------------

    async def _call(self, request: Request, method: str) -> bytes:
        login = await self._authenticate(request)
        if getattr(request, "too_large", False):
            limit = getattr(getattr(request.channel, "site", None), "max_request_size", 0)
            raise WebAPIError("protocol", f"request body too large (limit {limit} bytes)")
        form = parse_form(request)
        values = form.fields.get("request", [])
        if not values or not values[0]:
            raise WebAPIError("protocol", "missing/empty request")
        try:
            req = decode_request(method, values[0])
        except GoJSONError as e:
            raise WebAPIError("protocol", f"parsing request: {e}") from None
        target = self.messages if method.startswith("Message") else self.methods
        handler: Callable[..., Awaitable[Any]] = getattr(target, method)
        if method == "Send":
            response = await handler(login, req, form.files)
        else:
            response = await handler(login, req)
        if isinstance(response, RawResult):
            return response.write(request)
        return _json(request, encode_response(response))

    async def _authenticate(self, request: Request) -> Login:
        header = request.getHeader(b"authorization")
        if not header or not header.lower().startswith(b"basic "):
            request.setHeader(b"www-authenticate", b"Basic realm=webapi")
            raise _Answered("badauth", text_error(request, 401, UNAUTHORIZED))
        username = request.getUser().decode("utf-8", "replace")
        password = request.getPassword().decode("utf-8", "replace")
        ip = request.getClientAddress().host
        # Counted as a failure before the password check (parallel guesses), forgiven on success.
        if not await self.auth_limiter.begin_attempt(ip):
            metrics.authentication_ratelimited.labels("webapi").inc()
            raise _Answered("ratelimited", text_error(request, 429, "429 - too many auth attempts"))
        login = self.accounts.login(username)
        ok = False
        try:
            if login is not None and login.account.password_hash:
                ok = await self.verifier.verify(password, login.account.password_hash)
        finally:
            self.auth_limiter.end_attempt(ip, ok and login is not None and not login.account.login_disabled)
        if not ok or login is None:
            metrics.authentication("webapi", "httpbasic", "badcreds")
            await deferLater(self.clock, self.bad_auth_delay, lambda: None)
            request.setHeader(b"www-authenticate", b"Basic realm=webapi")
            raise _Answered("badauth", text_error(request, 401, UNAUTHORIZED))
        if login.account.login_disabled:
            metrics.authentication("webapi", "httpbasic", "logindisabled")
            raise _Answered(
                "badauth", text_error(request, 401, "401 - unauthorized - login is disabled for this account")
            )
        metrics.authentication("webapi", "httpbasic", "ok")
        return login

    # --- pages -----------------------------------------------------------------------

    def _method_page(self, request: Request, method: str) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        example = _example(t.REQUEST_TYPES[method])
        response_type = t.RESPONSE_TYPES[method]
        if response_type is None:
            response_html = "<p>Method has a non-JSON response.</p>"
        else:
            response_html = (
                "<h2>Example response</h2><textarea readonly rows=\"12\" cols=\"80\">"
                + html.escape(_example(response_type))
                + "</textarea>"
            )
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Method {method} - WebAPI - moxtw</title></head>
<body>
<h1>Method {method}</h1>
<p><a href="./">all methods</a>, <a href="../openapi.json">OpenAPI document</a></p>
<form id="call" method="post" action="{method}" enctype="multipart/form-data">
<label for="request">Request (JSON)</label><br>
<textarea id="request" name="request" rows="16" cols="80">{html.escape(example)}</textarea><br>
<button type="reset">Reset</button> <button type="submit">Call</button>
</form>
{response_html}
</body></html>""".encode()


def _example(cls: type) -> str:
    return json.dumps(json.loads(encode(cls(), html_escape=False, fill_nil=True)), indent="\t", ensure_ascii=False)


class _Answered(Exception):
    """Raised with a finished (non-JSON, mox-compatible) answer, such as 401 or 429."""

    def __init__(self, result: str, body: bytes) -> None:
        super().__init__(result)
        self.result = result
        self.body = body
