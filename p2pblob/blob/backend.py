"""
A blob store whose blobs are kept by a storage plugin's backend (an S3
bucket, an SFTP server, any folder), with the index on the local disk.

L{BackendBlobStore} is the disk store (L{p2pblob.blob.store.BlobStore})
with every file operation replaced by a call to a
L{p2pblob.storage.host.StorageHost}: one file per blob, named by its hash.
A blob is checked against its hash before it is sent to the backend (the
writer hashes it as it arrives; L{put_blob} hashes it whole), and the index
records it only once the backend has stored all of it, so the index never
lists a blob the backend does not hold whole.  A blob the backend has lost
is forgotten when a read finds it missing.

Blobs are at most 2 MiB, so each is sent in one piece
(L{p2pblob.interfaces.IStorageBackend.upload_file}), which every backend
makes visible all at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from io import BufferedIOBase, BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from p2pblob._threads import BlockingRunner
from p2pblob.blob import _files
from p2pblob.blob._index import BlobIndex
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.store import BlobStore
from p2pblob.blob.writer import BlobWriter, ChunkSink
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobNotFoundError,
    BlobTooLargeError,
    P2PBlobError,
    StorageError,
    StorageKeyNotFoundError,
)
from p2pblob.interfaces import IBlob, IBlobStore
from p2pblob.storage.host import StorageHost

__all__ = ["BackendBlob", "BackendBlobStore"]

_log = Logger()


@implementer(IBlob)
class BackendBlob:
    """
    A verified blob kept by a storage backend.
    """

    def __init__(self, store: BackendBlobStore, blob_hash: str, length: int) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self._store = store

    def __repr__(self) -> str:
        return f"<BackendBlob {self.blob_hash[:16]} {self.length} bytes>"

    def open_for_reading(self) -> BufferedIOBase:
        if threadable.ioThread is None or isInIOThread():
            # On the reactor thread (or with no reactor running) only a
            # backend that answers at once can be read without blocking.
            return self._at_once()
        data: bytes = blockingCallFromThread(
            self._store.reactor, self._store.read_blob, self.blob_hash
        )
        return BytesIO(data)

    def _at_once(self) -> BufferedIOBase:
        got: list[bytes | Failure] = []
        reading = self._store.read_blob(self.blob_hash)
        reading.addBoth(got.append)
        if not got:
            reading.cancel()
            raise StorageError(
                f"blob {self.blob_hash[:16]} is kept by the {self._store.backend_name!r} "
                "storage backend: it cannot be read without blocking the reactor"
            )
        result = got[0]
        if isinstance(result, Failure):
            result.raiseException()
        assert isinstance(result, bytes)
        return BytesIO(result)

    def open(self) -> Deferred[BufferedIOBase]:
        return self._store.read_blob(self.blob_hash).addCallback(BytesIO)

    def read(self) -> Deferred[bytes]:
        return self._store.read_blob(self.blob_hash)


@implementer(IBlobStore)
class BackendBlobStore(BlobStore):
    """
    Blobs kept by a storage backend, indexed in a local SQLite file.

    @param reactor: the reactor: the clock of the index's time stamps, and
        what a worker thread asks to fetch a blob it opens
        (L{BackendBlob.open_for_reading}).
    @param run: runs the hashing of blobs off the reactor thread.
    @param host: the backend, as the node calls it.
    @param index_path: the SQLite index file, which must be this backend's
        alone: the blobs it lists are assumed to be in the backend.
    @param disk_limit: bytes of blobs allowed in the backend, or L{None}.
    """

    def __init__(
        self,
        reactor: Any,
        run: BlockingRunner,
        host: StorageHost,
        index_path: Path,
        disk_limit: int | None = None,
    ) -> None:
        # (no blob directory: every method that used one is replaced here)
        super().__init__(reactor, run, Path(), index_path, disk_limit)
        self.reactor = reactor
        self._host = host

    @property
    def backend_name(self) -> str:
        """
        The storage plugin's name.
        """
        return str(self._host.plugin.name)

    # life cycle

    async def start(self) -> _files.ScanResult:
        """
        Open the index and check that the backend answers (so that a wrong
        bucket or password stops the node at start, in words).

        The index is trusted: listing a bucket of millions of blobs at each
        start would cost more than finding a lost blob when it is read.

        @return: the blobs the index lists.
        """
        index = BlobIndex(self._index_path)
        try:
            held = index.blobs()
            await self._host.exists(next(iter(held), "p2pblob-start-check"))
        except BaseException:
            index.close()
            raise
        self._index = index
        self._lengths = dict(held)
        self._stored = sum(held.values())
        _log.info(
            "Blob store in the {plugin} storage backend: {count} blobs, {size} bytes",
            plugin=self.backend_name, count=len(held), size=self._stored,
        )
        return _files.ScanResult(present=dict(held))

    def stop(self) -> None:
        """
        Cancel the writes in progress and close the index.  (Every blob the
        index lists is already stored whole by the backend.)
        """
        for writers in list(self._writers.values()):
            for writer in list(writers):
                writer.cancel()
        if self._index is not None:
            self._index.close()
            self._index = None

    # reading

    def path_of(self, blob_hash: str) -> Path:
        raise StorageError(
            f"blob {blob_hash[:16]} is kept by the {self.backend_name!r} storage backend, "
            "not in a local file"
        )

    def get_blob(self, blob_hash: str) -> IBlob:
        length = self._lengths.get(blob_hash)
        if length is None:
            raise BlobNotFoundError(blob_hash)
        return BackendBlob(self, blob_hash, length)

    def read_blob(self, blob_hash: str) -> Deferred[bytes]:
        if blob_hash not in self._lengths:
            return fail(BlobNotFoundError(blob_hash))

        def missing(failure: Failure) -> Failure:
            if failure.check(StorageKeyNotFoundError):
                _log.warn(
                    "Blob {blob} is no longer in the {plugin} storage backend; forgotten",
                    blob=blob_hash, plugin=self.backend_name,
                )
                if blob_hash in self._lengths and self._index is not None:
                    self._forget([blob_hash])
                return Failure(BlobNotFoundError(blob_hash))
            return failure

        return self._host.get_file(blob_hash).addErrback(missing)

    def check_blob(self, blob_hash: str) -> Deferred[str]:
        async def check() -> str:
            length = self._lengths.get(blob_hash)
            if length is None:
                return "missing"
            try:
                data = await self.read_blob(blob_hash)
            except BlobNotFoundError:
                return "missing"
            digest = await self._run(_sha384, data)
            if digest == blob_hash and len(data) == length:
                return "ok"
            _log.warn(
                "Blob {blob} is corrupt in the {plugin} storage backend (size {size}, "
                "expected {length}); removed",
                blob=blob_hash, plugin=self.backend_name, size=len(data), length=length,
            )
            await self.delete_blobs([blob_hash])
            return "corrupt"

        return Deferred.fromCoroutine(check())

    # writing

    def _new_sink(self, blob_hash: str) -> ChunkSink:
        # (a blob is sent whole once verified: it is gathered in memory)
        return ChunkSink()

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        async def put() -> IBlob:
            blob_hash = await self._run(_sha384, data)
            if expected_hash is not None and blob_hash != expected_hash:
                raise BlobHashMismatchError(expected_hash, blob_hash)
            if len(data) > MAX_BLOB_SIZE:
                raise BlobTooLargeError(blob_hash, len(data), MAX_BLOB_SIZE)
            if blob_hash in self._lengths:
                return self.get_blob(blob_hash)
            await self._upload(blob_hash, bytes(data))
            return self.get_blob(blob_hash)

        return Deferred.fromCoroutine(put())

    async def _upload(self, blob_hash: str, data: bytes) -> None:
        """
        Send a verified blob to the backend, with its space reserved
        meanwhile, and record it once it is stored.
        """
        if self._index is None:
            raise StorageError("the blob store was stopped while storing a blob")
        self._reserve(len(data))
        try:
            await self._host.upload_file(blob_hash, data)
        except P2PBlobError:
            raise
        except Exception as e:
            raise StorageError(
                f"the {self.backend_name!r} storage backend could not store blob "
                f"{blob_hash[:16]}: {e}"
            ) from None
        finally:
            self._reserved -= len(data)
        if self._index is None:
            raise StorageError("the blob store was stopped while storing a blob")
        self._verified(blob_hash, len(data))

    def _persist(self, writer: BlobWriter) -> Deferred[None]:
        # the whole blob, in one piece: visible all at once
        sink = writer.sink
        assert isinstance(sink, ChunkSink)
        data = sink.data()
        sink.discard()
        return self._host.upload_file(writer.blob_hash, data)

    # removing

    def delete_blobs(self, blob_hashes: Iterable[str]) -> Deferred[None]:
        hashes = [h for h in blob_hashes if h in self._lengths]
        self._forget(hashes)
        return self._delete_files(hashes)

    def _drop_evicted(self, blob_hashes: list[str]) -> None:
        self._forget(blob_hashes)
        self._delete_files(blob_hashes)

    def _delete_files(self, blob_hashes: list[str]) -> Deferred[None]:
        """
        Remove blobs from the backend (already forgotten by the index: a
        blob whose removal fails is left behind unlisted, never listed and
        missing).
        """
        if not blob_hashes:
            return succeed(None)

        def report(results: list[tuple[bool, Any]]) -> None:
            failures = [r for ok, r in results if not ok]
            if failures:
                _log.warn(
                    "The {plugin} storage backend could not remove {count} blobs "
                    "({error}); they stay there, unlisted",
                    plugin=self.backend_name, count=len(failures), error=failures[0].value,
                )

        deletes = [self._host.delete_file(h) for h in blob_hashes]
        return DeferredList(deletes, consumeErrors=True).addCallback(report)


def _sha384(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha384(data).hexdigest()
