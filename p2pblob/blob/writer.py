"""
Receiving one blob from one source, verifying as the bytes arrive.

A L{BlobWriter} hashes each chunk and appends it to a temporary file in the
blob directory; once exactly C{length} bytes are in and their sha384 matches
the name, its store makes the file durable and visible.  Until then nothing
can read it.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred
from zope.interface import implementer

from p2pblob.blob._files import remove_quietly
from p2pblob.blob.hashing import new_hasher
from p2pblob.errors import (
    BlobError,
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobTooLargeError,
    BlobWriteCancelledError,
)
from p2pblob.interfaces import IBlob, IBlobWriter

if TYPE_CHECKING:
    from p2pblob.blob.store import BlobStore

__all__ = ["BlobWriter"]


class _State(enum.Enum):
    RECEIVING = "receiving"
    COMMITTING = "committing"
    VERIFIED = "verified"
    FAILED = "failed"


@implementer(IBlobWriter)
class BlobWriter:
    """
    One write of one blob, owned by a L{BlobStore}.

    receiving --(length bytes, hash ok)--> committing --(durable)--> verified
        |                                      |
        +--(too long, bad hash, close, cancel)-+-----------------> failed
    """

    def __init__(
        self,
        store: BlobStore,
        blob_hash: str,
        length: int,
        temp: Path,
        file: BinaryIO,
    ) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[IBlob] = Deferred()
        self._store = store
        self._temp = temp
        self._file = file
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
        self._file.write(data)
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

    # called by the store

    def _verify(self) -> None:
        self._state = _State.COMMITTING
        digest = self._hasher.hexdigest()
        if digest != self.blob_hash:
            self._fail(BlobHashMismatchError(self.blob_hash, digest))
            return
        self._store._commit(self)

    def _take_file(self) -> tuple[BinaryIO, Path]:
        return self._file, self._temp

    def _succeed(self, blob: IBlob) -> None:
        if self._state is not _State.COMMITTING:
            return
        self._state = _State.VERIFIED
        self._store._writer_done(self)
        self.finished.callback(blob)

    def _fail(self, error: BlobError | Exception) -> None:
        if self._state in (_State.VERIFIED, _State.FAILED):
            return
        committing = self._state is _State.COMMITTING
        self._state = _State.FAILED
        if not committing or not self._store._is_committing(self):
            # While the store holds the file for a commit, the commit cleans up.
            self._file.close()
            remove_quietly(self._temp)
        self._store._writer_done(self)
        self.finished.errback(error)
