"""Message headers read the way Go's ``net/textproto`` does, and ``X-Mox-Extra-*`` (spec §8).

mox reads a submitted message's header with ``textproto.Reader.ReadMIMEHeader``: names are
canonicalised with ``CanonicalMIMEHeaderKey`` and continuation lines are joined with a
single space.  Every header whose canonical name starts with ``X-Mox-Extra-`` adds the rest
of the name as a key of the queue message's Extra, with the trimmed value.
"""

from __future__ import annotations

from ..address import go_quote

__all__ = ["EXTRA_PREFIX", "DuplicateExtraKey", "canonical_header_key", "header_fields", "parse_extra"]

EXTRA_PREFIX = "X-Mox-Extra-"

# RFC 7230 tchar: what Go's validHeaderFieldByte accepts.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class DuplicateExtraKey(Exception):
    """The same X-Mox-Extra- key twice; ``str(exc)`` is mox's reply text."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate x-mox-extra- key {go_quote(key)}")
        self.key = key


def canonical_header_key(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``.

    A name made only of token characters gets its first letter and every letter after a
    ``-`` upper-cased and the others lower-cased; any other name is returned unchanged.
    """
    if not name or any(c not in _TOKEN for c in name):
        return name
    out = []
    upper = True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """The header fields of a message as (name as written, unfolded trimmed value).

    The header ends at the first empty line (or the end of ``data``); lines without a
    colon are skipped.  Bytes are decoded as UTF-8 (invalid sequences replaced).
    """
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        end = 0
    block = data if end < 0 else data[:end]
    fields: list[tuple[str, str]] = []
    for raw in block.decode("utf-8", "replace").split("\r\n"):
        if raw[:1] in (" ", "\t"):
            if fields:
                name, value = fields[-1]
                cont = raw.strip(" \t")
                fields[-1] = (name, f"{value} {cont}" if value else cont)
            continue
        name, colon, value = raw.partition(":")
        if not colon:
            continue
        fields.append((name.rstrip(" \t"), value.strip(" \t")))
    return fields


def parse_extra(fields: list[tuple[str, str]]) -> dict[str, str] | None:
    """Extra from ``X-Mox-Extra-<Key>`` headers; None when there are none.

    Raises :class:`DuplicateExtraKey` when a (canonical) key occurs twice.
    """
    extra: dict[str, str] = {}
    for name, value in fields:
        canonical = canonical_header_key(name)
        if not canonical.startswith(EXTRA_PREFIX):
            continue
        key = canonical[len(EXTRA_PREFIX) :]
        if key in extra:
            raise DuplicateExtraKey(key)
        extra[key] = value
    return extra or None
