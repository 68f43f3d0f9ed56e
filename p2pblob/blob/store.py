"""
The blob store: verified blobs as files in one directory, indexed in SQLite.

Only verified blobs are ever visible.  At start the store reconciles the
directory with the index (L{p2pblob.blob._files.scan_blob_dir}); while running
it keeps a map of verified blobs in memory so that C{has_blob} is cheap, and it
keeps disk use under C{disk_limit} by evicting blobs of finished, unpinned
downloads, oldest first.  Blobs of published streams are never evicted: when
nothing else can go, the write fails with L{DiskLimitError}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from io import BufferedIOBase
from pathlib import Path
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._threads import BlockingRunner
from p2pblob.blob import _files
from p2pblob.blob._index import ROLE_DOWNLOADED, ROLE_PUBLISHED, BlobIndex
from p2pblob.blob._space import SpaceKeeper
from p2pblob.blob.hashing import MAX_BLOB_SIZE, check_blob_hash
from p2pblob.blob.writer import BlobWriter, ChunkSink, Sink, TempFileSink
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobNotFoundError,
    BlobTooLargeError,
    InvalidBlobHashError,
    P2PBlobError,
    StorageError,
)
from p2pblob.interfaces import IBlob, IBlobStore

__all__ = ["Blob", "BlobStore", "ROLE_PUBLISHED", "ROLE_DOWNLOADED"]

_log = Logger()


@implementer(IBlob)
class Blob:
    """
    A verified blob in a L{BlobStore}.
    """

    def __init__(self, store: BlobStore, blob_hash: str, length: int) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self._store = store

    def __repr__(self) -> str:
        return f"<Blob {self.blob_hash[:16]} {self.length} bytes>"

    def open_for_reading(self) -> BufferedIOBase:
        try:
            return open(self._store.path_of(self.blob_hash), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(self.blob_hash) from None

    def open(self) -> Deferred[BufferedIOBase]:
        return maybeDeferred(self.open_for_reading)

    def read(self) -> Deferred[bytes]:
        return self._store.read_blob(self.blob_hash)


@implementer(IBlobStore)
class BlobStore(SpaceKeeper):
    """
    Blobs on the local disk.

    @param clock: source of the time stamps that order eviction.
    @param run: runs blocking file work off the reactor thread.
    @param blob_dir: where blob files live (created if missing).
    @param index_path: the SQLite index file.
    @param disk_limit: bytes of blobs allowed, or L{None} for no limit.
    """

    def __init__(
        self,
        clock: IReactorTime,
        run: BlockingRunner,
        blob_dir: Path,
        index_path: Path,
        disk_limit: int | None = None,
    ) -> None:
        self.disk_limit = disk_limit
        self._clock = clock
        self._run = run
        self._blob_dir = blob_dir
        self._index_path = index_path
        self._index: BlobIndex | None = None
        self._lengths: dict[str, int] = {}
        self._stored = 0
        self._reserved = 0
        self._writers: dict[str, set[BlobWriter]] = {}
        # blob hash -> the writer whose file is being made durable, and the
        # writers that verified meanwhile and wait for its outcome
        self._committing: dict[str, tuple[BlobWriter, list[BlobWriter]]] = {}
        # blobs written but not yet durable (their length, and a token for
        # the batch that syncs them), and the batch being gathered
        self._unsynced: dict[str, tuple[int, object]] = {}
        self._batch: list[tuple[str, object]] = []
        self._syncing = False

    # life cycle

    async def start(self) -> _files.ScanResult:
        """
        Open the index and reconcile it with the blob directory.

        @return: what reconciliation found.
        """
        self._blob_dir.mkdir(parents=True, exist_ok=True)
        index = BlobIndex(self._index_path)
        try:
            result = await self._run(_files.scan_blob_dir, self._blob_dir, index.blobs())
        except BaseException:
            index.close()
            raise
        now = self._clock.seconds()
        index.remove_blobs(result.dropped)
        for blob_hash, length in result.adopted.items():
            index.add_blob(blob_hash, length, now)
        self._index = index
        self._lengths = dict(result.present)
        self._stored = sum(self._lengths.values())
        for name, reason in result.removed:
            _log.warn("Removed {name} from the blob store: {reason}", name=name, reason=reason)
        if result.dropped:
            _log.warn(
                "{count} indexed blobs were missing or damaged and are no longer "
                "served", count=len(result.dropped)
            )
        if result.adopted:
            _log.info(
                "Adopted {count} verified blob files the index did not list",
                count=len(result.adopted),
            )
        _log.info(
            "Blob store at {dir}: {count} blobs, {size} bytes",
            dir=str(self._blob_dir), count=len(self._lengths), size=self._stored,
        )
        return result

    def stop(self) -> None:
        """
        Cancel the writes in progress, make the blobs already written durable
        and close the index.
        """
        for writers in list(self._writers.values()):
            for writer in list(writers):
                writer.cancel()
        if self._index is None:
            return
        if self._unsynced:
            # the last batches, synced here rather than in a thread: the
            # reactor may be stopping, and there are a few blobs at most
            rows = [(blob_hash, length) for blob_hash, (length, _) in self._unsynced.items()]
            self._unsynced.clear()
            try:
                _files.sync_blobs(self._blob_dir, [blob_hash for blob_hash, _ in rows])
            except OSError as e:
                _log.warn(
                    "Could not make the last {count} blobs durable ({error}); they "
                    "will be checked again at the next start", count=len(rows), error=e,
                )
            else:
                self._index.add_blobs(rows, self._clock.seconds())
        self._index.close()
        self._index = None

    @property
    def index(self) -> BlobIndex:
        if self._index is None:
            raise StorageError("the blob store is not started")
        return self._index

    # reading

    def path_of(self, blob_hash: str) -> Path:
        return self._blob_dir / check_blob_hash(blob_hash)

    def has_blob(self, blob_hash: str) -> bool:
        return blob_hash in self._lengths

    def held_blobs(self) -> Mapping[str, int]:
        """
        The length of every verified blob held, by hash: a live read-only
        view, which (unlike the index) includes the blobs written but not
        yet recorded by the next group commit.
        """
        if self._index is None:
            raise StorageError("the blob store is not started")
        return MappingProxyType(self._lengths)

    def get_blob(self, blob_hash: str) -> IBlob:
        length = self._lengths.get(blob_hash)
        if length is None:
            raise BlobNotFoundError(blob_hash)
        return Blob(self, blob_hash, length)

    def read_blob(self, blob_hash: str) -> Deferred[bytes]:
        if blob_hash not in self._lengths:
            return fail(BlobNotFoundError(blob_hash))
        d = self._run(self.path_of(blob_hash).read_bytes)

        def missing(failure: Failure) -> Failure:
            if failure.check(FileNotFoundError):
                self._forget([blob_hash])
                return Failure(BlobNotFoundError(blob_hash))
            return failure

        return d.addErrback(missing)

    def verified_blobs(self) -> Deferred[list[str]]:
        return succeed(list(self._lengths))

    def check_blob(self, blob_hash: str) -> Deferred[str]:
        async def check() -> str:
            length = self._lengths.get(blob_hash)
            if length is None:
                return "missing"
            try:
                digest, size = await self._run(_files.hash_file, self.path_of(blob_hash))
            except FileNotFoundError:
                self._forget([blob_hash])
                return "missing"
            if digest == blob_hash and size == length:
                return "ok"
            _log.warn(
                "Blob {blob} is corrupt on disk (size {size}, expected {length}); "
                "removed", blob=blob_hash, size=size, length=length,
            )
            await self.delete_blobs([blob_hash])
            return "corrupt"

        return Deferred.fromCoroutine(check())

    # writing

    def open_writer(self, blob_hash: str, length: int) -> BlobWriter:
        check_blob_hash(blob_hash)
        if not 0 <= length <= MAX_BLOB_SIZE:
            raise BlobTooLargeError(blob_hash, length, MAX_BLOB_SIZE)
        if blob_hash in self._lengths:
            # Already here: a writer that takes and drops whatever arrives.
            writer = BlobWriter(self, blob_hash, length, ChunkSink())
            writer.cancel()
            return writer
        self._reserve(length)
        try:
            sink = self._new_sink(blob_hash)
        except OSError as e:
            self._reserved -= length
            raise StorageError(f"could not write to the blob store: {e}") from None
        writer = BlobWriter(self, blob_hash, length, sink)
        self._add_writer(writer)
        if length == 0:
            writer._verify()
        return writer

    def _new_sink(self, blob_hash: str) -> Sink:
        """
        Where a writer's bytes go until they are verified: a temporary file
        of the blob directory.
        """
        return TempFileSink(*_files.new_temp_file(self._blob_dir, blob_hash))

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        async def put() -> IBlob:
            if (
                expected_hash is not None
                and expected_hash not in self._lengths
                and len(data) <= MAX_BLOB_SIZE
            ):
                # a blob named in advance, as from a peer: hashed and
                # written in one trip to a worker thread
                await self._write(
                    len(data), _files.store_verified, self._blob_dir, expected_hash, data, False
                )
                blob_hash = expected_hash
            else:
                blob_hash = await self._run(_files.hash_bytes, data)
                if expected_hash is not None and blob_hash != expected_hash:
                    raise BlobHashMismatchError(expected_hash, blob_hash)
                if len(data) > MAX_BLOB_SIZE:
                    raise BlobTooLargeError(blob_hash, len(data), MAX_BLOB_SIZE)
                if blob_hash in self._lengths:
                    return self.get_blob(blob_hash)
                await self._write(
                    len(data), _files.store_bytes, self._blob_dir, blob_hash, data, False
                )
            self._verified(blob_hash, len(data), durable=False)
            return self.get_blob(blob_hash)

        return Deferred.fromCoroutine(put())

    # group commit

    def _sync_later(self, blob_hash: str, length: int) -> None:
        """
        Have a blob that is written, but not yet durable, synced with the
        next batch and then recorded in the index.

        The blobs written while one batch is being synced are synced
        together next, with one directory sync for all of them and one
        index transaction, so that many concurrent writes cost few journal
        commits.  Until then the index does not list the blob: after a
        power failure it is hashed again at start (see L{start}) rather
        than trusted.
        """
        token = object()
        self._unsynced[blob_hash] = (length, token)
        self._batch.append((blob_hash, token))
        if not self._syncing:
            self._sync_batch()

    def _sync_batch(self) -> None:
        batch, self._batch = self._batch, []
        self._syncing = bool(batch) and self._index is not None
        if not self._syncing:
            return

        def synced(result: None | Failure) -> None:
            # only what is still wanted: a blob deleted meanwhile, or
            # written again (a new token, for a later batch), is not ours
            ours = []
            for blob_hash, token in batch:
                entry = self._unsynced.get(blob_hash)
                if entry is not None and entry[1] is token:
                    del self._unsynced[blob_hash]
                    ours.append((blob_hash, entry[0]))
            if self._index is None:
                pass  # stopped: stop() synced and recorded what was left
            elif isinstance(result, Failure):
                # what a failed sync leaves in the page cache cannot be
                # trusted to be what is on disk
                _log.error(
                    "Could not make {count} blobs durable ({error}); they are dropped",
                    count=len(ours), error=result.value,
                )
                self.delete_blobs([blob_hash for blob_hash, _ in ours]).addErrback(
                    lambda f: _log.failure("Could not delete the blobs", f)
                )
            else:
                self._index.add_blobs(ours, self._clock.seconds())
            self._sync_batch()

        hashes = [blob_hash for blob_hash, _ in batch]
        self._run(_files.sync_blobs, self._blob_dir, hashes).addBoth(synced)

    async def _write(self, length: int, write: Callable[..., None], *args: Any) -> None:
        """
        Run C{write(*args)}, which stores a blob of C{length} bytes, in a
        worker thread, with that much space reserved meanwhile.
        """
        if self._index is None:
            raise StorageError("the blob store was stopped while storing a blob")
        self._reserve(length)
        try:
            await self._run(write, *args)
        except OSError as e:
            raise StorageError(f"could not write to the blob store: {e}") from None
        finally:
            self._reserved -= length
        if self._index is None:
            raise StorageError("the blob store was stopped while storing a blob")

    def delete_blobs(self, blob_hashes: Iterable[str]) -> Deferred[None]:
        hashes = [h for h in blob_hashes if h in self._lengths]
        paths = [self.path_of(h) for h in hashes]
        self._forget(hashes)

        def unlink_all() -> None:
            for path in paths:
                _files.remove_quietly(path)

        return self._run(unlink_all)

    # streams

    def add_stream(self, sd_hash: str, blob_hashes: list[str], role: str) -> Deferred[None]:
        if role not in (ROLE_PUBLISHED, ROLE_DOWNLOADED):
            return fail(ValueError(f"unknown stream role {role!r}"))
        try:
            check_blob_hash(sd_hash)
            for blob_hash in blob_hashes:
                check_blob_hash(blob_hash)
        except InvalidBlobHashError as e:
            return fail(e)
        self.index.add_stream(sd_hash, blob_hashes, role, self._clock.seconds())
        return succeed(None)

    def set_stream_finished(self, sd_hash: str) -> Deferred[None]:
        self.index.set_stream_flag(sd_hash, "finished", True)
        return succeed(None)

    def pin_stream(self, sd_hash: str, pinned: bool) -> Deferred[None]:
        self.index.set_stream_flag(sd_hash, "pinned", pinned)
        return succeed(None)

    def remove_stream(self, sd_hash: str, delete_blobs: bool) -> Deferred[None]:
        orphans = self.index.remove_stream(sd_hash)
        if delete_blobs:
            return self.delete_blobs(orphans)
        return succeed(None)

    # internals shared with BlobWriter

    def _eviction_candidates(self) -> Iterable[tuple[str, int]]:
        for blob_hash, length in self.index.evictable():
            if blob_hash not in self._committing:
                yield blob_hash, length

    def _drop_evicted(self, blob_hashes: list[str]) -> None:
        for blob_hash in blob_hashes:
            _files.remove_quietly(self.path_of(blob_hash))
        self._forget(blob_hashes)

    def _forget(self, blob_hashes: list[str]) -> None:
        for blob_hash in blob_hashes:
            self._unsynced.pop(blob_hash, None)
            length = self._lengths.pop(blob_hash, None)
            if length is not None:
                self._stored -= length
        self.index.remove_blobs(blob_hashes)

    def _verified(
        self,
        blob_hash: str,
        length: int,
        winner: BlobWriter | None = None,
        durable: bool = True,
    ) -> None:
        """
        Record a blob whose file is written (and durable, or to be made
        durable by the next group sync), hand it to the writer that made it
        and cancel every other writer of the same blob.
        """
        if blob_hash not in self._lengths:
            self._lengths[blob_hash] = length
            self._stored += length
            if durable:
                self.index.add_blob(blob_hash, length, self._clock.seconds())
            else:
                self._sync_later(blob_hash, length)
        if winner is not None:
            winner._succeed(self.get_blob(blob_hash))
        self._cancel_writers(blob_hash)

    def _is_committing(self, writer: BlobWriter) -> bool:
        active = self._committing.get(writer.blob_hash)
        return active is not None and active[0] is writer

    def _persist(self, writer: BlobWriter) -> Deferred[None]:
        """
        Make a verified writer's bytes durable under the blob's name: its
        temporary file is synced and renamed into place.
        """
        sink = writer.sink
        assert isinstance(sink, TempFileSink)
        return self._run(
            _files.commit_temp_file, sink.file, sink.temp, self.path_of(writer.blob_hash)
        )

    def _commit(self, writer: BlobWriter) -> None:
        blob_hash = writer.blob_hash
        if blob_hash in self._lengths:
            writer.cancel()
            return
        active = self._committing.get(blob_hash)
        if active is not None:
            active[1].append(writer)
            return
        self._committing[blob_hash] = (writer, [])
        d = self._persist(writer)

        def committed(_: None) -> None:
            del self._committing[blob_hash]
            if self._index is None:
                # Stopped meanwhile: the blob is stored but not indexed (the
                # next start of the disk store adopts the file after
                # re-hashing it; a backend's is written again when wanted).
                return
            self._verified(blob_hash, writer.length, writer)

        def failed(failure: Failure) -> None:
            _, waiting = self._committing.pop(blob_hash)
            error = _storage_failure(failure).value
            assert isinstance(error, Exception)
            _log.error("Could not store blob {blob}: {error}", blob=blob_hash, error=error)
            writer._fail(error)
            for other in waiting:
                if other.state == "committing":
                    self._commit(other)

        d.addCallbacks(committed, failed)


def _storage_failure(failure: Failure) -> Failure:
    """
    Turn an operating-system error from disk work into a L{StorageError} a
    user can read; our own errors pass through.
    """
    if failure.check(P2PBlobError):
        return failure
    if failure.check(OSError):
        error = failure.value
        return Failure(StorageError(f"could not write to the blob store: {error}"))
    return failure
