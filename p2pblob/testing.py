"""
In-memory fakes of p2pblob's contracts, shipped in the package so that
plugin authors and p2pblob's own tests can exercise code that needs a blob
store without touching the disk or running threads.

L{MemoryBlobStore} provides L{IBlobStore} with the observable behaviour of
the disk store (L{p2pblob.blob.store.BlobStore}): a blob is visible only once
its bytes have been verified against its name; racing writers of one blob are
settled by the first verified copy; the disk-use limit is enforced by
evicting the blobs of finished, unpinned downloads, oldest first.  Every
L{Deferred} it returns has already fired.  C{tests/blob/test_conformance.py}
runs the same tests against both stores.

Each fake is checked against its interface with
L{zope.interface.verify.verifyClass} right after its definition, so a fake
that drifts from its contract fails at import.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BufferedIOBase

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.blob import hashing
from p2pblob.blob._index import ROLE_DOWNLOADED, ROLE_PUBLISHED
from p2pblob.blob.hashing import MAX_BLOB_SIZE, check_blob_hash, new_hasher
from p2pblob.errors import (
    BlobError,
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobNotFoundError,
    BlobTooLargeError,
    BlobWriteCancelledError,
    DiskLimitError,
    InvalidBlobHashError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["MemoryBlob", "MemoryBlobStore", "MemoryBlobWriter"]


@implementer(IBlob)
class MemoryBlob:
    """
    A verified blob held by a L{MemoryBlobStore}.

    Like a blob on disk, it reads whatever its store holds now: after the
    blob is deleted, reading fails with L{BlobNotFoundError}.
    """

    def __init__(self, store: MemoryBlobStore, blob_hash: str, length: int) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self._store = store

    def __repr__(self) -> str:
        return f"<MemoryBlob {self.blob_hash[:16]} {self.length} bytes>"

    def open_for_reading(self) -> BufferedIOBase:
        return io.BytesIO(self._store._bytes_of(self.blob_hash))

    def read(self) -> Deferred[bytes]:
        return self._store.read_blob(self.blob_hash)


verifyClass(IBlob, MemoryBlob)


class _State(enum.Enum):
    RECEIVING = "receiving"
    VERIFIED = "verified"
    FAILED = "failed"


@implementer(IBlobWriter)
class MemoryBlobWriter:
    """
    One write of one blob into a L{MemoryBlobStore}; obtain it from
    L{MemoryBlobStore.open_writer}.

    receiving --(length bytes, hash ok)--> verified
        |
        +--(too long, bad hash, close short, cancel)--> failed

    The store commits a verified blob at once, so there is no committing
    state to wait in.
    """

    def __init__(self, store: MemoryBlobStore, blob_hash: str, length: int) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[IBlob] = Deferred()
        self._store = store
        self._hasher = new_hasher()
        self._chunks: list[bytes] = []
        self._state = _State.RECEIVING

    def __repr__(self) -> str:
        return (
            f"<MemoryBlobWriter {self.blob_hash[:16]} {self._state.value} "
            f"{self.received}/{self.length}>"
        )

    @property
    def state(self) -> str:
        """
        C{"receiving"}, C{"verified"} or C{"failed"}.
        """
        return self._state.value

    def write(self, data: bytes) -> None:
        if self._state is not _State.RECEIVING:
            return
        total = self.received + len(data)
        if total > self.length:
            error = BlobTooLargeError(self.blob_hash, total, self.length)
            self._fail(error)
            raise error
        self._chunks.append(bytes(data))
        self._hasher.update(data)
        self.received = total
        if total == self.length:
            self._verify()

    def close(self) -> None:
        if self._state is _State.RECEIVING:
            self._fail(BlobIncompleteError(self.blob_hash, self.received, self.length))

    def cancel(self) -> None:
        if self._state is _State.RECEIVING:
            self._fail(
                BlobWriteCancelledError(
                    self.blob_hash, f"write of blob {self.blob_hash[:16]}… cancelled"
                )
            )

    # called by the store

    def _verify(self) -> None:
        digest = self._hasher.hexdigest()
        if digest != self.blob_hash:
            self._fail(BlobHashMismatchError(self.blob_hash, digest))
            return
        data = b"".join(self._chunks)
        self._chunks = []
        self._store._writer_verified(self, data)

    def _succeed(self, blob: IBlob) -> None:
        if self._state is not _State.RECEIVING:
            return
        self._state = _State.VERIFIED
        self._store._writer_done(self)
        self.finished.callback(blob)

    def _fail(self, error: BlobError) -> None:
        if self._state is not _State.RECEIVING:
            return
        self._state = _State.FAILED
        self._chunks = []
        self._store._writer_done(self)
        self.finished.errback(error)


verifyClass(IBlobWriter, MemoryBlobWriter)


@dataclass
class _Stream:
    role: str
    blobs: dict[str, None] = field(default_factory=dict)  # an ordered set
    finished: bool = False
    pinned: bool = False

    def keeps(self) -> bool:
        """
        Whether this stream forbids evicting its blobs.
        """
        return self.role == ROLE_PUBLISHED or not self.finished or self.pinned


@implementer(IBlobStore)
class MemoryBlobStore:
    """
    Blobs in a dictionary.

    Blobs are evicted in the order they were stored, the order the disk
    store follows when its clock does not move between two blobs.

    @param disk_limit: bytes of blobs allowed, or L{None} for no limit.
    """

    def __init__(self, disk_limit: int | None = None) -> None:
        self.disk_limit = disk_limit
        # blob hash -> length, in the order the blobs were stored (oldest
        # first), and blob hash -> the bytes held, which corrupt() may damage
        self._lengths: dict[str, int] = {}
        self._data: dict[str, bytes] = {}
        self._stored = 0
        self._reserved = 0
        self._writers: dict[str, list[MemoryBlobWriter]] = {}
        self._streams: dict[str, _Stream] = {}

    # helpers for tests

    def corrupt(self, blob_hash: str, data: bytes) -> None:
        """
        Replace the bytes held for a stored blob with C{data}, as a failing
        disk would, without telling the store: the blob stays listed, and
        reading it gives C{data} until L{check_blob} finds the damage.

        @raise BlobNotFoundError: the store does not hold the blob.
        """
        if blob_hash not in self._lengths:
            raise BlobNotFoundError(blob_hash)
        self._data[blob_hash] = bytes(data)

    # reading

    def has_blob(self, blob_hash: str) -> bool:
        return blob_hash in self._lengths

    def get_blob(self, blob_hash: str) -> MemoryBlob:
        length = self._lengths.get(blob_hash)
        if length is None:
            raise BlobNotFoundError(blob_hash)
        return MemoryBlob(self, blob_hash, length)

    def read_blob(self, blob_hash: str) -> Deferred[bytes]:
        try:
            return succeed(self._bytes_of(blob_hash))
        except BlobNotFoundError as e:
            return fail(e)

    def verified_blobs(self) -> Deferred[list[str]]:
        return succeed(list(self._lengths))

    def used_bytes(self) -> int:
        return self._stored + self._reserved

    def check_blob(self, blob_hash: str) -> Deferred[str]:
        length = self._lengths.get(blob_hash)
        if length is None:
            return succeed("missing")
        data = self._data[blob_hash]
        if len(data) == length and hashing.blob_hash(data) == blob_hash:
            return succeed("ok")
        self._forget([blob_hash])
        return succeed("corrupt")

    # writing

    def open_writer(self, blob_hash: str, length: int) -> MemoryBlobWriter:
        check_blob_hash(blob_hash)
        if not 0 <= length <= MAX_BLOB_SIZE:
            raise BlobTooLargeError(blob_hash, length, MAX_BLOB_SIZE)
        writer = MemoryBlobWriter(self, blob_hash, length)
        if blob_hash in self._lengths:
            writer.cancel()
            return writer
        self._reserve(length)
        self._writers.setdefault(blob_hash, []).append(writer)
        if length == 0:
            writer._verify()
        return writer

    def put_blob(self, data: bytes | bytearray | memoryview) -> Deferred[IBlob]:
        if len(data) > MAX_BLOB_SIZE:
            return fail(BlobTooLargeError("(unhashed)", len(data), MAX_BLOB_SIZE))
        content = bytes(data)
        name = hashing.blob_hash(content)
        if name not in self._lengths:
            try:
                self._reserve(len(content))
            except DiskLimitError as e:
                return fail(e)
            self._reserved -= len(content)
            self._add(name, content)
        self._cancel_writers(name)
        return succeed(self.get_blob(name))

    def delete_blobs(self, blob_hashes: Iterable[str]) -> Deferred[None]:
        self._forget(blob_hashes)
        return succeed(None)

    # streams

    def add_stream(self, sd_hash: str, blob_hashes: list[str], role: str) -> Deferred[None]:
        if role not in (ROLE_PUBLISHED, ROLE_DOWNLOADED):
            raise ValueError(f"unknown stream role {role!r}")
        try:
            for name in [sd_hash, *blob_hashes]:
                check_blob_hash(name)
        except InvalidBlobHashError as e:
            return fail(e)
        stream = self._streams.get(sd_hash)
        if stream is None:
            stream = self._streams[sd_hash] = _Stream(role)
        elif role == ROLE_PUBLISHED:
            stream.role = ROLE_PUBLISHED
        for name in blob_hashes:
            stream.blobs.setdefault(name, None)
        return succeed(None)

    def set_stream_finished(self, sd_hash: str) -> Deferred[None]:
        stream = self._streams.get(sd_hash)
        if stream is not None:
            stream.finished = True
        return succeed(None)

    def pin_stream(self, sd_hash: str, pinned: bool) -> Deferred[None]:
        stream = self._streams.get(sd_hash)
        if stream is not None:
            stream.pinned = pinned
        return succeed(None)

    def remove_stream(self, sd_hash: str, delete_blobs: bool) -> Deferred[None]:
        stream = self._streams.pop(sd_hash, None)
        if stream is None or not delete_blobs:
            return succeed(None)
        orphans = [
            name
            for name in stream.blobs
            if not any(name in other.blobs for other in self._streams.values())
        ]
        return self.delete_blobs(orphans)

    # internals shared with MemoryBlob and MemoryBlobWriter

    def _bytes_of(self, blob_hash: str) -> bytes:
        if blob_hash not in self._lengths:
            raise BlobNotFoundError(blob_hash)
        return self._data[blob_hash]

    def _add(self, blob_hash: str, data: bytes) -> None:
        self._lengths[blob_hash] = len(data)
        self._data[blob_hash] = data
        self._stored += len(data)

    def _forget(self, blob_hashes: Iterable[str]) -> None:
        for name in blob_hashes:
            length = self._lengths.pop(name, None)
            if length is not None:
                del self._data[name]
                self._stored -= length

    def _evictable(self, blob_hash: str) -> bool:
        streams = [s for s in self._streams.values() if blob_hash in s.blobs]
        return bool(streams) and not any(s.keeps() for s in streams)

    def _reserve(self, length: int) -> None:
        limit = self.disk_limit
        if limit is not None and self.used_bytes() + length > limit:
            self._evict(self.used_bytes() + length - limit)
            if self.used_bytes() + length > limit:
                raise DiskLimitError(length, self.used_bytes(), limit)
        self._reserved += length

    def _evict(self, needed: int) -> None:
        # Like the disk store, this evicts what it can even when that is not
        # enough, and the write is then refused.
        victims: list[str] = []
        freed = 0
        for name, length in self._lengths.items():
            if freed >= needed:
                break
            if self._evictable(name):
                victims.append(name)
                freed += length
        self._forget(victims)

    def _cancel_writers(self, blob_hash: str) -> None:
        for writer in list(self._writers.get(blob_hash, ())):
            writer.cancel()

    def _writer_verified(self, writer: MemoryBlobWriter, data: bytes) -> None:
        """
        Keep the first verified copy of a blob, hand it to the writer that
        made it and cancel every other writer of the same blob.
        """
        if writer.blob_hash in self._lengths:
            writer.cancel()
            return
        self._add(writer.blob_hash, data)
        writer._succeed(self.get_blob(writer.blob_hash))
        self._cancel_writers(writer.blob_hash)

    def _writer_done(self, writer: MemoryBlobWriter) -> None:
        writers = self._writers.get(writer.blob_hash)
        if writers is not None and writer in writers:
            writers.remove(writer)
            self._reserved -= writer.length
            if not writers:
                del self._writers[writer.blob_hash]


verifyClass(IBlobStore, MemoryBlobStore)
