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

A crash (the node killed, the machine down) leaves nothing unaccounted for:
a stream being made or imported is a draft of the namespace, and each blob
it writes and each stream it records in the blob store is noted there
first (through a L{NotingStore}); once whole, the stream is owned before it
is named.  At start (L{Objects.start}), what the drafts left is removed,
then every owned stream that nothing names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pblob._threads import BlockingRunner
from p2pblob.blob._index import ROLE_DOWNLOADED
from p2pblob.blob.noted import NotingStore, remove_unused_blobs
from p2pblob.errors import DiskLimitError, P2PBlobError
from p2pblob.gateway.namespace import Namespace, ObjectRecord, Usage
from p2pblob.gateway.xml import S3Error
from p2pblob.http._blobs import Fetcher, Refusal, StreamBlobs, load_descriptor
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.descriptor import StreamDescriptor
from p2pblob.stream.writer import StreamCreator

__all__ = ["Objects", "quota_exceeded", "refusal_error", "stream_name"]

_log = Logger()

_T = TypeVar("_T")


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


def _stopping() -> S3Error:
    return S3Error(503, "ServiceUnavailable", "the gateway is stopping")


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
        # the creators at work, and their drafts
        self._creators: dict[StreamCreator, int] = {}
        self._readers: Counter[str] = Counter()
        # streams to remove once their readers are done
        self._doomed: set[str] = set()
        # removals under way that write to the namespace once done
        self._work: set[Deferred[Any]] = set()
        self._stopped = False

    def now(self) -> float:
        return self.clock.seconds()

    # publishing

    def creator(self, key: str) -> StreamCreator:
        """
        A new L{StreamCreator} for the object C{key}, cancelled if the
        gateway stops before it is finished.  It is a draft: every blob it
        writes, and every stream it records, is noted in the namespace
        first.
        """
        namespace = self.namespace
        draft = namespace.begin_draft(self.now())
        store = NotingStore(self.store, lambda blob_hash: namespace.note_blob(draft, blob_hash),
                            note_stream=lambda sd_hash: namespace.note_stream(draft, sd_hash))
        creator = StreamCreator(store, self.run, stream_name(key))
        self._creators[creator] = draft
        return creator

    async def finish(self, creator: StreamCreator,
                     announce: bool = True) -> tuple[str, int, str, int]:
        """
        Finish a creator: its stream's sd hash, size, MD5 (hex) and CRC32.
        The gateway owns the stream from then on: the caller names it, or
        releases it.

        @param announce: have the stream announced (not a part's, which
            goes away once its upload completes).

        @raise S3Error: QuotaExceeded if the blob store is full,
            ServiceUnavailable if the gateway is stopping.
        """
        try:
            result = await creator.finish()
        except Exception as e:
            await self._track(self._abandon(creator))
            if isinstance(e, DiskLimitError):
                raise disk_limit_error(e) from None
            raise
        draft = self._creators.pop(creator, None)
        if draft is None:
            # (stopped meanwhile: the next start removes the stream)
            raise _stopping()
        self.namespace.finish_draft(draft, result.sd_hash)
        if announce:
            self._announce()
        return result.sd_hash, result.size, result.md5, result.crc32

    def cancel(self, creator: StreamCreator) -> Deferred[None]:
        """
        Cancel a creator: the blobs it made are removed.  Never fails.
        """
        return self._track(self._abandon(creator))

    async def _abandon(self, creator: StreamCreator) -> None:
        draft = self._creators.pop(creator, None)
        await creator.cancel()
        if draft is not None:
            await self._undo(draft)

    def stop(self) -> Deferred[None]:
        """
        Cancel the uploads in progress; fires once their blobs are removed
        and no removal under way writes to the namespace any more (their
        drafts are left to the next start).
        """
        self._stopped = True
        cancelled = [creator.cancel() for creator in self._creators]
        self._creators.clear()
        working: list[Deferred[Any]] = [*cancelled, *self._work]

        async def wait() -> None:
            await DeferredList(working)

        return Deferred.fromCoroutine(wait())

    def _track(self, work: Coroutine[Any, Any, _T]) -> Deferred[_T]:
        """
        Run C{work}, which never fails, so that L{stop} waits for it.
        """
        running = Deferred.fromCoroutine(work)
        if not running.called:
            self._work.add(running)

            def done(result: _T) -> _T:
                self._work.discard(running)
                return result

            running.addBoth(done)
        return running

    # drafts

    def start(self) -> Deferred[None]:
        """
        Remove what a crash left in the blob store: the blobs and streams of
        the drafts (objects and parts cut short, streams finished but not
        yet owned, imports cut short), then the streams the gateway owns
        that nothing names (finished but not yet named, or unnamed but not
        yet removed).  Fires once they are gone; never fails.  (Before the
        gateway serves: a draft being written is not told from one a crash
        left.)
        """
        return self._track(self._sweep())

    async def _sweep(self) -> None:
        for draft in self.namespace.drafts():
            if self._stopped:
                return
            blobs, streams = self.namespace.draft_names(draft)
            held = sum(1 for blob_hash in blobs if self.store.has_blob(blob_hash))
            recorded = sum(1 for sd_hash in streams if self._has_stream(sd_hash))
            if await self._undo(draft) and (held or recorded):
                _log.info("Removed {blobs} blobs and {streams} streams left by an upload cut "
                          "short when the node stopped", blobs=held, streams=recorded)
        for sd_hash in self.namespace.collectable():
            if self._stopped:
                return
            await self._remove(sd_hash)

    async def _undo(self, draft: int) -> bool:
        """
        Remove the streams a draft recorded (but own one that an object
        names meanwhile: an import of a stream imported again) and its
        blobs that no stream recorded in the blob store uses, then forget
        the draft.  Never fails: a failure is logged, and the draft is left
        to the next start.

        @return: whether the draft is forgotten.
        """
        if self._stopped:
            return False
        try:
            blobs, streams = self.namespace.draft_names(draft)
            for sd_hash in streams:
                if self.namespace.is_referenced(sd_hash):
                    self.namespace.own_stream(sd_hash)
                else:
                    await self.store.remove_stream(sd_hash, True)
            await remove_unused_blobs(self.store, blobs)
            self.namespace.forget_draft(draft)
        except P2PBlobError as e:
            _log.warn("Could not remove what an upload left in the blob store ({error}); "
                      "it is tried again at the next start", error=e)
            return False
        except Exception:
            _log.failure("Could not remove what an upload left in the blob store")
            return False
        return True

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
        draft = self.namespace.begin_draft(self.now()) if owned else None
        try:
            if draft is not None:
                self.namespace.note_stream(draft, sd_hash)
                # its blobs are kept (never evicted) while a name refers to it
                await self.store.add_stream(sd_hash, [sd_hash, *descriptor.blob_hashes],
                                            ROLE_DOWNLOADED)
                await self.store.pin_stream(sd_hash, True)
            with self.reading(sd_hash):
                size = await self.stream_size(descriptor)
        except Exception:
            if draft is not None:
                await self._track(self._undo(draft))
            raise
        if draft is not None:
            if self._stopped:
                raise _stopping()
            self.namespace.finish_draft(draft, sd_hash)
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
