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

from p2pblob._threads import run_inline
from p2pblob.blob import _files
from p2pblob.blob._files import TEMP_PREFIX
from p2pblob.blob._index import BlobIndex
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.store import ROLE_DOWNLOADED, BlobStore
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobIncompleteError,
    BlobNotFoundError,
    BlobTooLargeError,
    BlobWriteCancelledError,
    StorageError,
)


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

    def release_all(self) -> None:
        while self.calls:
            self.release()


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


class DiskWriteTests(StoreTestsMixin, SynchronousTestCase):
    """
    What only the disk store can show: what is left in the blob directory.
    The contract itself is tested once for both stores in test_conformance.
    """

    def test_files_appear_only_when_verified(self) -> None:
        store = self.make_store()
        data = os.urandom(100_000)
        name = blob_hash(data)
        writer = store.open_writer(name, len(data))
        writer.write(data[:60_000])
        (temp,) = blob_files(self.directory / "blobfiles")
        self.assertTrue(temp.startswith(TEMP_PREFIX))
        writer.write(data[60_000:])
        self.successResultOf(writer.finished)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [name])
        self.assertEqual((self.directory / "blobfiles" / name).read_bytes(), data)
        put = self.successResultOf(store.put_blob(b"put"))
        self.assertEqual(
            blob_files(self.directory / "blobfiles"), sorted([name, put.blob_hash])
        )

    def test_failed_writes_leave_nothing(self) -> None:
        """
        Over-length data, a hash mismatch, a truncated transfer, a cancelled
        write and the losers of a race leave no file behind.
        """
        store = self.make_store()
        data = os.urandom(5000)
        name = blob_hash(data)
        too_long = store.open_writer(name, 10)
        self.assertRaises(BlobTooLargeError, too_long.write, data[:11])
        self.failureResultOf(too_long.finished, BlobTooLargeError)
        forged = store.open_writer(name, len(data))
        forged.write(os.urandom(len(data)))
        self.failureResultOf(forged.finished, BlobHashMismatchError)
        short = store.open_writer(name, len(data))
        short.write(data[:100])
        short.close()
        self.failureResultOf(short.finished, BlobIncompleteError)
        dropped = store.open_writer(name, len(data))
        dropped.write(data[:100])
        dropped.cancel()
        self.failureResultOf(dropped.finished, BlobWriteCancelledError)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [])
        first, second = (store.open_writer(name, len(data)) for _ in range(2))
        first.write(data[:2500])
        second.write(data)
        self.successResultOf(second.finished)
        self.failureResultOf(first.finished, BlobWriteCancelledError)
        self.assertEqual(blob_files(self.directory / "blobfiles"), [name])
        self.assertEqual(store.used_bytes(), len(data))

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


class DiskEvictionTests(StoreTestsMixin, SynchronousTestCase):
    def test_evicted_blob_files_are_deleted(self) -> None:
        """
        Eviction removes the files and the index rows, for good.
        """
        store = self.make_store(disk_limit=500)
        old = self.successResultOf(store.put_blob(b"o" * 300)).blob_hash
        self.clock.advance(1)
        self.successResultOf(store.add_stream(sd("done"), [old], ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(sd("done")))
        new = self.successResultOf(store.put_blob(b"n" * 300)).blob_hash
        self.assertEqual(blob_files(self.directory / "blobfiles"), [new])
        store.stop()
        again = self.make_store(self.directory, disk_limit=500)
        self.assertEqual(self.successResultOf(again.verified_blobs()), [new])


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


class GroupSyncTests(StoreTestsMixin, SynchronousTestCase):
    """
    Blobs stored with C{put_blob} are visible once written, and recorded in
    the index only once a group sync made them durable.
    """

    def written(self, runner: HeldRunner, data: bytes) -> str:
        """
        Put C{data} and let its write (hash and file) happen.
        """
        put = self.store.put_blob(data, expected_hash=blob_hash(data))
        f, _, _ = runner.calls[-1]
        self.assertIs(f, _files.store_verified)
        runner.release(len(runner.calls) - 1)
        self.assertEqual(self.successResultOf(put).blob_hash, blob_hash(data))
        return blob_hash(data)

    def sync_calls(self, runner: HeldRunner) -> list[list[str]]:
        return [list(args[1]) for f, args, _ in runner.calls if f is _files.sync_blobs]

    def test_visible_then_indexed(self) -> None:
        self.store, runner = self.make_held_store(Path(self.mktemp()))
        name = self.written(runner, b"a blob")
        self.assertTrue(self.store.has_blob(name))
        self.assertEqual(self.store.index.blobs(), {})
        # the listing of what is held does not wait for the index
        self.assertEqual(dict(self.store.held_blobs()), {name: 6})
        self.assertEqual(self.sync_calls(runner), [[name]])
        runner.release_all()
        self.assertEqual(self.store.index.blobs(), {name: 6})
        self.assertEqual(dict(self.store.held_blobs()), {name: 6})

    def test_writes_during_a_sync_share_the_next(self) -> None:
        """
        The blobs written while a sync runs are synced together by one call,
        and indexed in one go after it.
        """
        self.store, runner = self.make_held_store(Path(self.mktemp()))
        first = self.written(runner, b"first")
        others = [self.written(runner, bytes([i]) * 100) for i in range(3)]
        self.assertEqual(self.sync_calls(runner), [[first]])
        runner.release()
        self.assertEqual(self.store.index.blobs(), {first: 5})
        self.assertEqual(self.sync_calls(runner), [others])
        runner.release()
        self.assertEqual(set(self.store.index.blobs()), {first, *others})
        self.assertEqual(runner.calls, [])

    def test_deleted_before_its_sync(self) -> None:
        self.store, runner = self.make_held_store(Path(self.mktemp()))
        name = self.written(runner, b"short-lived")
        deleted = self.store.delete_blobs([name])
        runner.release_all()
        self.successResultOf(deleted)
        self.assertEqual(self.store.index.blobs(), {})
        self.assertFalse(self.store.has_blob(name))

    def test_failed_sync_drops_the_blobs(self) -> None:
        """
        A blob whose sync failed is not trusted: it is no longer served and
        its file is deleted.
        """
        directory = Path(self.mktemp())
        self.store, runner = self.make_held_store(directory)
        name = self.written(runner, b"the disk failed under it")
        runner.release(0, OSError(5, "Input/output error"))
        self.assertFalse(self.store.has_blob(name))
        runner.release_all()  # the deletion
        self.assertEqual(self.store.index.blobs(), {})
        self.assertEqual(blob_files(directory / "blobfiles"), [])

    def test_stop_syncs_what_is_left(self) -> None:
        """
        Stopping while blobs wait for their sync syncs and indexes them
        there and then: the next start trusts them without hashing them.
        """
        directory = Path(self.mktemp())
        self.store, runner = self.make_held_store(directory)
        names = [self.written(runner, bytes([i]) * 10) for i in range(3)]
        self.store.stop()
        runner.release_all()  # the sync that was running ends after the stop
        again = BlobStore(Clock(), run_inline, directory / "blobfiles", directory / "index.sqlite")
        result = self.successResultOf(Deferred.fromCoroutine(again.start()))
        self.addCleanup(again.stop)
        self.assertEqual(result.adopted, {})
        self.assertEqual(sorted(result.present), sorted(names))

    def test_crash_before_the_sync(self) -> None:
        """
        A process that dies after writing a blob and before its sync leaves
        a file the index does not list: the next start hashes it again
        before serving it, and drops it if it is damaged.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        good, damaged = os.urandom(50_000), os.urandom(50_000)
        script = f"""
import os, sys
from pathlib import Path
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from p2pblob.blob import _files
from p2pblob.blob.store import BlobStore

def run(f, *args):
    return Deferred() if f is _files.sync_blobs else maybeDeferred(f, *args)

d = Path({str(directory)!r})
store = BlobStore(Clock(), run, d / "blobfiles", d / "index.sqlite")
Deferred.fromCoroutine(store.start())
for data in (sys.stdin.buffer.read(50_000), sys.stdin.buffer.read(50_000)):
    store.put_blob(data)
assert store.index.blobs() == {{}}
os._exit(9)
"""
        proc = subprocess.run(
            [sys.executable, "-c", script], input=good + damaged,
            cwd=Path(__file__).parents[2], capture_output=True,
        )
        self.assertEqual(proc.returncode, 9, proc.stderr.decode())
        blobdir = directory / "blobfiles"
        self.assertEqual(blob_files(blobdir), sorted([blob_hash(good), blob_hash(damaged)]))
        # what a power failure may leave of a file that was never synced
        (blobdir / blob_hash(damaged)).write_bytes(bytes(50_000))
        store = BlobStore(Clock(), run_inline, blobdir, directory / "index.sqlite")
        result = self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        self.assertEqual(result.adopted, {blob_hash(good): 50_000})
        self.assertEqual(self.successResultOf(store.verified_blobs()), [blob_hash(good)])
        self.assertEqual(blob_files(blobdir), [blob_hash(good)])


class IndexTransactionTests(SynchronousTestCase):
    def test_all_or_nothing(self) -> None:
        """
        The rows of one call are one transaction: an error half-way leaves
        none of them.
        """
        index = BlobIndex(Path(self.mktemp()))
        self.addCleanup(index.close)
        rows = [(blob_hash(b"one"), 3), (blob_hash(b"two"), 3), ("not a row",)]
        self.assertRaises(ValueError, index.add_blobs, rows, 0.0)  # type: ignore[arg-type]
        self.assertEqual(index.blobs(), {})
        index.add_blobs(rows[:2], 0.0)  # type: ignore[arg-type]
        self.assertEqual(index.blobs(), {blob_hash(b"one"): 3, blob_hash(b"two"): 3})


class IndexStreamOfTests(SynchronousTestCase):
    def test_stream_of(self) -> None:
        """
        The stream a blob belongs to: the stream itself for its sd blob,
        one of the two for a blob two streams share, L{None} for a blob of
        no stream.
        """
        index = BlobIndex(Path(self.mktemp()))
        self.addCleanup(index.close)
        first, second, shared, alone = (blob_hash(n.encode()) for n in ("1", "2", "s", "a"))
        one, two = blob_hash(b"one"), blob_hash(b"two")
        index.add_stream(first, [one, shared], ROLE_DOWNLOADED, 0.0)
        index.add_stream(second, [two, shared], ROLE_DOWNLOADED, 1.0)
        self.assertEqual(index.stream_of(first), first)
        self.assertEqual(index.stream_of(one), first)
        self.assertEqual(index.stream_of(two), second)
        self.assertIn(index.stream_of(shared), (first, second))
        self.assertIsNone(index.stream_of(alone))
        index.remove_stream(first)
        self.assertEqual(index.stream_of(shared), second)
        self.assertIsNone(index.stream_of(one))
