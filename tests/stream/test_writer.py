"""
Tests for L{p2pblob.stream.writer}: publishing a stream from bytes written
piece by piece, with backpressure, cancellation, and resumption after a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob._threads import ThreadWorker, run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.store import BlobStore
from p2pblob.errors import (
    DiskLimitError,
    StorageError,
    StreamError,
    TransferCancelledError,
)
from p2pblob.interfaces import IBlob
from p2pblob.stream.assembler import assemble_stream
from p2pblob.stream.creator import publish_file
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE, decrypt_blob
from p2pblob.stream.descriptor import StreamDescriptor, parse_sd_blob
from p2pblob.stream.writer import StreamCreator, StreamResult, derived_iv
from p2pblob.testing import MemoryBlobStore

C = PLAINTEXT_CHUNK_SIZE
KEY = bytes(range(16))

_T = TypeVar("_T")


def pattern(length: int, seed: bytes = b"p2pblob") -> bytes:
    """
    C{length} bytes that differ from chunk to chunk (cheaper than urandom
    for the big cases, and reproducible).
    """
    block = hashlib.sha512(seed).digest() * 1024  # 64 KiB
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += block[counter % 61 :] + counter.to_bytes(8, "big")
        counter += 1
    return bytes(out[:length])


def derived_ivs(key: bytes) -> Callable[[], bytes]:
    numbers = iter(range(1 << 20))
    return lambda: derived_iv(key, next(numbers))


def make_store(directory: Path, disk_limit: int | None = None) -> BlobStore:
    directory.mkdir(parents=True, exist_ok=True)
    store = BlobStore(
        Clock(), run_inline, directory / "blobfiles", directory / "index.sqlite", disk_limit
    )
    Deferred.fromCoroutine(store.start())
    return store


class HeldRunner:
    """
    A runner that runs its jobs only when the test says so, in any order.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.most_encrypting = 0

    def __call__(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self.jobs.append((f, args, d))
        self.most_encrypting = max(self.most_encrypting, self.encrypting())
        return d

    def encrypting(self) -> int:
        return sum(1 for f, _, _ in self.jobs if f.__name__ == "_encrypt")

    def run_one(self, index: int = 0) -> None:
        f, args, d = self.jobs.pop(index)
        try:
            result = f(*args)
        except BaseException:
            d.errback()
        else:
            d.callback(result)

    def run_all(self) -> None:
        while self.jobs:
            self.run_one()


class HeldStore(MemoryBlobStore):
    """
    A memory store whose C{put_blob} waits for the test while C{holding}.
    """

    def __init__(self, disk_limit: int | None = None) -> None:
        super().__init__(disk_limit)
        self.holding = False
        self.held: list[tuple[bytes, str | None, Deferred[IBlob]]] = []

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        if not self.holding:
            return super().put_blob(data, expected_hash)
        d: Deferred[IBlob] = Deferred()
        self.held.append((bytes(data), expected_hash, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for data, expected_hash, d in held:
            super().put_blob(data, expected_hash).chainDeferred(d)


class FailingStore(MemoryBlobStore):
    """
    A memory store whose C{fail_at}-th C{put_blob} fails as a broken disk
    would.
    """

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.puts = 0

    def put_blob(
        self, data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        self.puts += 1
        if self.puts == self.fail_at:
            return fail(StorageError("could not write to the blob store: disk broke"))
        return super().put_blob(data, expected_hash)


class WriterTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def published(self, data: bytes, name: str = "file.bin", key: bytes = KEY) -> tuple[StreamDescriptor, str]:
        """
        What publish_file makes of C{data}, with derived IVs.
        """
        source = self.directory / "published" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(data)
        return self.successResultOf(
            Deferred.fromCoroutine(
                publish_file(MemoryBlobStore(), run_inline, source, key=key, iv_source=derived_ivs(key))
            )
        )

    def write_all(self, creator: StreamCreator, data: bytes, sizes: Iterator[int]) -> None:
        offset = 0
        while offset < len(data):
            size = next(sizes)
            self.successResultOf(creator.write(data[offset : offset + size]))
            offset += size

    def create(
        self, store: Any, data: bytes, sizes: Iterator[int], name: str = "file.bin", key: bytes = KEY
    ) -> StreamResult:
        creator = StreamCreator(store, run_inline, name, key=key)
        self.write_all(creator, data, sizes)
        return self.successResultOf(creator.finish())

    def assertSameAsPublished(self, result: StreamResult, data: bytes, name: str = "file.bin") -> None:
        descriptor, sd_hash = self.published(data, name)
        self.assertEqual(result.sd_hash, sd_hash)
        self.assertEqual(result.descriptor, descriptor)
        self.assertEqual(result.size, len(data))
        self.assertEqual(result.md5, hashlib.md5(data).hexdigest())
        self.assertEqual(result.crc32, zlib.crc32(data))


def forever(size: int) -> Iterator[int]:
    while True:
        yield size


class DerivedIVTests(SynchronousTestCase):
    def test_definition(self) -> None:
        """
        The IV is the first 16 bytes of HMAC-SHA256(key, "p2pblob-iv" +
        the number as 8 big-endian bytes).
        """
        expected = hmac.new(KEY, b"p2pblob-iv" + (5).to_bytes(8, "big"), hashlib.sha256).digest()[:16]
        self.assertEqual(derived_iv(KEY, 5), expected)
        self.assertEqual(derived_iv(KEY, 0).hex(), "c68861f1e60d7ef6060086c082297586")

    def test_distinct(self) -> None:
        ivs = {derived_iv(KEY, n) for n in range(1000)}
        self.assertEqual(len(ivs), 1000)
        self.assertNotEqual(derived_iv(KEY, 1), derived_iv(bytes(16), 1))

    def test_range(self) -> None:
        self.assertRaises(ValueError, derived_iv, KEY, -1)
        self.assertRaises(ValueError, derived_iv, KEY, 1 << 64)


class SameAsPublishTests(WriterTestCase):
    """
    Whatever the writes, a creator makes the blobs and sd blob that
    publish_file makes of the same bytes with the same key and derived IVs.
    """

    def test_sizes_and_splits(self) -> None:
        for size in (0, 1, 15, 16, C - 1, C, C + 1, 2 * C, 3 * C + 5):
            data = pattern(size, str(size).encode())
            for split in (1_000_003, C, 7 * C):
                with self.subTest(size=size, split=split):
                    result = self.create(MemoryBlobStore(), data, forever(split))
                    self.assertSameAsPublished(result, data)
                    self.assertEqual(len(result.descriptor.data_blobs), -(-size // C))

    def test_empty_stream(self) -> None:
        """
        Finishing at once publishes a stream of no data blob, only the
        terminator, as publish_file does with an empty file.
        """
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "empty.txt", key=KEY)
        result = self.successResultOf(creator.finish())
        self.assertSameAsPublished(result, b"", "empty.txt")
        self.assertEqual(result.descriptor.blobs[0].length, 0)
        self.assertEqual(len(result.descriptor.blobs), 1)
        self.assertEqual((result.md5, result.crc32), (hashlib.md5(b"").hexdigest(), 0))
        self.assertEqual(self.successResultOf(store.verified_blobs()), [result.sd_hash])
        self.assertEqual(creator.blob_hashes(), [])

    def test_empty_writes(self) -> None:
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "file.bin", key=KEY)
        self.successResultOf(creator.write(b""))
        self.successResultOf(creator.write(b"abc"))
        self.successResultOf(creator.write(b""))
        self.assertSameAsPublished(self.successResultOf(creator.finish()), b"abc")

    def test_many_tiny_writes(self) -> None:
        """
        Tens of thousands of small writes across a chunk boundary: each is
        taken at once, and the result is the same.
        """
        data = pattern(C + 50_000)
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "file.bin", key=KEY)
        for offset in range(0, len(data), 37):
            self.successResultOf(creator.write(data[offset : offset + 37]))
        self.assertEqual(creator.stored, C)
        self.assertSameAsPublished(self.successResultOf(creator.finish()), data)

    def test_one_huge_write(self) -> None:
        data = pattern(5 * C + 1234)
        result = self.create(MemoryBlobStore(), data, forever(len(data)))
        self.assertSameAsPublished(result, data)

    def test_write_types(self) -> None:
        """
        C{bytearray} and C{memoryview} (of any item size) are taken too.
        """
        data = pattern(C + 10)
        creator = StreamCreator(MemoryBlobStore(), run_inline, "file.bin", key=KEY)
        self.successResultOf(creator.write(bytearray(data[:10])))
        self.successResultOf(creator.write(memoryview(data[10 : C + 1]).cast("H")))
        self.successResultOf(creator.write(memoryview(data)[C + 1 :]))
        self.assertSameAsPublished(self.successResultOf(creator.finish()), data)

    def test_unicode_name(self) -> None:
        data = b"hello"
        result = self.create(MemoryBlobStore(), data, forever(2), name="vidéo d'été.mp4")
        self.assertSameAsPublished(result, data, "vidéo d'été.mp4")

    @settings(max_examples=30, deadline=None)
    @given(
        length=st.one_of(
            st.integers(0, 3000),
            st.sampled_from([C - 1, C, C + 1, 2 * C + 17]),
        ),
        cuts=st.lists(st.floats(0, 1), max_size=12),
        seed=st.binary(min_size=1, max_size=8),
        key=st.binary(min_size=16, max_size=16),
    )
    def test_random_splits(self, length: int, cuts: list[float], seed: bytes, key: bytes) -> None:
        """
        Random content, cut into writes at random places, gives the sd hash
        and md5 publish_file gives.
        """
        data = pattern(length, seed)
        points = sorted({0, length, *(int(c * length) for c in cuts)})
        creator = StreamCreator(MemoryBlobStore(), run_inline, "f", key=key, workers=2)
        for start, end in zip(points, points[1:], strict=False):
            self.successResultOf(creator.write(data[start:end]))
        result = self.successResultOf(creator.finish())
        source = self.directory / f"f-{os.urandom(4).hex()}" / "f"
        source.parent.mkdir()
        source.write_bytes(data)
        _, sd_hash = self.successResultOf(
            Deferred.fromCoroutine(
                publish_file(MemoryBlobStore(), run_inline, source, key=key, iv_source=derived_ivs(key))
            )
        )
        self.assertEqual(result.sd_hash, sd_hash)
        self.assertEqual(result.md5, hashlib.md5(data).hexdigest())
        self.assertEqual(result.crc32, zlib.crc32(data))

    def test_recorded_and_readable(self) -> None:
        """
        The stream is recorded as published in a real store, with its sd
        blob, and assembles back to the bytes written.
        """
        store = make_store(self.directory / "store")
        data = pattern(2 * C + 99)
        creator = StreamCreator(store, run_inline, "file.bin")
        self.write_all(creator, data, forever(500_000))
        result = self.successResultOf(creator.finish())
        self.assertEqual(store.index.streams(), [(result.sd_hash, "published", False, False)])
        self.assertEqual(
            store.index.stream_blobs(result.sd_hash), [result.sd_hash, *result.descriptor.blob_hashes]
        )
        self.assertEqual(creator.blob_hashes(), result.descriptor.blob_hashes)
        self.assertEqual(parse_sd_blob(self.successResultOf(store.read_blob(result.sd_hash))), result.descriptor)
        self.assertEqual(result.descriptor.key, creator.key)
        out = self.directory / "out"
        size = self.successResultOf(
            Deferred.fromCoroutine(assemble_stream(store, run_inline, result.descriptor, out))
        )
        self.assertEqual((size, out.read_bytes()), (len(data), data))
        store.stop()

    def test_fresh_key(self) -> None:
        first = StreamCreator(MemoryBlobStore(), run_inline, "a")
        second = StreamCreator(MemoryBlobStore(), run_inline, "a")
        self.assertNotEqual(first.key, second.key)
        self.assertEqual(len(first.key), 16)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, StreamCreator, MemoryBlobStore(), run_inline, "a", key=b"short")
        self.assertRaises(ValueError, StreamCreator, MemoryBlobStore(), run_inline, "a", workers=0)


class ProgressTests(WriterTestCase):
    def test_received_and_stored(self) -> None:
        """
        C{received} counts what was written; C{stored} is a multiple of the
        chunk size (what a resume can start from) until finish.
        """
        creator = StreamCreator(MemoryBlobStore(), run_inline, "f", key=KEY)
        self.successResultOf(creator.write(b"x" * 1000))
        self.assertEqual((creator.received, creator.stored), (1000, 0))
        self.assertEqual(creator.blob_hashes(), [])
        self.successResultOf(creator.write(b"x" * (C - 1000)))
        self.assertEqual((creator.received, creator.stored), (C, C))
        self.assertEqual(len(creator.blob_hashes()), 1)
        self.successResultOf(creator.write(b"x" * (C + 5)))
        self.assertEqual((creator.received, creator.stored), (2 * C + 5, 2 * C))
        result = self.successResultOf(creator.finish())
        self.assertEqual((creator.received, creator.stored, result.size), (2 * C + 5,) * 3)
        self.assertEqual(creator.blob_hashes(), result.descriptor.blob_hashes)

    def test_after_finish(self) -> None:
        runner = HeldRunner()
        creator = StreamCreator(MemoryBlobStore(), runner, "f", key=KEY)
        self.successResultOf(creator.write(b"abc"))
        finished = creator.finish()
        # refused at once, even before the finish is done
        self.assertNoResult(finished)
        self.failureResultOf(creator.write(b"more"), StreamError)
        self.failureResultOf(creator.finish(), StreamError)
        runner.run_all()
        self.successResultOf(finished)
        failure = self.failureResultOf(creator.write(b"more"), StreamError)
        self.assertIn("already finished", str(failure.value))
        self.failureResultOf(creator.finish(), StreamError)
        self.assertEqual(creator.received, 3)


class BackpressureTests(WriterTestCase):
    """
    At most C{workers} blobs are being made at once, and a write does not
    fire while that many are.
    """

    def test_bounded_in_flight(self) -> None:
        runner = HeldRunner()
        store = MemoryBlobStore()
        creator = StreamCreator(store, runner, "f", key=KEY, workers=3)
        data = pattern(10 * C + 7)
        written = creator.write(data)
        self.assertNoResult(written)
        self.assertEqual(runner.encrypting(), 3)
        while not written.called:
            runner.run_one(len(runner.jobs) - 1)  # out of order, on purpose
            self.assertLessEqual(runner.encrypting(), 3)
        # the write fires once its last chunk is handed out, a worker free
        self.assertEqual(creator.received, 10 * C + 7)
        self.assertLess(runner.encrypting(), 3)
        self.successResultOf(written)
        runner.run_all()
        self.assertEqual(runner.most_encrypting, 3)
        self.assertEqual(creator.stored, 10 * C)
        finished = creator.finish()
        runner.run_all()
        self.assertSameAsPublished(self.successResultOf(finished), data, "f")

    def test_write_waits_for_a_free_worker(self) -> None:
        """
        A write that fills the last free worker fires only once one is done;
        a small write meanwhile is queued behind it, in order.
        """
        runner = HeldRunner()
        creator = StreamCreator(MemoryBlobStore(), runner, "f", key=KEY, workers=2)
        data = pattern(2 * C + 10)
        first = creator.write(data[:C])
        self.successResultOf(first)  # one worker busy, one free
        second = creator.write(data[C : 2 * C])
        self.assertNoResult(second)
        third = creator.write(data[2 * C :])
        self.assertNoResult(third)
        runner.run_all()
        self.successResultOf(second)
        self.successResultOf(third)
        finished = creator.finish()
        runner.run_all()
        self.assertSameAsPublished(self.successResultOf(finished), data, "f")

    def test_stored_only_when_contiguous(self) -> None:
        """
        A later blob done first does not advance C{stored}.
        """
        runner = HeldRunner()
        creator = StreamCreator(MemoryBlobStore(), runner, "f", key=KEY, workers=2)
        creator.write(pattern(2 * C))
        # digests run one at a time; find the second blob's encryption
        encryptions = [i for i, (f, _, _) in enumerate(runner.jobs) if f.__name__ == "_encrypt"]
        runner.run_one(encryptions[1])
        self.assertEqual(creator.stored, 0)
        runner.run_all()
        self.assertEqual(creator.stored, 2 * C)
        self.assertEqual(len(creator.checkpoint()["blobs"]), 2)  # type: ignore[arg-type]


class CancelTests(WriterTestCase):
    def test_cancel_removes_blobs(self) -> None:
        store = make_store(self.directory / "store")
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(3 * C + 5)))
        self.assertEqual(len(self.successResultOf(store.verified_blobs())), 3)
        self.successResultOf(creator.cancel())
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store.index.streams(), [])
        self.assertEqual(store.used_bytes(), 0)
        failure = self.failureResultOf(creator.write(b"x"), TransferCancelledError)
        self.assertIn("cancelled", str(failure.value))
        self.failureResultOf(creator.finish(), TransferCancelledError)
        self.successResultOf(creator.cancel())  # again: nothing more to do
        store.stop()

    def test_cancel_while_in_flight(self) -> None:
        """
        Blobs being encrypted or stored when the upload is cancelled are
        removed once they land; the waiting write fails.
        """
        runner = HeldRunner()
        store = HeldStore()
        store.holding = True
        creator = StreamCreator(store, runner, "f", key=KEY, workers=3)
        written = creator.write(pattern(5 * C))
        # blobs 0 and 1 being stored, blob 2 being encrypted
        third = derived_iv(KEY, 2)
        while len(runner.jobs) > 1:
            runner.run_one(next(i for i, job in enumerate(runner.jobs) if third not in job[1]))
        self.assertEqual(len(store.held), 2)
        self.assertEqual(runner.encrypting(), 1)
        self.assertEqual(creator.stored, 0)
        cancelled = creator.cancel()
        self.assertNoResult(cancelled)
        self.assertNoResult(written)
        store.holding = False
        store.release()
        self.assertEqual(len(self.successResultOf(store.verified_blobs())), 2)
        self.assertNoResult(cancelled)
        runner.run_all()
        self.successResultOf(cancelled)
        self.failureResultOf(written, TransferCancelledError)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])

    def test_blobs_of_other_streams_stay(self) -> None:
        """
        A blob the upload did not create (the same blob of a published
        stream, same key and bytes), or created but another stream recorded
        since, is not removed.
        """
        data = pattern(3 * C)
        store = make_store(self.directory / "store")
        source = self.directory / "f"
        source.write_bytes(data[:C])
        # blob 0 exists before the upload, in a published stream
        _, first_sd = self.successResultOf(
            Deferred.fromCoroutine(
                publish_file(store, run_inline, source, key=KEY, iv_source=derived_ivs(KEY))
            )
        )
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(data[: 2 * C]))
        self.assertEqual(creator.checkpoint()["blobs"][0]["created"], False)  # type: ignore[index]
        # blob 1 is created by the upload, then published by someone else
        source.write_bytes(data[: 2 * C])
        second, second_sd = self.successResultOf(
            Deferred.fromCoroutine(
                publish_file(store, run_inline, source, key=KEY, iv_source=derived_ivs(KEY))
            )
        )
        # and blob 2 is the upload's alone
        self.successResultOf(creator.write(data[2 * C :]))
        third = creator.blob_hashes()[2]
        self.successResultOf(creator.cancel())
        for name in [first_sd, second_sd, *second.blob_hashes]:
            self.assertTrue(store.has_blob(name))
        self.assertFalse(store.has_blob(third))
        self.assertEqual({sd for sd, *_ in store.index.streams()}, {first_sd, second_sd})
        store.stop()

    def test_cancel_after_finish(self) -> None:
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(b"data"))
        result = self.successResultOf(creator.finish())
        self.successResultOf(creator.cancel())
        self.assertTrue(store.has_blob(result.sd_hash))

    def test_cancel_while_finishing(self) -> None:
        """
        A cancel while the sd blob is being stored fails the finish, and
        removes the sd blob too.
        """
        store = HeldStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(C + 3)))
        store.holding = True
        finished = creator.finish()
        self.assertEqual(len(store.held), 1)  # the last data blob
        store.release()
        self.assertEqual(len(store.held), 1)  # the sd blob
        cancelled = creator.cancel()
        self.assertNoResult(cancelled)
        store.holding = False
        store.release()
        self.successResultOf(cancelled)
        self.failureResultOf(finished, TransferCancelledError)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store._streams, {})


class ErrorTests(WriterTestCase):
    def test_disk_limit(self) -> None:
        """
        An upload that does not fit fails with the store's error, and
        leaves no blob.
        """
        store = make_store(self.directory / "store", disk_limit=5 * MAX_BLOB_SIZE // 2)
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        failure = self.failureResultOf(creator.write(pattern(4 * C)), DiskLimitError)
        self.assertIn("disk-use limit", str(failure.value))
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store.used_bytes(), 0)
        self.assertEqual(store.index.streams(), [])
        self.failureResultOf(creator.write(b"x"), DiskLimitError)
        self.failureResultOf(creator.finish(), DiskLimitError)
        self.successResultOf(creator.cancel())
        store.stop()

    def test_disk_limit_at_finish(self) -> None:
        store = MemoryBlobStore(disk_limit=MAX_BLOB_SIZE + 1000)
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(C + 5000)))
        self.failureResultOf(creator.finish(), DiskLimitError)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])

    def test_store_fails_later(self) -> None:
        """
        A store failure on the third blob removes the two stored before,
        and fails the write that is waiting then.
        """
        runner = HeldRunner()
        store = FailingStore(fail_at=3)
        creator = StreamCreator(store, runner, "f", key=KEY, workers=2)
        written = creator.write(pattern(6 * C))
        runner.run_all()
        failure = self.failureResultOf(written, StorageError)
        self.assertIn("disk broke", str(failure.value))
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])

    def test_store_stopped(self) -> None:
        """
        A store stopped under the upload fails it with the store's error;
        the blobs cannot be removed from a stopped store (that is logged),
        and no stream is recorded.
        """
        store = make_store(self.directory / "store")
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(C + 10)))
        store.stop()
        failure = self.failureResultOf(creator.write(pattern(C)), StorageError)
        self.assertIn("stopped", str(failure.value))
        self.failureResultOf(creator.finish(), StorageError)
        store = make_store(self.directory / "store")
        self.assertEqual(store.index.streams(), [])
        store.stop()


class CheckpointTests(WriterTestCase):
    """
    An upload checkpointed, then resumed by another process (a new store
    over the same files), gives the stream an uninterrupted upload and
    publish_file give.
    """

    def restart(self, store: BlobStore, checkpoint: dict[str, object]) -> tuple[BlobStore, StreamCreator]:
        store.stop()
        saved = json.loads(json.dumps(checkpoint))
        store = make_store(self.directory / "store")
        return store, self.successResultOf(StreamCreator.resume(store, run_inline, saved))

    def interrupted(self, data: bytes, stop_at: int) -> StreamResult:
        """
        Write C{data[:stop_at]}, checkpoint, restart, resume from the
        checkpoint's offset (the bytes after it are written again), finish.
        """
        store = make_store(self.directory / "store")
        creator = StreamCreator(store, run_inline, "file.bin", key=KEY)
        self.write_all(creator, data[:stop_at], forever(700_001))
        checkpoint = creator.checkpoint()
        self.assertEqual(checkpoint["stored"], creator.stored)
        self.assertEqual(checkpoint["stored"], stop_at // C * C)
        store, resumed = self.restart(store, checkpoint)
        self.assertEqual((resumed.stored, resumed.received), (creator.stored, creator.stored))
        self.assertEqual(resumed.key, KEY)
        self.assertEqual(resumed.name, "file.bin")
        self.assertEqual(resumed.blob_hashes(), creator.blob_hashes()[: stop_at // C])
        self.write_all(resumed, data[resumed.stored :], forever(900_007))
        result = self.successResultOf(resumed.finish())
        self.assertEqual(store.index.streams(), [(result.sd_hash, "published", False, False)])
        store.stop()
        return result

    def test_resume_points(self) -> None:
        data = pattern(3 * C + 1000)
        uninterrupted = self.create(MemoryBlobStore(), data, forever(1 << 20))
        self.assertSameAsPublished(uninterrupted, data)
        for name, stop_at in [
            ("at 0", 0),
            ("before the first blob", C - 1),
            ("mid-stream", C + C // 2),
            ("at a blob boundary", 2 * C),
            ("after all data blobs", 3 * C + 1000),
        ]:
            with self.subTest(name):
                self.directory = Path(self.mktemp())
                self.directory.mkdir()
                result = self.interrupted(data, stop_at)
                self.assertEqual(result.sd_hash, uninterrupted.sd_hash)
                self.assertEqual((result.md5, result.crc32), (uninterrupted.md5, uninterrupted.crc32))
                self.assertEqual(result.size, len(data))

    def test_resume_after_all_blobs_of_an_exact_stream(self) -> None:
        """
        A stream of whole chunks checkpointed after its last one: nothing
        is left to write, only to finish.
        """
        data = pattern(2 * C)
        result = self.interrupted(data, 2 * C)
        self.assertSameAsPublished(result, data)

    def test_twice(self) -> None:
        """
        A resumed upload can be checkpointed and resumed again.
        """
        data = pattern(3 * C + 1)
        store = make_store(self.directory / "store")
        creator = StreamCreator(store, run_inline, "file.bin", key=KEY)
        self.successResultOf(creator.write(data[: C + 1]))
        store, creator = self.restart(store, creator.checkpoint())
        self.successResultOf(creator.write(data[C : 2 * C + 100]))
        store, creator = self.restart(store, creator.checkpoint())
        self.assertEqual(creator.stored, 2 * C)
        self.successResultOf(creator.write(data[2 * C :]))
        self.assertSameAsPublished(self.successResultOf(creator.finish()), data)
        store.stop()

    def test_checkpoint_content(self) -> None:
        creator = StreamCreator(MemoryBlobStore(), run_inline, "a b", key=KEY)
        self.successResultOf(creator.write(pattern(C + 1)))
        checkpoint = creator.checkpoint()
        self.assertEqual(json.loads(json.dumps(checkpoint)), checkpoint)
        self.assertEqual(
            checkpoint,
            {
                "version": 1,
                "name": "a b",
                "key": KEY.hex(),
                "blobs": [
                    {
                        "blob_num": 0,
                        "length": MAX_BLOB_SIZE,
                        "iv": derived_iv(KEY, 0).hex(),
                        "blob_hash": creator.blob_hashes()[0],
                        "created": True,
                    }
                ],
                "stored": C,
            },
        )
        # the last, short blob never counts as a resume point
        self.successResultOf(creator.finish())
        self.assertEqual(creator.checkpoint()["stored"], C)

    def test_cancel_after_resume(self) -> None:
        """
        A resumed upload, cancelled, removes the blobs stored before the
        restart as well.
        """
        store = make_store(self.directory / "store")
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(2 * C)))
        store, resumed = self.restart(store, creator.checkpoint())
        self.successResultOf(resumed.write(pattern(C)))
        self.assertEqual(len(self.successResultOf(store.verified_blobs())), 3)
        self.successResultOf(resumed.cancel())
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        store.stop()

    def test_resume_missing_blob(self) -> None:
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(2 * C)))
        checkpoint = creator.checkpoint()
        self.successResultOf(store.delete_blobs([creator.blob_hashes()[1]]))
        failure = self.failureResultOf(StreamCreator.resume(store, run_inline, checkpoint), StreamError)
        self.assertIn("1 of its 2 stored blobs are no longer", str(failure.value))

    def test_resume_damaged_blob(self) -> None:
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(2 * C)))
        name = creator.blob_hashes()[1]
        damaged = bytearray(self.successResultOf(store.read_blob(name)))
        damaged[-1] ^= 1
        store.corrupt(name, bytes(damaged))
        failure = self.failureResultOf(
            StreamCreator.resume(store, run_inline, creator.checkpoint()), StreamError
        )
        self.assertIn("damaged", str(failure.value))

    def test_resume_malformed(self) -> None:
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        self.successResultOf(creator.write(pattern(2 * C)))
        good = creator.checkpoint()
        blobs: list[dict[str, object]] = good["blobs"]  # type: ignore[assignment]
        cases: list[dict[str, object]] = [
            {},
            {**good, "version": 2},
            {**good, "name": None},
            {**good, "key": "zz"},
            {**good, "key": "00" * 15},
            {**good, "stored": C},
            {**good, "stored": True},
            {**good, "blobs": "many"},
            {**good, "blobs": [blobs[1], blobs[0]]},
            {**good, "blobs": [{**blobs[0], "iv": "00" * 16}, blobs[1]]},
            {**good, "blobs": [{**blobs[0], "length": 16}, blobs[1]]},
            {**good, "blobs": [{**blobs[0], "blob_hash": "x"}, blobs[1]]},
            {**good, "key": "11" * 16},
        ]
        for case in cases:
            with self.subTest(case=case):
                failure = self.failureResultOf(StreamCreator.resume(store, run_inline, case), StreamError)
                self.assertIn("cannot resume the upload", str(failure.value))

    def test_digests_read_back(self) -> None:
        """
        The md5 and CRC-32 after a resume come from the stored blobs, not
        from the checkpoint: what the blobs hold is what counts.
        """
        store = MemoryBlobStore()
        creator = StreamCreator(store, run_inline, "f", key=KEY)
        data = pattern(C)
        self.successResultOf(creator.write(data))
        resumed = self.successResultOf(StreamCreator.resume(store, run_inline, creator.checkpoint()))
        result = self.successResultOf(resumed.finish())
        self.assertEqual((result.md5, result.crc32), (hashlib.md5(data).hexdigest(), zlib.crc32(data)))
        plaintext = decrypt_blob(KEY, derived_iv(KEY, 0), self.successResultOf(store.read_blob(resumed.blob_hashes()[0])))
        self.assertEqual(plaintext, data)


class ThreadedTests(TestCase):
    """
    The real arrangement: encryption and hashing in a thread pool, a store
    on disk, the reactor running.
    """

    timeout = 180

    async def test_50_mib(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        worker = ThreadWorker(reactor, "test-writer", 4)  # type: ignore[arg-type]
        worker.start()
        self.addCleanup(worker.stop)
        store = BlobStore(reactor, worker, directory / "blobfiles", directory / "index.sqlite")  # type: ignore[arg-type]
        await store.start()
        self.addCleanup(store.stop)
        data = os.urandom(50 * 1024 * 1024)
        key = os.urandom(16)
        sizes = [1, 100, 65536, 3_000_000, 17, 1 << 20]
        started = time.monotonic()
        creator = StreamCreator(store, worker, "big.bin", key=key)
        offset = index = 0
        while offset < len(data):
            size = sizes[index % len(sizes)]
            await creator.write(data[offset : offset + size])
            offset += size
            index += 1
        result = await creator.finish()
        elapsed = time.monotonic() - started
        self.assertEqual(result.md5, hashlib.md5(data).hexdigest())
        self.assertEqual(result.crc32, zlib.crc32(data))
        source = directory / "big.bin"
        source.write_bytes(data)
        other = BlobStore(reactor, worker, directory / "other", directory / "other.sqlite")  # type: ignore[arg-type]
        await other.start()
        self.addCleanup(other.stop)
        _, sd_hash = await publish_file(other, worker, source, key=key, iv_source=derived_ivs(key))
        self.assertEqual(result.sd_hash, sd_hash)
        # resumed after the tenth blob, by a new store over the same files
        checkpoint = json.loads(json.dumps({**creator.checkpoint(), "blobs": creator.checkpoint()["blobs"][:10], "stored": 10 * C}))  # type: ignore[index]
        store.stop()
        store = BlobStore(reactor, worker, directory / "blobfiles", directory / "index2.sqlite")  # type: ignore[arg-type]
        await store.start()
        self.addCleanup(store.stop)
        resumed_at = time.monotonic()
        resumed = await StreamCreator.resume(store, worker, checkpoint)
        resume_time = time.monotonic() - resumed_at
        await resumed.write(data[resumed.stored :])
        again = await resumed.finish()
        self.assertEqual((again.sd_hash, again.md5, again.crc32), (sd_hash, result.md5, result.crc32))
        print(f"\n50 MiB written in {elapsed:.2f} s; resume over 10 blobs took {resume_time:.2f} s")
