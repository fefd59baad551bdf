"""The admin pages in a real browser: queue (hold, release, detail), retired messages,
hold rules, webhooks, accounts, DNSBL and the dashboard."""

from __future__ import annotations

from .browser import Browser, send
from .fixture import BrowserCase

#: A recipient localserve answers 451 for: its message stays in the queue (next attempt
#: minutes later), with one failed attempt.
DELAYED = "xtemperror@localhost"
DELIVERED = "someone@localhost"


class QueueTests(BrowserCase):
    async def test_hold_release_and_detail(self) -> None:
        def steps(b: Browser) -> None:
            b.login_admin()
            msg = send(self.base, DELAYED, "e2e delayed")
            b.get("/admin/queue/")
            self.assertEqual(b.heading(), "Queue")
            # Its first attempt fails with 451; it stays queued.
            row = b.reload_until_record("Queued messages", "e2e delayed", "the message's failed attempt",
                                        lambda r: r["Last result"].startswith("451"))  # fmt: skip
            self.assertEqual((row["ID"], row["To"], row["Held"]), (str(msg), DELAYED, ""))

            # Hold: the script's "select all" box selects every row.
            b.labelled("Select all rows on this page").click()
            self.assertTrue(b.labelled(f"Select message {msg}").is_selected())
            b.press("Hold")
            self.assertEqual(b.notice(), "1 message(s) held.")
            self.assertEqual(b.records("Queued messages")[0]["Held"], "held")
            self.screenshot(b, "admin-queue")

            # Release: the one row selected by hand.
            b.labelled(f"Select message {msg}").click()
            b.press("Release")
            self.assertEqual(b.notice(), "1 message(s) released.")
            self.assertEqual(b.records("Queued messages")[0]["Held"], "")

            # Its page, with the attempt history.
            b.click(b.labelled(f"Message {msg}"))
            self.assertEqual(b.path, f"/admin/queue/{msg}")
            self.assertEqual(b.heading(), f"Queued message {msg}")
            self.assertIn(DELAYED, b.text())
            history = [(r["Result"], r["SMTP code"]) for r in b.records("Delivery attempts")]
            self.assertGreaterEqual(len(history), 1)
            self.assertEqual(history[0], ("failed", "451"))
            self.screenshot(b, "admin-queue-detail")

        await self.steps(steps)
        await self.stop_daemon()


class RetiredTests(BrowserCase):
    async def test_delivered_message_in_retired(self) -> None:
        def steps(b: Browser) -> None:
            b.login_admin()
            msg = send(self.base, DELIVERED, "e2e delivered")
            b.get("/admin/retired/")
            self.assertEqual(b.heading(), "Retired messages")
            row = b.reload_until_record("Retired messages", "e2e delivered", "the delivered message")
            self.assertEqual((row["ID"], row["To"]), (str(msg), DELIVERED))
            self.assertIn("delivered", row.values())
            self.screenshot(b, "admin-retired")
            b.click(b.labelled(f"Retired message {msg}"))
            self.assertEqual(b.path, f"/admin/retired/{msg}")
            self.assertEqual(b.heading(), f"Retired message {msg}")
            history = [(r["#"], r["Result"], r["SMTP code"]) for r in b.records("Delivery attempts")]
            self.assertEqual(history, [("1", "ok", "250")])
            self.screenshot(b, "admin-retired-detail")
            # The queue page of a message that left the queue leads to its record.
            b.get(f"/admin/queue/{msg}")
            self.assertEqual(b.path, f"/admin/retired/{msg}")

        await self.steps(steps)
        await self.stop_daemon()


class HoldRuleTests(BrowserCase):
    async def test_add_hold_rule_holds_and_remove(self) -> None:
        def steps(b: Browser) -> None:
            b.login_admin()
            first = send(self.base, DELAYED, "e2e before the rule")
            b.get("/admin/holdrules/")
            self.assertEqual(b.heading(), "Hold rules")
            b.fill("Account", "mox")
            b.press("Add hold rule")
            self.assertIn("holds 1 queued message(s)", b.notice())
            rule = b.record("Hold rules", "mox")
            assert rule is not None, b.text()
            self.assertEqual((rule["Account"], rule["Sender domain"], rule["Recipient domain"]), ("mox", "any", "any"))
            self.screenshot(b, "admin-holdrules")

            # A new message of the account is held when it is queued.
            second = send(self.base, DELIVERED, "e2e held by the rule")
            b.get("/admin/queue/")
            held = {r["ID"]: r["Held"] for r in b.records("Queued messages")}
            self.assertEqual(held, {str(first): "held", str(second): "held"})
            self.assertEqual([r["Last result"] for r in b.records("Queued messages", "e2e held by the rule")], ["-"])

            b.get("/admin/holdrules/")
            b.press("Remove", b.row("Hold rules", "mox"))
            self.assertIn(f"Hold rule {rule['ID']} removed", b.notice())
            self.assertIsNone(b.record("Hold rules", "mox"))
            # The messages it held stay held until released.
            b.get("/admin/queue/")
            self.assertEqual({r["Held"] for r in b.records("Queued messages")}, {"held"})

        await self.steps(steps)
        await self.stop_daemon()


class WebhookTests(BrowserCase):
    """The account's webhooks go to a receiver that answers 503: they stay queued."""

    def daemon_args(self) -> tuple[str, ...]:
        return ("--outgoing-webhook", self.receiver.url)

    def answer(self, body: dict[str, object]) -> int:
        return 503

    async def test_queued_webhook_reschedule_cancel(self) -> None:
        def steps(b: Browser) -> None:
            b.login_admin()
            msg = send(self.base, DELIVERED, "e2e webhook refused")
            self.receiver.wait(lambda h: h.get("QueueMsgID") == msg, f"QueueMsgID {msg}")
            b.get("/admin/webhooks/")
            self.assertEqual(b.heading(), "Webhooks")
            row = b.reload_until_record("Queued webhooks", "delivered", "the refused webhook",
                                        lambda r: r["Attempts"] != "0" and "503" in r["Last result"])  # fmt: skip
            self.assertEqual((row["Account"], row["Message"]), ("mox", str(msg)))
            hook, tried = row["ID"], int(row["Attempts"])  # (1, unless the machine is very slow)
            self.screenshot(b, "admin-webhooks")

            # Reschedule to now: the receiver gets another attempt at once.
            b.labelled(f"Select webhook {hook}").click()
            b.press("Reschedule")
            self.assertEqual(b.notice(), "Next attempt of 1 webhook(s) changed.")
            self.receiver.wait_all(lambda h: h.get("QueueMsgID") == msg, tried + 1, f"QueueMsgID {msg}")
            row = b.reload_until_record("Queued webhooks", "delivered", "the next attempt",
                                        lambda r: int(r["Attempts"]) > tried)  # fmt: skip

            b.click(b.labelled(f"Webhook {hook}"))
            self.assertEqual((b.path, b.heading()), (f"/admin/webhooks/{hook}", f"Queued webhook {hook}"))
            statuses = [r["HTTP status"] for r in b.records("Webhook attempts")]
            self.assertGreater(len(statuses), tried)
            self.assertEqual(set(statuses), {"503"})
            self.screenshot(b, "admin-webhook-detail")
            b.press("Cancel")
            self.assertEqual(b.notice(), "1 webhook(s) canceled.")
            self.assertEqual(b.records("Queued webhooks"), [])

            b.get("/admin/webhooks/retired/")
            self.assertEqual(b.heading(), "Retired webhooks")
            self.assertIsNotNone(b.record("Retired webhooks", "delivered"), b.text())
            self.screenshot(b, "admin-webhooks-retired")
            b.get(f"/admin/webhooks/{hook}")
            self.assertEqual(b.heading(), f"Retired webhook {hook}")

        await self.steps(steps)
        await self.stop_daemon()


class OverviewTests(BrowserCase):
    async def test_dashboard_accounts_dnsbl(self) -> None:
        def steps(b: Browser) -> None:
            send(self.base, DELIVERED, "e2e dashboard delivered")
            send(self.base, DELAYED, "e2e dashboard delayed")
            b.login_admin()
            # /admin/ opens on the dashboard.
            self.assertEqual((b.path, b.heading()), ("/admin/dashboard/", "Dashboard"))
            hours = "Delivery attempts per hour (UTC), newest first"

            def counted() -> bool:
                retrying = b.record("Queue by state", "Retrying")
                delivered = sum(int(r["Delivered"]) for r in b.records(hours))
                return retrying is not None and retrying["Messages"] == "1" and delivered == 1

            # Both attempts are counted once they are over (the 451 one as failed).
            b.reload_until(counted, "both delivery attempts on the dashboard")
            self.assertEqual(sum(int(r["Failed"]) for r in b.records(hours)), 1, b.records(hours))
            self.assertEqual(len(b.xpath("//*[local-name()='svg'][@role='img']")), 1)
            self.screenshot(b, "admin-dashboard")

            b.click(b.one("//nav//a[normalize-space(.)='Accounts']", "Accounts links"))
            self.assertEqual(b.heading(), "Accounts")
            account = b.record("Accounts", "mox")
            assert account is not None, b.text()
            self.assertEqual(account["Domain"], "localhost")
            self.screenshot(b, "admin-accounts")
            b.click(b.one("//table//a[normalize-space(.)='mox']", "links to account mox"))
            self.assertEqual((b.path, b.heading()), ("/admin/accounts/mox", "Account mox"))
            b.fill("Keep retired webhooks", "48h")
            b.press("Save settings")
            self.assertEqual(b.notice(), "Settings saved; they are in effect now.")
            self.assertEqual(b.field("Keep retired webhooks").get_attribute("value"), "48h")
            self.assertIn('keep_retired_webhooks = "48h"', (self.directory / "moxtw.toml").read_text())
            self.screenshot(b, "admin-account")

            b.click(b.one("//nav//a[normalize-space(.)='DNSBL']", "DNSBL links"))
            self.assertEqual((b.path, b.heading()), ("/admin/dnsbl/", "DNSBL"))
            self.assertEqual(b.error(), "")
            self.screenshot(b, "admin-dnsbl")

        await self.steps(steps)
        await self.stop_daemon()
