"""Queue and webhook-queue admin operations over the store, usable from any process that
has the store.

With ``[webapi] workers``, admin requests may be served by a worker process that has no
:class:`~moxtw.queue.QueueService`; every operation therefore works on the store alone and
then calls ``on_changed()`` when messages or webhooks may have become due (a release, a
reschedule, a cancel), which kicks the queue and the webhook sender: directly in the
daemon, with a ``q`` to the main process in a worker.  Message files released by Fail and Drop are removed here, after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..address import DomainError, parse_domain
from ..config import Config
from ..queue import dsn as dsnlib
from ..queue.service import UNKNOWN_ACCOUNT_KEEP
from ..store import Store, outbox
from ..store import admin as sa
from ..store import webhooks as sw
from ..store.outbox import CANCELED_ERROR, AdminFailure
from ..webhooks import payloads
from ..webhooks.service import UNKNOWN_ACCOUNT_KEEP as UNKNOWN_ACCOUNT_HOOK_KEEP
from ..webhooks.signing import new_webhook_id


class AdminError(Exception):
    """A request the admin made cannot be carried out (a user error); ``str()`` says why."""


@attrs.frozen
class RuleView:
    """A hold rule as listed: ``id`` 0 for rules from the configuration file."""

    id: int
    account: str
    sender_domain: str
    recipient_domain: str


def _rule_domain(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        return ""
    try:
        return parse_domain(text)
    except DomainError as e:
        raise AdminError(f"parsing {what} domain {text!r}: {e}") from None


@attrs.define(eq=False)
class QueueAdmin:
    store: Store
    config: Config
    clock: IReactorTime
    #: Called after a change that may make messages or webhooks due now (release,
    #: reschedule, cancel).
    on_changed: Callable[[], None] = lambda: None

    log = Logger()

    def now(self) -> float:
        return float(self.clock.seconds())

    def keep_period(self, account: str) -> float:
        acc = self.config.accounts.get(account)
        return UNKNOWN_ACCOUNT_KEEP if acc is None else acc.keep_retired_messages

    # --- reading ---------------------------------------------------------------------

    async def size(self) -> int:
        n: int = await self.store.db.run("queue size", sa.queue_size)
        return n

    async def list_queue(self, f: sa.Filter, sort: sa.Sort) -> list[sa.QueueItem]:
        items: list[sa.QueueItem] = await self.store.db.run("list queue", sa.list_queue, f, sort, self.now())
        return items

    async def list_retired(self, f: sa.RetiredFilter, sort: sa.Sort) -> list[sa.RetiredItem]:
        items: list[sa.RetiredItem] = await self.store.db.run(
            "list retired messages", sa.list_retired, f, sort, self.now()
        )
        return items

    # --- changes -----------------------------------------------------------------------

    async def set_hold(self, f: sa.Filter, hold: bool) -> int:
        n: int = await self.store.db.run_batched("hold queue messages", sa.set_hold, f, hold, self.now())
        self.log.info("admin: {what} {n} queue message(s)", what="held" if hold else "released", n=n)
        if not hold and n:
            self.on_changed()
        return n

    async def set_next_attempt(self, f: sa.Filter, minutes: int) -> int:
        n: int = await self.store.db.run_batched(
            "reschedule queue messages", sa.set_next_attempt, f, minutes, self.now()
        )
        self.log.info("admin: next attempt of {n} queue message(s) set to now + {minutes}m", n=n, minutes=minutes)
        if n:
            self.on_changed()
        return n

    async def add_next_attempt(self, f: sa.Filter, minutes: int) -> int:
        n: int = await self.store.db.run_batched(
            "reschedule queue messages", sa.add_next_attempt, f, minutes, self.now()
        )
        self.log.info("admin: next attempt of {n} queue message(s) moved by {minutes}m", n=n, minutes=minutes)
        if n:
            self.on_changed()
        return n

    async def set_require_tls(self, f: sa.Filter, require_tls: bool | None) -> int:
        n: int = await self.store.db.run_batched(
            "set requiretls of queue messages", sa.set_require_tls, f, require_tls, self.now()
        )
        self.log.info("admin: RequireTLS of {n} queue message(s) set to {value}", n=n, value=require_tls)
        return n

    async def drop(self, f: sa.Filter) -> list[int]:
        """Remove the matching messages without DSN; event ``canceled``.  Dropped IDs."""
        dropped: list[int]
        released: list[str]
        dropped, released = await self.store.db.run_batched(
            "drop queue messages", sa.drop, f, self.now(), self.keep_period
        )
        self.log.info("admin: dropped {n} queue message(s): {ids}", n=len(dropped), ids=_some(dropped))
        if dropped:
            self.on_changed()  # their "canceled" events go out as webhooks
        if released:
            await self.release_blobs()
        return dropped

    async def fail(self, f: sa.Filter) -> list[int]:
        """Fail the matching messages permanently: a failure DSN to each sender's Inbox,
        event ``failed``.  Failed IDs.

        The DSNs quote the messages' headers, so the messages are selected and their
        files read first; the failure itself (with the DSN files written before it
        commits) is one transaction, which skips messages that left the queue meanwhile.
        """
        now = self.now()
        rows: list[outbox.QueueRow] = await self.store.db.run("select queue messages", sa.select_rows, f, now)
        if not rows:
            return []
        files: dict[str, bytes | None] = {}
        failures: list[AdminFailure] = []
        dsns: list[bytes] = []
        for row in rows:
            if row.blob not in files:
                try:
                    files[row.blob] = await self.store.blobs.get(row.blob)
                except KeyError:
                    files[row.blob] = None
            composed, record = dsnlib.for_message(
                row,
                hostname=self.config.hostname,
                failed=True,
                now=now,
                last_attempt=now if row.last_attempt is None else row.last_attempt,
                data=files[row.blob],
                error=CANCELED_ERROR,
            )
            failures.append(AdminFailure(row.id, record))
            dsns.append(composed.data)
        blobs = self.store.blobs

        def write_all() -> list[str]:
            keys: list[str] = []
            try:
                for data in dsns:
                    keys.append(blobs.write(data))
            except BaseException:
                discard_all(keys)
                raise
            return keys

        def discard_all(keys: Sequence[str]) -> None:
            for key in keys:
                blobs.discard(key)

        failed: list[int]
        released: list[str]
        failed, released = await self.store.db.run_batched(
            "fail queue messages",
            outbox.fail_messages,
            failures,
            now,
            self.keep_period,
            prepare=write_all,
            undo=discard_all,
        )
        self.log.info("admin: failed {n} queue message(s): {ids}", n=len(failed), ids=_some(failed))
        if failed:
            self.on_changed()  # their "failed" events go out as webhooks
        if released:
            await self.release_blobs()
        return failed

    async def release_blobs(self) -> int:
        """Remove message files no queued message refers to any more (as the queue does)."""
        keys: list[str] = await self.store.db.run("releasable message files", outbox.releasable_blobs)
        if keys:
            await self.store.blobs.delete(keys)
            await self.store.db.run_batched("forget message files", outbox.forget_blobs, keys)
        return len(keys)

    # --- webhooks (mox's Hook* admin methods) -----------------------------------------

    def hook_keep_period(self, account: str) -> float:
        acc = self.config.accounts.get(account)
        return UNKNOWN_ACCOUNT_HOOK_KEEP if acc is None else acc.keep_retired_webhooks

    async def hook_queue_size(self) -> int:
        n: int = await self.store.db.run("webhook queue size", sw.hook_queue_size)
        return n

    async def list_hooks(self, f: sw.HookFilter, sort: sw.HookSort) -> list[sw.Hook]:
        hooks: list[sw.Hook] = await self.store.db.run("list webhooks", sw.list_hooks, f, sort)
        return hooks

    async def list_retired_hooks(self, f: sw.HookRetiredFilter, sort: sw.HookSort) -> list[sw.RetiredHook]:
        hooks: list[sw.RetiredHook] = await self.store.db.run(
            "list retired webhooks", sw.list_retired_hooks, f, sort
        )
        return hooks

    async def reschedule_hooks(self, f: sw.HookFilter, minutes: int, *, relative: bool) -> int:
        """Next attempt = now + ``minutes`` (or, ``relative``, += ``minutes``) of the
        matching webhooks that are not being sent right now; how many changed."""
        n: int = await self.store.db.run_batched(
            "reschedule webhooks", sw.reschedule_hooks, f, self.now(), minutes, relative=relative
        )
        self.log.info(
            "admin: next attempt of {n} webhook(s) {how} {minutes}m",
            n=n,
            how="moved by" if relative else "set to now +",
            minutes=minutes,
        )
        if n:
            self.on_changed()
        return n

    async def cancel_hooks(self, f: sw.HookFilter) -> int:
        """Retire the matching webhooks unsuccessfully ("canceled by admin")."""
        n: int = await self.store.db.run_batched(
            "cancel webhooks", sw.cancel_hooks, f, self.now(), self.hook_keep_period
        )
        self.log.info("admin: canceled {n} webhook(s)", n=n)
        if n:
            # A message's next webhook may have waited for the canceled one.
            self.on_changed()
        return n

    async def send_test_webhook(self, account: str) -> int:
        """Queue a test webhook to ``account``'s outgoing webhook URL (the account page's
        "Send test webhook"), sent, retried, signed and retired like the others; its ID.
        The body is an outgoing event :data:`~moxtw.webhooks.payloads.TEST_EVENT` for no
        message (see :mod:`moxtw.webhooks.payloads`).  :class:`AdminError` if the account
        has no outgoing webhook."""
        acc = self.config.accounts.get(account)
        hook = None if acc is None else acc.outgoing_webhook
        if hook is None or not hook.url:
            raise AdminError(f"account {account} has no outgoing webhook URL")
        hook_id: int = await self.store.db.run_batched(
            "queue test webhook",
            sw.insert_test_hook,
            account=account,
            kind=payloads.TEST_EVENT,
            url=hook.url,
            authorization=hook.authorization,
            webhook_id=new_webhook_id(),
            created=self.now(),
            compose=payloads.outgoing_payload,
            subject=payloads.TEST_SUBJECT,
            error=payloads.TEST_ERROR,
        )
        self.log.info("test webhook {id} queued for account {account} to {url}", id=hook_id, account=account,
                      url=hook.url)  # fmt: skip
        self.on_changed()
        return hook_id

    # --- hold rules ----------------------------------------------------------------------

    def config_rules(self) -> list[RuleView]:
        return [
            RuleView(0, r.account, _config_domain(r.sender_domain), _config_domain(r.recipient_domain))
            for r in self.config.hold_rules
        ]

    async def hold_rules(self) -> list[RuleView]:
        """The configuration file's rules (ID 0, fixed), then those added through the API."""
        stored: list[sa.StoredHoldRule] = await self.store.db.run("list hold rules", sa.list_hold_rules)
        return self.config_rules() + [
            RuleView(r.id, r.account, r.sender_domain, r.recipient_domain) for r in stored
        ]

    async def add_hold_rule(self, account: str, sender_domain: str, recipient_domain: str) -> tuple[RuleView, int]:
        """Add a rule and hold the queued messages it matches; (rule, messages held)."""
        account = account.strip()
        if account and account not in self.config.accounts:
            raise AdminError(f"unknown account {account!r}")
        sender = _rule_domain(sender_domain, "sender")
        recipient = _rule_domain(recipient_domain, "recipient")
        rule: sa.StoredHoldRule
        held: int
        rule, held = await self.store.db.run_batched(
            "add hold rule", sa.add_hold_rule, account, sender, recipient, self.now()
        )
        self.log.info(
            "admin: hold rule {id} added (account {account!r}, sender domain {sender!r}, recipient domain"
            " {recipient!r}); {held} queued message(s) held",
            id=rule.id,
            account=account,
            sender=sender,
            recipient=recipient,
            held=held,
        )
        return RuleView(rule.id, rule.account, rule.sender_domain, rule.recipient_domain), held

    async def remove_hold_rule(self, rule_id: int) -> None:
        """Remove a rule added through the API; the messages it held stay held."""
        if rule_id <= 0:
            if self.config.hold_rules and rule_id == 0:
                raise AdminError(
                    "hold rules with ID 0 are in the configuration file ([[hold_rules]]); remove them there and restart"
                )
            raise AdminError(f"no hold rule with ID {rule_id}")
        removed: bool = await self.store.db.run_batched("remove hold rule", sa.remove_hold_rule, rule_id)
        if not removed:
            raise AdminError(f"no hold rule with ID {rule_id}")
        self.log.info("admin: hold rule {id} removed", id=rule_id)


def _some(ids: Sequence[int], n: int = 20) -> str:
    """Message IDs for a log line (the first ``n``)."""
    text = ", ".join(str(i) for i in ids[:n])
    return text + (", ..." if len(ids) > n else "")


def _config_domain(text: str) -> str:
    try:
        return _rule_domain(text, "")
    except AdminError:
        return text
