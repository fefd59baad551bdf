"""Screenshots of the web pages for the documentation (``scripts/screenshots``).

Starts a localserve daemon in a temporary directory with a webhook receiver, makes some
demo data through the webapi and the admin pages (delivered, failed, delayed and held
messages, a hold rule, webhooks delivered and refused, a suppressed address), and saves
the main pages as PNGs (1280 px wide, the whole page) in ``docs/screenshots/`` (or the
directory given).  Needs what the browser tests need (chromium, chromium-driver,
selenium); blocking code only, no reactor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, TWISTD, localserve_config, port_open

from .browser import WAIT, Browser, Receiver, missing, send

#: (recipient, subject) of the demo messages.
DELIVERED = [
    ("alice@localhost", "Your order #1042 has shipped"),
    ("bob@localhost", "Reset your password"),
    ("carol@localhost", "Welcome to Example Shop"),
    ("dave@localhost", "Your invoice for November"),
]
FAILED = [("old.addresspermerror@localhost", "Your order #1043 has shipped")]
DELAYED = [("slow.servertemperror@localhost", "Weekly digest"), ("busyx421@localhost", "Reset your password")]
HELD = [("news@lists.example", "November newsletter"), ("team@lists.example", "Release notes 2.4")]
HOLD_DOMAIN = "lists.example"


def wait(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        time.sleep(0.05)


def make_demo(b: Browser, receiver: Receiver) -> dict[str, int]:
    """The demo data; the IDs of a few messages shown on their own page."""
    b.login_admin()
    b.get("/admin/holdrules/")
    b.fill("Recipient domain", HOLD_DOMAIN)
    b.press("Add hold rule")
    ids: dict[str, int] = {}
    for to, subject in DELIVERED:
        ids["delivered"] = send(b.base, to, subject)
    for to, subject in FAILED:
        ids["failed"] = send(b.base, to, subject)
    for to, subject in DELAYED:
        ids["delayed"] = send(b.base, to, subject)
    for to, subject in HELD:
        ids["held"] = send(b.base, to, subject)
    # Every message has had its first attempt (the held ones none), every webhook its first.
    b.get("/admin/retired/")
    b.reload_until(lambda: len(b.records("Retired messages")) == len(DELIVERED) + len(FAILED), "retired messages")
    b.get("/admin/queue/")
    b.reload_until(
        lambda: sum(1 for r in b.records("Queued messages") if r["Last result"].startswith("4")) == len(DELAYED),
        "the delayed messages' first attempts",
    )
    receiver.wait_all(lambda h: True, len(DELIVERED) + len(FAILED) + len(DELAYED), "every event")
    # One address suppressed by hand (the failed recipient was suppressed automatically).
    b.login_account()
    b.get("/account/suppressions/")
    b.fill("Address", "unsubscribed@example.com")
    b.fill("Reason (optional)", "unsubscribed from the newsletter")
    b.press("Add")
    return ids


def capture(b: Browser, out: Path, ids: dict[str, int]) -> list[Path]:
    pages = [
        ("dashboard", "/admin/dashboard/"),
        ("queue", "/admin/queue/"),
        ("queue-detail", f"/admin/queue/{ids['delayed']}"),
        ("retired", "/admin/retired/"),
        ("webhooks", "/admin/webhooks/"),
        ("holdrules", "/admin/holdrules/"),
        ("accounts", "/admin/accounts/"),
        ("dnsbl", "/admin/dnsbl/"),
        ("account-messages", "/account/messages/"),
        ("account-settings", "/account/settings/"),
        ("account-suppressions", "/account/suppressions/"),
    ]
    saved = []
    for name, path in pages:
        b.get(path)
        if b.path.split("?")[0] != path:
            raise SystemExit(f"screenshots: {path} answered with {b.path}:\n{b.text()}")
        saved.append(b.screenshot(out / f"{name}.png"))
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(f"screenshots: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="moxtw-screenshots-") as tmp:
        directory = Path(tmp)
        ports = localserve_config(directory, unlimited=True)
        # Delivered events are taken, the others refused: some webhooks stay queued.
        receiver = Receiver(lambda body: 200 if body.get("Event") == "delivered" else 503)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = (directory / "daemon.log").open("wb")
        argv_daemon = [TWISTD, "-n", "--pidfile=", "moxtw", "localserve", "--dir", str(directory),
                       "--outgoing-webhook", receiver.url]  # fmt: skip
        daemon = subprocess.Popen(argv_daemon, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        browser: Browser | None = None
        try:
            for name in ("http", "smtp"):
                wait(lambda name=name: port_open(ports[name]) or daemon.poll() is not None, f"the {name} listener")
            if daemon.poll() is not None:
                raise SystemExit("screenshots: the daemon exited:\n" + (directory / "daemon.log").read_text())
            browser = Browser(f"http://127.0.0.1:{ports['http']}")
            ids = make_demo(browser, receiver)
            args.out.mkdir(parents=True, exist_ok=True)
            for path in capture(browser, args.out, ids):
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size} bytes)")
        finally:
            if browser is not None:
                browser.quit()
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            receiver.stop()
            log.close()
            output = (directory / "daemon.log").read_text(errors="replace")
            if "Traceback" in output:
                print(output[-6000:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
