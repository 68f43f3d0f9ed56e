"""
In-memory fakes of p2pblob's contracts, shipped in the package so that
plugin authors and p2pblob's own tests can exercise code that needs a blob
store without touching the disk or running threads.

L{MemoryBlobStore} provides L{IBlobStore} with the observable behaviour of
the disk store (L{p2pblob.blob.store.BlobStore}): a blob is visible only once
its bytes have been verified against its name; racing writers of one blob are
settled by the first verified copy; the disk-use limit is enforced by
evicting the blobs of finished, unpinned downloads, oldest first.  Every
L{Deferred} it returns has already fired.  Its writers are the disk store's
own L{BlobWriter} (writing into memory) and its space accounting is the same
L{p2pblob.blob._space.SpaceKeeper}, so only the storage differs.  C{tests/blob/test_conformance.py}
runs the same tests against both stores.

Each fake is checked against its interface with
L{zope.interface.verify.verifyClass} right after its definition, so a fake
that drifts from its contract fails at import.

L{CorruptingBlobStore} wraps a real store for tests of hostile peers: the
blobs it hands out read back with one byte changed.

L{MemoryStorageBackend} provides L{IStorageBackend} (the backend of the
C{memory} storage plugin) with files in a dictionary; tests can make any
of its methods fail with L{ServiceError} a chosen number of times, or
behave as if it lacked an optional method.  L{MemoryStoragePlugin} is a
storage plugin that hands out one such backend, so that a test can drop a
L{p2pblob.storage.host.StorageHost} and make another over the same files,
as a node that crashed would.  L{MemorySource} is a source of journaled
uploads (L{p2pblob.storage.transfer.ITransferSource}) whose content a test
changes or removes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BufferedIOBase

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.blob import hashing
from p2pblob.blob._index import ROLE_DOWNLOADED, ROLE_PUBLISHED
from p2pblob.blob._space import SpaceKeeper
from p2pblob.blob.hashing import MAX_BLOB_SIZE, check_blob_hash
from p2pblob.blob.proxy import BlobStoreProxy
from p2pblob.blob.writer import BlobWriter, ChunkSink
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobNotFoundError,
    BlobTooLargeError,
    DiskLimitError,
    DriverError,
    InvalidBlobHashError,
    ServiceError,
    SourceGoneError,
    StorageKeyNotFoundError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IStorageBackend, IStoragePlugin
from p2pblob.storage.keys import split_key
from p2pblob.storage.options import Option
from p2pblob.storage.transfer import ITransferSource

__all__ = [
    "CorruptingBlobStore",
    "MemoryBlob",
    "MemoryBlobStore",
    "MemorySource",
    "MemoryStorageBackend",
    "MemoryStoragePlugin",
    "make_memory_backend",
]


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

    def open(self) -> Deferred[BufferedIOBase]:
        return maybeDeferred(self.open_for_reading)

    def read(self) -> Deferred[bytes]:
        return self._store.read_blob(self.blob_hash)


verifyClass(IBlob, MemoryBlob)


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
class MemoryBlobStore(SpaceKeeper):
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
        self._writers: dict[str, set[BlobWriter]] = {}
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

    def open_writer(self, blob_hash: str, length: int) -> BlobWriter:
        check_blob_hash(blob_hash)
        if not 0 <= length <= MAX_BLOB_SIZE:
            raise BlobTooLargeError(blob_hash, length, MAX_BLOB_SIZE)
        writer = BlobWriter(self, blob_hash, length, ChunkSink())
        if blob_hash in self._lengths:
            writer.cancel()
            return writer
        self._reserve(length)
        self._add_writer(writer)
        if length == 0:
            writer._verify()
        return writer

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        content = bytes(data)
        name = hashing.blob_hash(content)
        if expected_hash is not None and name != expected_hash:
            return fail(BlobHashMismatchError(expected_hash, name))
        if len(data) > MAX_BLOB_SIZE:
            return fail(BlobTooLargeError(name, len(data), MAX_BLOB_SIZE))
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

    # internals

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

    def _eviction_candidates(self) -> Iterable[tuple[str, int]]:
        for name, length in self._lengths.items():
            streams = [s for s in self._streams.values() if name in s.blobs]
            if streams and not any(s.keeps() for s in streams):
                yield name, length

    def _drop_evicted(self, blob_hashes: list[str]) -> None:
        self._forget(blob_hashes)

    # the writers' owner

    def _commit(self, writer: BlobWriter) -> None:
        """
        Keep the first verified copy of a blob, hand it to the writer that
        made it and cancel every other writer of the same blob.
        """
        if writer.blob_hash in self._lengths:
            writer.cancel()
            return
        sink = writer.sink
        assert isinstance(sink, ChunkSink)
        self._add(writer.blob_hash, sink.data())
        writer._succeed(self.get_blob(writer.blob_hash))
        self._cancel_writers(writer.blob_hash)

    def _is_committing(self, writer: BlobWriter) -> bool:
        return False  # commits finish at once

verifyClass(IBlobStore, MemoryBlobStore)


@implementer(IBlob)
class _CorruptBlob:
    """
    A blob that reads back damaged: its last byte is inverted.
    """

    def __init__(self, blob: IBlob) -> None:
        self._blob = blob
        self.blob_hash = blob.blob_hash
        self.length = blob.length

    def _damaged(self, data: bytes) -> bytes:
        if not data:
            return data
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    def open_for_reading(self) -> BufferedIOBase:
        with self._blob.open_for_reading() as f:
            return io.BytesIO(self._damaged(f.read()))

    def open(self) -> Deferred[BufferedIOBase]:
        return self.read().addCallback(io.BytesIO)

    def read(self) -> Deferred[bytes]:
        return self._blob.read().addCallback(self._damaged)


verifyClass(IBlob, _CorruptBlob)


class CorruptingBlobStore(BlobStoreProxy):
    """
    Another store, except that every blob it hands out reads back with a
    byte changed (what a faulty or hostile peer would serve).  Used by the
    node's testing-only C{--corrupt-uploads} option.
    """

    def get_blob(self, blob_hash: str) -> IBlob:
        return _CorruptBlob(self._store.get_blob(blob_hash))

    def read_blob(self, blob_hash: str) -> Deferred[bytes]:
        return self.get_blob(blob_hash).read()


verifyClass(IBlobStore, CorruptingBlobStore)


@dataclass
class _Upload:
    data: bytearray = field(default_factory=bytearray)
    size: int | None = None


@implementer(IStorageBackend)
class MemoryStorageBackend:
    """
    Files in a dictionary; uploads are staged apart and become files only
    when they end.

    @ivar files: the files stored, by key.
    @ivar calls: the name of every method called, in order (each try of a
        retried call counts).
    """

    def __init__(self, without: Iterable[str] = (), minimum_chunk_size: int = 1) -> None:
        """
        @param without: the optional methods (C{get_chunk} or C{get_file},
            C{upload_file}, C{move_file}, C{set_chunk_size}) this backend
            behaves as if it lacked: they raise C{NotImplementedError}.
        @param minimum_chunk_size: the smallest chunk size it accepts (as an
            S3 backend needs 5 MiB); L{set_chunk_size} raises smaller ones to
            it.
        """
        self.files: dict[str, bytes] = {}
        self.calls: list[str] = []
        self._uploads: dict[str, _Upload] = {}
        self._failures: dict[str, list[Exception]] = {}
        self._without = frozenset(without)
        self._minimum_chunk_size = minimum_chunk_size

    def fail(self, call: str, times: int = 1, error: Exception | None = None) -> None:
        """
        Make the next C{times} calls of a method fail.

        @param call: the method's name.
        @param times: how many calls fail.
        @param error: what they raise; by default a L{ServiceError}.
        """
        if error is None:
            error = ServiceError(f"{call} failed on purpose")
        self._failures.setdefault(call, []).extend([error] * times)

    def uploading(self) -> list[str]:
        """
        The keys of the uploads in progress.
        """
        return sorted(self._uploads)

    def _enter(self, call: str, *keys: str) -> None:
        """
        Record a call, check its keys, and raise what it should raise first.
        """
        self.calls.append(call)
        failures = self._failures.get(call)
        if failures:
            raise failures.pop(0)
        if call in self._without:
            raise NotImplementedError(call)
        for key in keys:
            split_key(key)

    def _upload(self, key: str) -> _Upload:
        try:
            return self._uploads[key]
        except KeyError:
            raise DriverError(f"no upload of {key!r:.200} is in progress") from None

    def _file(self, key: str) -> bytes:
        try:
            return self.files[key]
        except KeyError:
            raise StorageKeyNotFoundError(key) from None

    def set_chunk_size(self, size: int) -> int:
        self._enter("set_chunk_size")
        return max(size, self._minimum_chunk_size)

    def get_chunk(self, key: str, offset: int, size: int) -> bytes:
        self._enter("get_chunk", key)
        if offset < 0 or size < 0:
            raise DriverError(f"cannot read {size} bytes at offset {offset}")
        return self._file(key)[offset : offset + size]

    def get_file(self, key: str) -> bytes:
        self._enter("get_file", key)
        return self._file(key)

    def start_upload(self, key: str, size: int | None) -> None:
        self._enter("start_upload", key)
        self._uploads[key] = _Upload(size=size)

    def upload_chunk(self, key: str, offset: int, data: bytes) -> None:
        self._enter("upload_chunk", key)
        upload = self._upload(key)
        if not 0 <= offset <= len(upload.data):
            raise DriverError(
                f"a chunk of {key!r:.200} at offset {offset} would leave a hole "
                f"after the {len(upload.data)} bytes written"
            )
        upload.data[offset : offset + len(data)] = data

    def upload_file(self, key: str, data: bytes) -> None:
        self._enter("upload_file", key)
        self.files[key] = bytes(data)

    def end_upload(self, key: str) -> None:
        self._enter("end_upload", key)
        upload = self._upload(key)
        if upload.size is not None and len(upload.data) != upload.size:
            raise DriverError(
                f"the upload of {key!r:.200} has {len(upload.data)} bytes, "
                f"not the {upload.size} announced"
            )
        self.files[key] = bytes(upload.data)
        del self._uploads[key]

    def abort_upload(self, key: str) -> None:
        self._enter("abort_upload", key)
        self._uploads.pop(key, None)

    def restart_upload(self, key: str, offset: int, upload_id: str | None = None) -> int:
        self._enter("restart_upload", key)
        upload = self._uploads.setdefault(key, _Upload())
        return len(upload.data)

    def delete_file(self, key: str) -> None:
        self._enter("delete_file", key)
        self.files.pop(key, None)

    def move_file(self, old_key: str, new_key: str) -> None:
        self._enter("move_file", old_key, new_key)
        data = self._file(old_key)
        del self.files[old_key]
        self.files[new_key] = data

    def exists(self, key: str) -> bool:
        self._enter("exists", key)
        return key in self.files

    def size(self, key: str) -> int | None:
        self._enter("size", key)
        data = self.files.get(key)
        return None if data is None else len(data)

    def close(self) -> None:
        self._enter("close")


verifyClass(IStorageBackend, MemoryStorageBackend)


def make_memory_backend(options: dict[str, object], clock: IReactorTime) -> MemoryStorageBackend:
    """
    Make the backend of the C{memory} storage plugin registered by the
    dropin: a new, empty L{MemoryStorageBackend} each time.
    """
    return MemoryStorageBackend()


@implementer(IPlugin, IStoragePlugin)
class MemoryStoragePlugin:
    """
    A storage plugin named C{memory} whose backend is always the same
    L{MemoryStorageBackend}.

    @ivar memory: that backend.
    """

    name = "memory"
    options: tuple[Option, ...] = ()
    blocking = False

    def __init__(self, memory: MemoryStorageBackend | None = None) -> None:
        self.memory = MemoryStorageBackend() if memory is None else memory

    def backend(self, options: dict[str, object], clock: IReactorTime) -> MemoryStorageBackend:
        return self.memory


verifyClass(IStoragePlugin, MemoryStoragePlugin)


@implementer(ITransferSource)
class MemorySource:
    """
    A transfer source (L{p2pblob.storage.transfer.ITransferSource}) whose
    content is in memory: a test changes it with L{replace} and makes it
    vanish with L{remove}.

    @ivar reads: the C{(offset, size)} of every read, in order.
    """

    def __init__(self, content: bytes, description: str = "memory:source") -> None:
        self.description = description
        self.size = 0
        self.reads: list[tuple[int, int]] = []
        self._content = bytes(content)
        self._version = 1
        self._gone = False

    def replace(self, content: bytes) -> None:
        """
        Change the content: it has a new version.
        """
        self._content = bytes(content)
        self._version += 1

    def remove(self) -> None:
        """
        Make the source unreadable, as a deleted file is.
        """
        self._gone = True

    def _check(self) -> None:
        if self._gone:
            raise SourceGoneError(self.description, "it was removed")

    def version(self) -> Deferred[str]:
        try:
            self._check()
        except SourceGoneError:
            return fail()
        self.size = len(self._content)
        return succeed(str(self._version))

    def read(self, offset: int, size: int) -> Deferred[bytes]:
        try:
            self._check()
        except SourceGoneError:
            return fail()
        self.reads.append((offset, size))
        return succeed(self._content[offset : offset + size])


verifyClass(ITransferSource, MemorySource)
