"""
What the download service remembers between runs of the node: one row per
stream in a small SQLite file.

Every call runs on the reactor thread; a state change is a single short
statement, committed at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from p2pblob._sqlite import transaction
from p2pblob.errors import StorageError

__all__ = ["DownloadRecords", "StreamRecord"]

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS download (
    sd_hash     TEXT PRIMARY KEY,
    output_dir  TEXT NOT NULL,
    state       TEXT NOT NULL,
    name        TEXT,
    added       REAL NOT NULL,
    output      TEXT,
    error       TEXT,
    done_bytes  INTEGER NOT NULL DEFAULT 0,
    total_bytes INTEGER,
    sd_blob     BLOB
)
"""

_COLUMNS = (
    "sd_hash", "output_dir", "state", "name", "added", "output", "error",
    "done_bytes", "total_bytes", "sd_blob",
)
# what a later save may change (the stream, when it was added and its
# descriptor never do)
_CHANGING = ("output_dir", "state", "name", "output", "error", "done_bytes", "total_bytes")


@dataclass
class StreamRecord:
    """
    What is kept of one download.

    @ivar output_dir: the directory the file is written in.
    @ivar state: one of the states of L{p2pblob.download.service}.
    @ivar name: the file name the stream suggests, once its descriptor is
        known.
    @ivar added: when the download was asked for (clock seconds).
    @ivar output: the finished file.
    @ivar error: why the download failed, in words.
    @ivar done_bytes: the bytes of the stream's blobs done when last seen.
    @ivar total_bytes: the bytes of all the stream's blobs, once known.
    @ivar sd_blob: the descriptor, when it was given rather than fetched
        (no peer may have it).
    """

    sd_hash: str
    output_dir: str
    state: str
    name: str | None = None
    added: float = 0.0
    output: str | None = None
    error: str | None = None
    done_bytes: int = 0
    total_bytes: int | None = None
    sd_blob: bytes | None = None


class DownloadRecords:
    """
    The rows of the downloads, in the SQLite file at C{path} (made, with
    its directory, if missing).

    @raise StorageError: if the file cannot be opened or was written by a
        newer p2pblob.
    """

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the list of downloads {path}: {e}") from None
        try:
            self._prepare()
        except sqlite3.Error as e:
            self._db.close()
            raise StorageError(f"cannot read the list of downloads {path}: {e}") from None

    def _prepare(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer p2pblob (schema {version})")
        with transaction(self._db):
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def load(self) -> list[StreamRecord]:
        """
        Every download, oldest first.
        """
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM download ORDER BY added, rowid"
        )
        return [StreamRecord(*row) for row in rows]

    def save(self, record: StreamRecord) -> None:
        """
        Write C{record}, replacing the row of its stream.
        """
        values = (
            record.sd_hash, record.output_dir, record.state, record.name, record.added,
            record.output, record.error, record.done_bytes, record.total_bytes, record.sd_blob,
        )
        updates = ", ".join(f"{column} = excluded.{column}" for column in _CHANGING)
        self._db.execute(
            f"INSERT INTO download ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)}) "
            f"ON CONFLICT (sd_hash) DO UPDATE SET {updates}",
            values,
        )

    def remove(self, sd_hash: str) -> None:
        self._db.execute("DELETE FROM download WHERE sd_hash = ?", (sd_hash,))

    def close(self) -> None:
        self._db.close()
