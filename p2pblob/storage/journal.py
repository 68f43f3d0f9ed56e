"""
The transfer journal: one row per upload to a storage backend that has
begun and not yet ended, in a small SQLite file, so that a node that
crashed or was stopped finds its unfinished uploads when it starts again
(see L{p2pblob.storage.transfer}).

A row says which backend the upload goes to (its I{target}: the blob
store, a mirror's name), through which plugin, under which key, from which
source and which version of it, how large, how far it got, the service's
name for the upload, the chunk size, the hash the content must have, and
when it began.

How far it got (C{stored}) is only a hint: on resuming, the backend is
asked what it really holds (the size of a staged file, the parts of a
multipart upload; see L{p2pblob.interfaces.IStorageBackend.restart_upload})
and the node continues from its answer, never from the journal's counter.
That is what the durability of each change is chosen by (the file is in
WAL mode):

  - L{TransferJournal.begin} waits for the disk (C{synchronous=FULL}):
    it is written before the upload is begun on the service, so that even
    after a power cut the node knows of every upload staged there, and can
    resume or abort it instead of leaving it behind (an open S3 multipart
    upload is paid for until it is aborted).  One fsync per transfer;
  - everything else commits without waiting (C{synchronous=NORMAL}): a
    commit survives a crash of the process, and a power cut may undo the
    last few.  An offset undone is behind what the service holds, which
    the backend's answer corrects; an upload name undone is C{None}, and
    the backend then finds the upload by its key; a finished transfer
    undone is uploaded again, whole, and replaces an identical file.
    Advancing once per chunk thus costs no fsync.

Every call runs on the calling (reactor) thread; each is one short
statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from p2pblob._sqlite import open_database, transaction
from p2pblob.errors import StorageError

__all__ = ["APPLICATION_ID", "JournalEntry", "TransferJournal"]

APPLICATION_ID = 0x70326274  # "p2bt"
"""
The mark of a transfer journal in the SQLite header (C{PRAGMA application_id}).
"""

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE transfer (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,
    plugin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    source      TEXT NOT NULL,
    version     TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    stored      INTEGER NOT NULL DEFAULT 0 CHECK (stored >= 0 AND stored <= size),
    upload_id   TEXT,
    chunk_size  INTEGER NOT NULL CHECK (chunk_size > 0),
    sha384      TEXT,
    started     REAL NOT NULL,
    UNIQUE (target, key)
)
"""

_COLUMNS = (
    "id, target, plugin, key, source, version, size, stored, upload_id, "
    "chunk_size, sha384, started"
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class JournalEntry:
    """
    One open transfer, as the journal holds it.

    @ivar id: the row's number, never used again for another transfer.
    @ivar target: the name of the backend the file goes to (C{"blobs"}, a
        mirror's name).
    @ivar plugin: the name of the storage plugin of that backend.
    @ivar key: the file's name on the backend.
    @ivar source: where the content comes from, as text the node can open
        again (C{"file:/abs/path"}, C{"stream:<sd hash>"}).
    @ivar version: which version of the source is being uploaded (for a
        file: its size, modification time and inode).
    @ivar size: the size of that version, in bytes.
    @ivar stored: how many bytes the node knew were stored when it last
        wrote the row; a hint, which the backend corrects.
    @ivar upload_id: the service's name for the upload, if it gave one.
    @ivar chunk_size: the chunk size the upload was begun with.
    @ivar sha384: the sha384 the content must have (hex), if known.
    @ivar started: when the transfer began, in the node's clock's seconds.
    """

    id: int
    target: str
    plugin: str
    key: str
    source: str
    version: str
    size: int
    stored: int
    upload_id: str | None
    chunk_size: int
    sha384: str | None
    started: float


class TransferJournal:
    """
    The open transfers of every backend of a node, in the SQLite file at
    C{path} (made, with its directory, if missing).

    @ivar path: the file.
    @raise StorageError: the file cannot be opened or made, is damaged, is
        not a transfer journal, or was written by a newer p2pblob.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._db = open_database(
            path, "the transfer journal", self._prepare,
            damaged="it is damaged or is not a transfer journal: move it away and the "
            "unfinished uploads it lists start again from the beginning",
        )

    def _prepare(self, db: sqlite3.Connection) -> None:
        self._db = db  # (for _durably)
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if application_id != APPLICATION_ID:
            if version or db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StorageError(f"{self.path} is not a p2pblob transfer journal")
        elif version > _SCHEMA_VERSION:
            raise StorageError(
                f"the transfer journal {self.path} was written by a newer p2pblob "
                f"(schema {version})"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if version == 0:
            with self._durably(), transaction(db, "BEGIN IMMEDIATE"):
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    @contextmanager
    def _durably(self) -> Iterator[None]:
        """
        Make the commits of the block wait until they are on the disk.
        (In WAL mode that syncs the log, so the commits made before without
        waiting reach the disk too.)
        """
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _errors(self, what: str, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return f(*args, **kwargs)
        except sqlite3.Error as e:
            raise StorageError(f"cannot {what} the transfer journal {self.path}: {e}") from None

    def close(self) -> None:
        """
        Close the file; the journal cannot be used any more.
        """
        self._db.close()

    def begin(
        self,
        target: str,
        plugin: str,
        key: str,
        source: str,
        version: str,
        size: int,
        chunk_size: int,
        sha384: str | None,
        started: float,
    ) -> JournalEntry:
        """
        Record a transfer about to begin, with nothing stored yet, in place
        of any open transfer of the same key to the same target.  Returns
        once the row is on the disk.

        @return: the row written.
        @raise StorageError: it cannot be written.
        """

        def insert() -> int:
            with self._durably(), transaction(self._db, "BEGIN IMMEDIATE"):
                self._db.execute(
                    "DELETE FROM transfer WHERE target = ? AND key = ?", (target, key)
                )
                cursor = self._db.execute(
                    "INSERT INTO transfer (target, plugin, key, source, version, size, "
                    "chunk_size, sha384, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (target, plugin, key, source, version, size, chunk_size, sha384, started),
                )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        entry_id = self._errors("write", insert)
        return JournalEntry(
            entry_id, target, plugin, key, source, version, size, 0, None, chunk_size,
            sha384, started,
        )

    def set_upload_id(self, entry_id: int, upload_id: str | None) -> None:
        """
        Record the service's name for the upload of a transfer (or forget
        it, with C{None}).

        @raise StorageError: it cannot be written.
        """
        self._errors(
            "write",
            self._db.execute,
            "UPDATE transfer SET upload_id = ? WHERE id = ?",
            (upload_id, entry_id),
        )

    def advance(self, entry_id: int, stored: int) -> None:
        """
        Record how many bytes of a transfer are known to be stored.

        @raise StorageError: it cannot be written (or C{stored} is negative
            or more than the transfer's size).
        """
        self._errors(
            "write",
            self._db.execute,
            "UPDATE transfer SET stored = ? WHERE id = ?",
            (stored, entry_id),
        )

    def finish(self, entry_id: int) -> None:
        """
        Forget a transfer: it ended, or was given up.  Forgetting one that
        is not there does nothing.

        @raise StorageError: it cannot be written.
        """
        self._errors("write", self._db.execute, "DELETE FROM transfer WHERE id = ?", (entry_id,))

    def get(self, entry_id: int) -> JournalEntry | None:
        """
        The row of a transfer, or C{None} if it is no longer open.

        @raise StorageError: the journal cannot be read.
        """
        row = self._errors(
            "read",
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM transfer WHERE id = ?", (entry_id,)
            ).fetchone(),
        )
        return None if row is None else JournalEntry(*row)

    def open_transfers(self, target: str) -> list[JournalEntry]:
        """
        The open transfers to a target, oldest first.

        @raise StorageError: the journal cannot be read.
        """
        rows = self._errors(
            "read",
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM transfer WHERE target = ? ORDER BY started, id",
                (target,),
            ).fetchall(),
        )
        return [JournalEntry(*row) for row in rows]
