"""
What a folder watcher remembers between runs of the node: for each file it
published, the version it published (size, modification time, inode) and
the stream that version became, in a small SQLite file.

Every call runs on the reactor thread; each change is one short statement,
committed at once.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from p2pblob._sqlite import open_database, transaction
from p2pblob.errors import StorageError

__all__ = ["PublishedFile", "Signature", "WatchState"]

_SCHEMA_VERSION = 1

# path: the file's path relative to the watched folder, "/"-separated, as the
#     bytes the file system gave (names need not be valid UTF-8)
# inode: as decimal text (some file systems have 128-bit file ids)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS published_file (
    path      BLOB PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    inode     TEXT NOT NULL,
    sd_hash   TEXT NOT NULL,
    published REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Signature:
    """
    What tells one version of a file from another, without reading it.

    @ivar size: its length in bytes.
    @ivar mtime_ns: its modification time, in nanoseconds.
    @ivar inode: its inode (file id): replacing a file by another of the
        same size and time (an editor's atomic save) changes it.
    """

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> Signature:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


@dataclass(frozen=True)
class PublishedFile:
    """
    One file of the watched folder, as it was when it was last published.

    @ivar path: relative to the folder, with C{/} between names.
    @ivar signature: the version that was published.
    @ivar sd_hash: the stream it became.
    @ivar published: when (clock seconds).
    """

    path: str
    signature: Signature
    sd_hash: str
    published: float

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.signature.size,
            "sd_hash": self.sd_hash,
            "published": self.published,
        }


class WatchState:
    """
    The published files of one watched folder, in the SQLite file at
    C{path} (made, with its directory, if missing).

    @raise StorageError: if the file cannot be opened or was written by a
        newer p2pblob.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, "the list of the watched folder's files", self._prepare)

    def _prepare(self, db: sqlite3.Connection) -> None:
        self._db = db
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer p2pblob (schema {version})")
        with transaction(self._db):
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def load(self) -> dict[str, PublishedFile]:
        """
        Every file published, by path.

        @raise StorageError: if the file cannot be read.
        """
        try:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, inode, sd_hash, published FROM published_file"
            ).fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"cannot read {self.path}: {e}") from None
        files = {}
        for path, size, mtime_ns, inode, sd_hash, published in rows:
            name = os.fsdecode(path)
            files[name] = PublishedFile(
                name, Signature(size, mtime_ns, int(inode)), sd_hash, published
            )
        return files

    def save(self, record: PublishedFile) -> None:
        """
        Write C{record}, replacing the row of its file.

        @raise StorageError: if it cannot be written (a full disk, say).
        """
        signature = record.signature
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO published_file "
                "(path, size, mtime_ns, inode, sd_hash, published) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    os.fsencode(record.path), signature.size, signature.mtime_ns,
                    str(signature.inode), record.sd_hash, record.published,
                ),
            )
        except sqlite3.Error as e:
            raise StorageError(f"cannot write {self.path}: {e}") from None

    def forget(self, path: str) -> None:
        """
        Remove the row of the file at C{path}, if there is one.

        @raise StorageError: if it cannot be written.
        """
        try:
            self._db.execute("DELETE FROM published_file WHERE path = ?", (os.fsencode(path),))
        except sqlite3.Error as e:
            raise StorageError(f"cannot write {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()
