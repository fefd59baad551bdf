"""Message contents: a small blob interface and its embedded default, files on disk.

A blob is written durably before the row that refers to it commits: the database's group
commit calls :meth:`BlobStore.write` for each request of a batch (in the database thread)
and :meth:`BlobStore.sync` once before the batch commits, so a batch of N Sends costs N
file fsyncs, one directory fsync and one database commit.  A blob whose row did not
commit is discarded; one left behind by a crash between the two is garbage for cleanup.
A shared implementation (PostgreSQL large objects, object storage) can replace
:class:`FileBlobStore` when several daemons share one database.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from .. import metrics


class BlobStore(Protocol):
    def write(self, data: bytes) -> str:
        """Store ``data``, return its key (database thread, before the row commits)."""

    def sync(self) -> None:
        """Make everything written so far durable (database thread, before COMMIT)."""

    def discard(self, key: str) -> None:
        """Remove a blob whose row did not commit."""

    async def get(self, key: str) -> bytes:
        """The contents stored under ``key`` (``KeyError`` if there is none)."""

    async def delete(self, keys: list[str]) -> None:
        """Remove blobs; missing keys are ignored."""

    async def keys(self) -> list[str]:
        """Every stored key (for cleanup of unreferenced blobs)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HEX = frozenset("0123456789abcdef")


@attrs.define(eq=False)
class FileBlobStore:
    """Blobs as files ``<root>/<2 hex>/<32 hex key>``; the key's first 2 hex name the shard.

    Writes between two :meth:`sync` calls go to one shard directory, so a batch needs one
    directory fsync; each sync moves on to a new random shard.  Reads and deletes run in
    ``threadpool``.
    """

    root: Path
    reactor: Any
    threadpool: ThreadPool
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _shard: str = attrs.Factory(lambda: secrets.token_hex(1))
    _dirty: set[Path] = attrs.Factory(set)

    def open(self) -> None:
        new = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if new:
            _fsync_dir(self.root.parent)

    def path(self, key: str) -> Path:
        if len(key) != 32 or not _HEX.issuperset(key):
            raise KeyError(key)
        return self.root / key[:2] / key

    def write(self, data: bytes) -> str:
        start = time.monotonic()
        with self._lock:
            shard = self._shard
        key = shard + secrets.token_hex(15)
        path = self.path(key)
        directory = path.parent
        if not directory.exists():
            directory.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._dirty.add(directory)
        metrics.store_blob_write_duration.observe(time.monotonic() - start)
        return key

    def sync(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            self._shard = secrets.token_hex(1)
        for directory in dirty:
            _fsync_dir(directory)

    def discard(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except (FileNotFoundError, KeyError):
            pass

    def _get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    async def get(self, key: str) -> bytes:
        data: bytes = await deferToThreadPool(self.reactor, self.threadpool, self._get, key)
        return data

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            self.discard(key)

    async def delete(self, keys: list[str]) -> None:
        await deferToThreadPool(self.reactor, self.threadpool, self._delete, keys)

    def _keys(self) -> list[str]:
        return [p.name for d in self.root.iterdir() if d.is_dir() for p in d.iterdir() if not p.name.startswith(".")]

    def _older(self, before: float) -> list[str]:
        keys = []
        for d in self.root.iterdir():
            if not d.is_dir():
                continue
            for p in d.iterdir():
                try:
                    if not p.name.startswith(".") and p.stat().st_mtime < before:
                        keys.append(p.name)
                except FileNotFoundError:
                    pass
        return keys

    async def older(self, before: float) -> list[str]:
        """Keys of the blobs last written before ``before`` (UNIX time)."""
        result: list[str] = await deferToThreadPool(self.reactor, self.threadpool, self._older, before)
        return result

    async def keys(self) -> list[str]:
        result: list[str] = await deferToThreadPool(self.reactor, self.threadpool, self._keys)
        return result
