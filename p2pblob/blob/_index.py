"""
The blob store's SQLite index: which blobs are verified, which streams they
belong to, and what may be evicted.

Every call runs on the reactor thread.  The database is in WAL mode with
C{synchronous=NORMAL}, so a commit costs no fsync; after a power loss the
index may lack the newest rows, which the store's start-up reconciliation
repairs from the files themselves (a row is only ever written after its blob
file is durable, so the reverse never happens).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pblob._sqlite import transaction

__all__ = ["BlobIndex", "ROLE_PUBLISHED", "ROLE_DOWNLOADED"]

ROLE_PUBLISHED = "published"
ROLE_DOWNLOADED = "downloaded"

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob (
    blob_hash TEXT PRIMARY KEY,
    length    INTEGER NOT NULL CHECK (length >= 0),
    added_on  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stream (
    sd_hash   TEXT PRIMARY KEY,
    role      TEXT NOT NULL CHECK (role IN ('published', 'downloaded')),
    finished  INTEGER NOT NULL DEFAULT 0,
    pinned    INTEGER NOT NULL DEFAULT 0,
    added_on  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_blob (
    sd_hash   TEXT NOT NULL REFERENCES stream (sd_hash) ON DELETE CASCADE,
    blob_hash TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (sd_hash, blob_hash)
);
CREATE INDEX IF NOT EXISTS stream_blob_by_blob ON stream_blob (blob_hash);
"""

# A blob may be evicted when it belongs to at least one stream and every
# stream it belongs to is a finished, unpinned download.
_EVICTABLE = """
SELECT b.blob_hash, b.length FROM blob AS b
WHERE EXISTS (SELECT 1 FROM stream_blob AS sb WHERE sb.blob_hash = b.blob_hash)
  AND NOT EXISTS (
      SELECT 1 FROM stream_blob AS sb JOIN stream AS s USING (sd_hash)
      WHERE sb.blob_hash = b.blob_hash
        AND (s.role = 'published' OR s.finished = 0 OR s.pinned = 1))
ORDER BY b.added_on, b.rowid
"""


class BlobIndex:
    """
    Rows of verified blobs and of the streams that use them.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            self._db.close()
            raise sqlite3.DatabaseError(
                f"{path} was written by a newer p2pblob (schema {version})"
            )
        with self._db:  # executescript commits by itself
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """
        Run the statements of the block as one transaction.  (The connection
        is in autocommit mode, in which C{with connection} would commit each
        statement on its own: hundreds of commits for one stream.)
        """
        with transaction(self._db):
            yield

    # blobs

    def blobs(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT blob_hash, length FROM blob"))

    def add_blob(self, blob_hash: str, length: int, now: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO blob (blob_hash, length, added_on) "
            "VALUES (?, ?, ?)",
            (blob_hash, length, now),
        )

    def add_blobs(self, rows: Iterable[tuple[str, int]], now: float) -> None:
        """
        Add C{(blob_hash, length)} rows in one transaction.
        """
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO blob (blob_hash, length, added_on) VALUES (?, ?, ?)",
                ((blob_hash, length, now) for blob_hash, length in rows),
            )

    def remove_blobs(self, blob_hashes: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany(
                "DELETE FROM blob WHERE blob_hash = ?", ((h,) for h in blob_hashes)
            )

    def evictable(self) -> Iterator[tuple[str, int]]:
        return iter(self._db.execute(_EVICTABLE).fetchall())

    # streams

    def add_stream(
        self, sd_hash: str, blob_hashes: list[str], role: str, now: float
    ) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO stream (sd_hash, role, added_on) VALUES (?, ?, ?) "
                "ON CONFLICT (sd_hash) DO UPDATE SET role = "
                "CASE WHEN excluded.role = 'published' THEN 'published' "
                "ELSE stream.role END",
                (sd_hash, role, now),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO stream_blob (sd_hash, blob_hash, position) "
                "VALUES (?, ?, ?)",
                ((sd_hash, h, i) for i, h in enumerate(blob_hashes)),
            )

    def has_stream(self, sd_hash: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM stream WHERE sd_hash = ?", (sd_hash,)
        ).fetchone()
        return row is not None

    def set_stream_flag(self, sd_hash: str, column: str, value: bool) -> None:
        assert column in ("finished", "pinned")
        self._db.execute(
            f"UPDATE stream SET {column} = ? WHERE sd_hash = ?", (int(value), sd_hash)
        )

    def stream_blobs(self, sd_hash: str) -> list[str]:
        return [
            h
            for (h,) in self._db.execute(
                "SELECT blob_hash FROM stream_blob WHERE sd_hash = ? "
                "ORDER BY position",
                (sd_hash,),
            )
        ]

    def stream_of(self, blob_hash: str) -> str | None:
        """
        The sd hash of a stream C{blob_hash} belongs to (any one of them,
        if several do; the stream itself for an sd blob), or L{None}.
        """
        row = self._db.execute(
            "SELECT sd_hash FROM stream WHERE sd_hash = ? UNION ALL "
            "SELECT sd_hash FROM stream_blob WHERE blob_hash = ? LIMIT 1",
            (blob_hash, blob_hash),
        ).fetchone()
        return None if row is None else str(row[0])

    def remove_stream(self, sd_hash: str) -> list[str]:
        """
        Forget a stream; return those of its blobs no other stream uses.
        """
        with self._transaction():
            orphans = [
                h
                for (h,) in self._db.execute(
                    "SELECT sb.blob_hash FROM stream_blob AS sb "
                    "WHERE sb.sd_hash = ? AND NOT EXISTS ("
                    "  SELECT 1 FROM stream_blob AS o "
                    "  WHERE o.blob_hash = sb.blob_hash AND o.sd_hash != ?)",
                    (sd_hash, sd_hash),
                )
            ]
            self._db.execute("DELETE FROM stream WHERE sd_hash = ?", (sd_hash,))
        return orphans

    def streams(self) -> list[tuple[str, str, bool, bool]]:
        return [
            (sd, role, bool(finished), bool(pinned))
            for sd, role, finished, pinned in self._db.execute(
                "SELECT sd_hash, role, finished, pinned FROM stream ORDER BY added_on"
            )
        ]
