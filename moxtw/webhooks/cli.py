"""``moxtw hooks ...``: signing secrets and test requests (``add_cli`` adds them to the
``moxtw`` command's subparsers).  The webhook-queue commands that talk to a running
daemon (``list``, ``size``, ``retired``, ``reschedule``, ``cancel``) are added by
:func:`moxtw.cli.add_hooks_admin_commands`, next to the other admin API commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..config import ConfigError, WebhookConfig, load_config
from ..webapi.gojson import encode_webhook
from .http import Answer, WebClient, make_client, post, request_headers
from .incoming import incoming_body
from .payloads import sample_outgoing
from .signing import new_secret, new_webhook_id

__all__ = ["add_cli", "add_hook_commands", "cmd_secret", "cmd_test", "send_test"]

SAMPLE_MESSAGE = (
    b"From: Sender <sender@example.org>\r\n"
    b"To: <app@example.org>\r\n"
    b"Subject: moxtw webhook test\r\n"
    b"Message-Id: <webhook-test@example.org>\r\n"
    b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"This is a test of the incoming webhook.\r\n"
)


def add_cli(subparsers: Any) -> Any:
    """Add ``moxtw hooks`` with ``secret`` and ``test`` to ``moxtw``'s subparsers; returns
    the ``hooks`` subparsers, to which the admin commands (list, retired, reschedule,
    cancel) can be added."""
    hooks = subparsers.add_parser("hooks", help="webhooks: signing secrets, test requests, the webhook queue")
    sub = hooks.add_subparsers(dest="hooks_command", required=True, metavar="COMMAND")
    add_hook_commands(sub)
    return sub


def add_hook_commands(sub: Any) -> None:
    """Add ``secret`` and ``test`` to an existing ``moxtw hooks`` subparsers object."""
    s = sub.add_parser("secret", help="print a new webhook signing secret (whsec_...) for an account")
    s.add_argument("account", help="account name (checked against --config if given)")
    s.add_argument("--config", "-c", help="configuration file to check the account in")
    s.set_defaults(func=cmd_secret)

    t = sub.add_parser("test", help="post a sample event to the account's webhook URL and print the answer")
    t.add_argument("account", help="account name")
    t.add_argument("--config", "-c", default="moxtw.toml", help="configuration file (default: moxtw.toml)")
    t.add_argument("--incoming", action="store_true", help="test the incoming webhook instead of the outgoing one")
    t.set_defaults(func=cmd_test)


def cmd_secret(args: argparse.Namespace) -> int:
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(str(e), file=sys.stderr)
            return 1
        if args.account not in config.accounts:
            print(f"moxtw: no account {args.account!r} in {args.config}", file=sys.stderr)
            return 1
    print(new_secret())
    print(
        f"set it as signing_secret in [accounts.{args.account}.outgoing_webhook] (and/or incoming_webhook),"
        " give it to the receiver, and restart moxtw",
        file=sys.stderr,
    )
    return 0


def sample_body(incoming: bool, now: float) -> bytes:
    if incoming:
        return encode_webhook(
            incoming_body(SAMPLE_MESSAGE, msg_id=1, mail_from="sender@example.org", rcpt_to="app@example.org",
                          remote_ip="192.0.2.1", received=now)
        )  # fmt: skip
    return encode_webhook(sample_outgoing(now))


async def send_test(client: WebClient, clock: IReactorTime, hook: WebhookConfig, body: bytes, timeout: float) -> Answer:
    """POST ``body`` to ``hook`` as a webhook would be sent (ID 0, attempt 1, signed with
    the configured secret); the answer."""
    headers = request_headers(
        hook_id=0,
        attempt=1,
        authorization=hook.authorization,
        signing_secret=hook.signing_secret,
        webhook_id=new_webhook_id(),
        timestamp=int(clock.seconds()),
        body=body,
    )
    return await post(client, clock, hook.url, body, headers, timeout)


def describe(answer: Answer) -> str:
    if answer.code:
        text = f"HTTP {answer.code} {answer.phrase}: {'ok' if answer.success else 'failure (not 2xx)'}"
        if answer.response:
            text += "\n" + answer.response.decode("utf-8", "replace")
        return text
    return answer.error


def cmd_test(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    account = config.accounts.get(args.account)
    if account is None:
        print(f"moxtw: no account {args.account!r} in {args.config}", file=sys.stderr)
        return 1
    hook = account.incoming_webhook if args.incoming else account.outgoing_webhook
    if hook is None:
        which = "incoming_webhook" if args.incoming else "outgoing_webhook"
        print(f"moxtw: account {args.account!r} has no {which}", file=sys.stderr)
        return 1

    from twisted.internet import reactor

    clock: Any = reactor
    client, pool = make_client(reactor, max_per_host=1)
    body = sample_body(args.incoming, clock.seconds())
    print(f"POST {hook.url}\n{body.decode('utf-8')}\n")
    outcome: list[Answer] = []

    async def run() -> None:
        try:
            outcome.append(await send_test(client, clock, hook, body, config.webhooks.timeout))
        finally:
            await pool.closeCachedConnections()

    def start() -> None:
        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: outcome.append(Answer(error=str(f.value))))
        d.addBoth(lambda _: clock.stop())

    clock.callWhenRunning(start)
    clock.run()
    answer = outcome[0] if outcome else Answer(error="no answer")
    print(describe(answer))
    return 0 if answer.success else 1
