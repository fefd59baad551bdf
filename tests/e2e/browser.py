"""Blocking helpers of the browser tests and of ``scripts/screenshots``: a headless
Chromium driven by Selenium that finds things as a user does (by label, button text,
table caption), a webapi client and a webhook receiver on loopback.

Everything here blocks; the tests call it off the reactor thread.  Waits are explicit
(``WebDriverWait`` on a condition, or a condition variable), never sleeps.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from moxtw.localserve import ADMIN_PASSWORD

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = os.environ.get("MOXTW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MOXTW_CHROMEDRIVER", "/usr/bin/chromedriver")
LOGIN = ("mox@localhost", "moxmoxmox")
#: How long a wait for something the daemon does (a delivery, a webhook, a page) may take
#: before the test fails: generous, for a loaded 2-core CI machine; not a measurement.
WAIT = 60.0
WIDTH, HEIGHT = 1280, 800


def missing() -> str | None:
    """Why the browser tests cannot run here (a skip message), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the test extra: pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install the Debian package {package} (.ci/run does)"
    return None


def artifacts_dir() -> Path:
    """Where the tests save screenshots: ``$MOXTW_ARTIFACTS/screenshots`` if set, else
    ``artifacts/screenshots`` in the source tree."""
    base = os.environ.get("MOXTW_ARTIFACTS")
    return (Path(base) if base else ROOT / "artifacts") / "screenshots"


def literal(text: str) -> str:
    """``text`` as an XPath string literal."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


class Browser:
    """One headless Chromium (a 1280x800 viewport) on the daemon at ``base``."""

    def __init__(self, base: str, *, width: int = WIDTH, height: int = HEIGHT) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.base = base.rstrip("/")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=en-US",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--password-store=basic"):  # fmt: skip
            options.add_argument(arg)
        # Nothing is ever fetched from outside: no password manager, no leak check.
        options.add_experimental_option(
            "prefs", {"credentials_enable_service": False, "profile.password_manager_enabled": False,
                      "profile.password_manager_leak_detection": False},
        )  # fmt: skip
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            # The window size includes (invisible) browser chrome: fix the viewport itself.
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.driver.quit()
            raise
        self.width, self.height = width, height

    def quit(self) -> None:
        self.driver.quit()

    # --- navigation and reading -------------------------------------------------------------

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        """The current URL's path and query."""
        parts = urlsplit(self.driver.current_url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def xpath(self, expr: str, within: Any = None) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list((within or self.driver).find_elements(By.XPATH, expr))

    def one(self, expr: str, what: str, within: Any = None) -> Any:
        found = self.xpath(expr, within)
        if len(found) != 1:
            raise AssertionError(f"{len(found)} {what} on {self.path}, expected one:\n{self.text()}")
        return found[0]

    def text(self, within: Any = None) -> str:
        from selenium.webdriver.common.by import By

        return str((within or self.driver.find_element(By.TAG_NAME, "body")).text)

    def heading(self) -> str:
        return str(self.one("//h1", "h1 headings").text)

    def notice(self) -> str:
        return " ".join(e.text for e in self.xpath("//*[contains(concat(' ', @class, ' '), ' notice ')]"))

    def error(self) -> str:
        return " ".join(e.text for e in self.xpath("//*[@role='alert']"))

    def field(self, label: str, within: Any = None) -> Any:
        """The form control labelled ``label`` (a ``<label for>`` with exactly that text)."""
        return self.one(f".//*[@id=//label[normalize-space(.)={literal(label)}]/@for]", f"fields labelled {label!r}",
                        within)  # fmt: skip

    def named(self, name: str, within: Any = None) -> Any:
        return self.one(f".//*[@name={literal(name)}]", f"controls named {name!r}", within)

    def button(self, text: str, within: Any = None) -> Any:
        return self.one(f".//button[normalize-space(.)={literal(text)}]", f"buttons {text!r}", within)

    def labelled(self, label: str) -> Any:
        """The element with ``aria-label`` ``label``."""
        return self.one(f"//*[@aria-label={literal(label)}]", f"elements labelled {label!r}")

    def table(self, caption: str) -> Any:
        return self.one(f"//table[caption[normalize-space(.)={literal(caption)}]]", f"tables {caption!r}")

    def rows(self, caption: str, containing: str = "") -> list[Any]:
        """The body rows of the table captioned ``caption`` whose text contains ``containing``."""
        cond = f"[contains(normalize-space(.), {literal(containing)})]" if containing else ""
        return self.xpath(f"//table[caption[normalize-space(.)={literal(caption)}]]/tbody/tr{cond}")

    def row(self, caption: str, containing: str) -> Any:
        rows = self.rows(caption, containing)
        return rows[0] if len(rows) == 1 else None

    def records(self, caption: str, containing: str = "") -> list[dict[str, str]]:
        """The rows of the table captioned ``caption`` (those containing ``containing``) as
        {column header: cell text}; [] if there is no such table."""
        tables = self.xpath(f"//table[caption[normalize-space(.)={literal(caption)}]]")
        if not tables:
            return []

        def content(element: Any) -> str:  # (also of hidden elements, unlike .text)
            return " ".join(str(element.get_attribute("textContent")).split())

        headers = [content(th) for th in self.xpath("./thead/tr/th", tables[0])]
        return [
            dict(zip(headers, (content(td) for td in self.xpath("./td", tr)), strict=False))
            for tr in self.rows(caption, containing)
        ]

    def record(self, caption: str, containing: str) -> dict[str, str] | None:
        """The one row containing ``containing`` (see :meth:`records`), None if not one."""
        found = self.records(caption, containing)
        return found[0] if len(found) == 1 else None

    def reload_until_record(self, caption: str, containing: str, what: str,
                            ok: Callable[[dict[str, str]], bool] = lambda r: True) -> dict[str, str]:  # fmt: skip
        """Reload until the table ``caption`` has one row containing ``containing`` that
        ``ok`` accepts; that row."""

        def found() -> dict[str, str] | None:
            r = self.record(caption, containing)
            return r if r is not None and ok(r) else None

        return self.reload_until(found, what)

    # --- acting -------------------------------------------------------------------------------

    def fill(self, label: str, value: str, within: Any = None) -> None:
        element = self.field(label, within)
        element.clear()
        if value:
            element.send_keys(value)

    def click(self, element: Any) -> None:
        """Click something that loads a new page, and wait until it has."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support import expected_conditions as ec

        old = self.one("/html", "documents")
        element.click()

        def gone() -> bool:
            try:
                return bool(ec.staleness_of(old)(self.driver))
            except WebDriverException as e:
                # Chromium sometimes reports the old page's node as "not belonging to the
                # document" instead of stale: the same thing, the page was replaced.
                if "does not belong to the document" in str(e):
                    return True
                raise

        self.wait(gone, "the next page to load")
        self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete", "the page")

    def press(self, text: str, within: Any = None) -> None:
        """Click the button ``text`` (that submits a form)."""
        self.click(self.button(text, within))

    def wait(self, condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
        """Wait until ``condition()`` is true-ish and return it."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            result: T = WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: condition())
        except TimeoutException as e:
            raise AssertionError(f"timed out waiting for {what} on {self.path}: {e!r}") from e
        return result

    def reload_until(self, condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
        """Reload the page until ``condition()`` is true-ish on it (for what the daemon does
        in the background: deliveries, webhooks)."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        first = [True]

        def check(_: Any) -> T:
            if not first[0]:
                self.driver.refresh()
            first[0] = False
            return condition()

        try:
            result: T = WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(check)
        except TimeoutException as e:
            raise AssertionError(f"timed out waiting for {what} on {self.path}:\n{self.text()}") from e
        return result

    # --- logins ---------------------------------------------------------------------------------

    def login_admin(self, password: str = ADMIN_PASSWORD) -> None:
        self.get("/admin/login")
        self.fill("Admin password", password)
        self.press("Log in")
        if self.path.startswith("/admin/login"):
            raise AssertionError(f"admin login failed:\n{self.text()}")

    def login_account(self, address: str = LOGIN[0], password: str = LOGIN[1]) -> None:
        self.get("/account/login")
        self.fill("Login address", address)
        self.fill("Password", password)
        self.press("Log in")
        if self.path.startswith("/account/login"):
            raise AssertionError(f"account login failed:\n{self.text()}")

    # --- screenshots ----------------------------------------------------------------------------

    def screenshot(self, path: Path, *, full: bool = True) -> Path:
        """A PNG of the page, ``self.width`` wide: the whole page (``full``) or the viewport."""
        height = self.height
        if full:
            height = max(height, int(self.driver.execute_script("return document.documentElement.scrollHeight")))
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": full,
             "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}},
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


# --- the webapi -----------------------------------------------------------------------------------


def webapi(base: str, method: str, request: dict[str, Any], login: tuple[str, str] = LOGIN) -> Any:
    """Call a webapi method as the docs' examples do (form field ``request``, basic auth)."""
    token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    req = urllib.request.Request(
        f"{base.rstrip('/')}/webapi/v0/{method}",
        data=urlencode({"request": json.dumps(request)}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=WAIT) as response:
        return json.loads(response.read())


def send(base: str, to: str, subject: str, text: str = "Hello from the browser tests.") -> int:
    """Send one message through the webapi; its queue message ID."""
    answer = webapi(base, "Send", {"To": [{"Address": to}], "Subject": subject, "Text": text})
    return int(answer["Submissions"][0]["QueueMsgID"])


# --- a webhook receiver ----------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 (a thread) that records every webhook posted to it and
    answers ``answer(body)`` (200 by default)."""

    def __init__(self, answer: Callable[[dict[str, Any]], int] = lambda body: 200) -> None:
        self.hooks: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.answer = answer
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsable": raw.decode("utf-8", "replace")}
                code = receiver.answer(body)
                with receiver.changed:
                    receiver.hooks.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.changed.notify_all()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def wait(self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first webhook body ``match`` accepts, waiting for it if needed."""
        return self.wait_all(match, 1, what, timeout)[0]

    def wait_all(self, match: Callable[[dict[str, Any]], bool], count: int, what: str,
                 timeout: float = WAIT) -> list[dict[str, Any]]:  # fmt: skip
        """The webhook bodies ``match`` accepts once there are at least ``count``."""

        def found() -> list[dict[str, Any]] | None:
            bodies = [b for _, _, b in self.hooks if match(b)]
            return bodies if len(bodies) >= count else None

        with self.changed:
            bodies = self.changed.wait_for(found, timeout)
        if bodies is None:
            raise AssertionError(f"not {count} webhook(s) with {what}; got {[b for _, _, b in self.hooks]}")
        return bodies

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
