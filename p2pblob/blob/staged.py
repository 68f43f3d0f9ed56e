"""
Receiving a blob from the network without hashing on the reactor thread.

A L{StagedBlobWriter} copies the bytes into one blob-sized buffer as they
arrive (cheap); once all C{length} bytes are in, the store hashes and writes
them in its worker threads (C{put_blob} with C{expected_hash}), where hashlib
releases the GIL.  Bytes that do not hash to the blob's name are never
stored.  The buffer goes back to its pool when the store is done with it,
or, when the writer was given L{HeldBlobs}, is kept there for whoever reads
the blob next (a download's blob handler), which saves reading it back from
disk.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._buffers import Buffer, BufferPool
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import (
    BlobIncompleteError,
    BlobTooLargeError,
    BlobWriteCancelledError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["HeldBlobs", "StagedBlobWriter", "blob_buffers"]


def blob_buffers(keep: int = 8) -> BufferPool:
    """
    A pool of buffers big enough for any blob.
    """
    return BufferPool(MAX_BLOB_SIZE, keep)


class HeldBlobs:
    """
    Verified blobs kept in the buffers they arrived in until they are read.

    At most C{limit} are held.  When a blob comes and the limit is reached,
    the one an in-order reader needs last (the highest C{order}) is let go
    (it is read from the store instead), so what stays is what is needed
    soonest.  Use on the reactor thread.

    @param order: each blob's place in the order it is read (its blob
        number); blobs it does not know come last.
    """

    def __init__(
        self, buffers: BufferPool, limit: int, order: Callable[[str], int | None] | None = None
    ) -> None:
        self._buffers = buffers
        self._limit = limit
        self._order = order
        self._held: dict[str, tuple[Buffer, int]] = {}
        self._taken: list[Callable[[], None]] = []

    def when_taken(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener} whenever blobs stop being held (taken or cleared).
        """
        self._taken.append(listener)

    def _notify(self) -> None:
        for listener in self._taken:
            listener()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, blob_hash: object) -> bool:
        return blob_hash in self._held

    def _rank(self, blob_hash: str) -> float:
        place = self._order(blob_hash) if self._order is not None else None
        return float("inf") if place is None else place

    def hold(self, blob_hash: str, buffer: Buffer, length: int) -> None:
        """
        Keep C{buffer}, whose first C{length} bytes are the verified blob
        C{blob_hash}, or give it back to the pool if there is no room.
        """
        previous = self._held.pop(blob_hash, None)
        if previous is not None:
            self._buffers.release(previous[0])
        if self._limit <= 0:
            self._buffers.release(buffer)
            return
        if len(self._held) >= self._limit:
            last = max(self._held, key=self._rank)
            if self._rank(last) <= self._rank(blob_hash):
                self._buffers.release(buffer)
                return
            self._buffers.release(self._held.pop(last)[0])
        self._held[blob_hash] = (buffer, length)

    def take(self, blob_hash: str) -> tuple[Buffer, int] | None:
        """
        The buffer holding C{blob_hash} and the blob's length, if it is held;
        it is the caller's until it gives it back with L{release}.
        """
        taken = self._held.pop(blob_hash, None)
        if taken is not None:
            self._notify()
        return taken

    def release(self, buffer: Buffer) -> None:
        self._buffers.release(buffer)

    def clear(self) -> None:
        """
        Give every held buffer back to the pool.
        """
        for buffer, _ in self._held.values():
            self._buffers.release(buffer)
        self._held.clear()
        self._notify()


@implementer(IBlobWriter)
class StagedBlobWriter:
    """
    One blob arriving from a peer, held in memory until it is complete, then
    verified and stored by C{store}.

    @param held: where to keep the blob's buffer once it is stored, if
        anywhere.
    """

    def __init__(
        self,
        store: IBlobStore,
        blob_hash: str,
        length: int,
        buffers: BufferPool,
        held: HeldBlobs | None = None,
    ) -> None:
        if not 0 <= length <= MAX_BLOB_SIZE:
            raise BlobTooLargeError(blob_hash, length, MAX_BLOB_SIZE)
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[IBlob] = Deferred()
        self._store = store
        self._buffers = buffers
        self._held = held
        self._buffer: Buffer | None = buffers.acquire()
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
        if self._held is not None and self._buffer is not None and not isinstance(result, Failure):
            self._held.hold(self.blob_hash, self._buffer, self.length)
            self._buffer = None
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
