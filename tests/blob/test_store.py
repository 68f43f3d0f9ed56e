"""
Tests for L{p2pblob.blob.store}: verify-on-write, racing writers,
reconciliation at start, deletion and the disk-use limit, on real files and a
real SQLite index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob._files import TEMP_PREFIX
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.blob.store import ROLE_DOWNLOADED, ROLE_PUBLISHED, BlobStore
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobNotFoundError,
    BlobTooLargeError,
    BlobWriteCancelledError,
    DiskLimitError,
    InvalidBlobHashError,
    StorageError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter


class HeldRunner:
    """
    A blocking-work runner that holds each call until the test releases it,
    to play out what happens while a thread is still busy.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def release(self, index: int = 0, error: Exception | None = None) -> None:
        f, args, d = self.calls.pop(index)
        if error is not None:
            d.errback(error)
        else:
            maybeDeferred(f, *args).chainDeferred(d)


def sd(label: str) -> str:
    """
    A stand-in sd hash for a stream called C{label} in a test.
    """
    return blob_hash(f"sd blob of {label}".encode())


def blob_files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


class StoreTestsMixin:
    def make_store(
        self, directory: Path | None = None, disk_limit: int | None = None, run: Any = run_inline
    ) -> BlobStore:
        if directory is None:
            directory = Path(self.mktemp())  # type: ignore[attr-defined]
        self.directory = directory
        self.clock = Clock()
        store = BlobStore(
            self.clock, run, directory / "blobfiles", directory / "index.sqlite", disk_limit
        )
        if run is run_inline:
            self.successResultOf(Deferred.fromCoroutine(store.start()))  # type: ignore[attr-defined]
            self.addCleanup(store.stop)  # type: ignore[attr-defined]
        return store


    def make_held_store(self, directory: Path) -> tuple[BlobStore, HeldRunner]:
        """
        A started store whose blocking work waits for the test to release it.
        """
        runner = HeldRunner()
        store = self.make_store(directory, run=runner)
        d = Deferred.fromCoroutine(store.start())
        runner.release()
        self.successResultOf(d)  # type: ignore[attr-defined]
        return store, runner


class WriteTests(StoreTestsMixin, SynchronousTestCase):
    def test_interfaces(self) -> None:
        store = self.make_store()
        self.assertTrue(verifyObject(IBlobStore, store))
        blob = self.successResultOf(store.put_blob(b"x"))
        self.assertTrue(verifyObject(IBlob, blob))
        writer = store.open_writer(blob_hash(b"y"), 1)
        self.assertTrue(verifyObject(IBlobWriter, writer))
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)

    def test_put_blob(self) -> None:
        store = self.make_store()
        data = os.urandom(1000)
        blob = self.successResultOf(store.put_blob(data))
        self.assertEqual(blob.blob_hash, blob_hash(data))
        self.assertEqual(blob.length, 1000)
        self.assertTrue(store.has_blob(blob.blob_hash))
        self.assertEqual(self.successResultOf(store.read_blob(blob.blob_hash)), data)
        self.assertEqual(self.successResultOf(blob.read()), data)
        with blob.open_for_reading() as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [blob.blob_hash])
        self.assertEqual(self.successResultOf(store.verified_blobs()), [blob.blob_hash])

    def test_write_in_chunks_visible_only_when_verified(self) -> None:
        store = self.make_store()
        data = os.urandom(100_000)
        name = blob_hash(data)
        writer = store.open_writer(name, len(data))
        for i in range(0, 90_000, 30_000):
            writer.write(data[i : i + 30_000])
            self.assertFalse(store.has_blob(name))
            self.assertNotIn(name, blob_files(self.directory / "blobfiles"))
            self.failureResultOf(store.read_blob(name), BlobNotFoundError)
        writer.write(data[90_000:])
        blob = self.successResultOf(writer.finished)
        self.assertEqual(blob.blob_hash, name)
        self.assertTrue(store.has_blob(name))
        self.assertEqual(blob_files(self.directory / "blobfiles"), [name])

    def test_over_length(self) -> None:
        store = self.make_store()
        data = b"0123456789"
        writer = store.open_writer(blob_hash(data), 5)
        writer.write(b"01234")  # complete at 5 bytes, but the hash is wrong
        self.failureResultOf(writer.finished, BlobHashMismatchError)
        writer = store.open_writer(blob_hash(data), 10)
        writer.write(b"0123")
        self.assertRaises(BlobTooLargeError, writer.write, b"0123456789")
        failure = self.failureResultOf(writer.finished, BlobTooLargeError)
        self.assertEqual(failure.value.length, 14)
        writer.write(b"more")  # discarded, so a protocol can drain
        self.assertEqual(blob_files(self.directory / "blobfiles"), [])
        self.assertEqual(store.used_bytes(), 0)

    def test_hash_mismatch(self) -> None:
        store = self.make_store()
        writer = store.open_writer(blob_hash(b"expected"), 8)
        writer.write(b"forgery!")
        failure = self.failureResultOf(writer.finished, BlobHashMismatchError)
        self.assertEqual(failure.value.actual, blob_hash(b"forgery!"))
        self.assertEqual(blob_files(self.directory / "blobfiles"), [])
        self.assertFalse(store.has_blob(blob_hash(b"expected")))
        self.assertFalse(store.has_blob(blob_hash(b"forgery!")))

    def test_distinct_errors(self) -> None:
        self.assertFalse(issubclass(BlobTooLargeError, BlobHashMismatchError))
        self.assertFalse(issubclass(BlobHashMismatchError, BlobTooLargeError))

    def test_truncated(self) -> None:
        store = self.make_store()
        data = b"a" * 100
        writer = store.open_writer(blob_hash(data), 100)
        writer.write(data[:60])
        writer.close()
        failure = self.failureResultOf(writer.finished, BlobIncompleteError)
        self.assertEqual((failure.value.received, failure.value.expected), (60, 100))
        self.assertEqual(blob_files(self.directory / "blobfiles"), [])

    def test_bad_arguments(self) -> None:
        store = self.make_store()
        self.assertRaises(InvalidBlobHashError, store.open_writer, "../etc/passwd", 1)
        self.assertRaises(InvalidBlobHashError, store.open_writer, "A" * 96, 1)
        self.assertRaises(BlobTooLargeError, store.open_writer, "a" * 96, MAX_BLOB_SIZE + 1)
        self.failureResultOf(store.put_blob(b"x" * (MAX_BLOB_SIZE + 1)), BlobTooLargeError)
        self.assertRaises(BlobNotFoundError, store.get_blob, "a" * 96)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [])

    def test_max_size_and_empty_blob(self) -> None:
        store = self.make_store()
        big = os.urandom(MAX_BLOB_SIZE)
        self.assertEqual(self.successResultOf(store.put_blob(big)).length, MAX_BLOB_SIZE)
        writer = store.open_writer(blob_hash(b""), 0)
        self.assertEqual(self.successResultOf(writer.finished).length, 0)

    def test_racing_writers_first_wins(self) -> None:
        store = self.make_store()
        data = os.urandom(5000)
        name = blob_hash(data)
        first, second, third = (store.open_writer(name, len(data)) for _ in range(3))
        for w in (first, second, third):
            w.write(data[:2500])
        second.write(data[2500:])
        self.assertEqual(self.successResultOf(second.finished).blob_hash, name)
        self.failureResultOf(first.finished, BlobWriteCancelledError)
        self.failureResultOf(third.finished, BlobWriteCancelledError)
        first.write(data[2500:])  # the loser's peer keeps sending: discarded
        self.assertEqual(blob_files(self.directory / "blobfiles"), [name])
        self.assertEqual(store.used_bytes(), 5000)
        late = store.open_writer(name, len(data))
        self.failureResultOf(late.finished, BlobWriteCancelledError)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [name])

    def test_racing_writers_while_committing(self) -> None:
        """
        A copy verified while another is being made durable waits; it is
        cancelled if that commit succeeds, and committed if it fails.
        """
        directory = Path(self.mktemp())
        store, runner = self.make_held_store(directory)
        data = os.urandom(3000)
        name = blob_hash(data)
        a, b, c = (store.open_writer(name, 3000) for _ in range(3))
        a.write(data)
        b.write(data)
        self.assertEqual(len(runner.calls), 1)  # only a's file is being committed
        self.assertNoResult(a.finished)
        self.assertNoResult(b.finished)
        runner.release(error=OSError(28, "No space left on device"))
        failure = self.failureResultOf(a.finished, StorageError)
        self.assertIn("No space left on device", str(failure.value))
        self.assertEqual(len(runner.calls), 1)  # now b's copy
        c.write(data)
        runner.release()
        self.successResultOf(b.finished)
        self.failureResultOf(c.finished, BlobWriteCancelledError)
        self.assertEqual(blob_files(directory / "blobfiles"), [name])
        self.assertEqual(store.used_bytes(), 3000)
        store.stop()

    def test_delete(self) -> None:
        store = self.make_store()
        a = self.successResultOf(store.put_blob(b"a")).blob_hash
        b = self.successResultOf(store.put_blob(b"b")).blob_hash
        self.successResultOf(store.delete_blobs([a, "c" * 96]))
        self.assertFalse(store.has_blob(a))
        self.assertEqual(blob_files(self.directory / "blobfiles"), [b])
        store.stop()
        again = self.make_store(self.directory)
        self.assertEqual(self.successResultOf(again.verified_blobs()), [b])

    def test_check_blob(self) -> None:
        store = self.make_store()
        good = self.successResultOf(store.put_blob(b"good data")).blob_hash
        bad = self.successResultOf(store.put_blob(b"bad data!")).blob_hash
        (self.directory / "blobfiles" / bad).write_bytes(b"rotten!!!")  # same size
        self.assertEqual(self.successResultOf(store.check_blob(good)), "ok")
        self.assertEqual(self.successResultOf(store.check_blob(bad)), "corrupt")
        self.assertFalse(store.has_blob(bad))
        self.assertEqual(self.successResultOf(store.check_blob(bad)), "missing")
        self.assertEqual(blob_files(self.directory / "blobfiles"), [good])

    @settings(max_examples=30, deadline=None)
    @given(chunks=st.lists(st.binary(max_size=300), max_size=8), corrupt=st.booleans())
    def test_any_chunking(self, chunks: list[bytes], corrupt: bool) -> None:
        """
        However the bytes are cut, a blob is stored exactly when its data
        hashes to its name.
        """
        store = self.make_store()
        data = b"".join(chunks)
        name = blob_hash(data + b"!" if corrupt else data)
        writer = store.open_writer(name, len(data))
        for chunk in chunks:
            writer.write(chunk)
        if corrupt:
            self.failureResultOf(writer.finished, BlobHashMismatchError)
            self.assertEqual(blob_files(self.directory / "blobfiles"), [])
        else:
            self.successResultOf(writer.finished)
            self.assertEqual((self.directory / "blobfiles" / name).read_bytes(), data)
        store.stop()


class ReconcileTests(StoreTestsMixin, SynchronousTestCase):
    def test_restart_keeps_blobs(self) -> None:
        store = self.make_store()
        names = [self.successResultOf(store.put_blob(bytes([i]) * 10)).blob_hash for i in range(3)]
        store.stop()
        again = self.make_store(self.directory)
        self.assertEqual(sorted(self.successResultOf(again.verified_blobs())), sorted(names))
        self.assertEqual(again.used_bytes(), 30)

    def test_repairs(self) -> None:
        store = self.make_store()
        kept = self.successResultOf(store.put_blob(b"kept")).blob_hash
        short = self.successResultOf(store.put_blob(b"will be truncated")).blob_hash
        gone = self.successResultOf(store.put_blob(b"file will vanish")).blob_hash
        store.stop()
        blobdir = self.directory / "blobfiles"
        (blobdir / short).write_bytes(b"trunc")
        (blobdir / gone).unlink()
        (blobdir / f"{TEMP_PREFIX}abc-123").write_bytes(b"half a blob")
        orphan = b"written, but the index row was lost in a crash"
        (blobdir / blob_hash(orphan)).write_bytes(orphan)
        (blobdir / blob_hash(b"claimed")).write_bytes(b"something else")
        (blobdir / "README").write_bytes(b"not ours")

        again = self.make_store(self.directory)
        self.assertEqual(
            sorted(self.successResultOf(again.verified_blobs())),
            sorted([kept, blob_hash(orphan)]),
        )
        self.assertEqual(
            blob_files(blobdir), sorted([kept, blob_hash(orphan), "README"])
        )
        for name in (short, gone, blob_hash(b"claimed")):
            self.failureResultOf(again.read_blob(name), BlobNotFoundError)
        self.assertEqual(again.index.blobs(), {kept: 4, blob_hash(orphan): len(orphan)})

    def test_crash_mid_write(self) -> None:
        """
        A process killed in the middle of receiving a blob leaves a temporary
        file that the next start removes; the blob is never visible.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        data = os.urandom(200_000)
        script = f"""
import os, sys
from pathlib import Path
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
d = Path({str(directory)!r})
store = BlobStore(Clock(), run_inline, d / "blobfiles", d / "index.sqlite")
Deferred.fromCoroutine(store.start())
done = store.put_blob(b"complete before the crash")
w = store.open_writer({blob_hash(data)!r}, {len(data)})
w.write(sys.stdin.buffer.read())
w.sink.file.flush()
os._exit(9)
"""
        proc = subprocess.run(
            [sys.executable, "-c", script], input=data[:120_000],
            cwd=Path(__file__).parents[2], capture_output=True,
        )
        self.assertEqual(proc.returncode, 9, proc.stderr.decode())
        leftovers = blob_files(directory / "blobfiles")
        self.assertEqual(len([n for n in leftovers if n.startswith(TEMP_PREFIX)]), 1)
        store = self.make_store(directory)
        self.assertEqual(
            self.successResultOf(store.verified_blobs()),
            [blob_hash(b"complete before the crash")],
        )
        self.assertEqual(blob_files(directory / "blobfiles"), [blob_hash(b"complete before the crash")])


class DiskLimitTests(StoreTestsMixin, SynchronousTestCase):
    def put(self, store: BlobStore, data: bytes) -> str:
        name: str = self.successResultOf(store.put_blob(data)).blob_hash
        self.clock.advance(1)
        return name

    def test_evicts_finished_downloads_oldest_first(self) -> None:
        store = self.make_store(disk_limit=1000)
        old = [self.put(store, bytes([i]) * 200) for i in range(2)]
        new = [self.put(store, bytes([10 + i]) * 200) for i in range(2)]
        self.successResultOf(store.add_stream(sd("s1"), old, ROLE_DOWNLOADED))
        self.successResultOf(store.add_stream(sd("s2"), new, ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(sd("s2")))
        self.successResultOf(store.set_stream_finished(sd("s1")))
        self.assertEqual(store.used_bytes(), 800)
        third = self.put(store, b"z" * 350)  # needs 150 more than the limit allows
        self.assertEqual(store.used_bytes(), 950)
        self.assertFalse(store.has_blob(old[0]))
        for name in old[1:] + new + [third]:
            self.assertTrue(store.has_blob(name))
        self.assertNotIn(old[0], blob_files(self.directory / "blobfiles"))

    def test_never_evicts_published_pinned_or_unfinished(self) -> None:
        store = self.make_store(disk_limit=1000)
        published = self.put(store, b"p" * 300)
        pinned = self.put(store, b"q" * 300)
        running = self.put(store, b"r" * 300)
        self.successResultOf(store.add_stream(sd("pub"), [published], ROLE_PUBLISHED))
        self.successResultOf(store.add_stream(sd("pin"), [pinned], ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(sd("pin")))
        self.successResultOf(store.pin_stream(sd("pin"), True))
        self.successResultOf(store.add_stream(sd("run"), [running], ROLE_DOWNLOADED))
        failure = self.failureResultOf(store.put_blob(b"x" * 200), DiskLimitError)
        self.assertEqual((failure.value.needed, failure.value.used, failure.value.limit), (200, 900, 1000))
        self.assertIn("disk-use limit", str(failure.value))
        self.assertRaises(DiskLimitError, store.open_writer, "a" * 96, 200)
        for name in (published, pinned, running):
            self.assertTrue(store.has_blob(name))
        self.successResultOf(store.pin_stream(sd("pin"), False))
        self.put(store, b"x" * 200)
        self.assertFalse(store.has_blob(pinned))

    def test_blob_shared_with_published_stream_is_kept(self) -> None:
        store = self.make_store(disk_limit=500)
        shared = self.put(store, b"s" * 400)
        self.successResultOf(store.add_stream(sd("dl"), [shared], ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(sd("dl")))
        self.successResultOf(store.add_stream(sd("pub"), [shared], ROLE_PUBLISHED))
        self.failureResultOf(store.put_blob(b"y" * 200), DiskLimitError)
        self.assertTrue(store.has_blob(shared))

    def test_running_writers_reserve_space(self) -> None:
        store = self.make_store(disk_limit=1000)
        writer = store.open_writer(blob_hash(b"w" * 800), 800)
        self.assertEqual(store.used_bytes(), 800)
        self.assertRaises(DiskLimitError, store.open_writer, blob_hash(b"v" * 300), 300)
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertEqual(store.used_bytes(), 0)
        later = store.open_writer(blob_hash(b"v" * 300), 300)
        self.assertEqual(later.state, "receiving")
        self.assertEqual(store.used_bytes(), 300)
        store.stop()  # a stopping store cancels the writers still running
        self.failureResultOf(later.finished, BlobWriteCancelledError)

    def test_remove_stream(self) -> None:
        store = self.make_store()
        shared = self.put(store, b"shared")
        only = self.put(store, b"only")
        self.successResultOf(store.add_stream(sd("a"), [shared, only], ROLE_DOWNLOADED))
        self.successResultOf(store.add_stream(sd("b"), [shared], ROLE_PUBLISHED))
        self.successResultOf(store.remove_stream(sd("a"), delete_blobs=True))
        self.assertTrue(store.has_blob(shared))
        self.assertFalse(store.has_blob(only))
        self.assertFalse(store.index.has_stream(sd("a")))


class StopTests(StoreTestsMixin, SynchronousTestCase):
    def test_commit_finishing_after_stop(self) -> None:
        """
        A blob whose commit completes after the store stopped is not indexed
        then, but it is durable and adopted at the next start; a put still
        hashing when the store stops fails without writing.
        """
        directory = Path(self.mktemp())
        store, runner = self.make_held_store(directory)
        data = os.urandom(1000)
        writer = store.open_writer(blob_hash(data), 1000)
        writer.write(data)
        put = store.put_blob(b"late")
        store.stop()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        runner.release()  # the writer's commit
        runner.release()  # put_blob's hashing; it writes nothing once stopped
        self.failureResultOf(put, StorageError)
        self.assertEqual(runner.calls, [])
        again = self.make_store(directory)
        self.assertEqual(self.successResultOf(again.verified_blobs()), [blob_hash(data)])
