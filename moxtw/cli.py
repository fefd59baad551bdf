"""The ``moxtw`` command: configuration tools (and, later, admin operations on a daemon)."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_config, parse_config
from .passwords import hash_password


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


def set_toml_key(text: str, table: str | None, key: str, value: str) -> str:
    """Set ``key = "value"`` in ``[table]`` (None: the top level), keeping everything else.

    Comments and layout are preserved; the key is replaced where it stands or added right
    after the table header (or at the top, before the first table).
    """
    lines = text.splitlines(keepends=True)
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
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


def _write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def cmd_setpassword(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        text = path.read_text("utf-8")
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
    new_text = set_toml_key(text, table, key, hash_password(password))
    try:
        parse_config(new_text, base_dir=path.parent, source=path)
    except ConfigError as e:
        print(f"moxtw: refusing to write an invalid configuration:\n{e}", file=sys.stderr)
        return 1
    _write_atomic(path, new_text)
    print(f"password for {what} set in {path}; restart moxtw to use it")
    return 0


def cmd_checkconfig(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok ({len(config.domains)} domain(s), {len(config.accounts)} account(s))"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moxtw", description="moxtw configuration and admin tool")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("setpassword", help="set an account's (or the admin) password in the config file")
    sp.add_argument("account", nargs="?", help="account name")
    sp.add_argument("--admin", action="store_true", help="set the admin password instead")
    sp.add_argument("--config", "-c", default="moxtw.toml", help="configuration file (default: moxtw.toml)")
    sp.set_defaults(func=cmd_setpassword)

    cc = sub.add_parser("checkconfig", help="validate a configuration file")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_checkconfig)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
