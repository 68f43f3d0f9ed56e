"""
The blobs of uploads not yet published: L{RecordingStore} notes each blob
an upload stores before it is stored, and L{remove_unused_blobs} removes
them once the upload is cancelled or expires, sparing any blob a recorded
stream uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from p2pblob.blob._index import ROLE_DOWNLOADED
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["RecordingStore", "remove_unused_blobs"]


@implementer(IBlobStore)
class RecordingStore:
    """
    C{store}, except that every blob put in it is first passed to
    C{record} (by name, before it is written when its name is given, so
    that a crash cannot leave a blob nobody knows of), and then to
    C{stored} once it is in the store.
    """

    def __init__(self, store: IBlobStore, record: Callable[[str], None],
                 stored: Callable[[str], None]) -> None:
        self._store = store
        self._record = record
        self._stored = stored

    @property
    def disk_limit(self) -> int | None:
        limit: int | None = self._store.disk_limit
        return limit

    def has_blob(self, blob_hash: str) -> bool:
        return bool(self._store.has_blob(blob_hash))

    def get_blob(self, blob_hash: str) -> IBlob:
        return self._store.get_blob(blob_hash)

    def open_writer(self, blob_hash: str, length: int) -> IBlobWriter:
        self._record(blob_hash)
        return self._store.open_writer(blob_hash, length)

    def put_blob(self, data: bytes | bytearray | memoryview,
                 expected_hash: str | None = None) -> Deferred[IBlob]:
        if expected_hash is not None:
            self._record(expected_hash)

        def put(blob: IBlob) -> IBlob:
            if expected_hash is None:
                self._record(blob.blob_hash)
            self._stored(blob.blob_hash)
            return blob

        stored: Deferred[IBlob] = self._store.put_blob(data, expected_hash)
        return stored.addCallback(put)

    def read_blob(self, blob_hash: str) -> Deferred[bytes]:
        return self._store.read_blob(blob_hash)

    def check_blob(self, blob_hash: str) -> Deferred[str]:
        return self._store.check_blob(blob_hash)

    def delete_blobs(self, blob_hashes: list[str]) -> Deferred[None]:
        return self._store.delete_blobs(blob_hashes)

    def verified_blobs(self) -> Deferred[list[str]]:
        return self._store.verified_blobs()

    def used_bytes(self) -> int:
        return int(self._store.used_bytes())

    def add_stream(self, sd_hash: str, blob_hashes: list[str], role: str) -> Deferred[None]:
        return self._store.add_stream(sd_hash, blob_hashes, role)

    def set_stream_finished(self, sd_hash: str) -> Deferred[None]:
        return self._store.set_stream_finished(sd_hash)

    def pin_stream(self, sd_hash: str, pinned: bool) -> Deferred[None]:
        return self._store.pin_stream(sd_hash, pinned)

    def remove_stream(self, sd_hash: str, delete_blobs: bool) -> Deferred[None]:
        return self._store.remove_stream(sd_hash, delete_blobs)


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
