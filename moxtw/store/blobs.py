"""Message contents: a small blob interface and its embedded default, files on disk.

A blob is written (and, for files, fsynced together with its directory entry) before the
row that refers to it commits; a blob that no committed row refers to (a crash between the
two) is garbage that cleanup may remove.  A shared implementation (PostgreSQL large
objects, object storage) can replace :class:`FileBlobStore` when several daemons share one
database.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class BlobStore(Protocol):
    async def put(self, data: bytes) -> str:
        """Store ``data`` durably; return its key."""

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


@attrs.define(eq=False)
class FileBlobStore:
    """Blobs as files ``<root>/<2 hex>/<32 hex>``, written in a dedicated thread pool.

    ``put`` writes the file with ``O_EXCL``, fsyncs it, and fsyncs the directory that holds
    it, all in one thread hop; with several threads concurrent Sends overlap their fsyncs.
    """

    root: Path
    reactor: Any
    threadpool: ThreadPool

    def open(self) -> None:
        new = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if new:
            _fsync_dir(self.root.parent)

    def path(self, key: str) -> Path:
        if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
            raise KeyError(key)
        return self.root / key[:2] / key

    def _put(self, data: bytes) -> str:
        key = secrets.token_hex(16)
        path = self.path(key)
        directory = path.parent
        if not directory.exists():
            directory.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(directory)
        return key

    async def put(self, data: bytes) -> str:
        key: str = await deferToThreadPool(self.reactor, self.threadpool, self._put, data)
        return key

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
            try:
                self.path(key).unlink()
            except (FileNotFoundError, KeyError):
                pass

    async def delete(self, keys: list[str]) -> None:
        await deferToThreadPool(self.reactor, self.threadpool, self._delete, keys)

    def _keys(self) -> list[str]:
        return [p.name for d in self.root.iterdir() if d.is_dir() for p in d.iterdir()]

    async def keys(self) -> list[str]:
        result: list[str] = await deferToThreadPool(self.reactor, self.threadpool, self._keys)
        return result
