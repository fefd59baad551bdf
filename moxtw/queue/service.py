"""The queue service: claims due messages, delivers them through a transport, records.

One pass (:meth:`QueueService.run_once`) claims what is due within the concurrency limits
(one short transaction), starts a worker per batch and arms a single timer for the next
due time; :meth:`QueueService.kick` (new message queued or released, timer) and a
finished delivery start the next pass.  Nothing polls: with nothing due, the service
sleeps until the next ``next_attempt`` (at most ``max_sleep``, so daemons sharing a
database notice each other's messages).  Each worker reads the message file, calls the
transport with no transaction open, and writes every message's result back under its
attempt token (:func:`moxtw.store.outbox.finish_attempt`): state change, attempt
history, event, suppression and DSN in one transaction.  A delivery's slot is free as
soon as its results are queued for that transaction, so the claim it lets in commits
together with them (group commit) or later.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .. import metrics
from ..config import Config
from ..store import Store, outbox
from ..store.outbox import Claimed, DSNRecord, Finish, FinishResult, StaleLease
from ..store.recovery import recover_interrupted
from . import dsn as dsnlib
from .transport import Batch, OutgoingMessage, RecipientOutcome, Result, Transport

#: mox §4.3: the first retry waits 7.5 minutes, doubling after each attempt.
BASE_INTERVAL = 450.0
#: After this many attempts a delayed-delivery DSN goes to the sender.
DELAYED_DSN_AFTER = 5
#: Keep period for retired messages of an account no longer configured (mox: 7 days).
UNKNOWN_ACCOUNT_KEEP = 7 * 24 * 3600.0


def default_jitter() -> float:
    """mox's jitter: whole seconds in [-5, +4], added to the base interval."""
    return float(random.randint(-5, 4))


@attrs.define(slots=False, eq=False)
class QueueService(Service):
    """Delivers the outgoing queue (a child of the daemon's service tree, after the store).

    ``transport`` delivers a :class:`Batch`; ``clock`` schedules everything (attempt times,
    timers, cleanup); ``jitter()`` is added to the 450 s base of every backoff.
    ``lease_minimum`` is the shortest lease a claim takes: it must exceed the longest a
    transport can take, since another daemon may claim the message once it passes.
    """

    store: Store
    config: Config
    transport: Transport
    clock: IReactorTime
    jitter: Callable[[], float] = default_jitter
    lease_minimum: float = 900.0
    max_sleep: float = 3600.0
    cleanup_delay: float = 3.0
    cleanup_interval: float = 3600.0
    new_token: Callable[[], str] = attrs.field(factory=lambda: lambda: secrets.token_hex(16))
    #: Called after a transaction that wrote events (the webhook service's ``kick``).
    on_event: Callable[[], None] | None = None
    name: str = "queue"

    #: msg ID → recipient domain of every message this daemon is delivering.
    _in_flight: dict[int, str] = attrs.field(init=False, factory=dict)
    _domain_batches: dict[str, int] = attrs.field(init=False, factory=dict)
    _batches: int = attrs.field(init=False, default=0)
    _busy: set[Deferred[None]] = attrs.field(init=False, factory=set)
    _pass: Deferred[None] | None = attrs.field(init=False, default=None)
    _again: bool = attrs.field(init=False, default=False)
    _timer: IDelayedCall | None = attrs.field(init=False, default=None)
    _cleanup_timer: IDelayedCall | None = attrs.field(init=False, default=None)
    _stopping: bool = attrs.field(init=False, default=False)
    #: Tasks (passes, workers, cleanups) running that are not waiting for a transport.
    _active: int = attrs.field(init=False, default=0)
    _watchers: list[Deferred[None]] = attrs.field(init=False, factory=list)
    #: Counts kick()s: a claim's ``settled`` (see outbox.claim_due) holds for the
    #: next pass only if no kick came in between.
    _generation: int = attrs.field(init=False, default=0)
    _settled: outbox.Settled | None = attrs.field(init=False, default=None)
    _settled_generation: int = attrs.field(init=False, default=-1)
    #: Message files released by finished attempts, waiting for _release_files.
    _unreferenced: list[str] = attrs.field(init=False, factory=list)
    _releasing: bool = attrs.field(init=False, default=False)

    log = Logger()

    # --- schedule ------------------------------------------------------------------

    def backoff(self, attempts_before: int, jitter: float | None = None) -> float:
        """The wait after attempt ``attempts_before + 1`` fails: (450 s + jitter) × 2^n,
        divided by ``retry_scale``."""
        j = self.jitter() if jitter is None else jitter
        return float((BASE_INTERVAL + j) * 2**attempts_before / self.config.queue.retry_scale)

    def keep_period(self, account: str) -> float:
        acc = self.config.accounts.get(account)
        return UNKNOWN_ACCOUNT_KEEP if acc is None else acc.keep_retired_messages

    # --- service -------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        if self.store.db.engine.shared:
            self.kick()
        else:
            self._track(Deferred.fromCoroutine(self._recover()))
        self._cleanup_timer = self.clock.callLater(self.cleanup_delay, self._cleanup_tick)

    async def _recover(self) -> None:
        """Single-daemon store: attempts left unfinished by a crash end as interrupted
        and their messages are due now (:mod:`moxtw.store.recovery`); then the first pass,
        and message files a crash left without a row are removed
        (:meth:`moxtw.store.Store.sweep_orphans`)."""
        try:
            n = await self.store.db.run("recover interrupted attempts", recover_interrupted, self.clock.seconds())
            if n:
                self.log.info("{n} delivery attempt(s) interrupted by the last stop; retrying now", n=n)
        except Exception:
            self.log.failure("recovering interrupted delivery attempts")
        self.kick()
        try:
            # A second of margin for file-system timestamp granularity: files of the
            # previous run newer than that are swept at the next start.
            removed = await self.store.sweep_orphans(self.store.opened - 1.0)
            if removed:
                self.log.info("{n} message file(s) left without a row by the last stop removed", n=removed)
        except Exception:
            self.log.failure("removing message files left by the last stop")

    async def _stop(self) -> None:
        self._stopping = True
        for timer in (self._timer, self._cleanup_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._cleanup_timer = None
        while self._busy:
            await DeferredList(list(self._busy), consumeErrors=True)

    def stopService(self) -> Deferred[None]:
        """Stop claiming; in-flight deliveries finish and are recorded first."""
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    def kick(self) -> None:
        """Look at the whole queue now: a message was queued, released or rescheduled,
        or its time came (anything but this service's own claims and freed slots)."""
        self._generation += 1
        self._look()

    def _look(self) -> None:
        """Start a pass (or another one after the current pass)."""
        if self._stopping or not self.running:
            return
        if self._pass is not None:
            self._again = True
            return
        d = self._track(Deferred.fromCoroutine(self._passes()))
        if not d.called:
            self._pass = d

    def _track(self, d: Deferred[None]) -> Deferred[None]:
        self._busy.add(d)
        self._active += 1

        def done(result: object) -> object:
            self._busy.discard(d)
            self._active -= 1
            self._notify()
            return result

        d.addBoth(done)
        return d

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for w in watchers:
            w.callback(None)

    async def settle(self) -> None:
        """Wait until the service is quiet: no pass, file read, write-back or cleanup in
        progress; deliveries may still be waiting for their transport.  For tests: after
        a ``kick()`` or a clock advance, this returns once everything that can happen
        without the transport answering has happened."""
        while self._active:
            w: Deferred[None] = Deferred()
            self._watchers.append(w)
            await w

    async def _passes(self) -> None:
        # _pass is set by _look() once this yields; it is cleared when the loop ends.
        try:
            while True:
                self._again = False
                try:
                    await self.run_once()
                except Exception:
                    self.log.failure("queue pass failed; trying again in 10s")
                    self._arm(10.0)
                    return
                if not self._again or self._stopping:
                    return
        finally:
            self._pass = None

    def _arm(self, delay: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._stopping and self.running:
            self._timer = self.clock.callLater(max(0.0, min(delay, self.max_sleep)), self.kick)

    async def run_once(self) -> int:
        """One pass: claim due messages within the limits and start their deliveries.

        Returns the number of messages claimed.  The deliveries continue in the background
        (:meth:`settle` waits for them).
        """
        queue = self.config.queue
        slots = queue.max_concurrent - self._batches
        if slots <= 0:
            return 0  # a finishing delivery kicks
        counts = dict(self._domain_batches)
        now = self.clock.seconds()
        generation = self._generation
        result: outbox.ClaimResult = await self.store.db.run_batched(
            "claim queue messages",
            outbox.claim_due,
            now,
            slots=slots,
            domain_slots=lambda domain: queue.max_per_domain - counts.get(domain, 0),
            saturated=frozenset(d for d, n in counts.items() if n >= queue.max_per_domain),
            exclude=frozenset(self._in_flight),
            backoff=self.backoff,
            lease_minimum=self.lease_minimum,
            new_token=self.new_token,
            settled=self._settled if self._settled_generation == generation else None,
        )
        if self._generation == generation:
            self._settled, self._settled_generation = result.settled, generation
        else:
            self._settled = None
        for batch in result.batches:
            domain = batch[0].row.recipient_domain
            for c in batch:
                self._in_flight[c.row.id] = domain
            self._batches += 1
            self._domain_batches[domain] = self._domain_batches.get(domain, 0) + 1
            self._track(Deferred.fromCoroutine(self._deliver(batch)))
        self._arm(self.max_sleep if result.next_due is None else result.next_due - self.clock.seconds())
        return sum(len(b) for b in result.batches)

    # --- delivery ------------------------------------------------------------------

    async def _deliver(self, batch: list[Claimed]) -> None:
        first = batch[0].row
        released = requeued = False
        try:
            data: bytes | None
            try:
                data = await self.store.blobs.get(first.blob)
            except KeyError:
                data = None
            outcomes: dict[int, RecipientOutcome] = {}
            send = [c for c in batch if not c.suppressed]
            if data is None:
                for c in send:
                    outcomes[c.row.id] = RecipientOutcome(
                        c.row.id, Result.PERMANENT, error="message file missing, permanent"
                    )
            elif send:
                outcomes = await self._transport(batch, send, first.prefix + data)
            duration = self.clock.seconds() - batch[0].start
            ds = [
                Deferred.fromCoroutine(self._finish(c, outcomes.get(c.row.id), data, duration)) for c in batch
            ]
            # Each _finish has queued its result for the database before its first
            # await: the delivery is over and its slot is free.  The claim this frees is
            # queued after these results, so it commits with them or later, never before.
            # The messages stay excluded from claims (_in_flight) until they are written.
            released = True
            self._release_slot(first.recipient_domain)
            results = await DeferredList(ds, consumeErrors=True)
            requeued = any(ok and kind == outbox.DELAYED for ok, kind in results)
        except Exception:
            self.log.failure("delivering queue messages {ids}", ids=[c.row.id for c in batch])
        finally:
            for c in batch:
                self._in_flight.pop(c.row.id, None)
            if not released:
                self._release_slot(first.recipient_domain)
            elif requeued:
                # A retry may be due already (tiny retry intervals): the pass the slot
                # started could not claim it while it was still in flight, and what
                # that pass learned (settled) does not cover it.
                self.kick()

    def _release_slot(self, domain: str) -> None:
        self._batches -= 1
        self._domain_batches[domain] -= 1
        if not self._domain_batches[domain]:
            del self._domain_batches[domain]
        self._look()

    async def _transport(self, batch: list[Claimed], send: Sequence[Claimed], data: bytes) -> dict[int, RecipientOutcome]:
        first = send[0].row
        b = Batch(
            messages=tuple(
                OutgoingMessage(
                    id=c.row.id,
                    account=c.row.account,
                    recipient=c.row.recipient,
                    recipient_address=c.row.recipient_address,
                    from_id=c.row.from_id,
                    message_id=c.row.message_id,
                    subject=c.row.subject,
                    extra=outbox.extra_of(c.row),
                )
                for c in send
            ),
            mail_from=first.sender,
            domain=first.recipient_domain,
            data=data,
            smtputf8=first.smtputf8,
            has_8bit=first.has_8bit,
            require_tls=first.require_tls,
            transport=first.transport,
            attempt=first.attempts,
        )
        wanted = {c.row.id for c in send}

        async def call() -> Sequence[RecipientOutcome]:
            return await self.transport(b)

        d = Deferred.fromCoroutine(call())
        if not d.called:
            # Waiting for the transport: settle() does not wait for this.
            self._active -= 1

            def resumed(result: object) -> object:
                self._active += 1
                return result

            d.addBoth(resumed)
            self._notify()
        try:
            results = await d
        except Exception as e:
            self.log.failure("transport failed for queue messages {ids}", ids=sorted(wanted))
            return {
                i: RecipientOutcome(i, Result.TEMPORARY, error=f"delivery failed: {e}, transient") for i in wanted
            }
        return {o.msg_id: o for o in results if o.msg_id in wanted}

    def _decide(self, c: Claimed, outcome: RecipientOutcome | None) -> tuple[str, RecipientOutcome]:
        row = c.row
        if c.suppressed:
            return outbox.SUPPRESSED, RecipientOutcome(
                row.id,
                Result.PERMANENT,
                error=f"not delivering to recipient address {row.recipient}: address is on suppression list, permanent",
            )
        if outcome is None:
            outcome = RecipientOutcome(row.id, Result.TEMPORARY, error="no result from transport, transient")
        if outcome.result is Result.DELIVERED:
            return outbox.DELIVERED, outcome
        if outcome.result is Result.PERMANENT or row.attempts >= row.effective_max_attempts:
            return outbox.FAILED, outcome
        return outbox.DELAYED, outcome

    async def _finish(
        self, c: Claimed, outcome: RecipientOutcome | None, data: bytes | None, duration: float
    ) -> str | None:
        """Write the attempt's result; the kind written (None: the lease was lost)."""
        row = c.row
        kind, o = self._decide(c, outcome)
        now = self.clock.seconds()
        next_attempt = c.start + c.backoff
        composed: dsnlib.DSN | None = None
        dsn_record: DSNRecord | None = None
        if kind in (outbox.FAILED, outbox.SUPPRESSED) or (kind == outbox.DELAYED and row.attempts == DELAYED_DSN_AFTER):
            remaining: list[float] = []
            if kind == outbox.DELAYED:
                remaining = [next_attempt]
                for n in range(row.attempts, row.effective_max_attempts - 1):
                    remaining.append(remaining[-1] + self.backoff(n, jitter=0.0))
            composed, dsn_record = dsnlib.for_message(
                row,
                hostname=self.config.hostname,
                failed=kind != outbox.DELAYED,
                now=now,
                last_attempt=c.start,
                data=data,
                code=o.code,
                secode=o.secode,
                error=o.error,
                remote_host=o.remote_host,
                next_attempts=remaining,
            )
        finish = Finish(
            msg_id=row.id,
            token=c.token,
            kind=kind,
            duration=duration,
            now=now,
            code=o.code,
            secode=o.secode,
            error=o.error,
            remote_host=o.remote_host,
            remote_ip=o.remote_ip,
            tls=o.tls,
            timeout_after_body=o.timeout_after_body,
            next_attempt=next_attempt,
            keep=self.keep_period(row.account),
            dsn=dsn_record,
        )
        try:
            result: FinishResult
            if composed is not None:
                result = await self.store.run_with_blob("finish queue attempt", composed.data, outbox.finish_attempt, finish)
            else:
                result = await self.store.db.run_batched("finish queue attempt", outbox.finish_attempt, None, finish)
        except StaleLease:
            self.log.warn(
                "result of attempt {attempt} for queue message {id} ignored: its lease was taken over",
                attempt=row.attempts,
                id=row.id,
            )
            return None
        metrics.queue_result(kind, o, result.suppressing)
        if self.on_event is not None:
            self.on_event()
        self.log.info(
            "queue message {id} attempt {attempt}: {kind} {code} {error}",
            id=row.id,
            attempt=row.attempts,
            kind=kind,
            code=o.code,
            error=o.error,
        )
        if result.unreferenced:
            self._release_later(result.unreferenced)
        return kind

    def _release_later(self, keys: Sequence[str]) -> None:
        """Remove the message files this attempt released, after its slot is free (files a
        crash leaves behind are found by the hourly cleanup).  Files released while a
        removal runs are removed together next, in one trip to the blob and database
        threads."""
        self._unreferenced.extend(keys)
        if not self._releasing:
            self._releasing = True
            self._track(Deferred.fromCoroutine(self._release_files()))

    async def _release_files(self) -> None:
        try:
            while self._unreferenced:
                keys, self._unreferenced = self._unreferenced, []
                try:
                    await self.store.blobs.delete(keys)
                    await self.store.db.run_batched("forget message files", outbox.forget_blobs, keys)
                except Exception:
                    self.log.failure("removing message files {keys}", keys=keys)
        finally:
            self._releasing = False

    # --- retirement, cleanup, admin ------------------------------------------------

    async def release_blobs(self) -> int:
        """Remove message files no queued message refers to any more."""
        keys: list[str] = await self.store.db.run("releasable message files", outbox.releasable_blobs)
        if keys:
            await self.store.blobs.delete(keys)
            await self.store.db.run_batched("forget message files", outbox.forget_blobs, keys)
        return len(keys)

    async def cleanup(self) -> int:
        """Remove retired messages whose keep period ended (and unreferenced files)."""
        n: int = await self.store.db.run_batched(
            "remove expired retired messages", outbox.remove_expired_retired, self.clock.seconds()
        )
        await self.release_blobs()
        return n

    def _cleanup_tick(self) -> None:
        self._cleanup_timer = None
        if self._stopping or not self.running:
            return

        async def run() -> None:
            try:
                await self.cleanup()
            except Exception:
                self.log.failure("queue cleanup")

        self._track(Deferred.fromCoroutine(run()))
        self._cleanup_timer = self.clock.callLater(self.cleanup_interval, self._cleanup_tick)

    async def drop(self, ids: Sequence[int]) -> list[int]:
        """Admin Drop: remove messages without DSN, event ``canceled``; dropped IDs."""
        dropped: list[int]
        dropped, released = await self.store.db.run_batched(
            "drop queue messages", outbox.drop_messages, list(ids), self.clock.seconds(), self.keep_period
        )
        if dropped and self.on_event is not None:
            self.on_event()
        if released:
            await self.release_blobs()
        return dropped
