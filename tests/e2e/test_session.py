"""Sessions and CSRF in a real browser: logging out ends the session (the next page asks
to log in, a form of an open page is refused), admin and account sessions are separate,
and a form with a wrong token changes nothing."""

from __future__ import annotations

from .browser import Browser
from .fixture import BrowserCase


class SessionTests(BrowserCase):
    async def test_logout_ends_the_session(self) -> None:
        def steps(b: Browser) -> None:
            b.login_admin()
            b.get("/admin/queue/")
            self.assertEqual(b.heading(), "Queue")
            first = b.driver.current_window_handle
            # Log out in a second tab; the first still shows the queue with its form.
            b.driver.switch_to.new_window("tab")
            b.get("/admin/queue/")
            b.press("Log out")
            self.assertTrue(b.path.startswith("/admin/login"), b.path)
            self.assertEqual(b.heading(), "Log in")
            b.get("/admin/queue/")
            self.assertEqual(b.path, "/admin/login?next=/admin/queue/")
            b.driver.close()
            b.driver.switch_to.window(first)
            b.press("Hold")
            self.assertEqual(b.heading(), "Not logged in")
            # Logging in again continues where the login page was asked for.
            b.get("/admin/queue/")
            b.fill("Admin password", "moxadmin")
            b.press("Log in")
            self.assertEqual((b.path, b.heading()), ("/admin/queue/", "Queue"))

            # An account session is another session: logging it out keeps the admin's.
            b.login_account()
            b.get("/account/suppressions/")
            b.press("Log out")
            self.assertTrue(b.path.startswith("/account/login"), b.path)
            b.get("/account/suppressions/")
            self.assertTrue(b.path.startswith("/account/login"), b.path)
            b.get("/admin/queue/")
            self.assertEqual(b.heading(), "Queue")

        await self.steps(steps)
        await self.stop_daemon()

    async def test_form_with_wrong_token_changes_nothing(self) -> None:
        def steps(b: Browser) -> None:
            b.login_account()
            b.get("/account/suppressions/")
            b.fill("Address", "forged@example.org")
            token = b.one("//form[.//button[normalize-space(.)='Add']]//input[@name='csrf_token']", "tokens")
            b.driver.execute_script("arguments[0].value = 'forged'", token)
            b.press("Add")
            self.assertEqual(b.heading(), "Invalid form token")
            b.get("/account/suppressions/")
            self.assertEqual(b.rows("Suppressed addresses"), [])
            self.assertNotIn("forged@example.org", b.text())

        await self.steps(steps)
        await self.stop_daemon()
