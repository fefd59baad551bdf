"""``moxtw hooks secret`` and ``moxtw hooks test``."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from moxtw.config import WebhookConfig
from moxtw.webhooks.cli import add_cli, sample_body, send_test

from ..helpers import ROOT
from .harness import Client, Receiver

reactor: Any = _reactor
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

CONFIG = """
hostname = "mail.example.org"
data_dir = "data"
[domains."example.org"]
[accounts.app]
domain = "example.org"
addresses = ["app@example.org"]
password_hash = "x"
[accounts.app.outgoing_webhook]
url = "{url}"
authorization = "Bearer t"
signing_secret = "{secret}"
[accounts.quiet]
domain = "example.org"
addresses = ["quiet@example.org"]
password_hash = "x"
"""


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="moxtw")
    add_cli(p.add_subparsers(dest="command", required=True))
    return p.parse_args(argv)


def run(argv: list[str]) -> tuple[int, str, str]:
    args = parse(argv)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


class SecretTests(SynchronousTestCase):
    def test_secret(self) -> None:
        code, out, err = run(["hooks", "secret", "app"])
        self.assertEqual(code, 0)
        secret = out.strip()
        self.assertTrue(secret.startswith("whsec_"))
        self.assertEqual(len(base64.b64decode(secret[6:], validate=True)), 32)
        self.assertIn("signing_secret", err)
        self.assertNotEqual(secret, run(["hooks", "secret", "app"])[1].strip())
        Webhook(secret)  # the standardwebhooks library takes it

    def test_secret_checks_account(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONFIG.format(url="http://127.0.0.1:9/", secret=SECRET))
        self.assertEqual(run(["hooks", "secret", "app", "--config", str(path)])[0], 0)
        code, out, err = run(["hooks", "secret", "nobody", "--config", str(path)])
        self.assertEqual((code, out), (1, ""))
        self.assertIn("no account 'nobody'", err)

    def test_test_without_webhook(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONFIG.format(url="http://127.0.0.1:9/", secret=SECRET))
        code, _, err = run(["hooks", "test", "quiet", "--config", str(path)])
        self.assertEqual(code, 1)
        self.assertIn("has no outgoing_webhook", err)
        code, _, err = run(["hooks", "test", "app", "--incoming", "--config", str(path)])
        self.assertIn("has no incoming_webhook", err)


class SendTestTests(SynchronousTestCase):
    def test_signed_sample_event(self) -> None:
        receiver = Receiver()
        client = Client(receiver)
        clock = Clock()
        clock.advance(1_700_000_000)
        hook = WebhookConfig(url="http://r.example/hook", authorization="Bearer t", signing_secret=SECRET)
        body = sample_body(False, clock.seconds())
        answer = self.successResultOf(defer.Deferred.fromCoroutine(send_test(client, clock, hook, body, 60.0)))
        self.assertTrue(answer.success)
        self.assertEqual((answer.code, answer.response), (200, b"thanks"))
        (r,) = receiver.requests
        self.assertEqual((r.header("X-Mox-Webhook-ID"), r.header("X-Mox-Webhook-Attempt")), ("0", "1"))
        self.assertEqual(r.header("Authorization"), "Bearer t")
        payload = json.loads(r.body)
        self.assertEqual((payload["Event"], payload["SMTPCode"], payload["Extra"]), ("delivered", 250, {"userid": "456"}))
        self.assertTrue(r.header("webhook-signature").startswith("v1,"))

    def test_incoming_sample(self) -> None:
        payload = json.loads(sample_body(True, 0.0))
        self.assertEqual(payload["Subject"], "moxtw webhook test")
        self.assertEqual(payload["Text"], "This is a test of the incoming webhook.\n")
        self.assertEqual(payload["Meta"]["MsgID"], 1)

    def test_refused(self) -> None:
        receiver = Receiver()
        client = Client(receiver)
        client.refuse.add("r.example")
        hook = WebhookConfig(url="http://r.example/hook")
        answer = self.successResultOf(defer.Deferred.fromCoroutine(send_test(client, Clock(), hook, b"{}", 60.0)))
        self.assertFalse(answer.success)
        self.assertIn("refused", answer.error)


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class Echo(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        request.setResponseCode(202)
        return b"received, thanks"


class CommandTests(TestCase):
    async def test_hooks_test_command(self) -> None:
        """``moxtw hooks test ACCOUNT`` in a real process posts a signed sample event to
        a real receiver and prints its answer."""
        echo = Echo()
        port = reactor.listenTCP(0, Site(echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        path = Path(self.mktemp()).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONFIG.format(url=f"http://127.0.0.1:{port.getHost().port}/hook", secret=SECRET))
        script = (
            "import argparse, sys\n"
            "from moxtw.webhooks.cli import add_cli\n"
            "p = argparse.ArgumentParser(prog='moxtw')\n"
            "add_cli(p.add_subparsers(dest='command', required=True))\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "sys.exit(a.func(a))\n"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proto = _Collect()
        reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-c", script, "hooks", "test", "app", "--config", str(path)],
            env=env, path=str(ROOT),
        )  # fmt: skip
        code = await proto.ended
        output = proto.output.decode()
        self.assertEqual(code, 0, output)
        self.assertIn("HTTP 202 Accepted: ok", output)
        self.assertIn("received, thanks", output)
        ((headers, body),) = echo.requests
        self.assertEqual(Webhook(SECRET).verify(body, headers)["Event"], "delivered")
        self.assertEqual(headers["authorization"], "Bearer t")
