"""The HTTP worker process's link to the main process (moxtw.worker)."""

from __future__ import annotations

from twisted.internet.base import ReactorBase
from twisted.trial.unittest import SynchronousTestCase

from moxtw.worker import _ParentLink


class ShuttingDownReactor(ReactorBase):
    """A real ReactorBase (its stop() semantics) that never runs an event loop."""

    def installWaker(self) -> None:
        pass

    def installResolver(self, resolver: object) -> object:  # type: ignore[override]
        return resolver


class ParentLinkTests(SynchronousTestCase):
    def test_parent_gone_during_shutdown(self) -> None:
        """The main process closes the pipe while the worker is already stopping (it got
        SIGTERM first): no ReactorNotRunning escapes from connectionLost."""
        reactor = ShuttingDownReactor()
        reactor.running = True
        reactor._stopped = False  # as run() leaves it
        reactor.stop()  # SIGTERM arrived: shutdown has begun
        _ParentLink(reactor).connectionLost()
        self.assertTrue(reactor._stopped)

    def test_parent_gone_stops_the_reactor(self) -> None:
        reactor = ShuttingDownReactor()
        reactor.running = True
        reactor._stopped = False  # as run() leaves it
        _ParentLink(reactor).connectionLost()
        self.assertTrue(reactor._stopped)
