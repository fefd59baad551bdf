"""The documentation is tested: its examples run, its references match the code.

- docs/app-developers.md: every tagged example runs against a real localserve daemon and
  a real webhook receiver (the page's own), with real ``curl`` and this venv's python;
  see tests/docs_runner.py for the conventions and the (few) substitutions.  Each test
  declares the blocks it runs (:func:`runs`); a tagged block that no test runs, or a test
  that does not run all it declares, fails.
- docs/configuration.md documents exactly the keys the configuration loader accepts, and
  etc/moxtw.toml is a valid configuration that mentions every key.
- docs/README.md links every page in docs/, and the pages' relative links resolve.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from moxtw import config as configmod
from moxtw.dkim import generate_key
from moxtw.localserve import PORTS
from moxtw.webhooks.signing import signature_headers
from tests.docs_runner import (
    RECEIVER_PORT,
    DocsError,
    Session,
    output_problem,
    parse_page,
    substitute,
)
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
APP = DOCS / "app-developers.md"
HTTP = PORTS["http"]
SMTP = PORTS["smtp"]


def runs(*names: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """The test runs exactly these blocks of docs/app-developers.md and checks their
    expected outputs; ``NAME/LABEL`` names a labelled expected output of a background
    block that the test checks."""
    blocks = sorted(n for n in names if "/" not in n)
    labels = {n for n in names if "/" in n}

    def decorate(test: Callable[[Any], None]) -> Callable[[Any], None]:
        @functools.wraps(test)
        def wrapper(self: AppDeveloperDocsTests) -> None:
            test(self)
            self.assertEqual(sorted(self.docs.used), blocks, "blocks this test runs")
            outputs = {label for label in self.docs.page.outputs if label in blocks} | labels
            self.assertEqual(sorted(self.docs.checked), sorted(outputs), "expected outputs this test checks")

        wrapper.doc_blocks = names  # type: ignore[attr-defined]
        return wrapper

    return decorate


class AppDeveloperDocsTests(SynchronousTestCase):
    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed: the page's curl examples cannot run")
        if shutil.which("bash") is None:
            raise SkipTest("bash is not installed: the page's sh examples cannot run")
        self.docs = Session(parse_page(APP), Path(self.mktemp()).absolute(), free_port)
        self.addCleanup(self.docs.stop_all)

    def start(self, daemon: str = "start", receiver: str = "run-receiver") -> None:
        self.docs.write("receiver.py")
        self.docs.start(receiver)
        self.docs.start(daemon)
        self.docs.wait_port(RECEIVER_PORT)
        self.docs.wait_port(HTTP)
        self.docs.wait_port(SMTP)

    def receiver_line(self, pattern: str, receiver: str = "run-receiver") -> re.Match[str]:
        return self.docs.wait_line(receiver, pattern)

    def stop_daemon(self, name: str) -> None:
        daemon = self.docs.backgrounds[name]
        self.docs.stop(name)
        self.assertNotIn("Traceback", daemon.output)

    @runs("start", "receiver.py", "run-receiver", "send", "webapi.py", "send-python", "send-attachments",
          "future-release", "queue-list", "queue-drop", "incoming-smtp", "get-message", "get-raw",
          "run-receiver/send")  # fmt: skip
    def test_send_receive_and_read(self) -> None:
        self.docs.prepare_localserve()
        self.start()
        answer = json.loads(self.docs.run("send"))
        self.assertEqual(answer["Submissions"][0]["QueueMsgID"], 1)
        self.docs.expect("run-receiver/send")

        self.docs.write("webapi.py")
        self.docs.run("send-python")
        line = self.receiver_line(r"outgoing delivered msg=2 code=250 .* extra=(.*)")
        self.assertEqual(line.group(1), "{'order': '42'}")
        self.receiver_line(r"incoming msgid=\d+ from=mox@localhost subject='Your invoice'")

        self.assertEqual(json.loads(self.docs.run("send-attachments"))["Submissions"][0]["QueueMsgID"], 3)
        self.receiver_line(r"outgoing delivered msg=3 .*")

        self.assertEqual(self.docs.run("future-release").strip(), "queued 4")
        self.docs.run("queue-list")
        self.docs.run("queue-drop")
        self.receiver_line(r"outgoing canceled msg=4 code=0 .*")
        self.assertNotRegex(self.docs.backgrounds["run-receiver"].output, r"outgoing delivered msg=4 ")

        self.docs.run("incoming-smtp")
        self.receiver_line(r"incoming msgid=\d+ from=alice@example.com subject='Order 42'")
        self.docs.run("get-message")
        self.docs.run("get-raw")
        self.stop_daemon("start")

    @runs("start", "receiver.py", "run-receiver", "failures", "send-suppressed", "suppression-list",
          "suppression-remove", "error", "webapi.py", "error-python", "run-receiver/failures",
          "run-receiver/suppressed")  # fmt: skip
    def test_failures_and_suppressions(self) -> None:
        self.docs.prepare_localserve()
        self.start()
        submissions = json.loads(self.docs.run("failures"))["Submissions"]
        self.assertEqual([s["QueueMsgID"] for s in submissions], [1, 2])
        self.docs.expect("run-receiver/failures")
        self.docs.run("send-suppressed")
        self.docs.expect("run-receiver/suppressed")
        self.docs.run("suppression-list")
        self.docs.run("suppression-remove")
        self.assertEqual(json.loads(self.call("SuppressionList", {})), {"Suppressions": []})
        self.docs.run("error")
        self.docs.write("webapi.py")
        self.docs.run("error-python")
        self.stop_daemon("start")

    @runs("start", "receiver.py", "run-receiver", "send-fromid", "bounce.py", "run-receiver/bounce")
    def test_fromid_and_late_bounce(self) -> None:
        self.docs.prepare_localserve()
        self.start()
        (submission,) = json.loads(self.docs.run("send-fromid"))["Submissions"]
        fromid = submission["FromID"]
        self.assertRegex(fromid, r"^[A-Za-z0-9_-]{16,}$")
        # The DSN is matched against the message once it has left the queue (delivered).
        self.receiver_line(rf"outgoing delivered msg=1 .* fromid={re.escape(fromid)} .*")
        self.docs.run("bounce.py", fromid, "bob@localhost")
        self.docs.expect("run-receiver/bounce")
        self.receiver_line(rf"outgoing failed msg=1 code=550 dsn=True suppressing=True fromid={re.escape(fromid)} .*")
        # The report is part of the message's record, not an incoming message.
        self.assertNotIn("MAILER-DAEMON", self.docs.backgrounds["run-receiver"].output)
        self.stop_daemon("start")

    @runs("receiver.py", "enable-signing", "start-signed", "run-receiver-signed", "send", "forged")
    def test_signed_webhooks(self) -> None:
        self.docs.prepare_localserve()
        self.docs.run("enable-signing")
        secret = (self.docs.dir / "webhook-secret.txt").read_text().strip()
        self.assertTrue(secret.startswith("whsec_"))
        self.start("start-signed", "run-receiver-signed")
        self.docs.run("send")
        # The receiver's verify() accepts the daemon's signed webhooks.
        self.receiver_line(r"outgoing delivered msg=1 code=250 .*", "run-receiver-signed")
        self.receiver_line(r"incoming msgid=1 from=mox@localhost subject='hi'", "run-receiver-signed")
        receiver = self.docs.backgrounds["run-receiver-signed"]
        self.assertNotIn("rejected", receiver.output)
        self.docs.run("forged")
        self.receiver_line(r"rejected: no valid signature", "run-receiver-signed")

        # A real webhook (the daemon's payload), signed as the daemon signs: accepted as
        # is, refused when the body, the timestamp or the secret differ.
        def retired() -> list[dict[str, Any]]:
            argv = ["moxtw", "hooks", "retired", "--json", "--event", "delivered"]
            hooks: list[dict[str, Any]] = json.loads(self.docs.run_command(argv))
            return hooks

        body = self.docs.wait(retired, "the delivered webhook retired")[0]["Payload"].encode()
        self.assertEqual(json.loads(body)["Event"], "delivered")
        now = int(time.time())
        signed = signature_headers(secret, "msg_test", now, body)
        self.assertEqual(self.post(signed, body), 200)
        self.assertEqual(self.post(signed, body.replace(b"delivered", b"failed")), 401)
        self.assertEqual(self.post({**signed, "webhook-timestamp": str(now + 1)}, body), 401)
        self.assertEqual(self.post({**signed, "webhook-id": "msg_other"}, body), 401)
        old = signature_headers(secret, "msg_test", now - 3600, body)
        self.assertEqual(self.post(old, body), 401)
        other = signature_headers("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", "msg_test", now, body)
        self.assertEqual(self.post(other, body), 401)
        self.assertEqual(len(re.findall(r"^rejected: ", receiver.output, re.M)), 6)
        self.stop_daemon("start-signed")

    def post(self, headers: Mapping[str, str], body: bytes) -> int:
        url = f"http://127.0.0.1:{self.docs.port(RECEIVER_PORT)}/outgoing"
        request = urllib.request.Request(url, data=body, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def call(self, method: str, request: Mapping[str, Any]) -> str:
        return self.docs.run_command([
            "curl", "-s", "-u", "mox@localhost:moxmoxmox", f"http://localhost:{self.docs.port(HTTP)}/webapi/v0/{method}",
            "--data-urlencode", "request=" + json.dumps(request),
        ])  # fmt: skip


class PageTests(SynchronousTestCase):
    def test_every_tagged_block_is_run(self) -> None:
        """Every tagged block and every labelled output is run or checked by a test."""
        page = parse_page(APP)
        declared: set[str] = set()
        for attribute in vars(AppDeveloperDocsTests).values():
            declared.update(getattr(attribute, "doc_blocks", ()))
        labels = {label for label in page.outputs if "/" in label}
        self.assertEqual(sorted(set(page.blocks) | labels), sorted(declared))
        self.assertGreater(len(page.blocks), 20)

    def test_runner_conventions(self) -> None:
        """The runner's matching and substitution, and pages it refuses."""
        self.assertIsNone(output_problem('{"A":...,"B":2}\nend', 'x\n{"A":1,"B":2}\nend\n', ordered=True))
        self.assertIsNotNone(output_problem("end\nstart", "start\nend", ordered=True))
        self.assertIsNone(output_problem("end\nstart", "start\nend", ordered=False))
        self.assertIsNotNone(output_problem("queued 2", "queued 3", ordered=False))
        ports = {1080: 41080, 8089: 48089}
        self.assertEqual(substitute('curl http://localhost:1080/ ("127.0.0.1", 8089)', ports),
                         'curl http://localhost:41080/ ("127.0.0.1", 48089)')  # fmt: skip
        with self.assertRaises(DocsError):
            substitute("PORT = 1080", ports)
        tmp = Path(self.mktemp())
        tmp.mkdir()
        for text in ("<!-- test: a -->\ntext\n```sh\nls\n```\n", "<!-- test: a -->\n```text\nls\n```\n",
                     "<!-- output: b -->\n```text\nx\n```\n", "<!-- test: a file -->\n```python\nprint()\n```\n"):  # fmt: skip
            (tmp / "page.md").write_text(text)
            with self.assertRaises(DocsError, msg=text):
                parse_page(tmp / "page.md")

    def test_index_links_every_page(self) -> None:
        index = (DOCS / "README.md").read_text()
        linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
        pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
        self.assertEqual(sorted(pages - linked), [], "pages missing from docs/README.md")

    def test_relative_links_resolve(self) -> None:
        broken = []
        for page in sorted(DOCS.glob("*.md")):
            for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
                if not (page.parent / target).exists():
                    broken.append(f"{page.name}: {target}")
        self.assertEqual(sorted(set(broken)), [])


# --- configuration reference ---------------------------------------------------------

CONFIG_DOC = DOCS / "configuration.md"
EXAMPLE = ROOT / "etc" / "moxtw.toml"

#: A document with every table the loader knows, so that every ``c.table(...)`` check
#: runs once: one domain with a DKIM selector, one account with both webhooks, one hold
#: rule.  Names are normalised to NAME/SELECTOR below.
_EVERY_TABLE = """
hostname = "mail.example.org"
data_dir = "data"
[domains."example.org"]
[domains."example.org".dkim.selectors.sel]
key_file = "dkim.pem"
[accounts.acc]
domain = "example.org"
addresses = ["a@example.org"]
[accounts.acc.outgoing_webhook]
url = "http://127.0.0.1/"
[accounts.acc.incoming_webhook]
url = "http://127.0.0.1/"
[[hold_rules]]
account = "acc"
"""


def _normalise(path: str) -> str:
    path = path.replace('domains.example.org', "domains.NAME").replace("accounts.acc", "accounts.NAME")
    path = path.replace("selectors.sel", "selectors.SELECTOR")
    return re.sub(r"^hold_rules\[0\]$", "[[hold_rules]]", path)


def loader_keys(testcase: SynchronousTestCase, tmp: Path) -> dict[str, set[str]]:
    """The keys the loader accepts, per table, from its own checks: every set of allowed
    keys passed to ``_Checker.table`` while it reads a document with every table."""
    recorded: dict[str, set[str]] = {}

    class Recording(configmod._Checker):
        def table(self, doc: Mapping[str, Any], allowed: set[str]) -> None:
            recorded.setdefault(_normalise(".".join(self._path)), set()).update(allowed)
            super().table(doc, allowed)

    (tmp / "dkim.pem").write_bytes(generate_key("ed25519"))
    testcase.patch(configmod, "_Checker", Recording)
    configmod.parse_config(_EVERY_TABLE, base_dir=tmp)
    return recorded


def documented_keys() -> dict[str, set[str]]:
    """Per ``## `[table]``` section of docs/configuration.md, the keys of its table rows
    (`` | `key` | ``), and each section's name as a key of its parent table."""
    keys: dict[str, set[str]] = {}
    table: str | None = None
    for line in CONFIG_DOC.read_text().splitlines():
        heading = re.match(r"^## (?:Top level|`(\[\[?[^`]*\]\]?)`)", line)
        if heading:
            name = heading.group(1) or ""
            table = name if name.startswith("[[") else name[1:-1]
            keys.setdefault(table, set())
            if table:
                parent, _, last = table.strip("[]").rpartition(".")
                if last in ("NAME", "SELECTOR"):
                    parent, _, last = parent.rpartition(".")
                keys.setdefault(parent, set()).add(last)
            continue
        row = re.match(r"^\| `([a-z_]+)` \|", line)
        if row and table is not None:
            keys[table].add(row.group(1))
    # Tables that are maps of names have no keys of their own.
    keys.pop("domains", None)
    keys.pop("accounts", None)
    keys.pop("domains.NAME.dkim.selectors", None)
    return keys


def _example_with_files(tmp: Path) -> Path:
    """etc/moxtw.toml with its file paths in ``tmp`` and those files present."""
    text = EXAMPLE.read_text().replace("/etc/moxtw/", f"{tmp}/").replace("/var/lib/moxtw", f"{tmp}/data")
    for name in ("tls/fullchain.pem", "tls/privkey.pem"):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text("x")
    for key_file in re.findall(r'key_file = "([^"]+\.pem)"', text):
        if "/dkim/" in key_file:
            Path(key_file).parent.mkdir(parents=True, exist_ok=True)
            Path(key_file).write_bytes(generate_key("ed25519"))
    (tmp / "moxtw.toml").write_text(text)
    return tmp / "moxtw.toml"


def _pairs(keys: Mapping[str, set[str]]) -> Iterator[str]:
    for table, names in sorted(keys.items()):
        for key in sorted(names):
            yield f"{table or '(top level)'}: {key}"


class ConfigurationDocsTests(SynchronousTestCase):
    def test_documented_keys_are_the_loaders(self) -> None:
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        accepted = set(_pairs(loader_keys(self, tmp)))
        documented = set(_pairs(documented_keys()))
        self.assertEqual(sorted(accepted - documented), [], "keys the loader accepts but docs/configuration.md lacks")
        self.assertEqual(sorted(documented - accepted), [], "keys docs/configuration.md has but the loader refuses")
        self.assertGreater(len(accepted), 40)

    def test_example_is_valid_and_mentions_every_key(self) -> None:
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        config = configmod.load_config(_example_with_files(tmp))
        self.assertTrue(config.accounts and config.domains)
        text = EXAMPLE.read_text()
        # A key is mentioned as an assignment or as part of a table header, commented
        # out or not.
        assigned = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.M))
        in_headers = {
            part.strip('" ') for header in re.findall(r"^#?\s*\[\[?([^\]\n]+)\]", text, re.M) for part in header.split(".")
        }
        missing = [pair for pair in _pairs(loader_keys(self, tmp)) if pair.split(": ")[1] not in assigned | in_headers]
        self.assertEqual(missing, [], "keys etc/moxtw.toml does not mention")
