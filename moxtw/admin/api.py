"""The admin HTTP API: mox's admin queue and webhook-queue methods as sherpa JSON calls
(spec §4.7).

``POST <base><Method>`` (base ``/admin/api/``) with ``Content-Type: application/json``
and body ``{"params": [...]}``; the answer is ``{"result": ...}`` or, with status 200 as
sherpa does, ``{"error": {"code": "user:error" | "server:error", "message": ...}}``.  An
unknown method is a 404 with code ``sherpaBadFunction``.

Authentication is HTTP basic auth with any user name and the admin password
(``admin_password_hash`` in the configuration; without it the API answers 403).  Failed
logins count towards the same per-IP limiter as the webapi and SMTP AUTH.  Requiring a
JSON content type keeps browsers from posting cross-site forms with remembered
credentials.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
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

from ..config import OUTGOING_EVENTS
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter
from ..settings import SettingsError, SettingsOps, settings_json
from ..store import admin as sa
from ..store import webhooks as sw
from ..webapi.gojson import GoJSONError, decode, encode, is_gostruct, parse_time, quote
from ..webapi.http import set_security_headers
from . import types as t
from .ops import AdminError, QueueAdmin, RuleView

USER = "user:error"
SERVER = "server:error"


class _Reply(Exception):
    """An error answer: status, sherpa error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _body(request: IRequest | Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _error(request: IRequest | Request, status: int, code: str, message: str) -> bytes:
    return _body(request, status, json.dumps({"error": {"code": code, "message": message}}).encode() + b"\n")


def encode_result(value: Any) -> str:
    """JSON of a method's result: Go's encoding of structs (HTML-escaped, as sherpa)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if is_gostruct(value):
        return encode(value, html_escape=True).decode("utf-8")
    if isinstance(value, list):
        return "[" + ",".join(encode_result(v) for v in value) + "]"
    if isinstance(value, str):
        return quote(value, html_escape=True)
    if isinstance(value, dict):  # a Go map[string]X: keys sorted
        return "{" + ",".join(f"{quote(k, html_escape=True)}:{encode_result(value[k])}" for k in sorted(value)) + "}"
    raise TypeError(f"cannot encode {value!r}")


# --- parameters ------------------------------------------------------------------------------

#: A parameter: a gostruct class, or "int", "bool", "bool?" (bool or null).
Param = tuple[str, Any]


def _decode_param(index: int, name: str, kind: Any, value: Any) -> Any:
    where = f"parameter {index + 1} ({name})"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Reply(200, USER, f"{where}: expected an integer, got {json.dumps(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Reply(200, USER, f"{where}: expected true or false, got {json.dumps(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise _Reply(200, USER, f"{where}: expected a string, got {json.dumps(value)}")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise _Reply(200, USER, f"{where}: expected an object, got {json.dumps(value)}")
        return value
    if kind == "bool?":
        if value is not None and not isinstance(value, bool):
            raise _Reply(200, USER, f"{where}: expected true, false or null, got {json.dumps(value)}")
        return value
    if value is None:
        return kind()
    if not isinstance(value, dict):
        raise _Reply(200, USER, f"{where}: expected an object, got {json.dumps(value)}")
    try:
        return decode(kind, json.dumps(value))
    except GoJSONError as e:
        raise _Reply(200, USER, f"{where}: {e}") from None


def _condition(text: str, what: str) -> sa.TimeCondition | None:
    try:
        return sa.parse_time_condition(text, what)
    except sa.FilterError as e:
        raise AdminError(str(e)) from None


#: Most message IDs a filter may list.
MAX_IDS = 10_000


def to_filter(f: t.Filter) -> sa.Filter:
    if len(f.IDs or ()) > MAX_IDS:
        raise AdminError(f"too many IDs in the filter (at most {MAX_IDS})")
    if f.Max < 0:
        raise AdminError(f"Max must be 0 (no limit) or more, got {f.Max}")
    return sa.Filter(
        ids=tuple(f.IDs or ()),
        account=f.Account,
        sender=f.From,
        recipient=f.To,
        hold=f.Hold,
        submitted=_condition(f.Submitted, "Submitted"),
        next_attempt=_condition(f.NextAttempt, "NextAttempt"),
        transport=f.Transport,
        max=f.Max,
    )


def to_retired_filter(f: t.RetiredFilter) -> sa.RetiredFilter:
    if len(f.IDs or ()) > MAX_IDS:
        raise AdminError(f"too many IDs in the filter (at most {MAX_IDS})")
    if f.Max < 0:
        raise AdminError(f"Max must be 0 (no limit) or more, got {f.Max}")
    return sa.RetiredFilter(
        ids=tuple(f.IDs or ()),
        account=f.Account,
        sender=f.From,
        recipient=f.To,
        submitted=_condition(f.Submitted, "Submitted"),
        last_activity=_condition(f.LastActivity, "LastActivity"),
        transport=f.Transport,
        success=f.Success,
        max=f.Max,
    )


def to_sort(s: t.Sort | t.RetiredSort | t.HookSort | t.HookRetiredSort, fields: dict[str, str]) -> sa.Sort:
    field = fields.get(s.Field)
    if field is None:
        names = ", ".join(repr(k) for k in fields)
        raise AdminError(f"unknown sort field {s.Field!r}, expected one of {names}")
    last_us = None
    if s.LastID > 0:
        if not s.Last:
            raise AdminError("pagination: Last (the last item's sort field value) is required with LastID")
        try:
            last_us = t.to_us(parse_time(s.Last))
        except GoJSONError as e:
            raise AdminError(f"pagination: Last: {e}") from None
    return sa.Sort(field=field, asc=s.Asc, last_id=s.LastID, last_us=last_us)


QUEUE_SORT = {"": "next_attempt", "NextAttempt": "next_attempt", "Queued": "queued"}
RETIRED_SORT = {"": "last_activity", "LastActivity": "last_activity", "Queued": "queued"}
HOOK_SORT = {"": "next_attempt", "NextAttempt": "next_attempt", "Submitted": "submitted"}
HOOK_RETIRED_SORT = {"": "last_activity", "LastActivity": "last_activity", "Submitted": "submitted"}
#: A webhook filter's Event: an outgoing event name, or "incoming".
HOOK_EVENTS = (*OUTGOING_EVENTS, sw.INCOMING)


def _absolute(text: str, what: str, now: float) -> tuple[str, float] | None:
    """A time condition as the store's webhook filters take it: (op, absolute time)."""
    condition = _condition(text, what)
    return None if condition is None else (condition.op, condition.threshold(now))


def _hook_common(ids: list[int] | None, max_: int, event: str) -> None:
    if len(ids or ()) > MAX_IDS:
        raise AdminError(f"too many IDs in the filter (at most {MAX_IDS})")
    if max_ < 0:
        raise AdminError(f"Max must be 0 (no limit) or more, got {max_}")
    if event and event not in HOOK_EVENTS:
        raise AdminError(f"unknown event {event!r}, expected one of {', '.join(HOOK_EVENTS)}")


def to_hook_filter(f: t.HookFilter, now: float) -> sw.HookFilter:
    _hook_common(f.IDs, f.Max, f.Event)
    return sw.HookFilter(
        max=f.Max,
        ids=tuple(f.IDs or ()),
        account=f.Account,
        submitted=_absolute(f.Submitted, "Submitted", now),
        next_attempt=_absolute(f.NextAttempt, "NextAttempt", now),
        event=f.Event,
    )


def to_hook_retired_filter(f: t.HookRetiredFilter, now: float) -> sw.HookRetiredFilter:
    _hook_common(f.IDs, f.Max, f.Event)
    return sw.HookRetiredFilter(
        max=f.Max,
        ids=tuple(f.IDs or ()),
        account=f.Account,
        submitted=_absolute(f.Submitted, "Submitted", now),
        last_activity=_absolute(f.LastActivity, "LastActivity", now),
        event=f.Event,
    )


def to_hook_sort(s: t.HookSort | t.HookRetiredSort, fields: dict[str, str]) -> sw.HookSort:
    sort = to_sort(s, fields)
    return sw.HookSort(
        field=sort.field,
        asc=sort.asc,
        last_id=sort.last_id,
        last=None if sort.last_us is None else sort.last_us / 1_000_000,
    )


def _rule(r: RuleView) -> t.HoldRule:
    return t.hold_rule(r.id, r.account, r.sender_domain, r.recipient_domain)


# --- the API -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class AdminAPI:
    """The admin API resource; mount ``AdminAPI(...).app.resource()`` at ``/admin/api/``."""

    ops: QueueAdmin
    verifier: PasswordVerifier
    auth_limiter: Limiter
    clock: Any
    #: The admin password hash ("": the admin API is disabled).
    password_hash: str
    #: Delay before answering a failed login (slows down password guessing).
    bad_auth_delay: float = 1.0
    #: The path the API is mounted at (for the redirect from the path without slash).
    base_path: str = "/admin/api/"
    #: DNSBL zones monitored (moxtw.dnsbl; empty: no monitor) and the latest results,
    #: ip → zone → status, for DNSBLStatus.
    dnsbl_zones: tuple[str, ...] = ()
    dnsbl_results: Callable[[], dict[str, dict[str, str]]] = dict
    #: Account settings and configuration reloads (moxtw.settings); None: not offered.
    settings: SettingsOps | None = None

    app: ClassVar[Klein] = Klein()
    log: ClassVar[Logger] = Logger()

    def methods(self) -> dict[str, tuple[Sequence[Param], Callable[..., Awaitable[Any]]]]:
        """Method name → (parameters, implementation taking the decoded parameters)."""
        return {
            "QueueSize": ((), self.QueueSize),
            "QueueList": ((("filter", t.Filter), ("sort", t.Sort)), self.QueueList),
            "QueueHoldRuleList": ((), self.QueueHoldRuleList),
            "QueueHoldRuleAdd": ((("holdRule", t.HoldRule),), self.QueueHoldRuleAdd),
            "QueueHoldRuleRemove": ((("holdRuleID", "int"),), self.QueueHoldRuleRemove),
            "QueueHoldSet": ((("filter", t.Filter), ("onHold", "bool")), self.QueueHoldSet),
            "QueueNextAttemptSet": ((("filter", t.Filter), ("minutes", "int")), self.QueueNextAttemptSet),
            "QueueNextAttemptAdd": ((("filter", t.Filter), ("minutes", "int")), self.QueueNextAttemptAdd),
            "QueueFail": ((("filter", t.Filter),), self.QueueFail),
            "QueueDrop": ((("filter", t.Filter),), self.QueueDrop),
            "QueueRequireTLSSet": ((("filter", t.Filter), ("requireTLS", "bool?")), self.QueueRequireTLSSet),
            "RetiredList": ((("filter", t.RetiredFilter), ("sort", t.RetiredSort)), self.RetiredList),
            "HookQueueSize": ((), self.HookQueueSize),
            "HookList": ((("filter", t.HookFilter), ("sort", t.HookSort)), self.HookList),
            "HookNextAttemptSet": ((("filter", t.HookFilter), ("minutes", "int")), self.HookNextAttemptSet),
            "HookNextAttemptAdd": ((("filter", t.HookFilter), ("minutes", "int")), self.HookNextAttemptAdd),
            "HookRetiredList": (
                (("filter", t.HookRetiredFilter), ("sort", t.HookRetiredSort)),
                self.HookRetiredList,
            ),
            "HookCancel": ((("filter", t.HookFilter),), self.HookCancel),
            "DNSBLStatus": ((), self.DNSBLStatus),
            "AccountSettingsGet": ((("account", "str"),), self.AccountSettingsGet),
            "AccountSettingsSave": (
                (("account", "str"), ("changes", "object"), ("version", "str")),
                self.AccountSettingsSave,
            ),
            "ConfigReload": ((), self.ConfigReload),
        }

    # --- methods ---------------------------------------------------------------------------

    async def QueueSize(self) -> int:
        return await self.ops.size()

    async def QueueList(self, f: t.Filter, sort: t.Sort) -> list[t.Msg]:
        items = await self.ops.list_queue(to_filter(f), to_sort(sort, QUEUE_SORT))
        return [t.msg(i) for i in items]

    async def QueueHoldRuleList(self) -> list[t.HoldRule]:
        return [_rule(r) for r in await self.ops.hold_rules()]

    async def QueueHoldRuleAdd(self, rule: t.HoldRule) -> t.HoldRule:
        added, _ = await self.ops.add_hold_rule(rule.Account, rule.SenderDomainStr, rule.RecipientDomainStr)
        return _rule(added)

    async def QueueHoldRuleRemove(self, rule_id: int) -> None:
        await self.ops.remove_hold_rule(rule_id)

    async def QueueHoldSet(self, f: t.Filter, on_hold: bool) -> int:
        return await self.ops.set_hold(to_filter(f), on_hold)

    async def QueueNextAttemptSet(self, f: t.Filter, minutes: int) -> int:
        return await self.ops.set_next_attempt(to_filter(f), minutes)

    async def QueueNextAttemptAdd(self, f: t.Filter, minutes: int) -> int:
        return await self.ops.add_next_attempt(to_filter(f), minutes)

    async def QueueFail(self, f: t.Filter) -> int:
        return len(await self.ops.fail(to_filter(f)))

    async def QueueDrop(self, f: t.Filter) -> int:
        return len(await self.ops.drop(to_filter(f)))

    async def QueueRequireTLSSet(self, f: t.Filter, require_tls: bool | None) -> int:
        return await self.ops.set_require_tls(to_filter(f), require_tls)

    async def RetiredList(self, f: t.RetiredFilter, sort: t.RetiredSort) -> list[t.MsgRetired]:
        items = await self.ops.list_retired(to_retired_filter(f), to_sort(sort, RETIRED_SORT))
        return [t.msg_retired(i) for i in items]

    async def HookQueueSize(self) -> int:
        return await self.ops.hook_queue_size()

    async def HookList(self, f: t.HookFilter, sort: t.HookSort) -> list[t.Hook]:
        hooks = await self.ops.list_hooks(to_hook_filter(f, self.ops.now()), to_hook_sort(sort, HOOK_SORT))
        return [t.hook(h) for h in hooks]

    async def HookNextAttemptSet(self, f: t.HookFilter, minutes: int) -> int:
        return await self.ops.reschedule_hooks(to_hook_filter(f, self.ops.now()), minutes, relative=False)

    async def HookNextAttemptAdd(self, f: t.HookFilter, minutes: int) -> int:
        return await self.ops.reschedule_hooks(to_hook_filter(f, self.ops.now()), minutes, relative=True)

    async def HookRetiredList(self, f: t.HookRetiredFilter, sort: t.HookRetiredSort) -> list[t.HookRetired]:
        hooks = await self.ops.list_retired_hooks(
            to_hook_retired_filter(f, self.ops.now()), to_hook_sort(sort, HOOK_RETIRED_SORT)
        )
        return [t.hook_retired(h) for h in hooks]

    async def HookCancel(self, f: t.HookFilter) -> int:
        return await self.ops.cancel_hooks(to_hook_filter(f, self.ops.now()))

    async def DNSBLStatus(self) -> list[Any]:
        """mox's ``(results map[ip]map[zone]status, using, monitoring []Domain)``: the DNSBL
        monitor's latest results; ``using`` is nil, moxtw never filters incoming mail."""
        monitoring = [t.domain(z) for z in self.dnsbl_zones] or None
        return [self.dnsbl_results(), None, monitoring]

    # --- account settings (moxtw.settings) --------------------------------------------------

    def _settings(self) -> SettingsOps:
        if self.settings is None:
            raise AdminError("account settings cannot be changed in this process")
        return self.settings

    async def AccountSettingsGet(self, account: str) -> dict[str, Any]:
        """The account's settings in effect (secrets redacted) and their ``version``."""
        try:
            return settings_json(self._settings().get(account))
        except SettingsError as e:
            raise AdminError(str(e)) from None

    async def AccountSettingsSave(self, account: str, changes: dict[str, Any], version: str) -> dict[str, Any]:
        """Change settings in the configuration file and apply them (``version`` from
        AccountSettingsGet refuses a change over someone else's; "" skips the check)."""
        try:
            return (await self._settings().save(account, changes, version=version)).to_json()
        except SettingsError as e:
            raise AdminError(str(e)) from None

    async def ConfigReload(self) -> dict[str, Any]:
        """Re-read the configuration file, as SIGHUP does: what was applied, what needs a restart."""
        try:
            return (await self._settings().reload_now()).to_json()
        except SettingsError as e:
            raise AdminError(str(e)) from None

    # --- routing ---------------------------------------------------------------------------

    @app.route("/", branch=False, methods=["GET", "HEAD"])
    def index(self, request: Request) -> bytes:
        set_security_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        items = "".join(f"<li>{m}</li>" for m in sorted(self.methods()))
        state = (
            "The admin API is disabled: no <code>admin_password_hash</code> is configured "
            "(set one with <code>moxtw setpassword --admin</code>)."
            if not self.password_hash
            else "HTTP basic auth with the admin password (any user name)."
        )
        return (
            '<!doctype html><html><head><meta charset="utf-8"><title>Admin API - moxtw</title></head>'
            "<body><h1>Admin API</h1>"
            f"<p>mox's admin queue and webhook methods, sherpa style: POST <code>{{\"params\": [...]}}</code> "
            "as <code>application/json</code> to <code>./&lt;Method&gt;</code>. "
            f"{state} The <code>moxtw queue</code>, <code>moxtw holdrules</code>, "
            "<code>moxtw retired</code> and <code>moxtw hooks</code> commands use it.</p>"
            f"<ul>{items}</ul></body></html>"
        ).encode()

    @app.route("/<string:method>", methods=["GET", "POST"])
    async def call(self, request: Request, method: str) -> bytes:
        set_security_headers(request)
        try:
            if request.method != b"POST":
                raise _Reply(405, USER, "method not allowed: call admin API methods with POST")
            return await self._call(request, method)
        except _Reply as r:
            return _error(request, r.status, r.code, r.message)
        except (AdminError, sa.FilterError) as e:
            return _error(request, 200, USER, str(e))
        except Exception:
            self.log.failure("admin API {method}", method=method)
            return _error(request, 200, SERVER, "unhandled error (see the daemon's log)")

    @app.handle_errors(RequestRedirect)
    def slash(self, request: IRequest, failure: Failure) -> bytes:
        """``/admin/api`` (no trailing slash): 303 to the base path."""
        set_security_headers(request)
        request.setResponseCode(303)
        request.setHeader(b"location", self.base_path.encode())
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b""

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        set_security_headers(request)
        return _error(request, 404, "sherpaBadFunction", "no such path; the admin API is at <Method>")

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        set_security_headers(request)
        return _error(request, 405, USER, "method not allowed: call admin API methods with POST")

    @app.handle_errors(Exception)
    def unhandled(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("admin API request", failure=failure)
        return _error(request, 500, SERVER, "unhandled error")

    # --- a call ------------------------------------------------------------------------------

    async def _call(self, request: Request, method: str) -> bytes:
        if not self.password_hash:
            raise _Reply(
                403,
                USER,
                "the admin API is disabled: no admin_password_hash is configured"
                " (set one with: moxtw setpassword --admin --config FILE, then restart)",
            )
        await self._authenticate(request)
        entry = self.methods().get(method)
        if entry is None:
            raise _Reply(404, "sherpaBadFunction", f"function {json.dumps(method)} does not exist")
        params, implementation = entry
        if getattr(request, "too_large", False):
            raise _Reply(200, USER, "request body too large")
        ctype = getattr(request, "original_content_type", None) or request.getHeader(b"content-type") or b""
        media = ctype.split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            raise _Reply(200, USER, 'unrecognized content-type, expecting "application/json"')
        raw = b""
        if request.content is not None:
            request.content.seek(0)
            raw = request.content.read()
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _Reply(200, USER, f"invalid JSON request body: {e}") from None
        if not isinstance(body, dict):
            raise _Reply(200, USER, 'invalid JSON request body: expected an object {"params": [...]}')
        values = body.get("params")
        if values is None:
            values = []
        if not isinstance(values, list):
            raise _Reply(200, USER, "invalid JSON request body: params must be an array")
        if len(values) != len(params):
            raise _Reply(200, USER, f"bad number of parameters, got {len(values)}, want {len(params)}")
        args = [_decode_param(i, name, kind, v) for i, ((name, kind), v) in enumerate(zip(params, values, strict=True))]
        result = await implementation(*args)
        return _body(request, 200, b'{"result":' + encode_result(result).encode("utf-8") + b"}\n")

    async def _authenticate(self, request: Request) -> None:
        ip = request.getClientAddress().host
        header = request.getHeader(b"authorization")
        if not header or not header.lower().startswith(b"basic "):
            request.setHeader(b"www-authenticate", b'Basic realm="moxtw admin"')
            raise _Reply(401, "user:badAuth", "authentication required: HTTP basic auth with the admin password")
        # Counted as a failure before the password check (parallel guesses), forgiven on success.
        if not await self.auth_limiter.begin_attempt(ip):
            raise _Reply(429, "user:badAuth", "too many failed authentication attempts, try again later")
        password = request.getPassword().decode("utf-8", "replace")
        ok = False
        try:
            ok = await self.verifier.verify(password, self.password_hash)
        finally:
            self.auth_limiter.end_attempt(ip, ok)
        if not ok:
            await deferLater(self.clock, self.bad_auth_delay, lambda: None)
            request.setHeader(b"www-authenticate", b'Basic realm="moxtw admin"')
            raise _Reply(401, "user:badAuth", "authentication failed: wrong admin password")
