"""
Disk-use accounting shared by the blob stores: reservations of running
writers, the limit, and eviction of blobs of finished downloads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from twisted.logger import Logger

from p2pblob.blob.writer import BlobWriter
from p2pblob.errors import DiskLimitError

__all__ = ["SpaceKeeper"]

_log = Logger()


class SpaceKeeper(ABC):
    """
    Mixin for a store: keeps C{used_bytes()} (stored plus reserved) within
    C{disk_limit}.  The store supplies which blobs may be evicted, oldest
    first (L{_eviction_candidates}), and how to drop them (L{_drop_evicted}),
    and keeps C{_stored} up to date.
    """

    disk_limit: int | None
    _stored: int
    _reserved: int
    _writers: dict[str, set[BlobWriter]]

    @abstractmethod
    def _eviction_candidates(self) -> Iterable[tuple[str, int]]:
        """
        (hash, length) of the blobs that may be evicted, oldest first.
        """

    @abstractmethod
    def _drop_evicted(self, blob_hashes: list[str]) -> None:
        """
        Remove evicted blobs from the store.
        """

    def used_bytes(self) -> int:
        return self._stored + self._reserved

    def _reserve(self, length: int) -> None:
        """
        Reserve C{length} bytes, evicting if that makes room.

        @raise DiskLimitError: if it does not; then nothing was evicted.
        """
        limit = self.disk_limit
        if limit is not None and self.used_bytes() + length > limit:
            self._evict(self.used_bytes() + length - limit)
            if self.used_bytes() + length > limit:
                raise DiskLimitError(length, self.used_bytes(), limit)
        self._reserved += length

    def _evict(self, needed: int) -> None:
        """
        Evict candidates, oldest first, to free C{needed} bytes; evict
        nothing if that much cannot be freed.
        """
        victims: list[str] = []
        freed = 0
        for blob_hash, length in self._eviction_candidates():
            if freed >= needed:
                break
            victims.append(blob_hash)
            freed += length
        if freed < needed:
            return
        self._drop_evicted(victims)
        _log.info(
            "Evicted {count} blobs ({size} bytes) of finished downloads to stay "
            "under the disk-use limit of {limit} bytes",
            count=len(victims), size=freed, limit=self.disk_limit,
        )

    def _add_writer(self, writer: BlobWriter) -> None:
        self._writers.setdefault(writer.blob_hash, set()).add(writer)

    def _writer_done(self, writer: BlobWriter) -> None:
        """
        Release what a finished writer reserved.
        """
        writers = self._writers.get(writer.blob_hash)
        if writers is not None and writer in writers:
            writers.discard(writer)
            self._reserved -= writer.length
            if not writers:
                del self._writers[writer.blob_hash]

    def _cancel_writers(self, blob_hash: str) -> None:
        for writer in list(self._writers.get(blob_hash, ())):
            writer.cancel()
