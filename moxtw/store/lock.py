"""One daemon per data directory.

The embedded store (SQLite and message files) belongs to one moxtw process tree: the
main process runs the queue and may recover its interrupted attempts at start, which is
only safe when no other daemon is delivering from the same directory.  The main process
takes an exclusive ``flock`` on ``DATA_DIR/moxtw.lock`` (its HTTP worker processes do not
lock: they share the store but never deliver).  The kernel drops the lock when the
process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: Locks held by this process: path → file descriptor (kept open for the process's life).
_held: dict[Path, int] = {}


class DataDirInUse(Exception):
    """Another process holds the data directory's lock."""


def lock_data_dir(data_dir: Path) -> None:
    """Take the data directory's lock for this process (again: no-op).

    Raises :class:`DataDirInUse`, naming the holder's PID when it is known.
    """
    path = (data_dir / "moxtw.lock").absolute()
    if path in _held:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise DataDirInUse(f"data directory {data_dir} is in use by another moxtw process{who}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
