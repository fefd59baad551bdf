"""The browser tests' fixture: per test, a real localserve daemon on free loopback ports
(in a temporary directory, with its HTTP worker process), a webhook receiver on loopback
and a headless Chromium.

A test runs its browser steps (which block) in a thread with :meth:`BrowserCase.steps`;
the reactor thread stays free for the daemon's process protocol.  Skipped, with the
reason, where Chromium, chromedriver or Selenium are missing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.helpers import Daemon, localserve_config

from .browser import Browser, Receiver, artifacts_dir, missing

T = TypeVar("T")


class BrowserCase(TestCase):
    timeout = 300

    def daemon_args(self) -> tuple[str, ...]:
        """Extra arguments of ``twistd moxtw localserve`` (the receiver is there)."""
        return ()

    def answer(self, body: dict[str, Any]) -> int:
        """The receiver's HTTP status for a webhook."""
        return 200

    async def setUp(self) -> None:
        why = missing()
        if why:
            raise SkipTest(why)
        self.directory = Path(self.mktemp()).absolute()
        self.ports = localserve_config(self.directory, unlimited=True)
        self.receiver = Receiver(self.answer)
        self.addCleanup(deferToThread, self.receiver.stop)
        self.daemon = Daemon(self, "localserve", "--dir", str(self.directory), *self.daemon_args()).start()
        await self.daemon.wait_for_port(self.ports["http"], timeout=60)
        await self.daemon.wait_for_port(self.ports["smtp"], timeout=60)
        self.base = f"http://127.0.0.1:{self.ports['http']}"
        self.browser = await deferToThread(Browser, self.base)
        self.addCleanup(deferToThread, self.browser.quit)

    async def steps(self, function: Callable[[Browser], T]) -> T:
        """Run ``function(browser)`` in a thread; with the daemon's output on failure."""
        try:
            return await deferToThread(function, self.browser)
        except AssertionError as e:
            raise self.failureException(f"{e}\n--- daemon output:\n{self.daemon.output[-6000:]}") from e

    def screenshot(self, browser: Browser, name: str) -> None:
        """Save the page as ``<artifacts>/screenshots/<name>.png``."""
        browser.screenshot(artifacts_dir() / f"{name}.png")

    async def stop_daemon(self) -> None:
        """Stop the daemon cleanly; it must not have logged a traceback."""
        self.assertIn(await self.daemon.stop(), (0, -signal.SIGTERM), self.daemon.output)
        self.assertNotIn("Traceback", self.daemon.output)
