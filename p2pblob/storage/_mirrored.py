"""
What the node has mirrored: one row per stream exported to a mirror, in a
small SQLite file (C{DATA_DIR/mirrors.sqlite}), so that a mirror's rule
exports a stream once, across restarts too, and a stream exported again
goes to the name it had (see L{p2pblob.storage.mirror}).

Every call runs on the calling (reactor) thread; each is one short
statement.  A row is written after the file is committed on the mirror;
if the node dies in between, the stream is exported again, to the same
name (it is found again by its sd hash before its name is chosen, and
otherwise the name is free).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from p2pblob._sqlite import open_database, transaction
from p2pblob.errors import StorageError

__all__ = ["MirrorRecord", "MirrorRecords"]

_SCHEMA_VERSION = 1

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS mirrored (
        target      TEXT NOT NULL,
        sd_hash     TEXT NOT NULL,
        key         TEXT NOT NULL,
        size        INTEGER NOT NULL CHECK (size >= 0),
        sha384      TEXT,
        mirrored_at REAL NOT NULL,
        PRIMARY KEY (target, sd_hash)
    )
    """,
    "CREATE INDEX IF NOT EXISTS mirrored_by_key ON mirrored (target, key)",
    "CREATE INDEX IF NOT EXISTS mirrored_by_time ON mirrored (mirrored_at)",
)

_COLUMNS = "target, sd_hash, key, size, sha384, mirrored_at"

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class MirrorRecord:
    """
    A stream exported to a mirror.

    @ivar target: the mirror's name.
    @ivar sd_hash: the stream.
    @ivar key: the name of its file on the mirror.
    @ivar size: the file's size in bytes.
    @ivar sha384: the sha384 of the file (hex), as it was committed.
    @ivar mirrored_at: when, in the node's clock's seconds.
    """

    target: str
    sd_hash: str
    key: str
    size: int
    sha384: str | None
    mirrored_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "sd_hash": self.sd_hash,
            "key": self.key,
            "size": self.size,
            "sha384": self.sha384,
            "mirrored_at": self.mirrored_at,
        }


class MirrorRecords:
    """
    The streams exported to every mirror of a node, in the SQLite file at
    C{path} (made, with its directory, if missing).

    @raise StorageError: the file cannot be opened or made, is damaged, or
        was written by a newer p2pblob.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._db = open_database(
            path, "the list of mirrored streams", self._prepare,
            damaged="move it away, and the mirrors' rules export their streams again",
        )

    def _prepare(self, db: sqlite3.Connection) -> None:
        self._db = db
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise StorageError(
                f"the list of mirrored streams {self.path} was written by a newer p2pblob "
                f"(schema {version})"
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with transaction(self._db, "BEGIN IMMEDIATE"):
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def _errors(self, what: str, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return f(*args, **kwargs)
        except sqlite3.Error as e:
            raise StorageError(
                f"cannot {what} the list of mirrored streams {self.path}: {e}"
            ) from None

    def close(self) -> None:
        self._db.close()

    def add(self, record: MirrorRecord) -> None:
        """
        Record a stream exported, in place of an earlier export of it to
        the same mirror.

        @raise StorageError: it cannot be written.
        """
        self._errors(
            "write",
            self._db.execute,
            f"INSERT OR REPLACE INTO mirrored ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (record.target, record.sd_hash, record.key, record.size, record.sha384,
             record.mirrored_at),
        )

    def get(self, target: str, sd_hash: str) -> MirrorRecord | None:
        """
        The export of a stream to a mirror, if there was one.

        @raise StorageError: it cannot be read.
        """
        row = self._errors(
            "read",
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM mirrored WHERE target = ? AND sd_hash = ?",
                (target, sd_hash),
            ).fetchone(),
        )
        return None if row is None else MirrorRecord(*row)

    def holder(self, target: str, key: str) -> str | None:
        """
        The sd hash of the stream exported to a mirror under C{key}, if any.

        @raise StorageError: it cannot be read.
        """
        row = self._errors(
            "read",
            lambda: self._db.execute(
                "SELECT sd_hash FROM mirrored WHERE target = ? AND key = ? LIMIT 1",
                (target, key),
            ).fetchone(),
        )
        return None if row is None else str(row[0])

    def mirrored(self, target: str) -> set[str]:
        """
        The sd hashes of the streams exported to a mirror.

        @raise StorageError: it cannot be read.
        """
        rows = self._errors(
            "read",
            lambda: self._db.execute(
                "SELECT sd_hash FROM mirrored WHERE target = ?", (target,)
            ).fetchall(),
        )
        return {str(sd_hash) for (sd_hash,) in rows}

    def recent(self, limit: int) -> list[MirrorRecord]:
        """
        The last C{limit} exports, to every mirror, newest first.

        @raise StorageError: it cannot be read.
        """
        rows = self._errors(
            "read",
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM mirrored ORDER BY mirrored_at DESC, rowid DESC "
                "LIMIT ?",
                (limit,),
            ).fetchall(),
        )
        return [MirrorRecord(*row) for row in rows]

    def count(self, target: str) -> int:
        """
        How many streams were exported to a mirror.

        @raise StorageError: it cannot be read.
        """
        row = self._errors(
            "read",
            lambda: self._db.execute(
                "SELECT count(*) FROM mirrored WHERE target = ?", (target,)
            ).fetchone(),
        )
        return int(row[0])
