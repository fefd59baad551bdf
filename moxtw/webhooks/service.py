"""The webhook service: admits events, delivers due webhooks over HTTP, records results.

One pass (:meth:`WebhookService.run_once`) is one short transaction: new events become
queued webhooks (or are dropped when the account wants none), and due webhooks are
claimed within the per-target limits (:func:`moxtw.store.webhooks.claim_due`).  Each
claimed webhook is POSTed in the background; its result is written under its attempt
token.  :meth:`WebhookService.kick` (the queue wrote an event, a message with an incoming
webhook was stored, a request finished, the timer fired) starts the next pass; with
nothing due the service sleeps until the next ``next_attempt``.

Limits: at most ``max_in_flight`` requests per target (account, direction, URL), none
across targets, so a slow or failing receiver never delays other accounts' webhooks.  A
queue message's webhooks go out one at a time, in order (see the store module).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from .. import metrics
from ..config import Config, WebhookConfig
from ..store import Store
from ..store import webhooks as sw
from ..store.recovery import recover_interrupted_hooks
from ..store.webhooks import Claimed, ClaimResult, HookFinish, HookRow, StaleHookLease, Target
from .http import Answer, WebClient, post, request_headers
from .payloads import outgoing_payload
from .signing import new_webhook_id

__all__ = ["INTERVALS", "WebhookService", "default_jitter"]

#: mox §3.3: the waits after attempts 1..11 fail (seconds); attempt 12 is the last.
INTERVALS: tuple[float, ...] = (60, 120, 240, 450, 900, 1800, 3600, 7200, 14400, 28800, 57600)
#: Keep period for retired webhooks of an account no longer configured (mox: 7 days).
UNKNOWN_ACCOUNT_KEEP = 7 * 24 * 3600.0
#: Requests in flight per target when the target's configuration is gone.
DEFAULT_MAX_IN_FLIGHT = 4


def default_jitter() -> float:
    """mox's jitter factor: (r - 100) / 10000 with r uniform in [0, 200): -1 % .. +0.99 %."""
    return (random.randrange(200) - 100) / 10000


def _admit_and_claim(
    cursor: Any, now: float, admit: dict[str, Any], claim: dict[str, Any]
) -> tuple[ClaimResult, bool]:
    admitted, dropped, more = sw.admit_events(cursor, now, **admit)
    result = sw.claim_due(cursor, now, **claim)
    return attrs.evolve(result, admitted=admitted, dropped=dropped), more


@attrs.define(slots=False, eq=False)
class WebhookService(Service):
    """Delivers webhooks (a child of the daemon's service tree, after the store).

    ``client`` sends the requests (a ``treq.HTTPClient``; ``StubTreq`` in tests);
    ``pool``, if given, is the client's connection pool, closed on stop.  ``clock``
    schedules everything.  ``jitter()`` gives each backoff's factor (see
    :func:`default_jitter`).
    """

    store: Store
    config: Config
    client: WebClient
    clock: IReactorTime
    pool: HTTPConnectionPool | None = None
    jitter: Callable[[], float] = default_jitter
    new_token: Callable[[], str] = attrs.field(factory=lambda: lambda: secrets.token_hex(16))
    new_webhook_id: Callable[[], str] = new_webhook_id
    max_sleep: float = 3600.0
    cleanup_delay: float = 4.0
    cleanup_interval: float = 3600.0
    #: On stop, requests still in flight after this long are aborted (and retried soon
    #: after the next start).
    stop_grace: float = 5.0
    name: str = "webhooks"

    _in_flight: dict[int, Target] = attrs.field(init=False, factory=dict)
    _target_counts: dict[Target, int] = attrs.field(init=False, factory=dict)
    _requests: dict[int, Deferred[Answer]] = attrs.field(init=False, factory=dict)
    _busy: set[Deferred[None]] = attrs.field(init=False, factory=set)
    _pass: Deferred[None] | None = attrs.field(init=False, default=None)
    _again: bool = attrs.field(init=False, default=False)
    _timer: IDelayedCall | None = attrs.field(init=False, default=None)
    _cleanup_timer: IDelayedCall | None = attrs.field(init=False, default=None)
    _stopping: bool = attrs.field(init=False, default=False)
    _active: int = attrs.field(init=False, default=0)
    _watchers: list[Deferred[None]] = attrs.field(init=False, factory=list)

    log = Logger()

    # --- configuration -------------------------------------------------------------

    @property
    def timeout(self) -> float:
        return self.config.webhooks.timeout

    @property
    def lease_minimum(self) -> float:
        """The shortest lease a claim takes: longer than any request can last."""
        return self.timeout + 60.0

    def backoff(self, attempts_before: int, jitter: float | None = None) -> float:
        """The wait after attempt ``attempts_before + 1`` fails, jittered, divided by
        ``retry_scale``."""
        base = INTERVALS[min(attempts_before, len(INTERVALS) - 1)]
        j = self.jitter() if jitter is None else jitter
        return float(base * (1 + j) / self.config.queue.retry_scale)

    def keep_period(self, account: str) -> float:
        acc = self.config.accounts.get(account)
        return UNKNOWN_ACCOUNT_KEEP if acc is None else acc.keep_retired_webhooks

    def outgoing_config(self, account: str) -> WebhookConfig | None:
        acc = self.config.accounts.get(account)
        return None if acc is None else acc.outgoing_webhook

    def webhook_config(self, account: str, incoming: bool) -> WebhookConfig | None:
        acc = self.config.accounts.get(account)
        if acc is None:
            return None
        return acc.incoming_webhook if incoming else acc.outgoing_webhook

    def max_in_flight(self, target: Target) -> int:
        config = self.webhook_config(target.account, target.incoming)
        if config is None or config.url != target.url:
            return DEFAULT_MAX_IN_FLIGHT
        return config.max_in_flight

    # --- service -------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        if self.store.db.engine.shared:
            self.kick()
        else:
            self._track(self._recover())
        self._cleanup_timer = self.clock.callLater(self.cleanup_delay, self._cleanup_tick)

    async def _recover(self) -> None:
        """Single-daemon store: requests left unfinished by a crash end as interrupted and
        their webhooks are due now (:mod:`moxtw.store.recovery`); then the first pass."""
        try:
            n = await self.store.db.run("recover interrupted webhooks", recover_interrupted_hooks, self.clock.seconds())
            if n:
                self.log.info("{n} webhook request(s) interrupted by the last stop; retrying now", n=n)
        except Exception:
            self.log.failure("recovering interrupted webhook requests")
        self.kick()

    async def _stop(self) -> None:
        self._stopping = True
        for timer in (self._timer, self._cleanup_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._cleanup_timer = None
        abort: IDelayedCall | None = None
        if self._requests:
            abort = self.clock.callLater(self.stop_grace, self._abort_requests)
        while self._busy:
            await DeferredList(list(self._busy), consumeErrors=True)
        if abort is not None and abort.active():
            abort.cancel()
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    def _abort_requests(self) -> None:
        for d in list(self._requests.values()):
            d.cancel()

    def stopService(self) -> Deferred[None]:
        """Stop claiming; requests in flight get ``stop_grace`` to finish, then are
        aborted; their results are recorded before this fires."""
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    def kick(self) -> None:
        """Look at the webhook queue now (an event was written, a request finished)."""
        if self._stopping or not self.running:
            return
        if self._pass is not None:
            self._again = True
            return
        d = self._track(self._passes())
        if not d.called:
            self._pass = d

    def _track(self, coro: Coroutine[Any, Any, None]) -> Deferred[None]:
        """Run ``coro`` as a task :meth:`settle` waits for.  Counted before it starts:
        it may reach a wait for a receiver (which uncounts it) before yielding."""
        self._active += 1
        d = Deferred.fromCoroutine(coro)

        def done(result: object) -> object:
            self._busy.discard(d)
            self._active -= 1
            self._notify()
            return result

        if not d.called:
            self._busy.add(d)
        d.addBoth(done)
        return d

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for w in watchers:
            w.callback(None)

    async def settle(self) -> None:
        """Wait until the service is quiet: no pass, result write or cleanup running;
        requests may still be waiting for their receiver.  For tests."""
        while self._active:
            w: Deferred[None] = Deferred()
            self._watchers.append(w)
            await w

    async def _passes(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    more = await self.run_once()
                except Exception:
                    self.log.failure("webhook pass failed; trying again in 10s")
                    self._arm(10.0)
                    return
                if not (self._again or more) or self._stopping:
                    return
        finally:
            self._pass = None

    def _arm(self, delay: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._stopping and self.running:
            self._timer = self.clock.callLater(max(0.0, min(delay, self.max_sleep)), self.kick)

    async def run_once(self) -> bool:
        """One pass: admit new events, claim due webhooks and start their requests.

        Returns whether another pass should follow at once (more events than one pass
        admits, or a superseded webhook made a newer one claimable).
        """
        counts = dict(self._target_counts)
        now = self.clock.seconds()
        admit = {
            "outgoing": self.outgoing_config,
            "compose": outgoing_payload,
            "keep": self.keep_period,
            "new_webhook_id": self.new_webhook_id,
        }
        claim = {
            "slots": lambda target: self.max_in_flight(target) - counts.get(target, 0),
            "exclude": frozenset(self._in_flight),
            "backoff": self.backoff,
            "lease_minimum": self.lease_minimum,
            "new_token": self.new_token,
            "keep": self.keep_period,
        }
        result, more_events = await self.store.db.run_batched("claim webhooks", _admit_and_claim, now, admit, claim)
        metrics.webhook_queue.set(result.queued)
        for c in result.claimed:
            target = Target(c.row.account, c.row.url, c.row.is_incoming)
            self._in_flight[c.row.id] = target
            self._target_counts[target] = self._target_counts.get(target, 0) + 1
            self._track(self._deliver(c, target))
        self._arm(self.max_sleep if result.next_due is None else result.next_due - self.clock.seconds())
        return more_events or result.more

    # --- delivery ------------------------------------------------------------------

    async def _deliver(self, c: Claimed, target: Target) -> None:
        try:
            answer = await self._attempt(c)
            duration = self.clock.seconds() - c.start
            kind = "incoming" if c.row.is_incoming else "outgoing"
            metrics.webhook_requests.labels(kind=kind, result=answer.result).inc()
            metrics.webhook_duration.labels(kind=kind).observe(duration)
            await self._finish(c, answer, duration)
        except Exception:
            self.log.failure("delivering webhook {id}", id=c.row.id)
        finally:
            self._in_flight.pop(c.row.id, None)
            self._target_counts[target] -= 1
            if not self._target_counts[target]:
                del self._target_counts[target]
            self.kick()

    def headers(self, row: HookRow, attempt: int, body: bytes) -> dict[bytes, list[bytes]]:
        config = self.webhook_config(row.account, row.is_incoming)
        return request_headers(
            hook_id=row.id,
            attempt=attempt,
            authorization=row.auth_header,
            signing_secret=config.signing_secret if config is not None else "",
            webhook_id=row.webhook_id or f"msg_{row.id}",
            timestamp=int(self.clock.seconds()),
            body=body,
        )

    async def _attempt(self, c: Claimed) -> Answer:
        row = c.row
        if self._stopping:
            # Claimed by a pass that ended after stop began: not sent now (see _finish).
            return Answer(error="http transact: aborted, moxtw stopping")
        body = row.payload.encode("utf-8")
        d = post(self.client, self.clock, row.url, body, self.headers(row, row.attempts, body), self.timeout)
        if d.called:
            return await d
        # Waiting for the receiver: settle() does not wait for this.
        self._requests[row.id] = d
        self._active -= 1
        self._notify()
        try:
            return await d
        finally:
            self._active += 1
            self._requests.pop(row.id, None)

    async def _finish(self, c: Claimed, answer: Answer, duration: float) -> None:
        row = c.row
        now = self.clock.seconds()
        error = answer.error_text
        next_attempt = c.start + c.backoff
        if self._stopping and not answer.code:
            # Aborted by our stop: try again right after the next start.
            error = "http transact: aborted, moxtw stopping"
            next_attempt = now
        finish = HookFinish(
            hook_id=row.id,
            token=c.token,
            start=c.start,
            duration=duration,
            now=now,
            success=answer.success,
            code=answer.code,
            error=error,
            response=answer.response,
            next_attempt=next_attempt,
            keep=self.keep_period(row.account),
        )
        try:
            result: sw.FinishResult = await self.store.db.run_batched(
                "finish webhook attempt", sw.finish_attempt, finish
            )
        except StaleHookLease:
            self.log.warn(
                "result of attempt {attempt} for webhook {id} ignored: it left the queue or its lease was taken over",
                attempt=row.attempts,
                id=row.id,
            )
            return
        self.log.info(
            "webhook {id} ({kind}) attempt {attempt} to {url}: {outcome}",
            id=row.id,
            kind=row.kind,
            attempt=row.attempts,
            url=row.url,
            outcome="ok" if answer.success else error,
            superseded_by=result.superseded_by,
        )

    # --- cleanup -------------------------------------------------------------------

    async def cleanup(self) -> int:
        """Remove retired webhooks whose keep period ended."""
        n: int = await self.store.db.run_batched(
            "remove expired retired webhooks", sw.remove_expired_retired_hooks, self.clock.seconds()
        )
        return n

    def _cleanup_tick(self) -> None:
        self._cleanup_timer = None
        if self._stopping or not self.running:
            return

        async def run() -> None:
            try:
                await self.cleanup()
            except Exception:
                self.log.failure("webhook cleanup")

        self._track(run())
        self._cleanup_timer = self.clock.callLater(self.cleanup_interval, self._cleanup_tick)
