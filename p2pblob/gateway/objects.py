"""
The S3 gateway's objects over the blob store: L{Objects} names streams,
publishes new ones (L{Objects.creator}), imports streams of the network by
sd hash, makes zero-copy aliases, keeps the quotas, and removes the
streams nothing names any longer.

A stream the gateway made (or brought into the blob store by an import) is
removed from the store, with those of its blobs no other stream uses, once
no object and no part of a multipart upload refers to it; a stream that
was in the store before (published through the API, downloaded) is only
ever unnamed.  A stream being read is removed once its last reader is
done, so that a C{DELETE} never cuts a C{GET} short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pblob._threads import BlockingRunner
from p2pblob.blob._index import ROLE_DOWNLOADED
from p2pblob.errors import DiskLimitError
from p2pblob.gateway.namespace import Namespace, ObjectRecord, Usage
from p2pblob.gateway.xml import S3Error
from p2pblob.http._blobs import Fetcher, Refusal, StreamBlobs, load_descriptor
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.descriptor import StreamDescriptor
from p2pblob.stream.writer import StreamCreator

__all__ = ["Objects", "quota_exceeded", "refusal_error", "stream_name"]

_log = Logger()


def stream_name(key: str) -> str:
    """
    The file name of the stream published for the object C{key}: its last
    path segment.
    """
    return key.rstrip("/").rpartition("/")[2] or "object"


def quota_exceeded(message: str) -> S3Error:
    return S3Error(403, "QuotaExceeded", message)


def refusal_error(refusal: Refusal) -> S3Error:
    """
    The S3 error for a failure to read a stream: a missing stream is
    C{NoSuchKey}; a blob that cannot be had now is C{ServiceUnavailable}
    (clients try again); a damaged stream is C{InternalError}.
    """
    if refusal.status == 404:
        return S3Error(404, "NoSuchKey", refusal.message)
    if refusal.status in (502, 503):
        return S3Error(503, "ServiceUnavailable", refusal.message)
    if refusal.status == 400:
        return S3Error(400, "InvalidArgument", refusal.message)
    return S3Error(500, "InternalError", refusal.message)


def disk_limit_error(error: DiskLimitError) -> S3Error:
    return quota_exceeded(f"this node's blob store is full: {error}")


class Objects:
    """
    The objects of the gateway: its L{Namespace} over a blob store.

    @param run: where encryption and hashing run (the blob store's
        threads).
    @param fetcher: brings missing blobs from peers (L{None}: local blobs
        only).
    @param has_stream: whether the blob store records a stream already (an
        import of such a stream does not make the gateway its owner).
    @param announce: told after a publish or an import, so that the blobs
        are announced.
    @param quota: the most bytes the objects (and the uploaded parts) may
        hold, or L{None}.
    @param max_objects: the most objects, or L{None}.
    """

    def __init__(self, clock: IReactorTime, store: IBlobStore, run: BlockingRunner,
                 namespace: Namespace, fetcher: Fetcher | None = None, *,
                 has_stream: Callable[[str], bool] = lambda sd_hash: False,
                 announce: Callable[[], None] = lambda: None,
                 quota: int | None = None, max_objects: int | None = None) -> None:
        self.clock = clock
        self.store = store
        self.run = run
        self.namespace = namespace
        self.fetcher = fetcher
        self.quota = quota
        self.max_objects = max_objects
        self._has_stream = has_stream
        self._announce = announce
        self._creators: set[StreamCreator] = set()
        self._readers: Counter[str] = Counter()
        # streams to remove once their readers are done
        self._doomed: set[str] = set()
        self._stopped = False

    def now(self) -> float:
        return self.clock.seconds()

    # publishing

    def creator(self, key: str) -> StreamCreator:
        """
        A new L{StreamCreator} for the object C{key}, cancelled if the
        gateway stops before it is finished.
        """
        creator = StreamCreator(self.store, self.run, stream_name(key))
        self._creators.add(creator)
        return creator

    async def finish(self, creator: StreamCreator,
                     announce: bool = True) -> tuple[str, int, str, int]:
        """
        Finish a creator: its stream's sd hash, size, MD5 (hex) and CRC32.

        @param announce: have the stream announced (not a part's, which
            goes away once its upload completes).

        @raise S3Error: QuotaExceeded if the blob store is full.
        """
        try:
            result = await creator.finish()
        except DiskLimitError as e:
            raise disk_limit_error(e) from None
        finally:
            self._creators.discard(creator)
        if announce:
            self._announce()
        return result.sd_hash, result.size, result.md5, result.crc32

    def cancel(self, creator: StreamCreator) -> Deferred[None]:
        """
        Cancel a creator: the blobs it made are removed.
        """
        self._creators.discard(creator)
        return creator.cancel()

    def stop(self) -> Deferred[None]:
        """
        Cancel the uploads in progress; fires once their blobs are removed.
        """
        self._stopped = True
        cancelled = [creator.cancel() for creator in self._creators]
        self._creators.clear()

        async def wait() -> None:
            for done in cancelled:
                await done

        return Deferred.fromCoroutine(wait())

    # quotas

    def check_quota(self, adding: int, replacing: int = 0, new_objects: int = 0) -> None:
        """
        Refuse to hold C{adding} more bytes (in place of C{replacing}) and
        C{new_objects} more objects if that passes a quota.

        @raise S3Error: QuotaExceeded.
        """
        if self.quota is None and self.max_objects is None:
            return
        usage: Usage = self.namespace.usage()
        if self.quota is not None and usage.size - replacing + adding > self.quota:
            raise quota_exceeded(
                f"the gateway's quota of {self.quota} bytes would be passed: it holds "
                f"{usage.size} bytes, and this adds {adding - replacing}")
        if self.max_objects is not None and usage.objects + new_objects > self.max_objects:
            raise quota_exceeded(
                f"the gateway holds {usage.objects} objects, its most (--s3-max-objects)")

    def check_object_quota(self, bucket: str, key: str, size: int) -> None:
        """
        L{check_quota} for an object of C{size} bytes named C{key}.
        """
        previous = self.namespace.get_object(bucket, key)
        self.check_quota(size, 0 if previous is None else previous.size,
                         0 if previous is not None else 1)

    # naming

    def name(self, record: ObjectRecord, owned: bool, upload_id: str | None = None) -> None:
        """
        Give the object its name, replacing an object of that name (whose
        stream may then go).
        """
        previous = self.namespace.put_object(record, owned=owned, upload_id=upload_id)
        if previous is not None and previous != record.sd_hash:
            self.release([previous])

    def delete(self, bucket: str, key: str) -> bool:
        """
        Remove the object's name; L{False} if there was none.
        """
        sd_hash = self.namespace.delete_object(bucket, key)
        if sd_hash is None:
            return False
        self.release([sd_hash])
        return True

    # reading

    @contextmanager
    def reading(self, sd_hash: str) -> Iterator[None]:
        """
        Keep the stream C{sd_hash} in the store while the block runs.
        """
        self._readers[sd_hash] += 1
        try:
            yield
        finally:
            self._readers[sd_hash] -= 1
            if not self._readers[sd_hash]:
                del self._readers[sd_hash]
                if sd_hash in self._doomed:
                    self._doomed.discard(sd_hash)
                    self.release([sd_hash])

    def blobs(self, descriptor: StreamDescriptor) -> StreamBlobs:
        return StreamBlobs(self.store, self.fetcher, descriptor)

    async def descriptor(self, sd_hash: str) -> StreamDescriptor:
        """
        The descriptor of a stream, fetched from peers if need be.

        @raise S3Error: (from L{refusal_error}).
        """
        try:
            return await load_descriptor(self.store, sd_hash, self.fetcher)
        except Refusal as refusal:
            raise refusal_error(refusal) from None

    async def stream_size(self, descriptor: StreamDescriptor) -> int:
        """
        The plaintext size of a stream: only its last blob is read (and
        fetched, if missing).
        """
        try:
            return await self.blobs(descriptor).total_length()
        except Refusal as refusal:
            raise refusal_error(refusal) from None

    # importing

    async def import_stream(self, sd_hash: str) -> tuple[int, bool]:
        """
        Bring the stream C{sd_hash} of the network into the blob store (its
        descriptor and last blob now; the other blobs when they are read).

        @return: the stream's plaintext size, and whether the gateway owns
            the stream (it was not in the store before).
        @raise S3Error: InvalidArgument for a malformed sd hash, NoSuchKey if
            no peer has the descriptor, ServiceUnavailable if its last blob
            cannot be had.
        """
        descriptor = await self.descriptor(sd_hash)
        owned = not self._has_stream(sd_hash) and not self.namespace.is_referenced(sd_hash)
        if owned:
            # its blobs are kept (never evicted) while a name refers to it
            await self.store.add_stream(sd_hash, [sd_hash, *descriptor.blob_hashes],
                                        ROLE_DOWNLOADED)
            await self.store.pin_stream(sd_hash, True)
        try:
            with self.reading(sd_hash):
                size = await self.stream_size(descriptor)
        except BaseException:
            if owned and not self.namespace.is_referenced(sd_hash):
                await self.store.remove_stream(sd_hash, True)
            raise
        self._announce()
        return size, owned or self.namespace.is_owned(sd_hash)

    # collecting

    def release(self, sd_hashes: list[str]) -> None:
        """
        Remove from the blob store those of the streams C{sd_hashes} that
        the gateway owns and nothing refers to any longer (once nobody reads
        them).
        """
        for sd_hash in self.namespace.collectable(sd_hashes):
            if self._readers[sd_hash]:
                self._doomed.add(sd_hash)
            else:
                self._readers.pop(sd_hash, None)
                Deferred.fromCoroutine(self._remove(sd_hash))

    def collect(self) -> None:
        """
        Remove every stream the gateway owns that nothing refers to (those
        left by a stop between a change of names and the removal).
        """
        self.release(self.namespace.collectable())

    async def _remove(self, sd_hash: str) -> None:
        try:
            await self.store.remove_stream(sd_hash, True)
        except Exception:
            _log.failure("Could not remove stream {sd_hash}, which no name refers to",
                         sd_hash=sd_hash)
            return
        if self._stopped:
            return
        # (named again meanwhile? then only its blobs went: it is fetched again)
        self.namespace.forget_stream(sd_hash)
        _log.info("Removed stream {sd_hash}: no name refers to it", sd_hash=sd_hash)
