"""
Publishing a stream from bytes as they arrive (an HTTP upload, an S3 PUT):
the caller writes the plaintext piece by piece, and each full chunk of
2,097,151 bytes is encrypted and stored while the next one arrives.

L{StreamCreator} makes exactly the blobs and sd blob that
L{p2pblob.stream.creator.publish_file} makes for the same bytes, name and
key, when C{publish_file} is given the same IVs: a creator's IVs are not
random but derived from the key and the blob's position (L{derived_iv}), so
that an upload interrupted by a restart and resumed from a checkpoint gives
the stream an uninterrupted upload would have given.

Memory stays flat whatever the stream's size: at most C{workers} chunks are
being encrypted and stored at once, each in a pooled buffer, plus the chunk
being filled; L{StreamCreator.write} makes its caller wait (its Deferred
does not fire) while that many are in flight.  Encryption, the sha384 of
each blob and the md5 and crc32 of the plaintext (for the S3 ETag and
C{x-amz-checksum-crc32}) are computed off the reactor thread, through the
runner given; the md5 and crc32 are updated one chunk at a time, in stream
order, by a runner that runs one job at a time.

Errors and cancellation leave nothing behind: every blob this upload put in
the store is removed again, except one that a stream recorded in the store
also uses (an identical blob of another stream made with the same key).
(A store that has stopped cannot remove anything: the blobs then stay on
disk, in no stream, and the failure to remove them is logged.)
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredLock,
    DeferredSemaphore,
    fail,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._buffers import Buffer, BufferPool
from p2pblob._threads import BlockingRunner, one_at_a_time
from p2pblob.blob._index import ROLE_DOWNLOADED, ROLE_PUBLISHED
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.errors import (
    IncompleteStreamError,
    P2PBlobError,
    StreamError,
    TransferCancelledError,
)
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.crypt import (
    BLOCK_SIZE,
    IV_SIZE,
    KEY_SIZE,
    PLAINTEXT_CHUNK_SIZE,
    decrypt_into,
    encrypt_into,
    random_key,
)
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor
from p2pblob.stream.names import lbry_sanitize_file_name

__all__ = ["CHECKPOINT_VERSION", "StreamCreator", "StreamResult", "derived_iv"]

_log = Logger()

CHECKPOINT_VERSION = 1
"""
The C{version} of the checkpoints L{StreamCreator.checkpoint} writes.
"""

_IV_LABEL = b"p2pblob-iv"


def derived_iv(key: bytes, number: int) -> bytes:
    """
    The IV of the blob entry at position C{number} of a stream made by a
    L{StreamCreator} (the terminator's too): the first 16 bytes of
    HMAC-SHA256 under the stream key of C{b"p2pblob-iv"} followed by
    C{number} as 8 big-endian bytes.

    The IVs of a stream stay distinct (HMAC is a pseudo-random function) and
    unpredictable without the key, which is all CBC asks of them; and
    since they are a function of the key and the position, the same key and
    bytes always give the same blobs.

    @raise ValueError: if C{number} is negative or does not fit 8 bytes.
    """
    if not 0 <= number < 1 << 64:
        raise ValueError(f"blob number {number} out of range")
    message = _IV_LABEL + number.to_bytes(8, "big")
    return hmac.new(key, message, hashlib.sha256).digest()[:IV_SIZE]


@dataclass(frozen=True)
class StreamResult:
    """
    What a finished upload published.

    @ivar descriptor: the stream's descriptor.
    @ivar sd_hash: the name of its sd blob.
    @ivar size: plaintext bytes in the stream.
    @ivar md5: the md5 of the plaintext, 32 lowercase hex characters.
    @ivar crc32: the CRC-32 of the plaintext (as L{zlib.crc32}).
    """

    descriptor: StreamDescriptor
    sd_hash: str
    size: int
    md5: str
    crc32: int


class _Digests:
    """
    The md5 and CRC-32 of a plaintext, fed chunk by chunk in stream order,
    one job at a time (never from two threads at once).
    """

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.crc32 = 0

    def update(self, chunk: Buffer | bytes | bytearray | memoryview, length: int) -> None:
        view = memoryview(chunk)[:length]
        self.md5.update(view)
        self.crc32 = zlib.crc32(view, self.crc32)


def _encrypt(
    key: bytes, iv: bytes, chunk: Buffer, length: int, out: Buffer
) -> tuple[memoryview, str]:
    """
    Encrypt C{chunk[:length]} into C{out}; give the blob and its name.
    (Runs in a worker thread.)
    """
    ciphertext = memoryview(out)[: encrypt_into(key, iv, chunk, length, out)]
    return ciphertext, hashlib.sha384(ciphertext).hexdigest()


def _check_and_digest(
    info: BlobInfo, key: bytes, data: bytes, digests: _Digests
) -> None:
    """
    Check that a blob stored before a checkpoint is intact and is a full
    chunk of this stream, then feed its plaintext to C{digests}.  (Runs in
    a worker thread.)

    @raise StreamError: if it is not.
    """
    if hashlib.sha384(data).hexdigest() != info.blob_hash:
        raise StreamError(
            f"blob {info.blob_num} of the upload ({str(info.blob_hash)[:16]}…) is "
            "damaged in the blob store; the upload cannot be resumed"
        )
    out = bytearray(len(data) + BLOCK_SIZE - 1)
    length = decrypt_into(key, bytes.fromhex(info.iv), data, out)
    if length != PLAINTEXT_CHUNK_SIZE:
        raise StreamError(
            f"blob {info.blob_num} of the upload holds {length} bytes of plaintext, "
            f"not a full chunk of {PLAINTEXT_CHUNK_SIZE}; the checkpoint is not one "
            "this version of p2pblob wrote"
        )
    digests.update(out, length)


def _parse_checkpoint(checkpoint: dict[str, object]) -> tuple[str, bytes, list[BlobInfo], set[str]]:
    """
    Read a checkpoint written by L{StreamCreator.checkpoint}.

    @return: the name, the key, the blobs stored (in order) and those of
        them the upload created.
    @raise StreamError: if it is malformed, or is not a checkpoint of an
        upload whose IVs are derived from its key.
    """

    def bad(reason: str) -> StreamError:
        return StreamError(f"cannot resume the upload: its checkpoint {reason}")

    if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
        raise bad(f"is not a version {CHECKPOINT_VERSION} upload checkpoint")
    name = checkpoint.get("name")
    key_hex = checkpoint.get("key")
    blobs = checkpoint.get("blobs")
    stored = checkpoint.get("stored")
    if not isinstance(name, str):
        raise bad("has no stream name")
    try:
        key = bytes.fromhex(key_hex) if isinstance(key_hex, str) else b""
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise bad("has no valid stream key")
    if not isinstance(blobs, list) or not isinstance(stored, int) or isinstance(stored, bool):
        raise bad("lists no blobs, or no stored offset")
    infos: list[BlobInfo] = []
    created: set[str] = set()
    for number, entry in enumerate(blobs):
        if not isinstance(entry, dict):
            raise bad(f"has a malformed entry for blob {number}")
        hash_ = entry.get("blob_hash")
        if (
            entry.get("blob_num") != number
            or entry.get("length") != MAX_BLOB_SIZE
            or entry.get("iv") != derived_iv(key, number).hex()
            or not is_blob_hash(hash_)
        ):
            raise bad(f"has a wrong entry for blob {number}")
        assert isinstance(hash_, str)
        infos.append(BlobInfo(number, MAX_BLOB_SIZE, derived_iv(key, number).hex(), hash_))
        if entry.get("created", False):
            created.add(hash_)
    if stored != len(infos) * PLAINTEXT_CHUNK_SIZE:
        raise bad(f"says {stored} bytes are stored, but lists {len(infos)} full blobs")
    return name, key, infos, created


def _when(d: Deferred[None]) -> Deferred[None]:
    """
    A new Deferred that fires when C{d} (which never fails) does, so that
    several callers can wait for one thing.
    """
    out: Deferred[None] = Deferred()

    def pass_on(result: None) -> None:
        out.callback(None)

    d.addCallback(pass_on)
    return out


class StreamCreator:
    """
    Encrypts a stream written to it piece by piece into blobs, stores them
    as they are made, and publishes the stream once it is finished.

    Its life: L{write} any number of times (each call after the Deferred of
    the one before it fired, or sooner: writes are taken in the order
    made), then either L{finish} (the stream is published) or L{cancel}
    (nothing is left).  A failure of the store ends it too, like a cancel.
    At any time L{checkpoint} tells how to go on after a restart, with
    L{resume}.

    @ivar name: the stream's file name (its C{stream_name}, and, sanitized,
        its C{suggested_file_name}).
    @ivar key: the stream key.
    @ivar received: plaintext bytes accepted by L{write} so far.
    @ivar stored: plaintext bytes whose blobs are all stored: a multiple of
        L{PLAINTEXT_CHUNK_SIZE} (the point an upload can be resumed from)
        until L{finish} stores the last, shorter blob; then the stream's
        size.
    """

    def __init__(
        self,
        store: IBlobStore,
        run: BlockingRunner,
        name: str,
        *,
        key: bytes | None = None,
        workers: int = 4,
    ) -> None:
        """
        @param store: where the blobs go.
        @param run: runs the encryption and hashing off the reactor thread.
        @param name: the stream's file name.
        @param key: the stream key; a fresh random one if L{None}.
        @param workers: blobs being encrypted and stored at once, at most.
        @raise ValueError: if the key is not 16 bytes, or C{workers} < 1.
        """
        if key is None:
            key = random_key()
        if len(key) != KEY_SIZE:
            raise ValueError(f"a stream key is {KEY_SIZE} bytes, not {len(key)}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.name = name
        self.key = key
        self.received = 0
        self.stored = 0
        self._store = store
        self._run = run
        self._digest_run = one_at_a_time(run)
        self._digests = _Digests()
        self._workers = workers
        self._chunks = BufferPool(MAX_BLOB_SIZE, keep=workers + 1)
        self._outputs = BufferPool(MAX_BLOB_SIZE + BLOCK_SIZE, keep=workers)
        self._slots = DeferredSemaphore(workers)
        # held by the write (or finish) that is taking in bytes, so that
        # bytes are taken in the order the calls were made
        self._lock = DeferredLock()
        # the chunk being filled, and how much of it is
        self._chunk: Buffer | None = None
        self._fill = 0
        # data blobs stored, by number; how many chunks were handed out;
        # how many blobs from the first are all stored
        self._infos: dict[int, BlobInfo] = {}
        self._lengths: dict[int, int] = {}
        self._submitted = 0
        self._contiguous = 0
        # work that may still put blobs in the store (data blobs by number,
        # and the sd blob as "sd"), and the blobs this upload put there
        self._flights: dict[object, Deferred[None]] = {}
        self._created: set[str] = set()
        self._sd_hash: str | None = None
        self._recorded = False
        # "open" -> "finishing" -> "finished"; or "failed" / "cancelled",
        # which remove the blobs (self._cleanup fires once they are gone)
        self._state = "open"
        self._error: Failure | None = None
        self._cleanup: Deferred[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<StreamCreator {self.name!r} {self._state}, {self.received} bytes "
            f"received, {self.stored} stored>"
        )

    # writing

    def write(self, data: bytes | bytearray | memoryview) -> Deferred[None]:
        """
        Take the next bytes of the stream.

        Bytes that do not complete a chunk are copied at once.  Otherwise
        the caller must leave C{data} unchanged until the Deferred fires.

        @return: a Deferred that fires with L{None} once C{data} is taken
            and fewer than C{workers} blobs are being made, that is when the
            caller may write more.  It fails with the store's error (for
            instance L{p2pblob.errors.DiskLimitError}, or
            L{p2pblob.errors.StorageError} if the store stopped) once the
            blobs of the upload have been removed; with
            L{TransferCancelledError} after L{cancel}; with L{StreamError}
            after L{finish}.
        """
        if self._state != "open":
            return self._refused()
        view = memoryview(data).cast("B")
        size = len(view)
        self.received += size
        if not self._lock.locked and self._fill + size < PLAINTEXT_CHUNK_SIZE:
            # the common small write: into the chunk being filled, now
            if size:
                self._copy(view)
            return succeed(None)
        return Deferred.fromCoroutine(self._write(view))

    def _copy(self, view: memoryview) -> int:
        """
        Copy as much of C{view} as fits into the chunk being filled.

        @return: bytes copied.
        """
        if self._chunk is None:
            self._chunk = self._chunks.acquire()
            self._fill = 0
        count = min(PLAINTEXT_CHUNK_SIZE - self._fill, len(view))
        self._chunk[self._fill : self._fill + count] = view[:count]
        self._fill += count
        return count

    async def _write(self, view: memoryview) -> None:
        await self._lock.acquire()
        try:
            while view:
                await self._check()
                view = view[self._copy(view) :]
                if self._fill == PLAINTEXT_CHUNK_SIZE:
                    await self._submit()
            # wait, if need be, until a blob is done: the caller may then
            # fill the next chunk
            await self._slots.acquire()
            self._slots.release()
            await self._check()
        finally:
            self._lock.release()

    def _submit(self) -> Deferred[None]:
        """
        Hand the chunk being filled to a worker as soon as fewer than
        C{workers} are busy.
        """

        async def submit() -> None:
            await self._slots.acquire()
            if self._state not in ("open", "finishing"):
                self._slots.release()
                await self._check()
            chunk, length = self._chunk, self._fill
            assert chunk is not None
            self._chunk, self._fill = None, 0
            number = self._submitted
            self._submitted += 1
            flight = Deferred.fromCoroutine(self._make_blob(number, chunk, length))
            self._flights[number] = flight
            flight.addBoth(self._landed, number)

        return Deferred.fromCoroutine(submit())

    async def _make_blob(self, number: int, chunk: Buffer, length: int) -> None:
        """
        Encrypt, hash and store one chunk (the plaintext digests are fed
        meanwhile, in stream order).
        """
        iv = derived_iv(self.key, number)
        out = self._outputs.acquire()
        try:
            digested = self._digest_run(self._digests.update, chunk, length)
            encrypted = self._run(_encrypt, self.key, iv, chunk, length, out)
            jobs: list[Deferred[Any]] = [digested, encrypted]
            results: list[tuple[bool, Any]] = await DeferredList(jobs, consumeErrors=True)
            for ok, result in results:
                if not ok:
                    result.raiseException()
            ciphertext, name = results[1][1]
            if self._state in ("open", "finishing"):
                created = not self._store.has_blob(name)
                blob = await self._store.put_blob(ciphertext, name)
                if created:
                    self._created.add(name)
                self._infos[number] = BlobInfo(number, blob.length, iv.hex(), name)
                self._lengths[number] = length
        finally:
            self._chunks.release(chunk)
            self._outputs.release(out)
        while self._contiguous in self._infos:
            self.stored += self._lengths[self._contiguous]
            self._contiguous += 1

    def _landed(self, result: None | Failure, number: int) -> None:
        del self._flights[number]
        self._slots.release()
        if isinstance(result, Failure):
            self._fail(result)

    def _fail(self, failure: Failure) -> None:
        """
        The upload cannot go on: remember why and remove its blobs.  (After
        a cancel, or a first failure, later failures are only logged.)
        """
        if self._state not in ("open", "finishing"):
            # expected: the store may well fail once the upload is stopped
            _log.info(
                "After the upload of {name} stopped: {error}", name=self.name, error=failure.value
            )
            return
        _log.warn(
            "The upload of {name} failed after {received} bytes: {error}",
            name=self.name, received=self.received, error=failure.value,
        )
        self._state = "failed"
        self._error = failure
        self._stop()

    def _stop(self) -> None:
        if self._chunk is not None:
            self._chunks.release(self._chunk)
            self._chunk, self._fill = None, 0
        self._cleanup = Deferred.fromCoroutine(self._remove_blobs())

    async def _check(self) -> None:
        """
        Raise why the upload stopped, if it did, once its blobs are gone.
        """
        if self._state in ("open", "finishing"):
            return
        if self._cleanup is not None:
            await _when(self._cleanup)
        if self._state == "failed":
            assert self._error is not None
            self._error.raiseException()
        if self._state == "cancelled":
            raise TransferCancelledError(self.name, "it was cancelled")
        raise AssertionError(f"unexpected state {self._state}")

    def _refused(self) -> Deferred[Any]:
        """
        The answer to a write or finish once the upload is no longer open.
        """
        if self._state in ("finishing", "finished"):
            return fail(StreamError(f"the stream {self.name!r} is already finished"))
        return Deferred.fromCoroutine(self._check())

    # finishing

    def finish(self) -> Deferred[StreamResult]:
        """
        End the stream: store its last blob, its sd blob, and record it as
        published (so that its blobs are never evicted).  Writes made
        before are taken first.  A stream of no bytes has no data blob,
        only the terminator, as C{publish_file} makes of an empty file.

        @return: a Deferred that fires with the L{StreamResult}.  It fails
            as L{write} does (the blobs of the upload are then removed), or
            with L{IncompleteStreamError} if a blob of the upload vanished
            from the store before the stream could be recorded.
        """
        if self._state != "open":
            return self._refused()
        # no write is taken after this one; those made before still are
        self._state = "finishing"
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> StreamResult:
        await self._lock.acquire()
        try:
            await self._check()
            if self._fill:
                await self._submit()
            elif self._chunk is not None:
                self._chunks.release(self._chunk)
                self._chunk = None
            await self._settle()
            await self._check()
            count = self._submitted
            infos = [self._infos[number] for number in range(count)]
            infos.append(BlobInfo(count, 0, derived_iv(self.key, count).hex()))
            descriptor = StreamDescriptor.build(
                stream_name=self.name,
                key=self.key,
                suggested_file_name=lbry_sanitize_file_name(self.name),
                blobs=infos,
            )
            hashes = descriptor.blob_hashes
            flight = Deferred.fromCoroutine(self._publish(descriptor, hashes))
            self._flights["sd"] = flight
            flight.addBoth(self._published)
            await _when(flight)
            await self._check()
            assert self._sd_hash is not None
            self._state = "finished"
        finally:
            self._lock.release()
        size = self.stored
        _log.info(
            "Published {name} ({size} bytes, {count} blobs) as {sd_hash}",
            name=self.name, size=size, count=count, sd_hash=self._sd_hash,
        )
        return StreamResult(
            descriptor=descriptor,
            sd_hash=self._sd_hash,
            size=size,
            md5=self._digests.md5.hexdigest(),
            crc32=self._digests.crc32,
        )

    async def _publish(self, descriptor: StreamDescriptor, hashes: list[str]) -> None:
        missing = [name for name in hashes if not self._store.has_blob(name)]
        if missing:
            raise IncompleteStreamError(missing, [])
        sd_blob = descriptor.to_sd_blob()
        sd_hash = await self._run(blob_hash, sd_blob)
        if self._state != "finishing":
            return
        created = not self._store.has_blob(sd_hash)
        await self._store.put_blob(sd_blob, sd_hash)
        if created:
            self._created.add(sd_hash)
        self._sd_hash = sd_hash
        if self._state != "finishing":
            return
        self._recorded = True
        await self._store.add_stream(sd_hash, [sd_hash, *hashes], ROLE_PUBLISHED)

    def _published(self, result: None | Failure) -> None:
        del self._flights["sd"]
        if isinstance(result, Failure):
            self._fail(result)

    async def _settle(self) -> None:
        """
        Wait until no work may put a blob in the store any more.
        """
        while self._flights:
            await DeferredList(list(self._flights.values()))

    # stopping

    def cancel(self) -> Deferred[None]:
        """
        Stop the upload and remove every blob it put in the store, once the
        blobs being made meanwhile are done (a blob that a stream recorded
        in the store also uses is kept).  Writes and a finish still waiting
        fail with L{TransferCancelledError}.  After L{finish} has
        succeeded, this does nothing: the stream is published.

        @return: a Deferred that fires with L{None} once the blobs are gone.
        """
        if self._state == "finished":
            return succeed(None)
        if self._state in ("open", "finishing"):
            _log.info(
                "Cancelled the upload of {name} after {received} bytes",
                name=self.name, received=self.received,
            )
            self._state = "cancelled"
            self._stop()
        assert self._cleanup is not None
        return _when(self._cleanup)

    async def _remove_blobs(self) -> None:
        """
        Once nothing is being stored any more, remove the blobs this upload
        created, but not one that another recorded stream also uses: they
        are recorded for a moment as a stream of their own, which is then
        removed with its orphans (the store's own rule).  Never fails:
        problems are logged.
        """
        try:
            await self._settle()
            if self._recorded:
                assert self._sd_hash is not None
                await self._store.remove_stream(self._sd_hash, False)
                self._recorded = False
            created = sorted(self._created)
            self._created.clear()
            if created:
                scratch = _scratch_name(self.key, created)
                await self._store.add_stream(scratch, created, ROLE_DOWNLOADED)
                await self._store.remove_stream(scratch, True)
                _log.info(
                    "Removed the {count} blobs of the stopped upload of {name}",
                    count=len(created), name=self.name,
                )
        except P2PBlobError as e:
            # the store stopped, for instance: the blobs stay, in no stream
            _log.warn(
                "Could not remove the blobs of the stopped upload of {name}: {error}",
                name=self.name, error=e,
            )
        except Exception:
            _log.failure("Could not remove the blobs of the upload of {name}", name=self.name)

    # resuming

    def checkpoint(self) -> dict[str, object]:
        """
        Describe the upload so that L{resume} can go on from L{stored} after
        a restart: its name, key, and the full blobs stored from the start
        (whether this upload created each one, for L{cancel}).  Only JSON
        types are used.  The caller keeps it somewhere durable, and sends
        the bytes from C{checkpoint()["stored"]} on again after resuming.
        """
        blobs: list[dict[str, object]] = []
        for number in range(self._contiguous):
            info = self._infos[number]
            if self._lengths[number] != PLAINTEXT_CHUNK_SIZE:
                break
            blobs.append({
                "blob_num": info.blob_num,
                "length": info.length,
                "iv": info.iv,
                "blob_hash": info.blob_hash,
                "created": info.blob_hash in self._created,
            })
        return {
            "version": CHECKPOINT_VERSION,
            "name": self.name,
            "key": self.key.hex(),
            "blobs": blobs,
            "stored": len(blobs) * PLAINTEXT_CHUNK_SIZE,
        }

    @classmethod
    def resume(
        cls,
        store: IBlobStore,
        run: BlockingRunner,
        checkpoint: dict[str, object],
        *,
        workers: int = 4,
    ) -> Deferred[StreamCreator]:
        """
        Make a creator that goes on with the upload a checkpoint describes,
        from its C{stored} offset: the bytes from there on are to be
        written to it.  The md5 and CRC-32 of the bytes before are restored
        by reading the stored blobs back, checking and decrypting them one
        at a time, off the reactor thread.

        @return: a Deferred that fires with the creator.  It fails with
            L{StreamError} if the checkpoint is malformed, or a blob it
            lists is missing from the store or damaged.
        """

        async def resume() -> StreamCreator:
            name, key, infos, created = _parse_checkpoint(checkpoint)
            missing = [str(info.blob_hash) for info in infos if not store.has_blob(str(info.blob_hash))]
            if missing:
                raise StreamError(
                    f"cannot resume the upload of {name!r}: {len(missing)} of its "
                    f"{len(infos)} stored blobs are no longer in the blob store"
                )
            creator = cls(store, run, name, key=key, workers=workers)
            for info in infos:
                data = await store.read_blob(str(info.blob_hash))
                await run(_check_and_digest, info, key, data, creator._digests)
            creator._restore(infos, created)
            return creator

        return Deferred.fromCoroutine(resume())

    def _restore(self, infos: list[BlobInfo], created: set[str]) -> None:
        for info in infos:
            self._infos[info.blob_num] = info
            self._lengths[info.blob_num] = PLAINTEXT_CHUNK_SIZE
        self._submitted = self._contiguous = len(infos)
        self.stored = self.received = len(infos) * PLAINTEXT_CHUNK_SIZE
        self._created = set(created)

    def blob_hashes(self) -> list[str]:
        """
        The names of the data blobs stored so far, from the first, without
        a gap.
        """
        return [str(self._infos[number].blob_hash) for number in range(self._contiguous)]


def _scratch_name(key: bytes, blob_hashes: Iterable[str]) -> str:
    """
    A name, in the form of an sd hash, for the moment the blobs of a
    stopped upload are recorded as a stream of their own.
    """
    digest = hashlib.sha384(b"p2pblob-stopped-upload")
    digest.update(key)
    for name in blob_hashes:
        digest.update(name.encode("ascii"))
    return digest.hexdigest()
