"""
Receiving one blob from one source, verifying as the bytes arrive.

A L{BlobWriter} hashes each chunk and hands it to a sink (a temporary file in
the blob directory for the disk store, a list of chunks for the in-memory
one); once exactly C{length} bytes are in and their sha384 matches the name,
its owner (the store) commits the sink and makes the blob visible.  Until then
nothing can read it.  Both stores use this one class, so the rules of what a
writer accepts and which error a bad transfer gets are written once.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import BinaryIO, Protocol

from twisted.internet.defer import Deferred
from zope.interface import implementer

from p2pblob.blob._files import remove_quietly
from p2pblob.blob.hashing import new_hasher
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobTooLargeError,
    BlobWriteCancelledError,
)
from p2pblob.interfaces import IBlob, IBlobWriter

__all__ = ["BlobWriter", "ChunkSink", "Sink", "TempFileSink", "WriterOwner"]


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


class TempFileSink:
    """
    Bytes of one blob write in a temporary file of the blob directory.
    """

    def __init__(self, temp: Path, file: BinaryIO) -> None:
        self.temp = temp
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def discard(self) -> None:
        self.file.close()
        remove_quietly(self.temp)


class ChunkSink:
    """
    Bytes of one blob write kept in memory.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._chunks.append(bytes(data))

    def discard(self) -> None:
        self._chunks = []

    def data(self) -> bytes:
        return b"".join(self._chunks)


class WriterOwner(Protocol):
    """
    What a store provides to the writers it opens.
    """

    def _commit(self, writer: BlobWriter) -> None:
        """
        The writer's bytes are complete and verified: make them durable and
        visible, then call C{writer._succeed} (or C{_fail}, or C{cancel}).
        """

    def _is_committing(self, writer: BlobWriter) -> bool:
        """
        Whether the store currently holds the writer's sink for a commit (it
        then cleans the sink up itself).
        """

    def _writer_done(self, writer: BlobWriter) -> None:
        """
        The writer reached its end, whatever it was: release what it held.
        """


class _State(enum.Enum):
    RECEIVING = "receiving"
    COMMITTING = "committing"
    VERIFIED = "verified"
    FAILED = "failed"


@implementer(IBlobWriter)
class BlobWriter:
    """
    One write of one blob, owned by a store.

    receiving --(length bytes, hash ok)--> committing --(durable)--> verified
        |                                      |
        +--(too long, bad hash, close, cancel)-+-----------------> failed
    """

    def __init__(self, owner: WriterOwner, blob_hash: str, length: int, sink: Sink) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[IBlob] = Deferred()
        self.sink = sink
        self._owner = owner
        self._hasher = new_hasher()
        self._state = _State.RECEIVING

    def __repr__(self) -> str:
        return (
            f"<BlobWriter {self.blob_hash[:16]} {self._state.value} "
            f"{self.received}/{self.length}>"
        )

    @property
    def state(self) -> str:
        return self._state.value

    def write(self, data: bytes) -> None:
        if self._state is not _State.RECEIVING:
            return
        total = self.received + len(data)
        if total > self.length:
            error = BlobTooLargeError(self.blob_hash, total, self.length)
            self._fail(error)
            raise error
        self.sink.write(data)
        self._hasher.update(data)
        self.received = total
        if total == self.length:
            self._verify()

    def close(self) -> None:
        if self._state is _State.RECEIVING:
            self._fail(BlobIncompleteError(self.blob_hash, self.received, self.length))

    def cancel(self) -> None:
        if self._state in (_State.RECEIVING, _State.COMMITTING):
            self._fail(
                BlobWriteCancelledError(
                    self.blob_hash, f"write of blob {self.blob_hash[:16]}… cancelled"
                )
            )

    # called by the owner

    def _verify(self) -> None:
        self._state = _State.COMMITTING
        digest = self._hasher.hexdigest()
        if digest != self.blob_hash:
            self._fail(BlobHashMismatchError(self.blob_hash, digest))
            return
        self._owner._commit(self)

    def _succeed(self, blob: IBlob) -> None:
        if self._state is not _State.COMMITTING:
            return
        self._state = _State.VERIFIED
        self._owner._writer_done(self)
        self.finished.callback(blob)

    def _fail(self, error: Exception) -> None:
        if self._state in (_State.VERIFIED, _State.FAILED):
            return
        committing = self._state is _State.COMMITTING
        self._state = _State.FAILED
        if not committing or not self._owner._is_committing(self):
            self.sink.discard()
        self._owner._writer_done(self)
        self.finished.errback(error)
