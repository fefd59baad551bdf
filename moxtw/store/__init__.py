"""Storage: a :class:`Database` for rows and a :class:`BlobStore` for message contents."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from . import integrity
from .blobs import BlobStore, FileBlobStore
from .database import Database, migrate_sqlite
from .engines import SqliteEngine

T = TypeVar("T")

__all__ = ["BlobStore", "Database", "FileBlobStore", "Store", "StoreService", "sqlite_store"]


@attrs.define(eq=False)
class Store:
    """The database and the blob store, opened and closed together.

    Built unopened (so the service tree can be composed without I/O); :meth:`open`
    migrates the schema, starts the thread pools and must run before any use.
    """

    db: Database
    blobs: FileBlobStore
    data_dir: Path
    threadpool: ThreadPool
    #: When :meth:`open` ran (UNIX time): every message file written since is this
    #: daemon's (or its worker processes').
    opened: float = attrs.field(init=False, default=0.0)

    log = Logger()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "moxtw.sqlite3"

    def __attrs_post_init__(self) -> None:
        self.db.before_commit.append(self.blobs.sync)

    def open(self) -> None:
        self.opened = time.time()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        old, new = migrate_sqlite(str(self.db_path))
        if old != new:
            self.log.info(
                "database {path} migrated from schema {old} to {new}",
                path=str(self.db_path),
                old=old,
                new=new,
            )
        self.threadpool.start()
        self.blobs.open()
        self.db.start()

    def run_with_blob(
        self, description: str, data: bytes, function: Callable[..., T], *args: Any, **kwargs: Any
    ) -> Deferred[T]:
        """Store ``data`` as a blob and run ``function(cursor, key, *args, **kwargs)``.

        Both are part of one group commit: the blob is durable before the rows commit, and
        removed again if they do not.
        """
        return self.db.run_batched(
            description,
            function,
            *args,
            prepare=functools.partial(self.blobs.write, data),
            undo=self.blobs.discard,
            **kwargs,
        )

    async def sweep_orphans(self, before: float) -> int:
        """Remove message files written before ``before`` that no row refers to (a crash
        between a file's fsync and its row's commit leaves one: :mod:`.integrity`).  Only
        for a store one daemon uses, at its start; returns how many were removed."""
        removed = 0
        candidates = await self.blobs.older(before)
        for chunk in integrity.chunks(candidates):
            referenced = await self.db.run("referenced message files", integrity.referenced_blobs, chunk)
            orphans = [key for key in chunk if key not in referenced]
            if orphans:
                await self.blobs.delete(orphans)
                removed += len(orphans)
        return removed

    async def close(self) -> None:
        await self.db.stop()
        self.threadpool.stop()


def sqlite_store(data_dir: Path, reactor: Any) -> Store:
    """The embedded default: SQLite and message files under ``data_dir``."""
    threadpool = ThreadPool(minthreads=1, maxthreads=4, name="moxtw-blobs")
    return Store(
        db=Database(SqliteEngine(str(data_dir / "moxtw.sqlite3")), reactor),
        blobs=FileBlobStore(data_dir / "msgs", reactor, threadpool),
        data_dir=data_dir,
        threadpool=threadpool,
    )


@attrs.define(slots=False, eq=False)
class StoreService(Service):
    """Opens the store on start and closes it on stop.

    It is the first child of the service tree, so migrations run (synchronously, before
    the reactor serves anything) before any listener accepts a connection, and it is the
    last to stop.
    """

    store: Store
    name: str = "store"

    def startService(self) -> None:
        self.store.open()
        Service.startService(self)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self.store.close())
