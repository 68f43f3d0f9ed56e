"""
Tests for L{p2pblob.blob.staged}: a blob received into a pooled buffer and
verified and stored by the store once complete.

The behaviour is written once in L{StagedWriterTestsMixin} and run against
the in-memory store (L{p2pblob.testing.MemoryBlobStore}) and the disk store
(L{p2pblob.blob.store.BlobStore}, in a temporary directory, its blocking work
run inline or held until the test releases it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._buffers import Buffer, BufferPool
from p2pblob._threads import run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.blob.staged import HeldBlobs, StagedBlobWriter, blob_buffers
from p2pblob.blob.store import BlobStore
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobTooLargeError,
    BlobWriteCancelledError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter
from p2pblob.testing import MemoryBlobStore
from tests.blob.test_store import HeldRunner

if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object


class HeldMemoryBlobStore(MemoryBlobStore):
    """
    A memory store whose C{put_blob} runs only when its runner is released
    (reading the caller's buffer then, as a worker thread would).
    """

    def __init__(self, runner: HeldRunner) -> None:
        super().__init__()
        self._runner = runner

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        return self._runner(MemoryBlobStore.put_blob, self, data, expected_hash)


verifyObject(IBlobStore, HeldMemoryBlobStore(HeldRunner()))


def pieces(data: bytes, size: int) -> list[bytes | memoryview]:
    """
    C{data} cut into pieces of C{size} bytes, every other one a memoryview.
    """
    cut = [data[i : i + size] for i in range(0, len(data), size)]
    return [memoryview(p) if i % 2 else p for i, p in enumerate(cut)]


class StagedWriterTestsMixin(_TestCase):
    """
    Tests of L{StagedBlobWriter} for a test case that supplies the hooks.
    """

    def make_store(self) -> IBlobStore:
        """
        A fresh, started store whose Deferreds fire at once.
        """
        raise NotImplementedError()

    def make_held_store(self) -> tuple[IBlobStore, HeldRunner]:
        """
        A fresh, started store whose blob writing waits for the runner.
        """
        raise NotImplementedError()

    def assertNothingStored(self, store: IBlobStore) -> None:
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store.used_bytes(), 0)

    def setUp(self) -> None:
        self.store = self.make_store()
        self.pool = blob_buffers()
        # A buffer the pool hands out next: after a writer is done, the pool
        # gives it out again only if the writer gave it back.
        self.buffer = self.pool.acquire()
        self.pool.release(self.buffer)

    def assertBufferReturned(self) -> None:
        """
        The writer's buffer is back in the pool, exactly once.
        """
        self.assertIs(self.pool.acquire(), self.buffer)
        self.assertIsNot(self.pool.acquire(), self.buffer)

    def writer(self, data: bytes, length: int | None = None) -> StagedBlobWriter:
        return StagedBlobWriter(
            self.store, blob_hash(data), len(data) if length is None else length, self.pool
        )

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IBlobWriter, self.writer(b"x" * 10)))

    def test_many_pieces(self) -> None:
        """
        Bytes written in many pieces, bytes and memoryviews, are stored as
        one blob that reads back intact; C{finished} fires with it.
        """
        data = os.urandom(100_003)
        writer = self.writer(data)
        for piece in pieces(data, 7_000):
            self.assertNoResult(writer.finished)
            writer.write(piece)  # type: ignore[arg-type]
        self.assertEqual(writer.received, len(data))
        blob = self.successResultOf(writer.finished)
        self.assertTrue(IBlob.providedBy(blob))
        self.assertEqual((blob.blob_hash, blob.length), (blob_hash(data), len(data)))
        self.assertEqual(self.successResultOf(self.store.read_blob(blob_hash(data))), data)
        self.assertBufferReturned()

    def test_full_size_blob(self) -> None:
        data = os.urandom(MAX_BLOB_SIZE)
        writer = self.writer(data)
        writer.write(memoryview(data))
        self.assertEqual(self.successResultOf(writer.finished).length, MAX_BLOB_SIZE)
        self.assertTrue(self.store.has_blob(blob_hash(data)))

    def test_zero_length(self) -> None:
        """
        A blob of no bytes is stored as soon as the writer exists.
        """
        writer = self.writer(b"")
        blob = self.successResultOf(writer.finished)
        self.assertEqual((blob.blob_hash, blob.length), (blob_hash(b""), 0))
        self.assertEqual(self.successResultOf(self.store.read_blob(blob_hash(b""))), b"")
        self.assertBufferReturned()

    def test_wrong_bytes(self) -> None:
        data = os.urandom(5_000)
        writer = self.writer(data)
        writer.write(data[:2_500])
        writer.write(os.urandom(2_500))
        failure = self.failureResultOf(writer.finished, BlobHashMismatchError)
        self.assertEqual(failure.value.blob_hash, blob_hash(data))
        self.assertNothingStored(self.store)
        self.assertBufferReturned()

    def test_too_many_bytes(self) -> None:
        """
        The write that passes the length raises L{BlobTooLargeError}, and
        C{finished} fails with it; nothing is stored.
        """
        data = os.urandom(1_000)
        writer = self.writer(data)
        writer.write(data[:900])
        error = self.assertRaises(BlobTooLargeError, writer.write, data[900:] + b"!")
        self.assertEqual((error.length, error.limit), (1_001, 1_000))
        self.assertIs(self.failureResultOf(writer.finished, BlobTooLargeError).value, error)
        self.assertEqual(writer.received, 900)
        self.assertNothingStored(self.store)
        self.assertBufferReturned()

    def test_close_early(self) -> None:
        data = os.urandom(1_000)
        writer = self.writer(data)
        writer.write(data[:400])
        writer.close()
        error = self.failureResultOf(writer.finished, BlobIncompleteError).value
        self.assertEqual((error.received, error.expected), (400, 1_000))
        self.assertNothingStored(self.store)
        self.assertBufferReturned()

    def test_close_after_complete_does_nothing(self) -> None:
        data = os.urandom(1_000)
        writer = self.writer(data)
        writer.write(data)
        writer.close()
        writer.cancel()
        self.successResultOf(writer.finished)
        self.assertBufferReturned()

    def test_cancel(self) -> None:
        data = os.urandom(1_000)
        writer = self.writer(data)
        writer.write(data[:10])
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertNothingStored(self.store)
        self.assertBufferReturned()

    def test_length_over_limit_refused(self) -> None:
        """
        A length over 2 MiB (or below 0) is refused at once, without taking a
        buffer from the pool.
        """
        name = blob_hash(b"big")
        for length in (MAX_BLOB_SIZE + 1, -1):
            error = self.assertRaises(
                BlobTooLargeError, StagedBlobWriter, self.store, name, length, self.pool
            )
            self.assertEqual(error.length, length)
        self.assertBufferReturned()

    def test_writes_after_success_ignored(self) -> None:
        """
        Bytes written after the blob was stored change nothing, not even the
        buffer that the pool has since given to another writer.
        """
        data = os.urandom(1_000)
        writer = self.writer(data)
        writer.write(data)
        self.successResultOf(writer.finished)
        reused = self.pool.acquire()
        self.assertIs(reused, self.buffer)
        before = bytes(reused[:2_000])
        writer.write(b"\xff" * 500)
        writer.close()
        self.assertEqual(writer.received, 1_000)
        self.assertEqual(bytes(reused[:2_000]), before)

    def test_writes_after_failure_ignored(self) -> None:
        data = os.urandom(1_000)
        for end in ("close", "cancel", "too long"):
            writer = self.writer(data)
            if end == "close":
                writer.close()
            elif end == "cancel":
                writer.cancel()
            else:
                self.assertRaises(BlobTooLargeError, writer.write, data + b"!")
            self.failureResultOf(writer.finished)
            # neither raises nor fires finished again (AlreadyCalledError)
            writer.write(data)
            writer.close()
            writer.cancel()
            self.assertEqual(writer.received, 0, end)
            self.assertFalse(self.store.has_blob(blob_hash(data)), end)
        self.assertBufferReturned()

    def test_buffer_kept_while_storing(self) -> None:
        """
        While the store is still hashing and writing the blob, the buffer
        stays out of the pool; it goes back once the store is done.
        """
        store, runner = self.make_held_store()
        data = os.urandom(10_000)
        writer = StagedBlobWriter(store, blob_hash(data), len(data), self.pool)
        writer.write(data)
        self.assertNoResult(writer.finished)
        other = self.pool.acquire()
        self.assertIsNot(other, self.buffer)
        self.pool.release(other)
        runner.release_all()
        self.assertEqual(self.successResultOf(writer.finished).blob_hash, blob_hash(data))
        read = store.read_blob(blob_hash(data))
        runner.release_all()
        self.assertEqual(self.successResultOf(read), data)
        self.assertIs(self.pool.acquire(), self.buffer)

    def test_cancel_while_storing(self) -> None:
        """
        Until C{finished} has fired, C{cancel} fails it with
        L{BlobWriteCancelledError} (the L{IBlobWriter} contract); the buffer
        still waits for the store to be done with it.
        """
        store, runner = self.make_held_store()
        data = os.urandom(10_000)
        writer = StagedBlobWriter(store, blob_hash(data), len(data), self.pool)
        writer.write(data)
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertIsNot(self.pool.acquire(), self.buffer)
        runner.release_all()
        self.assertIs(self.pool.acquire(), self.buffer)

    def test_held_once_stored(self) -> None:
        """
        Given L{HeldBlobs}, the writer leaves its buffer there once the blob
        is stored, holding the blob's bytes, instead of giving it back.
        """
        held = HeldBlobs(self.pool, limit=4)
        data = os.urandom(10_000)
        writer = StagedBlobWriter(self.store, blob_hash(data), len(data), self.pool, held)
        writer.write(data)
        self.successResultOf(writer.finished)
        taken = held.take(blob_hash(data))
        assert taken is not None
        buffer, length = taken
        self.assertIs(buffer, self.buffer)
        self.assertEqual((bytes(memoryview(buffer)[:length]), length), (data, len(data)))
        self.assertEqual(len(held), 0)

    def test_not_held_when_refused(self) -> None:
        held = HeldBlobs(self.pool, limit=4)
        data = os.urandom(10_000)
        writer = StagedBlobWriter(self.store, blob_hash(b"other"), len(data), self.pool, held)
        writer.write(data)
        self.failureResultOf(writer.finished, BlobHashMismatchError)
        self.assertEqual(len(held), 0)
        self.assertBufferReturned()


class MemoryStagedWriterTests(StagedWriterTestsMixin, SynchronousTestCase):
    def make_store(self) -> IBlobStore:
        return MemoryBlobStore()

    def make_held_store(self) -> tuple[IBlobStore, HeldRunner]:
        runner = HeldRunner()
        return HeldMemoryBlobStore(runner), runner


class DiskStagedWriterTests(StagedWriterTestsMixin, SynchronousTestCase):
    def disk_store(self, run: Any) -> BlobStore:
        directory = Path(self.mktemp())
        store = BlobStore(Clock(), run, directory / "blobfiles", directory / "index.sqlite")
        started = Deferred.fromCoroutine(store.start())
        if isinstance(run, HeldRunner):
            run.release_all()
        self.successResultOf(started)
        self.addCleanup(store.stop)
        return store

    def make_store(self) -> IBlobStore:
        return self.disk_store(run_inline)

    def make_held_store(self) -> tuple[IBlobStore, HeldRunner]:
        runner = HeldRunner()
        return self.disk_store(runner), runner

    def assertNothingStored(self, store: IBlobStore) -> None:
        super().assertNothingStored(store)
        assert isinstance(store, BlobStore)
        self.assertEqual(os.listdir(store.path_of(blob_hash(b"")).parent), [])


class BlobBuffersTests(SynchronousTestCase):
    def test_blob_sized(self) -> None:
        pool = blob_buffers(keep=2)
        self.assertIsInstance(pool, BufferPool)
        self.assertEqual(len(pool.acquire()), MAX_BLOB_SIZE)

    def test_keeps_at_most_keep(self) -> None:
        pool = blob_buffers(keep=1)
        a, b = pool.acquire(), pool.acquire()
        pool.release(a)
        pool.release(b)
        self.assertIs(pool.acquire(), a)
        self.assertIsNot(pool.acquire(), b)


class HeldBlobsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = BufferPool(16, keep=8)
        self.places = {f"blob{n}": n for n in range(10)}
        self.held = HeldBlobs(self.pool, limit=3, order=self.places.get)
        self.taken: list[int] = []
        self.held.when_taken(lambda: self.taken.append(len(self.held)))

    def hold(self, *nums: int) -> dict[int, Buffer]:
        buffers = {}
        for num in nums:
            buffers[num] = self.pool.acquire()
            self.held.hold(f"blob{num}", buffers[num], num)
        return buffers

    def test_take(self) -> None:
        buffers = self.hold(1, 2)
        self.assertIn("blob1", self.held)
        self.assertEqual(self.held.take("blob1"), (buffers[1], 1))
        self.assertNotIn("blob1", self.held)
        self.assertIsNone(self.held.take("blob1"))
        self.assertIsNone(self.held.take("blob7"))
        self.assertEqual(self.taken, [1])
        self.held.release(buffers[1])
        self.assertIs(self.pool.acquire(), buffers[1])

    def test_full_keeps_the_soonest_needed(self) -> None:
        """
        When the limit is reached, the blob read last (the highest blob
        number) gives way: a later one is not held, an earlier one takes
        the place of the latest held.
        """
        buffers = self.hold(5, 2, 7)
        late = self.hold(9)
        self.assertNotIn("blob9", self.held)
        self.assertIs(self.pool.acquire(), late[9])  # back in the pool
        self.hold(1)
        self.assertEqual(sorted(b for b in self.places if b in self.held), ["blob1", "blob2", "blob5"])
        self.assertIs(self.pool.acquire(), buffers[7])

    def test_unknown_blobs_come_last(self) -> None:
        self.hold(1, 2)
        self.held.hold("stranger", self.pool.acquire(), 1)
        self.hold(3)
        self.assertNotIn("stranger", self.held)
        self.assertIn("blob3", self.held)

    def test_same_blob_twice(self) -> None:
        """
        A blob held again (two peers raced to deliver it) keeps the newer
        buffer; the older goes back to the pool.
        """
        first = self.hold(4)[4]
        second = self.hold(4)[4]
        self.assertEqual(len(self.held), 1)
        self.assertEqual(self.held.take("blob4"), (second, 4))
        self.assertIs(self.pool.acquire(), first)

    def test_clear(self) -> None:
        buffers = self.hold(1, 2)
        self.held.clear()
        self.assertEqual(len(self.held), 0)
        self.assertEqual(self.taken, [0])
        self.assertEqual({id(self.pool.acquire()), id(self.pool.acquire())}, {id(b) for b in buffers.values()})

    def test_no_room_at_all(self) -> None:
        held = HeldBlobs(self.pool, limit=0)
        buffer = self.pool.acquire()
        held.hold("blob1", buffer, 1)
        self.assertEqual(len(held), 0)
        self.assertIs(self.pool.acquire(), buffer)
