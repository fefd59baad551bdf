"""An HTTP worker process (started by :class:`moxtw.workers.HTTPWorkers`, not by hand).

``python -m moxtw.worker --config FILE --listen 'HOST|PORT|4' ...`` listens with
``SO_REUSEPORT`` on the addresses the main process listens on and serves the webapi from
the same configuration and store, until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

log = Logger()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moxtw.worker")
    p.add_argument("--config", required=True)
    p.add_argument("--number", default="0")
    p.add_argument("--listen", action="append", default=[], help="HOST|PORT|FAMILY (4 or 6) to listen on")
    args = p.parse_args(argv)

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    from twisted.internet import reactor

    from .app import build_parts
    from .config import load_config
    from .workers import reuseport_socket

    r: Any = reactor
    config = load_config(args.config)
    parts, services = build_parts(config, r)
    pending = [False]

    def notify_queued() -> None:
        # Coalesce: one byte per reactor iteration is enough for the main process.
        if not pending[0]:
            pending[0] = True

            def send() -> None:
                pending[0] = False
                try:
                    os.write(1, b"q")
                except OSError:
                    pass

            r.callLater(0, send)

    parts.webapi.methods.on_queued = notify_queued
    for svc in services:
        svc.startService()
    for spec in args.listen:
        host, port, family = spec.split("|")
        af = socket.AF_INET6 if family == "6" else socket.AF_INET
        sock = reuseport_socket(host, int(port), af)
        r.adoptStreamPort(sock.fileno(), af, parts.site)
        sock.close()

    async def stop() -> None:
        for svc in reversed(services):
            await svc.stopService()

    from twisted.internet.defer import Deferred

    r.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    log.info("serving the webapi on {count} socket(s)", count=len(args.listen))
    r.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
