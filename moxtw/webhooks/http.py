"""One webhook request: headers, the POST over treq, a capped response read, a timeout.

The daemon's client is a ``treq.HTTPClient`` over its own persistent
``HTTPConnectionPool`` (:func:`make_client`); tests pass ``treq.testing.StubTreq``.
Redirects are not followed: a 3xx answer is a failed attempt like any other non-2xx.
"""

from __future__ import annotations

from typing import Any

import attrs
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from .. import __version__
from .signing import signature_headers

__all__ = ["USER_AGENT", "Answer", "BytesProducer", "WebClient", "make_client", "post", "request_headers"]

USER_AGENT = f"moxtw/{__version__} (webhook)"
#: Bytes of a response body kept (mox records 512).
RESPONSE_KEEP = 512
#: A response body longer than this is not read further (the connection is closed).
RESPONSE_READ_MAX = 64 * 1024


#: A ``treq.HTTPClient`` or ``treq.testing.StubTreq`` (whose methods mypy cannot see):
#: we call ``post(url, data=..., headers=..., allow_redirects=False, unbuffered=True)``.
WebClient = Any


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once (no cooperator involved)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def make_client(reactor: Any, *, max_per_host: int, idle_timeout: int = 4, connect_timeout: float = 30.0) -> tuple[HTTPClient, HTTPConnectionPool]:
    """A treq client with its own keep-alive pool (close it with the owner).

    ``idle_timeout`` is shorter than common server keep-alive timeouts (Node's 5 s), so
    we rarely send a POST on a connection the server is closing: POSTs are not retried
    on a fresh connection.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = idle_timeout
    agent = Agent(reactor, pool=pool, connectTimeout=connect_timeout)
    return HTTPClient(agent, data_to_body_producer=BytesProducer), pool


def request_headers(
    *,
    hook_id: int,
    attempt: int,
    authorization: str = "",
    signing_secret: str = "",
    webhook_id: str = "",
    timestamp: int = 0,
    body: bytes = b"",
) -> dict[bytes, list[bytes]]:
    """mox's webhook headers (spec §3.2), plus Standard Webhooks headers with a secret."""
    headers: dict[bytes, list[bytes]] = {
        b"User-Agent": [USER_AGENT.encode("ascii")],
        b"Content-Type": [b"application/json; charset=utf-8"],
        b"X-Mox-Webhook-ID": [b"%d" % hook_id],
        b"X-Mox-Webhook-Attempt": [b"%d" % attempt],
    }
    if authorization:
        headers[b"Authorization"] = [authorization.encode("utf-8")]
    if signing_secret:
        for name, value in signature_headers(signing_secret, webhook_id, timestamp, body).items():
            headers[name.encode("ascii")] = [value.encode("ascii")]
    return headers


@attrs.frozen
class Answer:
    """The outcome of one request: a status (``code`` > 0) or a transport error."""

    code: int = 0
    phrase: str = ""
    #: The first :data:`RESPONSE_KEEP` bytes of the response body.
    response: bytes = b""
    #: Transport error ("http transact: ..."), "" when a response came.
    error: str = ""
    timed_out: bool = False

    @property
    def success(self) -> bool:
        """moxtw's fix 1: any 2xx status is success."""
        return not self.error and 200 <= self.code < 300

    @property
    def error_text(self) -> str:
        if self.success:
            return ""
        if self.error:
            return self.error
        return f'http status "{self.code} {self.phrase}", expected 2xx'

    @property
    def result(self) -> str:
        """Metrics label: the status code, ``timeout`` or ``error``."""
        if self.code:
            return str(self.code)
        return "timeout" if self.timed_out else "error"


class _TooLarge(Exception):
    pass


def _describe(e: BaseException) -> str:
    if isinstance(e, (ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed, RequestGenerationFailed)):
        reasons = [r.value for r in getattr(e, "reasons", []) if isinstance(r, Failure)]
        if reasons:
            return "; ".join(_describe(r) for r in reasons if r is not None)
    return str(e) or type(e).__name__


async def _exchange(client: WebClient, url: str, body: bytes, headers: dict[bytes, list[bytes]]) -> Answer:
    response = await client.post(url, data=body, headers=headers, allow_redirects=False, unbuffered=True)
    kept = bytearray()
    total = 0

    def collector(data: bytes) -> None:
        nonlocal total
        if len(kept) < RESPONSE_KEEP:
            kept.extend(data[: RESPONSE_KEEP - len(kept)])
        total += len(data)
        if total > RESPONSE_READ_MAX:
            raise _TooLarge()

    try:
        await collect(response, collector)
    except Exception:  # noqa: BLE001  (a broken or oversized body does not change the status)
        pass
    phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) else str(response.phrase)
    return Answer(code=int(response.code), phrase=phrase, response=bytes(kept))


def post(
    client: WebClient, clock: IReactorTime, url: str, body: bytes, headers: dict[bytes, list[bytes]], timeout: float
) -> Deferred[Answer]:
    """POST ``body``; fires with an :class:`Answer`, never fails.

    ``timeout`` covers connecting, sending and reading the response.  Cancelling the
    returned Deferred aborts the request (the answer is then a transport error).
    """
    timed_out = False
    d = Deferred.fromCoroutine(_exchange(client, url, body, headers))

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        d.cancel()

    timer = clock.callLater(timeout, expire)

    def done(result: Answer | Failure) -> Answer:
        if timer.active():
            timer.cancel()
        if isinstance(result, Answer):
            return result
        if timed_out:
            return Answer(error=f"http transact: timeout after {timeout:g}s", timed_out=True)
        return Answer(error=f"http transact: {_describe(result.value) if result.value is not None else 'error'}")

    return d.addBoth(done)
