"""
Blobs that must not outlive a crash unaccounted for: L{NotingStore} tells
its owner the name of each blob before the blob is written (and the sd hash
of each stream before it is recorded), so that the owner can write it down
somewhere durable first; L{remove_unused_blobs} later removes those blobs
again, sparing any that a stream recorded in the store uses.

The manifest publisher notes the blobs of the files being uploaded to it,
the S3 gateway those of the objects and parts being put; each removes, at
start, the blobs of the uploads a crash cut short.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, fail

from p2pblob.blob._index import ROLE_DOWNLOADED
from p2pblob.blob.proxy import BlobStoreProxy
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["NotingStore", "remove_unused_blobs"]


def _ignore(name: str) -> None:
    return None


class NotingStore(BlobStoreProxy):
    """
    C{store}, except that the name of every blob put in it is first given to
    C{note}, and then to C{stored} once the blob is in the store; and the sd
    hash of every stream recorded through it is first given to
    C{note_stream}.

    A blob whose name is given (to L{open_writer}, or to L{put_blob} as its
    expected hash) is noted before a byte of it is written, so that a crash
    cannot leave a blob nobody knows of; one put without its name is noted
    once it is hashed and stored.  If C{note} or C{note_stream} raises,
    nothing is written or recorded: the call fails with that error.
    """

    def __init__(self, store: IBlobStore, note: Callable[[str], None],
                 stored: Callable[[str], None] = _ignore, *,
                 note_stream: Callable[[str], None] = _ignore) -> None:
        super().__init__(store)
        self._note = note
        self._stored = stored
        self._note_stream = note_stream

    def open_writer(self, blob_hash: str, length: int) -> IBlobWriter:
        self._note(blob_hash)
        return self._store.open_writer(blob_hash, length)

    def put_blob(self, data: bytes | bytearray | memoryview,
                 expected_hash: str | None = None) -> Deferred[IBlob]:
        if expected_hash is not None:
            try:
                self._note(expected_hash)
            except Exception as e:
                return fail(e)

        def put(blob: IBlob) -> IBlob:
            if expected_hash is None:
                self._note(blob.blob_hash)
            self._stored(blob.blob_hash)
            return blob

        stored: Deferred[IBlob] = self._store.put_blob(data, expected_hash)
        return stored.addCallback(put)

    def add_stream(self, sd_hash: str, blob_hashes: list[str], role: str) -> Deferred[None]:
        try:
            self._note_stream(sd_hash)
        except Exception as e:
            return fail(e)
        return self._store.add_stream(sd_hash, blob_hashes, role)



async def remove_unused_blobs(store: IBlobStore, blob_hashes: Iterable[str]) -> None:
    """
    Remove those of C{blob_hashes} the store holds that no stream recorded
    in it uses: they are recorded for a moment as a stream of their own,
    which is then removed with its orphans (the store's own rule).
    """
    held = sorted({h for h in blob_hashes if store.has_blob(h)})
    if not held:
        return
    digest = hashlib.sha384(b"p2pblob-cancelled-upload")
    for blob_hash in held:
        digest.update(blob_hash.encode("ascii"))
    scratch = digest.hexdigest()
    await store.add_stream(scratch, held, ROLE_DOWNLOADED)
    await store.remove_stream(scratch, True)
