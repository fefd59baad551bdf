"""The ``moxtw`` command: configuration tools, and queue administration of a running
daemon over its admin HTTP API (``moxtw queue|holdrules|retired ...``, and the webhook
queue: ``moxtw hooks list|size|retired|reschedule|cancel``).

The parser is built by one ``add_*_commands(subparsers)`` function per command group;
a new group is one more such call in :func:`parser`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .admin.client import DEFAULT_URL, AdminClient, AdminClientError
from .config import OUTGOING_EVENTS, ConfigError, load_config, parse_config
from .dkim import add_cli as add_dkim_cli
from .dnsbl import add_cli as add_dnsbl_cli
from .dnscheck import add_cli as add_dnscheck_cli
from .localserve import ADMIN_PASSWORD
from .passwords import hash_password
from .quickstart import add_cli as add_quickstart_cli
from .settings import SettingsError, config_lock, write_atomic
from .settings import add_cli as add_settings_cli
from .webhooks.cli import add_cli as add_hooks_cli


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("again: ") != first:
            raise SystemExit("moxtw: passwords do not match")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


_HEADER_RE = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$")


def _table_name(header: str) -> str:
    return ".".join(part.strip().strip('"') for part in header.split("."))


def set_toml_key(text: str, table: str | None, key: str, value: str, *, raw: bool = False) -> str:
    """Set ``key = "value"`` in ``[table]`` (None: the top level), keeping everything else.

    Comments and layout are preserved; the key is replaced where it stands or added right
    after the table header (or at the top, before the first table).  With ``raw``,
    ``value`` is TOML already (a list, a number) and is written as is.
    """
    lines = text.splitlines(keepends=True)
    quoted = value if raw else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    new_line = f"{key} = {quoted}\n"
    key_re = re.compile(rf"^\s*{re.escape(key)}\s*=")
    current: str | None = None
    insert_at: int | None = 0 if table is None else None
    for i, line in enumerate(lines):
        m = _HEADER_RE.match(line)
        if m:
            current = _table_name(m.group(1))
            if table is not None and current == table:
                insert_at = i + 1
            continue
        if current == table and key_re.match(line):
            lines[i] = new_line
            return "".join(lines)
    if insert_at is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"\n[{table}]\n")
        insert_at = len(lines)
    if table is None:
        # After the leading comment block, before the first table header.
        for i, line in enumerate(lines):
            if _HEADER_RE.match(line):
                insert_at = i
                break
        else:
            insert_at = len(lines)
    lines.insert(insert_at, new_line)
    return "".join(lines)


def cmd_setpassword(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        path.read_bytes()  # readable, before asking for the password
    except OSError as e:
        print(f"moxtw: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 1
    if args.admin:
        table, what = None, "admin"
        key = "admin_password_hash"
    else:
        if not args.account:
            print("moxtw: name an ACCOUNT, or pass --admin", file=sys.stderr)
            return 2
        table, what = f"accounts.{args.account}", f"account {args.account}"
        key = "password_hash"
        try:
            config = load_config(path)
        except ConfigError as e:
            print(str(e), file=sys.stderr)
            return 1
        if args.account not in config.accounts:
            print(f"moxtw: no account {args.account!r} in {path}", file=sys.stderr)
            return 1
    password = _read_password(f"new password for {what}: ")
    if len(password) < 8:
        print("moxtw: password too short (8 characters at least)", file=sys.stderr)
        return 1
    password_hash = hash_password(password)
    try:
        # Serialised with other writers (moxtw account set, the daemon's settings pages).
        with config_lock(path):
            new_text = set_toml_key(path.read_text("utf-8"), table, key, password_hash)
            try:
                parse_config(new_text, base_dir=path.parent, source=path)
            except ConfigError as e:
                print(f"moxtw: refusing to write an invalid configuration:\n{e}", file=sys.stderr)
                return 1
            write_atomic(path, new_text)
    except (SettingsError, OSError) as e:
        print(f"moxtw: cannot write {path}: {e}", file=sys.stderr)
        return 1
    print(f"password for {what} set in {path}; apply it with: moxtw reload (or systemctl reload moxtw)")
    return 0


def cmd_checkconfig(args: argparse.Namespace) -> int:
    from .tls import TLSFileError, check_tls_config

    try:
        config = load_config(args.file)
        check_tls_config(config.tls)
    except (ConfigError, TLSFileError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok ({len(config.domains)} domain(s), {len(config.accounts)} account(s))"
    )
    return 0


def cmd_checkstore(args: argparse.Namespace) -> int:
    from .store.integrity import check

    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    report = check(config.data_dir)
    print(f"{config.data_dir}: " + ", ".join(f"{n} {what}" for what, n in report.counts.items()))
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


# --- queue administration over the admin API ------------------------------------------------

def admin_client(args: argparse.Namespace) -> AdminClient:
    """The admin API client for ``--admin-url``/``--admin-password`` (or the environment)."""
    url = args.admin_url or os.environ.get("MOXTW_ADMIN_URL") or DEFAULT_URL
    password = args.admin_password
    if password is None:
        password = os.environ.get("MOXTW_ADMIN_PASSWORD", ADMIN_PASSWORD)
    return AdminClient(url, password)


def admin_options() -> argparse.ArgumentParser:
    """A parent parser with the options of every command that talks to the admin API."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("admin API")
    g.add_argument(
        "--admin-url",
        metavar="URL",
        help=f"the daemon's admin API (default: $MOXTW_ADMIN_URL, else {DEFAULT_URL}, localserve's)",
    )
    g.add_argument(
        "--admin-password",
        metavar="PASSWORD",
        help="the admin password (default: $MOXTW_ADMIN_PASSWORD, else localserve's \"moxadmin\")",
    )
    g.add_argument("--json", action="store_true", help="print the API's JSON result")
    return p


def _admin_command(run: Callable[[argparse.Namespace, AdminClient], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args, admin_client(args))
        except AdminClientError as e:
            print(f"moxtw: {e}", file=sys.stderr)
            return 1

    return command


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected message IDs such as 12 or 12,13, got {text!r}") from None
    if not ids or any(i <= 0 for i in ids):
        raise argparse.ArgumentTypeError(f"expected positive message IDs, got {text!r}")
    return ids


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {n}")
    return n


TIME_HELP = '"<" or ">" then "now" or a duration such as 10m, -1h, 2h30m'


def _filter_options(p: argparse.ArgumentParser, retired: bool = False) -> None:
    g = p.add_argument_group("filter (every criterion given must match; none: all messages)")
    g.add_argument("--id", dest="ids", type=_ids, action="append", default=[], metavar="ID",
                   help="message ID (repeat, or separate with commas)")
    g.add_argument("--account", default="", help="sending account")
    g.add_argument("--from", dest="sender", default="", metavar="TEXT", help="MAIL FROM address contains TEXT")
    g.add_argument("--to", dest="recipient", default="", metavar="TEXT", help="recipient address contains TEXT")
    g.add_argument("--submitted", default="", metavar="WHEN", help=f"queued time: {TIME_HELP}, e.g. '>-1h'")
    if retired:
        g.add_argument("--last-activity", default="", metavar="WHEN", help=f"retire time: {TIME_HELP}")
        success = g.add_mutually_exclusive_group()
        success.add_argument("--delivered", dest="success", action="store_const", const=True, default=None,
                             help="only delivered messages")
        success.add_argument("--not-delivered", dest="success", action="store_const", const=False,
                             help="only failed, dropped or suppressed messages")
    else:
        g.add_argument("--next-attempt", default="", metavar="WHEN", help=f"next attempt: {TIME_HELP}, e.g. '<now'")
        held = g.add_mutually_exclusive_group()
        held.add_argument("--held", dest="hold", action="store_const", const=True, default=None,
                          help="only messages on hold")
        held.add_argument("--not-held", dest="hold", action="store_const", const=False,
                          help="only messages not on hold")
    g.add_argument("--max", type=_non_negative, default=0, metavar="N", help="at most N messages (0: no limit)")


def _flat_ids(args: argparse.Namespace) -> list[int]:
    return [i for group in args.ids for i in group]


def queue_filter(args: argparse.Namespace) -> dict[str, Any]:
    """The API's ``Filter`` for the filter flags."""
    return {
        "Max": args.max,
        "IDs": _flat_ids(args) or None,
        "Account": args.account,
        "From": args.sender,
        "To": args.recipient,
        "Hold": args.hold,
        "Submitted": args.submitted,
        "NextAttempt": args.next_attempt,
    }


def retired_filter(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "Max": args.max,
        "IDs": _flat_ids(args) or None,
        "Account": args.account,
        "From": args.sender,
        "To": args.recipient,
        "Submitted": args.submitted,
        "LastActivity": args.last_activity,
        "Success": args.success,
    }


def _selects(args: argparse.Namespace) -> bool:
    """Whether any selecting filter flag is given (--max alone selects nothing)."""
    return bool(
        _flat_ids(args) or args.account or args.sender or args.recipient or args.hold is not None
        or args.submitted or args.next_attempt
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns under a header line (the last column is not padded)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _when(text: str | None) -> str:
    """An RFC 3339 time from the API as "2026-11-24 04:37:17Z" ("-" if none)."""
    if not text or text.startswith("0001-01-01"):
        return "-"
    return text[:19].replace("T", " ") + "Z"


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _relative(text: str, now: float) -> str:
    seconds = int(round(_epoch(text) - now))
    if seconds <= 0:
        return "due"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "in " + "".join(parts)


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _last_error(results: list[dict[str, Any]] | None) -> str:
    if not results:
        return ""
    last = results[-1]
    if last.get("Success"):
        code = last.get("Code") or ""
        return f"delivered {code}".strip()
    return _short(str(last.get("Error", "")))


def _address(localpart: str, domain: str) -> str:
    return f"{localpart}@{domain}"


def format_queue(msgs: list[dict[str, Any]], now: float) -> str:
    if not msgs:
        return "no queued messages"
    rows = [
        [
            str(m["ID"]),
            _when(m["Queued"]),
            _address(m["SenderLocalpart"], m["SenderDomainStr"]),
            _address(m["RecipientLocalpart"], m["RecipientDomainStr"]),
            str(m["Attempts"]),
            f"{_when(m['NextAttempt'])} ({_relative(m['NextAttempt'], now)})",
            "held" if m["Hold"] else "",
            _last_error(m.get("Results")),
        ]
        for m in msgs
    ]
    return table(["ID", "QUEUED", "FROM", "TO", "ATTEMPTS", "NEXT ATTEMPT", "HOLD", "LAST RESULT"], rows)


def format_retired(msgs: list[dict[str, Any]]) -> str:
    if not msgs:
        return "no retired messages"
    rows = [
        [
            str(m["ID"]),
            _when(m["LastActivity"]),
            "delivered" if m["Success"] else "not delivered",
            _address(m["SenderLocalpart"], m["SenderDomainStr"]),
            m["RecipientAddress"],
            str(m["Attempts"]),
            _last_error(m.get("Results")),
        ]
        for m in msgs
    ]
    return table(["ID", "RETIRED", "OUTCOME", "FROM", "TO", "ATTEMPTS", "LAST RESULT"], rows)


def _rule_text(rule: dict[str, Any]) -> str:
    parts = [
        f"account {rule['Account'] or '*'}",
        f"sender domain {rule['SenderDomainStr'] or '*'}",
        f"recipient domain {rule['RecipientDomainStr'] or '*'}",
    ]
    return ", ".join(parts)


def format_rules(rules: list[dict[str, Any]]) -> str:
    if not rules:
        return "no hold rules"
    rows = [
        [
            str(r["ID"]) if r["ID"] else "config",
            r["Account"] or "*",
            r["SenderDomainStr"] or "*",
            r["RecipientDomainStr"] or "*",
        ]
        for r in rules
    ]
    return table(["ID", "ACCOUNT", "SENDER DOMAIN", "RECIPIENT DOMAIN"], rows) + (
        "\n(* matches any; rules marked config are in the configuration file)"
    )


def _sort(args: argparse.Namespace, fields: dict[str, str]) -> dict[str, Any]:
    return {"Field": fields[args.sort], "LastID": 0, "Last": "", "Asc": args.asc}


@_admin_command
def cmd_queue_list(args: argparse.Namespace, client: AdminClient) -> int:
    sort = _sort(args, {"next-attempt": "NextAttempt", "queued": "Queued"})
    msgs = client.call("QueueList", queue_filter(args), sort)
    if args.json:
        _print_json(msgs)
    else:
        print(format_queue(msgs or [], time.time()))
    return 0


@_admin_command
def cmd_queue_size(args: argparse.Namespace, client: AdminClient) -> int:
    n = client.call("QueueSize")
    if args.json:
        _print_json(n)
    else:
        print(n)
    return 0


def _count(args: argparse.Namespace, n: Any, what: str) -> int:
    if args.json:
        _print_json(n)
    else:
        print(f"{n} message(s) {what}")
    return 0


@_admin_command
def cmd_queue_hold(args: argparse.Namespace, client: AdminClient) -> int:
    hold = args.queue_command == "hold"
    n = client.call("QueueHoldSet", queue_filter(args), hold)
    return _count(args, n, "held" if hold else "released")


def _refuse_everything(
    args: argparse.Namespace,
    verb: str,
    *,
    command: str = "queue",
    selects: Callable[[argparse.Namespace], bool] = _selects,
    what: str = "queued message",
) -> int | None:
    """fail/drop/cancel: an empty filter must be confirmed with --all (and --all means all)."""
    if args.all and selects(args):
        print(f"moxtw: {command} {verb}: --all cannot be combined with filter flags", file=sys.stderr)
        return 2
    if not args.all and not selects(args):
        print(
            f"moxtw: {command} {verb} without filter flags would {verb} every {what};"
            f" select {what}s (e.g. --id 12) or pass --all",
            file=sys.stderr,
        )
        return 2
    return None


@_admin_command
def cmd_queue_fail(args: argparse.Namespace, client: AdminClient) -> int:
    refused = _refuse_everything(args, "fail")
    if refused is not None:
        return refused
    return _count(args, client.call("QueueFail", queue_filter(args)), "marked as failed")


@_admin_command
def cmd_queue_drop(args: argparse.Namespace, client: AdminClient) -> int:
    refused = _refuse_everything(args, "drop")
    if refused is not None:
        return refused
    return _count(args, client.call("QueueDrop", queue_filter(args)), "dropped")


@_admin_command
def cmd_queue_reschedule(args: argparse.Namespace, client: AdminClient) -> int:
    method = "QueueNextAttemptAdd" if args.add else "QueueNextAttemptSet"
    return _count(args, client.call(method, queue_filter(args), args.minutes), "rescheduled")


@_admin_command
def cmd_queue_requiretls(args: argparse.Namespace, client: AdminClient) -> int:
    value = {"yes": True, "no": False, "default": None}[args.value]
    return _count(args, client.call("QueueRequireTLSSet", queue_filter(args), value), "updated")


@_admin_command
def cmd_holdrules_list(args: argparse.Namespace, client: AdminClient) -> int:
    rules = client.call("QueueHoldRuleList")
    if args.json:
        _print_json(rules)
    else:
        print(format_rules(rules or []))
    return 0


@_admin_command
def cmd_holdrules_add(args: argparse.Namespace, client: AdminClient) -> int:
    rule = client.call(
        "QueueHoldRuleAdd",
        {
            "ID": 0,
            "Account": args.account,
            "SenderDomainStr": args.sender_domain,
            "RecipientDomainStr": args.recipient_domain,
        },
    )
    if args.json:
        _print_json(rule)
    else:
        print(f"hold rule {rule['ID']} added ({_rule_text(rule)}); matching queued and new messages are held")
    return 0


@_admin_command
def cmd_holdrules_remove(args: argparse.Namespace, client: AdminClient) -> int:
    result = client.call("QueueHoldRuleRemove", args.id)
    if args.json:
        _print_json(result)
    else:
        print(f"hold rule {args.id} removed; messages it held stay held (release them with: moxtw queue release)")
    return 0


@_admin_command
def cmd_retired_list(args: argparse.Namespace, client: AdminClient) -> int:
    sort = _sort(args, {"last-activity": "LastActivity", "queued": "Queued"})
    msgs = client.call("RetiredList", retired_filter(args), sort)
    if args.json:
        _print_json(msgs)
    else:
        print(format_retired(msgs or []))
    return 0


def add_queue_commands(sub: Any) -> None:
    """``moxtw queue list|size|hold|release|fail|drop|reschedule|requiretls``."""
    conn = admin_options()
    q = sub.add_parser("queue", help="list and manage the outgoing queue of a running moxtw")
    qs = q.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")

    p = qs.add_parser("list", parents=[conn], help="list queued messages")
    _filter_options(p)
    p.add_argument("--sort", choices=["next-attempt", "queued"], default="next-attempt", help="sort field")
    p.add_argument("--asc", action="store_true", help="oldest/soonest first (default: latest first)")
    p.set_defaults(func=cmd_queue_list)

    p = qs.add_parser("size", parents=[conn], help="number of queued messages")
    p.set_defaults(func=cmd_queue_size)

    for name, text in (("hold", "put messages on hold (they are not attempted)"),
                       ("release", "take messages off hold (due at once if their next attempt passed)")):
        p = qs.add_parser(name, parents=[conn], help=text)
        _filter_options(p)
        p.set_defaults(func=cmd_queue_hold)

    for name, text, func in (
        ("fail", "fail messages now: a failure DSN goes to each sender, webhook event failed", cmd_queue_fail),
        ("drop", "remove messages without a DSN, webhook event canceled", cmd_queue_drop),
    ):
        p = qs.add_parser(name, parents=[conn], help=text)
        _filter_options(p)
        p.add_argument("--all", action="store_true", help=f"{name} every queued message (needed without a filter)")
        p.set_defaults(func=func)

    p = qs.add_parser("reschedule", parents=[conn], help="set or move the next delivery attempt")
    _filter_options(p)
    p.add_argument("minutes", type=int, help="minutes (may be negative with --add)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--set", dest="add", action="store_false", default=False,
                     help="next attempt = now + MINUTES (the default; 0: try now)")
    how.add_argument("--add", dest="add", action="store_true", help="next attempt += MINUTES")
    p.set_defaults(func=cmd_queue_reschedule)

    p = qs.add_parser("requiretls", parents=[conn], help="set RequireTLS for the next attempts")
    _filter_options(p)
    p.add_argument("value", choices=["yes", "no", "default"],
                   help="yes: only over verified TLS; no: TLS optional (TLS-Required: No); default: policy")
    p.set_defaults(func=cmd_queue_requiretls)


def add_holdrules_commands(sub: Any) -> None:
    """``moxtw holdrules list|add|remove``."""
    conn = admin_options()
    h = sub.add_parser("holdrules", help="rules that put new and queued messages on hold")
    hs = h.add_subparsers(dest="holdrules_command", required=True, metavar="COMMAND")
    p = hs.add_parser("list", parents=[conn], help="list hold rules (configuration file and API)")
    p.set_defaults(func=cmd_holdrules_list)
    p = hs.add_parser("add", parents=[conn],
                      help="add a rule; it holds matching queued messages now and new ones when queued")
    p.add_argument("--account", default="", help="sending account (empty: any)")
    p.add_argument("--sender-domain", default="", metavar="DOMAIN", help="MAIL FROM domain (empty: any)")
    p.add_argument("--recipient-domain", default="", metavar="DOMAIN", help="recipient domain (empty: any)")
    p.set_defaults(func=cmd_holdrules_add)
    p = hs.add_parser("remove", parents=[conn], help="remove a rule (the messages it held stay held)")
    p.add_argument("id", type=int, help="rule ID (see holdrules list)")
    p.set_defaults(func=cmd_holdrules_remove)


def add_retired_commands(sub: Any) -> None:
    """``moxtw retired list``."""
    conn = admin_options()
    r = sub.add_parser("retired", help="messages that left the queue (kept for the account's keep period)")
    rs = r.add_subparsers(dest="retired_command", required=True, metavar="COMMAND")
    p = rs.add_parser("list", parents=[conn], help="list retired messages")
    _filter_options(p, retired=True)
    p.add_argument("--sort", choices=["last-activity", "queued"], default="last-activity", help="sort field")
    p.add_argument("--asc", action="store_true", help="oldest first (default: latest first)")
    p.set_defaults(func=cmd_retired_list)


# --- the webhook queue (moxtw hooks ...) ------------------------------------------------------

#: ``--event`` values: mox's outgoing events and "incoming".
HOOK_EVENTS = (*OUTGOING_EVENTS, "incoming")


def _hook_filter_options(p: argparse.ArgumentParser, retired: bool = False) -> None:
    g = p.add_argument_group("filter (every criterion given must match; none: all webhooks)")
    g.add_argument("--id", dest="ids", type=_ids, action="append", default=[], metavar="ID",
                   help="webhook ID (repeat, or separate with commas)")
    g.add_argument("--account", default="", help="account")
    g.add_argument("--event", default="", choices=HOOK_EVENTS, metavar="EVENT",
                   help=f"outgoing event or incoming: {', '.join(HOOK_EVENTS)}")
    g.add_argument("--submitted", default="", metavar="WHEN", help=f"queued time: {TIME_HELP}, e.g. '>-1h'")
    if retired:
        g.add_argument("--last-activity", default="", metavar="WHEN", help=f"last attempt or retire time: {TIME_HELP}")
    else:
        g.add_argument("--next-attempt", default="", metavar="WHEN", help=f"next attempt: {TIME_HELP}, e.g. '<now'")
    g.add_argument("--max", type=_non_negative, default=0, metavar="N", help="at most N webhooks (0: no limit)")


def hook_filter(args: argparse.Namespace) -> dict[str, Any]:
    """The API's ``HookFilter`` for the filter flags."""
    return {
        "Max": args.max,
        "IDs": _flat_ids(args) or None,
        "Account": args.account,
        "Submitted": args.submitted,
        "NextAttempt": args.next_attempt,
        "Event": args.event,
    }


def hook_retired_filter(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "Max": args.max,
        "IDs": _flat_ids(args) or None,
        "Account": args.account,
        "Submitted": args.submitted,
        "LastActivity": args.last_activity,
        "Event": args.event,
    }


def _hook_selects(args: argparse.Namespace) -> bool:
    return bool(_flat_ids(args) or args.account or args.event or args.submitted or args.next_attempt)


def _hook_event(h: dict[str, Any]) -> str:
    return "incoming" if h["IsIncoming"] else str(h["OutgoingEvent"])


def _hook_last_result(results: list[dict[str, Any]] | None) -> str:
    if not results:
        return ""
    last = results[-1]
    if last.get("Success"):
        return f"HTTP {last.get('Code')} ok"
    return _short(str(last.get("Error", "")))


def _hook_outcome(h: dict[str, Any]) -> str:
    if h["Success"]:
        return "delivered"
    if h["SupersededByID"]:
        return f"superseded by {h['SupersededByID']}"
    results = h.get("Results") or []
    if results and results[-1].get("Error") == "canceled by admin":
        return "canceled"
    return "failed"


def format_hooks(hooks: list[dict[str, Any]], now: float) -> str:
    if not hooks:
        return "no queued webhooks"
    rows = [
        [
            str(h["ID"]),
            _when(h["Submitted"]),
            h["Account"],
            _hook_event(h),
            str(h["QueueMsgID"] or "-"),
            str(h["Attempts"]),
            f"{_when(h['NextAttempt'])} ({_relative(h['NextAttempt'], now)})",
            _hook_last_result(h.get("Results")),
        ]
        for h in hooks
    ]
    return table(["ID", "SUBMITTED", "ACCOUNT", "EVENT", "MSG", "ATTEMPTS", "NEXT ATTEMPT", "LAST RESULT"], rows)


def format_retired_hooks(hooks: list[dict[str, Any]]) -> str:
    if not hooks:
        return "no retired webhooks"
    rows = [
        [
            str(h["ID"]),
            _when(h["LastActivity"]),
            h["Account"],
            _hook_event(h),
            str(h["QueueMsgID"] or "-"),
            str(h["Attempts"]),
            _hook_outcome(h),
            _hook_last_result(h.get("Results")),
        ]
        for h in hooks
    ]
    return table(["ID", "LAST ACTIVITY", "ACCOUNT", "EVENT", "MSG", "ATTEMPTS", "OUTCOME", "LAST RESULT"], rows)


def _hook_count(args: argparse.Namespace, n: Any, what: str) -> int:
    if args.json:
        _print_json(n)
    else:
        print(f"{n} webhook(s) {what}")
    return 0


@_admin_command
def cmd_hooks_list(args: argparse.Namespace, client: AdminClient) -> int:
    sort = _sort(args, {"next-attempt": "NextAttempt", "submitted": "Submitted"})
    hooks = client.call("HookList", hook_filter(args), sort)
    if args.json:
        _print_json(hooks)
    else:
        print(format_hooks(hooks or [], time.time()))
    return 0


@_admin_command
def cmd_hooks_size(args: argparse.Namespace, client: AdminClient) -> int:
    n = client.call("HookQueueSize")
    if args.json:
        _print_json(n)
    else:
        print(n)
    return 0


@_admin_command
def cmd_hooks_retired(args: argparse.Namespace, client: AdminClient) -> int:
    sort = _sort(args, {"last-activity": "LastActivity", "submitted": "Submitted"})
    hooks = client.call("HookRetiredList", hook_retired_filter(args), sort)
    if args.json:
        _print_json(hooks)
    else:
        print(format_retired_hooks(hooks or []))
    return 0


@_admin_command
def cmd_hooks_reschedule(args: argparse.Namespace, client: AdminClient) -> int:
    method = "HookNextAttemptAdd" if args.add else "HookNextAttemptSet"
    return _hook_count(args, client.call(method, hook_filter(args), args.minutes), "rescheduled")


@_admin_command
def cmd_hooks_cancel(args: argparse.Namespace, client: AdminClient) -> int:
    refused = _refuse_everything(args, "cancel", command="hooks", selects=_hook_selects, what="queued webhook")
    if refused is not None:
        return refused
    return _hook_count(args, client.call("HookCancel", hook_filter(args)), "canceled")


def add_hooks_admin_commands(hs: Any) -> None:
    """``moxtw hooks list|size|retired|reschedule|cancel`` (added to the ``hooks``
    subparsers that :func:`moxtw.webhooks.cli.add_cli` returns)."""
    conn = admin_options()
    p = hs.add_parser("list", parents=[conn], help="list queued webhooks with their attempts")
    _hook_filter_options(p)
    p.add_argument("--sort", choices=["next-attempt", "submitted"], default="next-attempt", help="sort field")
    p.add_argument("--asc", action="store_true", help="oldest/soonest first (default: latest first)")
    p.set_defaults(func=cmd_hooks_list)

    p = hs.add_parser("size", parents=[conn], help="number of queued webhooks")
    p.set_defaults(func=cmd_hooks_size)

    p = hs.add_parser("retired", parents=[conn],
                      help="list webhooks that left the queue (delivered, failed, superseded, canceled)")
    _hook_filter_options(p, retired=True)
    p.add_argument("--sort", choices=["last-activity", "submitted"], default="last-activity", help="sort field")
    p.add_argument("--asc", action="store_true", help="oldest first (default: latest first)")
    p.set_defaults(func=cmd_hooks_retired)

    p = hs.add_parser("reschedule", parents=[conn],
                      help="set or move the next attempt of queued webhooks (those being sent are left alone)")
    _hook_filter_options(p)
    p.add_argument("minutes", type=int, help="minutes (may be negative with --add)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--set", dest="add", action="store_false", default=False,
                     help="next attempt = now + MINUTES (the default; 0: try now)")
    how.add_argument("--add", dest="add", action="store_true", help="next attempt += MINUTES")
    p.set_defaults(func=cmd_hooks_reschedule)

    p = hs.add_parser("cancel", parents=[conn],
                      help="remove queued webhooks unsent (kept as retired, \"canceled by admin\")")
    _hook_filter_options(p)
    p.add_argument("--all", action="store_true", help="cancel every queued webhook (needed without a filter)")
    p.set_defaults(func=cmd_hooks_cancel)


# --- the parser ------------------------------------------------------------------------------


def add_config_commands(sub: Any) -> None:
    """``moxtw setpassword`` and ``moxtw checkconfig`` (work on the configuration file)."""
    sp = sub.add_parser("setpassword", help="set an account's (or the admin) password in the config file")
    sp.add_argument("account", nargs="?", help="account name")
    sp.add_argument("--admin", action="store_true", help="set the admin password instead")
    sp.add_argument("--config", "-c", default="moxtw.toml", help="configuration file (default: moxtw.toml)")
    sp.set_defaults(func=cmd_setpassword)

    cc = sub.add_parser("checkconfig", help="validate a configuration file")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_checkconfig)
    cs = sub.add_parser("checkstore", help="check the consistency of the database and message files (read-only)")
    cs.add_argument("file", help="the configuration file (its data_dir is checked)")
    cs.set_defaults(func=cmd_checkstore)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moxtw", description="moxtw configuration and admin tool")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_config_commands(sub)
    add_queue_commands(sub)
    add_holdrules_commands(sub)
    add_retired_commands(sub)
    add_dkim_cli(sub)
    add_quickstart_cli(sub)
    add_dnscheck_cli(sub)
    add_dnsbl_cli(sub)
    add_settings_cli(sub)
    add_hooks_admin_commands(add_hooks_cli(sub))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
