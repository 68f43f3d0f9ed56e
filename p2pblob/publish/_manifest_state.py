"""
What manifest publishing (L{p2pblob.publish.manifest}) remembers between
runs of the node, in one small SQLite file (C{DATA_DIR/publish.sqlite}):

  - the names published in each prefix, with their stream;
  - the transfers (a manifest admitted under a transfer key) and their
    expiry;
  - each file of a transfer (an upload): its name, declared size and MD5,
    its stream key, its state (pending, complete or cancelled), the stream
    creator's checkpoint (how far it got: the resume point) and the blobs
    made for it so far, so that a cancelled or expired upload leaves no
    blob behind, even after a crash.

Every call runs on the reactor thread; each is one short statement or one
transaction, committed at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pblob._sqlite import open_database, transaction
from p2pblob.errors import StorageError

__all__ = [
    "PENDING",
    "COMPLETE",
    "CANCELLED",
    "ManifestState",
    "PublishedName",
    "Transfer",
    "Upload",
]

PENDING = "pending"
COMPLETE = "complete"
CANCELLED = "cancelled"

_SCHEMA_VERSION = 1

# transfer: a manifest admitted, under its key
# upload: one file of a transfer; stream_key is hex; checkpoint is the stream
#     creator's checkpoint as JSON (NULL before its first blob), stored the
#     plaintext bytes it holds in blobs (the resume point)
# upload_blob: every blob stored for a pending upload, so that cancelling it
#     removes them all (those the checkpoint does not list yet too)
# name: a name published in a prefix, and its stream
_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer (
    transfer_key TEXT PRIMARY KEY,
    prefix       TEXT NOT NULL,
    created      REAL NOT NULL,
    expires      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS upload (
    transfer_key TEXT NOT NULL REFERENCES transfer (transfer_key) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    prefix       TEXT NOT NULL,
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    md5          TEXT NOT NULL,
    stream_key   TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'cancelled')),
    stored       INTEGER NOT NULL DEFAULT 0,
    checkpoint   TEXT,
    sd_hash      TEXT,
    PRIMARY KEY (transfer_key, number)
);
CREATE INDEX IF NOT EXISTS upload_by_name ON upload (prefix, name);
CREATE TABLE IF NOT EXISTS upload_blob (
    transfer_key TEXT NOT NULL,
    number       INTEGER NOT NULL,
    blob_hash    TEXT NOT NULL,
    PRIMARY KEY (transfer_key, number, blob_hash),
    FOREIGN KEY (transfer_key, number) REFERENCES upload (transfer_key, number)
        ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS name (
    prefix    TEXT NOT NULL,
    name      TEXT NOT NULL,
    sd_hash   TEXT NOT NULL,
    size      INTEGER NOT NULL,
    md5       TEXT NOT NULL,
    published REAL NOT NULL,
    PRIMARY KEY (prefix, name)
);
"""


@dataclass(frozen=True)
class Upload:
    """
    One file of a transfer.

    @ivar transfer_key: the transfer's key.
    @ivar number: its place in the manifest, from 0.
    @ivar prefix: the prefix it is published in.
    @ivar name: the name it is published under.
    @ivar size: the bytes the manifest declared.
    @ivar md5: the MD5 the manifest declared, lowercase hex.
    @ivar stream_key: the key of its stream, fixed at admission (so that an
        upload resumed after a restart makes the same blobs).
    @ivar state: L{PENDING}, L{COMPLETE} or L{CANCELLED}.
    @ivar stored: plaintext bytes already in blobs (the resume point).
    @ivar checkpoint: the stream creator's checkpoint, or L{None} before
        its first blob.
    @ivar sd_hash: the stream it became, once complete.
    """

    transfer_key: str
    number: int
    prefix: str
    name: str
    size: int
    md5: str
    stream_key: bytes
    state: str
    stored: int = 0
    checkpoint: dict[str, Any] | None = None
    sd_hash: str | None = None


@dataclass(frozen=True)
class Transfer:
    """
    A manifest admitted under C{key}: its files (L{Upload}s, in manifest
    order) may be uploaded until C{expires} (clock seconds).
    """

    key: str
    prefix: str
    created: float
    expires: float
    uploads: tuple[Upload, ...]


@dataclass(frozen=True)
class PublishedName:
    """
    A name published in a prefix: the stream it names, the size and MD5 of
    its content, and when it was published (clock seconds).
    """

    prefix: str
    name: str
    sd_hash: str
    size: int
    md5: str
    published: float


_UPLOAD_COLUMNS = (
    "transfer_key, number, prefix, name, size, md5, stream_key, state, stored, "
    "checkpoint, sd_hash"
)


def _upload(row: tuple[Any, ...]) -> Upload:
    key, number, prefix, name, size, md5, stream_key, state, stored, checkpoint, sd_hash = row
    return Upload(key, number, prefix, name, size, md5, bytes.fromhex(stream_key), state,
                  stored, None if checkpoint is None else json.loads(checkpoint), sd_hash)


class ManifestState:
    """
    The manifest publishing records in the SQLite file at C{path} (made,
    with its directory, if missing).

    @raise StorageError: the file cannot be opened, or was written by a
        newer p2pblob.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, "the list of published names", self._prepare,
                                 "move it away to start again with no published names")

    def _prepare(self, db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer p2pblob (schema {version})")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA journal_mode=WAL")
        with transaction(db):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(parameters))
        except sqlite3.Error as e:
            raise StorageError(f"cannot use {self.path}: {e}") from None

    @contextmanager
    def _changes(self) -> Iterator[None]:
        try:
            with transaction(self._db):
                yield
        except sqlite3.Error as e:
            raise StorageError(f"cannot write {self.path}: {e}") from None

    # transfers

    def add_transfer(self, transfer: Transfer) -> None:
        """
        Record a transfer admitted, with its uploads (all pending).
        """
        with self._changes():
            self._db.execute(
                "INSERT INTO transfer (transfer_key, prefix, created, expires) VALUES (?, ?, ?, ?)",
                (transfer.key, transfer.prefix, transfer.created, transfer.expires))
            self._db.executemany(
                f"INSERT INTO upload ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, "
                "NULL)",
                ((u.transfer_key, u.number, u.prefix, u.name, u.size, u.md5, u.stream_key.hex(),
                  PENDING) for u in transfer.uploads))

    def transfer(self, key: str) -> Transfer | None:
        row = self._execute(
            "SELECT transfer_key, prefix, created, expires FROM transfer WHERE transfer_key = ?",
            (key,)).fetchone()
        if row is None:
            return None
        uploads = self._execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE transfer_key = ? ORDER BY number",
            (key,)).fetchall()
        return Transfer(row[0], row[1], row[2], row[3], tuple(_upload(u) for u in uploads))

    def transfers(self) -> list[Transfer]:
        keys = [key for (key,) in self._execute(
            "SELECT transfer_key FROM transfer ORDER BY expires, transfer_key")]
        return [t for t in map(self.transfer, keys) if t is not None]

    def set_expiry(self, key: str, expires: float) -> None:
        self._execute("UPDATE transfer SET expires = ? WHERE transfer_key = ?", (expires, key))

    def drop_transfer(self, key: str) -> None:
        """
        Forget a transfer, its uploads and their blob records.
        """
        self._execute("DELETE FROM transfer WHERE transfer_key = ?", (key,))

    # uploads

    def upload(self, key: str, number: int) -> Upload | None:
        row = self._execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE transfer_key = ? AND number = ?",
            (key, number)).fetchone()
        return None if row is None else _upload(row)

    def uploads(self, prefix: str | None = None, state: str | None = None) -> list[Upload]:
        """
        The uploads (of C{prefix}, in C{state}, if given), by transfer and
        number.
        """
        rows = self._execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE (? IS NULL OR prefix = ?) "
            "AND (? IS NULL OR state = ?) ORDER BY transfer_key, number",
            (prefix, prefix, state, state)).fetchall()
        return [_upload(row) for row in rows]

    def save_checkpoint(self, key: str, number: int, stored: int,
                        checkpoint: dict[str, Any]) -> None:
        self._execute(
            "UPDATE upload SET stored = ?, checkpoint = ? WHERE transfer_key = ? AND number = ? "
            "AND state = ?",
            (stored, json.dumps(checkpoint, sort_keys=True), key, number, PENDING))

    def record_blob(self, key: str, number: int, blob_hash: str) -> None:
        self._execute(
            "INSERT OR IGNORE INTO upload_blob (transfer_key, number, blob_hash) "
            "SELECT transfer_key, number, ? FROM upload WHERE transfer_key = ? AND number = ?",
            (blob_hash, key, number))

    def blobs_of(self, key: str, number: int) -> list[str]:
        return [h for (h,) in self._execute(
            "SELECT blob_hash FROM upload_blob WHERE transfer_key = ? AND number = ? "
            "ORDER BY blob_hash", (key, number))]

    def cancel(self, key: str, number: int) -> None:
        """
        Mark an upload cancelled: its name is free again at once; its blobs
        are still listed, for L{forget_blobs} once they are removed.
        """
        self._execute(
            "UPDATE upload SET state = ?, checkpoint = NULL, stored = 0 "
            "WHERE transfer_key = ? AND number = ? AND state = ?",
            (CANCELLED, key, number, PENDING))

    def forget_blobs(self, key: str, number: int) -> None:
        self._execute("DELETE FROM upload_blob WHERE transfer_key = ? AND number = ?",
                      (key, number))

    def complete(self, upload: Upload, sd_hash: str, now: float) -> PublishedName:
        """
        Record an upload published as the stream C{sd_hash}: its name now
        names that stream.
        """
        published = PublishedName(upload.prefix, upload.name, sd_hash, upload.size, upload.md5,
                                  now)
        with self._changes():
            self._db.execute(
                "UPDATE upload SET state = ?, sd_hash = ?, checkpoint = NULL, stored = size "
                "WHERE transfer_key = ? AND number = ?",
                (COMPLETE, sd_hash, upload.transfer_key, upload.number))
            self._db.execute("DELETE FROM upload_blob WHERE transfer_key = ? AND number = ?",
                             (upload.transfer_key, upload.number))
            self._db.execute(
                "INSERT INTO name (prefix, name, sd_hash, size, md5, published) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (published.prefix, published.name, sd_hash, published.size, published.md5, now))
        return published

    # names

    def names(self, prefix: str) -> list[PublishedName]:
        return [PublishedName(*row) for row in self._execute(
            "SELECT prefix, name, sd_hash, size, md5, published FROM name WHERE prefix = ? "
            "ORDER BY name", (prefix,))]

    def name(self, prefix: str, name: str) -> PublishedName | None:
        row = self._execute(
            "SELECT prefix, name, sd_hash, size, md5, published FROM name "
            "WHERE prefix = ? AND name = ?", (prefix, name)).fetchone()
        return None if row is None else PublishedName(*row)

    def name_taken(self, prefix: str, name: str) -> bool:
        """
        Whether C{name} is published in C{prefix}, or pending there.
        """
        row = self._execute(
            "SELECT 1 FROM name WHERE prefix = ? AND name = ? UNION ALL "
            "SELECT 1 FROM upload WHERE prefix = ? AND name = ? AND state = ? LIMIT 1",
            (prefix, name, prefix, name, PENDING)).fetchone()
        return row is not None

    def prefix_usage(self, prefix: str) -> int:
        """
        The bytes of the names published in C{prefix} and of its pending
        uploads.
        """
        (total,) = self._execute(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM name WHERE prefix = ?) + "
            "(SELECT COALESCE(SUM(size), 0) FROM upload WHERE prefix = ? AND state = ?)",
            (prefix, prefix, PENDING)).fetchone()
        return int(total)
