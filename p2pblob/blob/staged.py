"""
Receiving a blob from the network without hashing on the reactor thread.

A L{StagedBlobWriter} copies the bytes into one blob-sized buffer as they
arrive (cheap); once all C{length} bytes are in, the store hashes and writes
them in its worker threads (C{put_blob} with C{expected_hash}), where hashlib
releases the GIL.  Bytes that do not hash to the blob's name are never
stored.  The buffer goes back to its pool when the store is done with it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._buffers import BufferPool
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import (
    BlobIncompleteError,
    BlobTooLargeError,
    BlobWriteCancelledError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["StagedBlobWriter", "blob_buffers"]


def blob_buffers(keep: int = 8) -> BufferPool:
    """
    A pool of buffers big enough for any blob.
    """
    return BufferPool(MAX_BLOB_SIZE, keep)


@implementer(IBlobWriter)
class StagedBlobWriter:
    """
    One blob arriving from a peer, held in memory until it is complete, then
    verified and stored by C{store}.
    """

    def __init__(
        self, store: IBlobStore, blob_hash: str, length: int, buffers: BufferPool
    ) -> None:
        if not 0 <= length <= MAX_BLOB_SIZE:
            raise BlobTooLargeError(blob_hash, length, MAX_BLOB_SIZE)
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[IBlob] = Deferred()
        self._store = store
        self._buffers = buffers
        self._buffer: bytearray | None = buffers.acquire()
        self._view = memoryview(self._buffer)
        self._storing = False
        if length == 0:
            self._store_it()

    def __repr__(self) -> str:
        return f"<StagedBlobWriter {self.blob_hash[:16]} {self.received}/{self.length}>"

    def write(self, data: bytes) -> None:
        if self._buffer is None or self._storing:
            return
        end = self.received + len(data)
        if end > self.length:
            error = BlobTooLargeError(self.blob_hash, end, self.length)
            self._fail(error)
            raise error
        self._view[self.received : end] = data
        self.received = end
        if end == self.length:
            self._store_it()

    def close(self) -> None:
        if self._buffer is not None and not self._storing:
            self._fail(BlobIncompleteError(self.blob_hash, self.received, self.length))

    def cancel(self) -> None:
        if self.finished.called:
            return
        error = BlobWriteCancelledError(
            self.blob_hash, f"write of blob {self.blob_hash[:16]}… cancelled"
        )
        if self._storing:
            # the store still reads the buffer: it is let go in _stored
            self.finished.errback(error)
        elif self._buffer is not None:
            self._fail(error)

    def _store_it(self) -> None:
        self._storing = True
        stored = self._store.put_blob(
            self._view[: self.length], expected_hash=self.blob_hash
        )
        stored.addBoth(self._stored)

    def _stored(self, result: IBlob | Failure) -> None:
        self._release()
        if self.finished.called:
            return None  # cancelled meanwhile; what the store did stands
        if isinstance(result, Failure):
            self.finished.errback(result)
        else:
            self.finished.callback(result)

    def _fail(self, error: Exception) -> None:
        self._release()
        self.finished.errback(error)

    def _release(self) -> None:
        if self._buffer is not None:
            self._buffers.release(self._buffer)
            self._buffer = None
