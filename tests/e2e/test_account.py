"""The account pages in a real browser: webhook settings taking effect at once (a real
receiver gets the webhooks), the test webhook, suppressions, the account's messages."""

from __future__ import annotations

import re

from moxtw.webhooks.payloads import TEST_EVENT, TEST_SUBJECT

from .browser import Browser, send
from .fixture import BrowserCase

DELAYED = "xtemperror@localhost"
DELIVERED = "someone@localhost"


class SettingsTests(BrowserCase):
    async def test_webhook_settings_take_effect(self) -> None:
        def steps(b: Browser) -> None:
            b.login_account()
            self.assertEqual(b.path, "/account/messages/")
            b.click(b.one("//nav//a[normalize-space(.)='Settings']", "Settings links"))
            self.assertEqual((b.path, b.heading()), ("/account/settings/", "Settings"))
            self.assertEqual(b.field("Outgoing webhook URL").get_attribute("value"), "")
            b.fill("Outgoing webhook URL", self.receiver.url)
            b.named("outgoing_webhook.authorization").send_keys("Bearer e2e-s3cret-token")
            b.press("Save settings")
            self.assertEqual(b.notice(), "Settings saved; they are in effect now.")
            self.assertEqual(b.field("Outgoing webhook URL").get_attribute("value"), self.receiver.url)
            # The secret is not shown back, nor put in the form.
            self.assertNotIn("e2e-s3cret-token", b.driver.page_source)
            self.assertEqual(b.named("outgoing_webhook.authorization").get_attribute("value"), "")

            # In effect without a restart: the delivery's webhook reaches the receiver.
            msg = send(self.base, DELIVERED, "e2e webhook")
            hook = self.receiver.wait(lambda h: h.get("QueueMsgID") == msg, f"QueueMsgID {msg}")
            self.assertEqual((hook["Event"], hook["Subject"]), ("delivered", "e2e webhook"))
            headers = next(h for _, h, body in self.receiver.hooks if body is hook)
            self.assertEqual(headers["authorization"], "Bearer e2e-s3cret-token")

            b.get("/account/settings/")
            b.press("Send test webhook")
            found = re.search(r"Test webhook (\d+) queued", b.notice())
            self.assertIsNotNone(found, b.text())
            assert found is not None
            hook_id = found.group(1)
            test = self.receiver.wait(lambda h: h.get("Subject") == TEST_SUBJECT, "the test webhook")
            self.assertEqual((test["Event"], test["QueueMsgID"]), (TEST_EVENT, 0))

            def state(ident: str) -> dict[str, str] | None:
                return next((r for r in b.records("Recent webhooks") if r["ID"] == ident), None)

            test_row = b.reload_until(lambda: (r := state(hook_id)) is not None and r["State"] == "delivered" and r,
                                      "the test webhook delivered under Recent webhooks")  # fmt: skip
            self.assertEqual((test_row["Event"], test_row["Message"]), (f"{TEST_EVENT} (test)", "-"))
            message_rows = [r for r in b.records("Recent webhooks") if r["Message"] == str(msg)]
            self.assertEqual([(r["Event"], r["State"], r["Last result"]) for r in message_rows],
                             [("delivered", "delivered", "200")])  # fmt: skip
            self.screenshot(b, "account-settings")

        await self.steps(steps)
        await self.stop_daemon()


class SuppressionsAndMessagesTests(BrowserCase):
    async def test_suppressions_and_messages(self) -> None:
        def steps(b: Browser) -> None:
            b.login_account()
            b.get("/account/suppressions/")
            self.assertEqual(b.heading(), "Suppression list")
            b.fill("Address", "Blocked.Person@example.org")
            b.fill("Reason (optional)", "asked us to stop")
            b.press("Add")
            self.assertEqual(b.notice(), "The address was added to the suppression list.")
            self.assertEqual([(r["Original address"], r["Manual"], r["Reason"]) for r in b.records("Suppressed addresses")],
                             [("Blocked.Person@example.org", "yes", "asked us to stop")])  # fmt: skip
            row = b.row("Suppressed addresses", "asked us to stop")
            self.screenshot(b, "account-suppressions")
            b.press("Remove", row)
            self.assertEqual(b.notice(), "The address was removed.")
            self.assertEqual(b.rows("Suppressed addresses"), [])

            delivered = send(self.base, DELIVERED, "e2e account delivered")
            delayed = send(self.base, DELAYED, "e2e account delayed")
            b.get("/account/messages/")
            self.assertEqual(b.heading(), "Messages")
            row = b.reload_until_record("Retired messages", "e2e account delivered", "the delivered message")
            self.assertEqual(row["ID"], str(delivered))
            self.assertIn("delivered", row.values())
            row = b.reload_until_record("Queued messages", "e2e account delayed", "the queued message")
            self.assertEqual((row["ID"], row["To"]), (str(delayed), DELAYED))
            self.screenshot(b, "account-messages")
            b.click(b.labelled(f"Message {delivered}"))
            self.assertEqual((b.path, b.heading()), (f"/account/messages/{delivered}", f"Message {delivered}"))
            self.assertEqual([(r["Result"], r["SMTP code"]) for r in b.records("Delivery attempts")], [("ok", "250")])
            b.get(f"/account/messages/{delayed}")
            self.assertEqual(b.heading(), f"Message {delayed}")
            self.screenshot(b, "account-message-detail")

        await self.steps(steps)
        await self.stop_daemon()
