"""Per-account suppression lists (cursor functions); addresses stored by base address."""

from __future__ import annotations

from typing import Any

import attrs


class SuppressionError(Exception):
    """A suppression that is already present, or absent when removing."""


@attrs.frozen
class SuppressionRow:
    id: int
    created: float
    account: str
    base_address: str
    original_address: str
    manual: bool
    reason: str


_COLUMNS = "id, created, account, base_address, original_address, manual, reason"


def list_suppressions(cursor: Any, account: str) -> list[SuppressionRow]:
    cursor.execute(f"SELECT {_COLUMNS} FROM suppression WHERE account = ? ORDER BY id", (account,))
    return [SuppressionRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in cursor.fetchall()]


def add_suppression(
    cursor: Any, account: str, base: str, original: str, manual: bool, reason: str, now: float
) -> int:
    cursor.execute("SELECT 1 FROM suppression WHERE account = ? AND base_address = ?", (account, base))
    if cursor.fetchone() is not None:
        raise SuppressionError(f"address {base} is already on the suppression list")
    cursor.execute(
        "INSERT INTO suppression (created, account, base_address, original_address, manual, reason)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (now, account, base, original, int(manual), reason),
    )
    return int(cursor.lastrowid)


def remove_suppression(cursor: Any, account: str, base: str) -> None:
    cursor.execute("DELETE FROM suppression WHERE account = ? AND base_address = ?", (account, base))
    if cursor.rowcount == 0:
        raise SuppressionError(f"address {base} is not on the suppression list")


def suppression_present(cursor: Any, account: str, base: str) -> bool:
    cursor.execute("SELECT 1 FROM suppression WHERE account = ? AND base_address = ?", (account, base))
    return cursor.fetchone() is not None
