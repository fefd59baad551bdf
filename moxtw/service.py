"""An ordered service container: children start in order and stop in reverse, one by one."""

from __future__ import annotations

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool


class OrderedMultiService(MultiService):
    """Like ``MultiService``, but ``stopService`` awaits each child before stopping the next.

    Listeners are added last, so they stop first; the store is added first, so it closes
    after everything that might still write to it (queue attempts, webhook results,
    in-flight SMTP transactions) has finished.  A child whose stop fails is logged and the
    others are still stopped.
    """

    log = Logger()

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            # An operator's mistake (a port in use, an address not on this machine), not
            # a bug in moxtw: one clear line and a non-zero exit, no traceback.
            where = f"[{e.interface}]" if ":" in (e.interface or "") else e.interface or "*"
            raise SystemExit(f"moxtw: cannot listen on {where}:{e.port}: {e.socketError}") from None

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        children: list[IService] = list(self)
        for child in reversed(children):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("stopping {name}", name=child.name)


class ThreadPoolService(Service):
    """Starts and stops a dedicated ``ThreadPool`` (password hashing, DNS, DKIM work)."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool
        self.name = f"threadpool-{pool.name}"

    def startService(self) -> None:
        Service.startService(self)
        self.pool.start()

    def stopService(self) -> None:
        Service.stopService(self)
        self.pool.stop()
