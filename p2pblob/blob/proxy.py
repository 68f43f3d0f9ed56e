"""
L{BlobStoreProxy}: another blob store, as it is; the base of the stores
that change one or two of its methods (noting the blobs written, damaging
the blobs served for tests).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter

__all__ = ["BlobStoreProxy"]


@implementer(IBlobStore)
class BlobStoreProxy:
    """
    Every L{IBlobStore} method of C{store}, passed on unchanged; subclasses
    override the ones they change.
    """

    def __init__(self, store: IBlobStore) -> None:
        self._store = store

    @property
    def disk_limit(self) -> int | None:
        limit: int | None = self._store.disk_limit
        return limit

    def has_blob(self, blob_hash: str) -> bool:
        return bool(self._store.has_blob(blob_hash))

    def get_blob(self, blob_hash: str) -> IBlob:
        return self._store.get_blob(blob_hash)

    def open_writer(self, blob_hash: str, length: int) -> IBlobWriter:
        return self._store.open_writer(blob_hash, length)

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        return self._store.put_blob(data, expected_hash)

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


verifyClass(IBlobStore, BlobStoreProxy)
