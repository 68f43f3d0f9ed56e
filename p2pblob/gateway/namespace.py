"""
The S3 gateway's names, in SQLite (C{DATA_DIR/gateway.sqlite}): buckets,
the objects in them (a name for a stream, with its size, digests, headers
and user metadata), the multipart uploads in progress and their parts,
which streams the gateway made, and what the streams it is making have put
in the blob store so far (L{Namespace}).

Every call runs on the reactor thread and each change is one transaction,
so that a listing made right after a write sees it, and a name never points
to a half-recorded object.  Names are local to this node: only sd hashes
travel.

A stream may go once nothing names it: L{Namespace.collectable} lists the
streams the gateway made or brought into the blob store that no object and
no part refers to any longer; the gateway removes them from the blob store
and then calls L{Namespace.forget_stream}, so that a crash in between only
delays the removal to the next start.

A stream being made (or brought in) is a draft until it is whole: each of
its blobs is noted here before it is written, and the sd hash of each
stream it records in the blob store before that is recorded
(L{Namespace.note_blob}, L{Namespace.note_stream}).  A whole stream becomes
owned and stops being a draft in one transaction
(L{Namespace.finish_draft}); a draft left by a crash is undone at the next
start from what was noted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pblob._sqlite import open_database, transaction

__all__ = ["Namespace", "ObjectRecord", "PartRecord", "UploadRecord", "Usage"]

_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bucket (
    name    TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS object (
    bucket       TEXT NOT NULL REFERENCES bucket (name),
    key          TEXT NOT NULL,
    sd_hash      TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    etag         TEXT NOT NULL,
    md5          TEXT,
    crc32        INTEGER,
    content_type TEXT NOT NULL,
    headers      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created      REAL NOT NULL,
    modified     REAL NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS object_by_stream ON object (sd_hash);
CREATE TABLE IF NOT EXISTS owned_stream (
    sd_hash TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS upload (
    upload_id    TEXT PRIMARY KEY,
    bucket       TEXT NOT NULL REFERENCES bucket (name),
    key          TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS upload_by_key ON upload (bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS part (
    upload_id TEXT NOT NULL REFERENCES upload (upload_id) ON DELETE CASCADE,
    number    INTEGER NOT NULL,
    sd_hash   TEXT NOT NULL,
    first     INTEGER NOT NULL,
    size      INTEGER NOT NULL CHECK (size >= 0),
    etag      TEXT NOT NULL,
    crc32     INTEGER,
    copied    INTEGER NOT NULL,
    created   REAL NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS part_by_stream ON part (sd_hash);
CREATE TABLE IF NOT EXISTS draft (
    id      INTEGER PRIMARY KEY,
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS draft_blob (
    draft     INTEGER NOT NULL REFERENCES draft (id) ON DELETE CASCADE,
    blob_hash TEXT NOT NULL,
    PRIMARY KEY (draft, blob_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS draft_stream (
    draft   INTEGER NOT NULL REFERENCES draft (id) ON DELETE CASCADE,
    sd_hash TEXT NOT NULL,
    PRIMARY KEY (draft, sd_hash)
) WITHOUT ROWID;
"""

_OBJECT_COLUMNS = ("bucket, key, sd_hash, size, etag, md5, crc32, content_type, headers, "
                   "metadata, created, modified")
_PART_COLUMNS = "upload_id, number, sd_hash, first, size, etag, crc32, copied, created"


@dataclass(frozen=True)
class ObjectRecord:
    """
    An object: a name for the stream C{sd_hash}.

    @ivar etag: the ETag without its quotes: the plaintext's MD5 in hex,
        S3's multipart form (C{<md5 of the parts' MD5s>-<count>}), or, for
        a stream imported by sd hash and not yet read in full, its sd hash.
    @ivar md5: the plaintext's MD5 in hex, if known.
    @ivar crc32: the plaintext's CRC32, if known.
    @ivar headers: the standard headers stored with it (lowercase names:
        C{cache-control}, C{content-disposition}, ...).
    @ivar metadata: the user metadata, by lowercase name without the
        C{x-amz-meta-} prefix.
    """

    bucket: str
    key: str
    sd_hash: str
    size: int
    etag: str
    md5: str | None
    crc32: int | None
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    modified: float = 0.0


@dataclass(frozen=True)
class UploadRecord:
    """
    A multipart upload in progress, with what its object will carry.
    """

    upload_id: str
    bucket: str
    key: str
    content_type: str
    headers: Mapping[str, str]
    metadata: Mapping[str, str]
    created: float


@dataclass(frozen=True)
class PartRecord:
    """
    A part of a multipart upload: bytes C{first} to C{first + size - 1} of
    the stream C{sd_hash} (a stream of its own for an uploaded part, where
    C{first} is 0; a range of another object's stream for a C{copied} one).

    @ivar etag: the part's ETag without its quotes (the MD5 of its bytes).
    """

    upload_id: str
    number: int
    sd_hash: str
    first: int
    size: int
    etag: str
    crc32: int | None
    copied: bool
    created: float


@dataclass(frozen=True)
class Usage:
    """
    What the gateway holds: the bytes of its objects and of the uploaded
    parts of its multipart uploads, and its number of objects.
    """

    size: int
    objects: int


def _prepare(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > _SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"it was written by a newer p2pblob (schema {version})")
    with transaction(db):
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


def _successor(prefix: str) -> str | None:
    """
    The least string greater than every string that starts with C{prefix},
    or L{None} if there is none (code point order, which is UTF-8's byte
    order, and SQLite's for text).
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:  # (no string holds a surrogate)
                following = 0xE000
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


def _object(row: Any) -> ObjectRecord:
    (bucket, key, sd_hash, size, etag, md5, crc32, content_type, headers, metadata,
     created, modified) = row
    return ObjectRecord(
        bucket=bucket, key=key, sd_hash=sd_hash, size=size, etag=etag, md5=md5, crc32=crc32,
        content_type=content_type, headers=json.loads(headers), metadata=json.loads(metadata),
        created=created, modified=modified,
    )


def _part(row: Any) -> PartRecord:
    upload_id, number, sd_hash, first, size, etag, crc32, copied, created = row
    return PartRecord(upload_id=upload_id, number=number, sd_hash=sd_hash, first=first,
                      size=size, etag=etag, crc32=crc32, copied=bool(copied), created=created)


class Namespace:
    """
    The gateway's SQLite file of names.

    @raise p2pblob.errors.StorageError: (from the constructor) the file
        cannot be opened or made.
    """

    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, "the S3 gateway's namespace", _prepare,
                                 "move it away to start with no buckets")

    def close(self) -> None:
        self._db.close()

    # buckets

    def create_bucket(self, name: str, now: float) -> bool:
        """
        Make a bucket; L{False} if it exists already.
        """
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO bucket (name, created) VALUES (?, ?)", (name, now))
        return cursor.rowcount > 0

    def has_bucket(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM bucket WHERE name = ?", (name,)).fetchone() is not None

    def buckets(self) -> list[tuple[str, float]]:
        """
        Every bucket's name and time of creation, by name.
        """
        return [(str(name), float(created)) for name, created in
                self._db.execute("SELECT name, created FROM bucket ORDER BY name")]

    def bucket_is_empty(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM object WHERE bucket = ? LIMIT 1", (name,)).fetchone()
        return row is None

    def delete_bucket(self, name: str) -> list[str]:
        """
        Remove an empty bucket, and the multipart uploads left in it.

        @return: the sd hashes of their parts (which may now be collectable).
        @raise ValueError: the bucket holds objects.
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            if not self.bucket_is_empty(name):
                raise ValueError(f"bucket {name} is not empty")
            released = [str(sd) for (sd,) in self._db.execute(
                "SELECT part.sd_hash FROM part JOIN upload USING (upload_id) "
                "WHERE upload.bucket = ?", (name,))]
            self._db.execute("DELETE FROM upload WHERE bucket = ?", (name,))
            self._db.execute("DELETE FROM bucket WHERE name = ?", (name,))
        return released

    # objects

    def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        row = self._db.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM object WHERE bucket = ? AND key = ?",
            (bucket, key)).fetchone()
        return None if row is None else _object(row)

    def put_object(self, record: ObjectRecord, owned: bool = False,
                   upload_id: str | None = None) -> str | None:
        """
        Name a stream: add the object, or replace the one of the same name
        (which keeps its time of creation).

        @param owned: the gateway made the stream (or brought it into the
            blob store), so that it is removed once nothing names it.
        @param upload_id: the multipart upload this object completes, which
            goes in the same transaction.
        @return: the sd hash the name referred to before, if any.
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            previous = self.get_object(record.bucket, record.key)
            created = record.created if previous is None else previous.created
            self._db.execute(
                f"INSERT OR REPLACE INTO object ({_OBJECT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.bucket, record.key, record.sd_hash, record.size, record.etag,
                 record.md5, record.crc32, record.content_type,
                 json.dumps(dict(record.headers), sort_keys=True),
                 json.dumps(dict(record.metadata), sort_keys=True), created, record.modified))
            if owned:
                self._db.execute("INSERT OR IGNORE INTO owned_stream (sd_hash) VALUES (?)",
                                 (record.sd_hash,))
            if upload_id is not None:
                self._db.execute("DELETE FROM upload WHERE upload_id = ?", (upload_id,))
        return None if previous is None else previous.sd_hash

    def delete_object(self, bucket: str, key: str) -> str | None:
        """
        Remove a name; return the sd hash it referred to, if it existed.
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            row = self._db.execute("SELECT sd_hash FROM object WHERE bucket = ? AND key = ?",
                                   (bucket, key)).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM object WHERE bucket = ? AND key = ?", (bucket, key))
        return str(row[0])

    def learn_digests(self, sd_hash: str, md5: str, crc32: int) -> None:
        """
        Record the digests of a stream read in full: every object naming it
        without them gets them, and those whose ETag was the sd hash get the
        MD5 as their ETag.
        """
        with transaction(self._db):
            self._db.execute(
                "UPDATE object SET etag = ? WHERE sd_hash = ? AND etag = sd_hash",
                (md5, sd_hash))
            self._db.execute(
                "UPDATE object SET md5 = ?, crc32 = ? WHERE sd_hash = ? AND md5 IS NULL",
                (md5, crc32, sd_hash))

    def digests(self, sd_hash: str) -> tuple[str | None, int | None]:
        """
        The MD5 and CRC32 of the stream C{sd_hash}, if an object naming it
        knows them.
        """
        row = self._db.execute("SELECT md5, crc32 FROM object WHERE sd_hash = ? AND md5 IS NOT "
                               "NULL LIMIT 1", (sd_hash,)).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def list_objects(self, bucket: str, prefix: str = "", delimiter: str | None = None,
                     after: str | None = None,
                     max_keys: int = 1000) -> tuple[list[ObjectRecord], list[str], bool, str | None]:
        """
        The objects of C{bucket} whose key starts with C{prefix}, in key
        order (UTF-8 byte order), after C{after}: with a C{delimiter}, keys
        holding it past the prefix are rolled up into common prefixes (each
        counted once).  C{max_keys} bounds objects and prefixes together.

        @return: the objects, the common prefixes, whether more follow, and
            the last key or prefix given.
        """
        contents: list[ObjectRecord] = []
        prefixes: list[str] = []
        last: str | None = None
        for value in self._entries(bucket, prefix, delimiter or None, after):
            if len(contents) + len(prefixes) == max_keys:
                return contents, prefixes, True, last
            if isinstance(value, ObjectRecord):
                contents.append(value)
                last = value.key
            else:
                prefixes.append(value)
                last = value
        return contents, prefixes, False, last

    def _entries(self, bucket: str, prefix: str, delimiter: str | None,
                 after: str | None) -> Iterator[ObjectRecord | str]:
        """
        Objects and common prefixes in order, read in batches.
        """
        # where to go on from: (a key, whether that key itself is included)
        start, included = (prefix, True) if after is None or after < prefix else (after, False)
        upper = _successor(prefix)
        while True:
            query = (f"SELECT {_OBJECT_COLUMNS} FROM object WHERE bucket = ? AND key "
                     + (">= ?" if included else "> ?"))
            arguments: list[object] = [bucket, start]
            if upper is not None:
                query += " AND key < ?"
                arguments.append(upper)
            rows = self._db.execute(query + " ORDER BY key LIMIT 200", arguments).fetchall()
            if not rows:
                return
            jumped = False
            for row in rows:
                record = _object(row)
                rest = record.key[len(prefix):]
                found = rest.find(delimiter) if delimiter else -1
                if found < 0:
                    yield record
                    start, included = record.key, False
                    continue
                common = prefix + rest[:found + len(delimiter or "")]
                # (a prefix equal to the marker was given on the page before)
                if common != after:
                    yield common
                beyond = _successor(common)
                if beyond is None:
                    return
                start, included, jumped = beyond, True, True
                break
            if not jumped and len(rows) < 200:
                return

    # quotas

    def usage(self) -> Usage:
        size, count = self._db.execute("SELECT coalesce(sum(size), 0), count(*) FROM object"
                                       ).fetchone()
        (parts,) = self._db.execute(
            "SELECT coalesce(sum(size), 0) FROM part WHERE copied = 0").fetchone()
        return Usage(int(size) + int(parts), int(count))

    # multipart uploads

    def create_upload(self, record: UploadRecord) -> None:
        self._db.execute(
            "INSERT INTO upload (upload_id, bucket, key, content_type, headers, metadata, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.upload_id, record.bucket, record.key, record.content_type,
             json.dumps(dict(record.headers), sort_keys=True),
             json.dumps(dict(record.metadata), sort_keys=True), record.created))

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = self._db.execute(
            "SELECT upload_id, bucket, key, content_type, headers, metadata, created "
            "FROM upload WHERE upload_id = ?", (upload_id,)).fetchone()
        if row is None:
            return None
        return UploadRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]),
                            json.loads(row[4]), json.loads(row[5]), float(row[6]))

    def uploads(self, bucket: str, prefix: str = "", key_marker: str = "",
                upload_id_marker: str = "", limit: int = 1000) -> list[UploadRecord]:
        """
        The uploads in progress in C{bucket}, by key then upload id, after
        the markers.
        """
        rows = self._db.execute(
            "SELECT upload_id FROM upload WHERE bucket = ? AND substr(key, 1, ?) = ? "
            "AND (key > ? OR (key = ? AND upload_id > ?)) ORDER BY key, upload_id LIMIT ?",
            (bucket, len(prefix), prefix, key_marker, key_marker, upload_id_marker, limit))
        found = [self.get_upload(str(upload_id)) for (upload_id,) in rows.fetchall()]
        return [upload for upload in found if upload is not None]

    def put_part(self, part: PartRecord) -> str | None:
        """
        Record a part (replacing one of the same number: a part sent
        again); return the sd hash of the part it replaced, if any.

        @raise KeyError: the upload is gone (completed or aborted meanwhile).
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            if self.get_upload(part.upload_id) is None:
                raise KeyError(part.upload_id)
            row = self._db.execute("SELECT sd_hash FROM part WHERE upload_id = ? AND number = ?",
                                   (part.upload_id, part.number)).fetchone()
            self._db.execute(
                f"INSERT OR REPLACE INTO part ({_PART_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (part.upload_id, part.number, part.sd_hash, part.first, part.size, part.etag,
                 part.crc32, int(part.copied), part.created))
            if not part.copied:
                self._db.execute("INSERT OR IGNORE INTO owned_stream (sd_hash) VALUES (?)",
                                 (part.sd_hash,))
        return None if row is None else str(row[0])

    def parts(self, upload_id: str, after: int = 0, limit: int = 10000) -> list[PartRecord]:
        rows = self._db.execute(
            f"SELECT {_PART_COLUMNS} FROM part WHERE upload_id = ? AND number > ? "
            "ORDER BY number LIMIT ?", (upload_id, after, limit))
        return [_part(row) for row in rows.fetchall()]

    def delete_upload(self, upload_id: str) -> list[str]:
        """
        Forget an upload and its parts; return the parts' sd hashes.
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            released = [str(sd) for (sd,) in self._db.execute(
                "SELECT sd_hash FROM part WHERE upload_id = ?", (upload_id,))]
            self._db.execute("DELETE FROM upload WHERE upload_id = ?", (upload_id,))
        return released

    # streams

    def is_referenced(self, sd_hash: str) -> bool:
        """
        Whether an object or a part refers to the stream C{sd_hash}.
        """
        row = self._db.execute(
            "SELECT 1 FROM object WHERE sd_hash = ? UNION ALL "
            "SELECT 1 FROM part WHERE sd_hash = ? LIMIT 1", (sd_hash, sd_hash)).fetchone()
        return row is not None

    def own_stream(self, sd_hash: str) -> None:
        """
        Record that the gateway made the stream C{sd_hash} (or brought it
        into the blob store).
        """
        self._db.execute("INSERT OR IGNORE INTO owned_stream (sd_hash) VALUES (?)", (sd_hash,))

    def is_owned(self, sd_hash: str) -> bool:
        row = self._db.execute("SELECT 1 FROM owned_stream WHERE sd_hash = ?",
                               (sd_hash,)).fetchone()
        return row is not None

    def collectable(self, sd_hashes: list[str] | None = None) -> list[str]:
        """
        Those of C{sd_hashes} (all, if L{None}) that the gateway owns and
        nothing refers to any longer.
        """
        if sd_hashes is None:
            candidates = [str(sd) for (sd,) in self._db.execute("SELECT sd_hash FROM owned_stream")]
        else:
            candidates = list(dict.fromkeys(sd_hashes))
        return [sd for sd in candidates if self.is_owned(sd) and not self.is_referenced(sd)]

    def forget_stream(self, sd_hash: str) -> None:
        """
        The stream C{sd_hash} was removed from the blob store.
        """
        self._db.execute("DELETE FROM owned_stream WHERE sd_hash = ?", (sd_hash,))

    # drafts: streams being made or brought in

    def begin_draft(self, now: float) -> int:
        """
        Start a draft; return its id.
        """
        cursor = self._db.execute("INSERT INTO draft (started) VALUES (?)", (now,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def note_blob(self, draft: int, blob_hash: str) -> None:
        """
        The draft is about to write the blob C{blob_hash} (committed before
        this returns).
        """
        self._db.execute("INSERT OR IGNORE INTO draft_blob (draft, blob_hash) VALUES (?, ?)",
                         (draft, blob_hash))

    def note_stream(self, draft: int, sd_hash: str) -> None:
        """
        The draft is about to record the stream C{sd_hash} in the blob
        store (committed before this returns).
        """
        self._db.execute("INSERT OR IGNORE INTO draft_stream (draft, sd_hash) VALUES (?, ?)",
                         (draft, sd_hash))

    def drafts(self) -> list[int]:
        """
        The drafts not finished nor forgotten, oldest first.
        """
        return [int(draft) for (draft,) in self._db.execute("SELECT id FROM draft ORDER BY id")]

    def draft_names(self, draft: int) -> tuple[list[str], list[str]]:
        """
        The blobs and the streams the draft noted.
        """
        blobs = [str(h) for (h,) in self._db.execute(
            "SELECT blob_hash FROM draft_blob WHERE draft = ? ORDER BY blob_hash", (draft,))]
        streams = [str(h) for (h,) in self._db.execute(
            "SELECT sd_hash FROM draft_stream WHERE draft = ? ORDER BY sd_hash", (draft,))]
        return blobs, streams

    def finish_draft(self, draft: int, sd_hash: str) -> None:
        """
        The draft is the whole stream C{sd_hash}: the gateway owns it (so
        that it goes once nothing names it), and the draft is forgotten.
        """
        with transaction(self._db, "BEGIN IMMEDIATE"):
            self._db.execute("INSERT OR IGNORE INTO owned_stream (sd_hash) VALUES (?)",
                             (sd_hash,))
            self._db.execute("DELETE FROM draft WHERE id = ?", (draft,))

    def forget_draft(self, draft: int) -> None:
        """
        Forget a draft whose blobs and streams are gone.
        """
        self._db.execute("DELETE FROM draft WHERE id = ?", (draft,))
