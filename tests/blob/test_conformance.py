"""
The behaviour L{p2pblob.interfaces.IBlobStore} promises, written once in
L{IBlobStoreTestsMixin} and run against every implementation: the disk
store (L{p2pblob.blob.store.BlobStore}) and the in-memory fake
(L{p2pblob.testing.MemoryBlobStore}).

An implementation's test case supplies three hooks: C{make_store}, C{damage}
(spoil a stored blob's bytes behind the store's back) and C{tick} (make the
next blob stored count as newer than those before it, for eviction order).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.backend import BackendBlobStore
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
)
from p2pblob.interfaces import IBlob, IBlobStore, IBlobWriter
from p2pblob.storage.host import StorageHost
from p2pblob.testing import MemoryBlobStore, MemoryStorageBackend, MemoryStoragePlugin
from tests.storage_conformance import builtin_plugin

if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object


def stream_name(label: str) -> str:
    """
    A valid sd blob name for a stream used only as a label in a test.
    """
    return blob_hash(f"stream {label}".encode())


def flipped(data: bytes) -> bytes:
    """
    Bytes of the same size as C{data}, every one of them different.
    """
    return bytes(b ^ 0xFF for b in data)


class IBlobStoreTestsMixin(_TestCase):
    """
    Tests of the L{IBlobStore} contract, for a L{SynchronousTestCase} that
    supplies the hooks below.  Every Deferred the store returns in these tests
    must have fired by the time the call returns (the disk store runs its
    blocking work inline here).
    """

    def make_store(self, disk_limit: int | None = None) -> IBlobStore:
        """
        A fresh, empty, started store, stopped when the test ends.
        """
        raise NotImplementedError()

    def damage(self, store: IBlobStore, blob_hash: str) -> None:
        """
        Replace the bytes held for the stored blob C{blob_hash} with other
        bytes of the same size, without telling C{store}.
        """
        raise NotImplementedError()

    def tick(self) -> None:
        """
        Make blobs stored from now on newer than those stored before.
        """
        raise NotImplementedError()

    def put(self, store: IBlobStore, data: bytes) -> str:
        """
        Store C{data} as a blob, as the newest so far; return its name.
        """
        name = self.successResultOf(store.put_blob(data)).blob_hash
        self.assertIsInstance(name, str)
        self.tick()
        return str(name)

    def downloaded(self, store: IBlobStore, label: str, blobs: list[str]) -> str:
        """
        Record a finished, unpinned download made of C{blobs}; return its
        sd hash.
        """
        sd_hash = stream_name(label)
        self.successResultOf(store.add_stream(sd_hash, blobs, ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(sd_hash))
        return sd_hash

    def listed(self, store: IBlobStore) -> list[str]:
        """
        The names C{store.verified_blobs()} gives.
        """
        names: list[str] = self.successResultOf(store.verified_blobs())
        return names

    def assertNothingStored(self, store: IBlobStore) -> None:
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store.used_bytes(), 0)

    # interfaces

    def test_provides_interfaces(self) -> None:
        """
        The store, its blobs and its writers provide their interfaces.
        """
        store = self.make_store()
        self.assertTrue(verifyObject(IBlobStore, store))
        blob = self.successResultOf(store.put_blob(b"blob"))
        self.assertTrue(verifyObject(IBlob, blob))
        self.assertTrue(verifyObject(IBlob, store.get_blob(blob.blob_hash)))
        writer = store.open_writer(blob_hash(b"writer"), 6)
        self.assertTrue(verifyObject(IBlobWriter, writer))
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)

    # storing and reading

    def test_put_and_read(self) -> None:
        """
        A blob given whole is named by its sha384 and can be read back every
        way the interfaces offer.
        """
        store = self.make_store()
        data = bytes(range(256)) * 4
        name = blob_hash(data)
        self.assertFalse(store.has_blob(name))
        blob = self.successResultOf(store.put_blob(data))
        self.assertEqual((blob.blob_hash, blob.length), (name, len(data)))
        self.assertTrue(store.has_blob(name))
        got = store.get_blob(name)
        self.assertEqual((got.blob_hash, got.length), (name, len(data)))
        self.assertEqual(self.successResultOf(store.read_blob(name)), data)
        self.assertEqual(self.successResultOf(blob.read()), data)
        with got.open_for_reading() as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [name])
        self.assertEqual(store.used_bytes(), len(data))

    def test_put_accepts_any_bytes_like(self) -> None:
        """
        C{put_blob} takes C{bytearray} and C{memoryview} as well as C{bytes}.
        """
        store = self.make_store()
        for data in (bytearray(b"from a bytearray"), memoryview(b"from a memoryview")):
            blob = self.successResultOf(store.put_blob(data))
            self.assertEqual(blob.blob_hash, blob_hash(bytes(data)))
            self.assertEqual(self.successResultOf(store.read_blob(blob.blob_hash)), bytes(data))

    def test_put_present_blob_again(self) -> None:
        """
        Storing a blob already present is not an error and stores nothing
        more.
        """
        store = self.make_store()
        first = self.successResultOf(store.put_blob(b"twice"))
        second = self.successResultOf(store.put_blob(b"twice"))
        self.assertEqual(second.blob_hash, first.blob_hash)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [first.blob_hash])
        self.assertEqual(store.used_bytes(), 5)

    def test_put_present_blob_again_at_limit(self) -> None:
        """
        Storing a blob already present adds no bytes, so it succeeds even
        when the store is at its disk-use limit.
        """
        store = self.make_store(disk_limit=100)
        name = self.put(store, b"a" * 100)
        blob = self.successResultOf(store.put_blob(b"a" * 100))
        self.assertEqual(blob.blob_hash, name)
        self.assertEqual(store.used_bytes(), 100)

    def test_missing_blob(self) -> None:
        """
        A blob the store does not hold is absent every way one asks.
        """
        store = self.make_store()
        name = blob_hash(b"never stored")
        self.assertFalse(store.has_blob(name))
        self.assertRaises(BlobNotFoundError, store.get_blob, name)
        failure = self.failureResultOf(store.read_blob(name), BlobNotFoundError)
        self.assertEqual(failure.value.blob_hash, name)

    def test_chunked_write_visible_only_when_complete(self) -> None:
        """
        A blob written in chunks is invisible, but reserved, until its last
        byte arrives and it verifies.
        """
        store = self.make_store()
        data = bytes(range(200)) * 50
        name = blob_hash(data)
        writer = store.open_writer(name, len(data))
        self.assertEqual((writer.blob_hash, writer.length, writer.received), (name, 10_000, 0))
        self.assertNoResult(writer.finished)
        for start in range(0, 9_000, 3_000):
            writer.write(data[start : start + 3_000])
            self.assertEqual(writer.received, start + 3_000)
            self.assertFalse(store.has_blob(name))
            self.assertEqual(self.successResultOf(store.verified_blobs()), [])
            self.failureResultOf(store.read_blob(name), BlobNotFoundError)
            self.assertNoResult(writer.finished)
            self.assertEqual(store.used_bytes(), 10_000)
        writer.write(data[9_000:])
        blob = self.successResultOf(writer.finished)
        self.assertEqual((blob.blob_hash, blob.length), (name, 10_000))
        self.assertEqual(writer.received, 10_000)
        self.assertEqual(self.successResultOf(store.read_blob(name)), data)
        self.assertEqual(store.used_bytes(), 10_000)
        writer.close()  # after a complete blob, this does nothing
        writer.cancel()  # nor this, once finished has fired
        self.assertTrue(store.has_blob(name))

    def test_empty_blob(self) -> None:
        """
        A blob of no bytes is verified as soon as its writer opens.
        """
        store = self.make_store()
        writer = store.open_writer(blob_hash(b""), 0)
        self.assertEqual(self.successResultOf(writer.finished).length, 0)
        self.assertTrue(store.has_blob(blob_hash(b"")))
        self.assertEqual(self.successResultOf(store.read_blob(blob_hash(b""))), b"")

    def test_over_length(self) -> None:
        """
        Data past the announced length is refused with L{BlobTooLargeError},
        from C{write} and from C{finished}; nothing is kept and later data is
        discarded.
        """
        store = self.make_store()
        data = b"0123456789"
        writer = store.open_writer(blob_hash(data), 10)
        writer.write(b"0123")
        error = self.assertRaises(BlobTooLargeError, writer.write, b"0123456789")
        self.assertEqual((error.length, error.limit), (14, 10))
        failure = self.failureResultOf(writer.finished, BlobTooLargeError)
        self.assertEqual(failure.value.length, 14)
        self.assertLessEqual(writer.received, writer.length)
        writer.write(b"more")  # discarded, so that a protocol can drain
        writer.close()
        self.assertFalse(store.has_blob(blob_hash(data)))
        self.assertNothingStored(store)

    def test_hash_mismatch(self) -> None:
        """
        Bytes that do not hash to the blob's name are thrown away.
        """
        store = self.make_store()
        writer = store.open_writer(blob_hash(b"expected"), 8)
        writer.write(b"forgery!")
        failure = self.failureResultOf(writer.finished, BlobHashMismatchError)
        self.assertEqual(failure.value.actual, blob_hash(b"forgery!"))
        self.assertFalse(store.has_blob(blob_hash(b"expected")))
        self.assertFalse(store.has_blob(blob_hash(b"forgery!")))
        self.assertNothingStored(store)

    def test_truncated_close(self) -> None:
        """
        A source that stops short leaves nothing behind.
        """
        store = self.make_store()
        data = b"a" * 100
        writer = store.open_writer(blob_hash(data), 100)
        writer.write(data[:60])
        writer.close()
        failure = self.failureResultOf(writer.finished, BlobIncompleteError)
        self.assertEqual((failure.value.received, failure.value.expected), (60, 100))
        writer.write(data[60:])  # discarded
        self.assertFalse(store.has_blob(blob_hash(data)))
        self.assertNothingStored(store)

    def test_cancel(self) -> None:
        """
        A cancelled write keeps nothing and discards what comes after.
        """
        store = self.make_store()
        data = b"c" * 100
        writer = store.open_writer(blob_hash(data), 100)
        writer.write(data[:50])
        writer.cancel()
        failure = self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertEqual(failure.value.blob_hash, blob_hash(data))
        writer.write(data[50:])
        writer.cancel()
        self.assertFalse(store.has_blob(blob_hash(data)))
        self.assertNothingStored(store)

    def test_racing_writers_first_verified_wins(self) -> None:
        """
        Of several writers of one blob, the first to verify is kept and the
        others are cancelled; a bad copy does not spoil the race.
        """
        store = self.make_store()
        data = bytes(range(250)) * 20
        name = blob_hash(data)
        forged, first, second, third = (store.open_writer(name, len(data)) for _ in range(4))
        self.assertEqual(store.used_bytes(), 4 * len(data))
        forged.write(flipped(data))
        self.failureResultOf(forged.finished, BlobHashMismatchError)
        for writer in (first, second, third):
            writer.write(data[:2500])
        second.write(data[2500:])
        blob = self.successResultOf(second.finished)
        self.assertEqual(blob.blob_hash, name)
        self.failureResultOf(first.finished, BlobWriteCancelledError)
        self.failureResultOf(third.finished, BlobWriteCancelledError)
        first.write(data[2500:])  # the loser's peer keeps sending: discarded
        self.assertEqual(first.received, 2500)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [name])
        self.assertEqual(self.successResultOf(store.read_blob(name)), data)
        self.assertEqual(store.used_bytes(), len(data))

    def test_writer_for_stored_blob_is_cancelled(self) -> None:
        """
        A writer opened for a blob already present has already been
        cancelled, reserves nothing and discards what it is given.
        """
        store = self.make_store()
        name = self.put(store, b"already here")
        late = store.open_writer(name, 12)
        self.failureResultOf(late.finished, BlobWriteCancelledError)
        self.assertEqual(store.used_bytes(), 12)
        late.write(b"already here")
        self.assertEqual(late.received, 0)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [name])

    def test_put_blob_expected_hash(self) -> None:
        """
        With C{expected_hash}, bytes that hash to another name are refused
        with L{BlobHashMismatchError} and nothing is stored; the right bytes
        are stored as usual.
        """
        store = self.make_store()
        good = b"the expected bytes"
        name = blob_hash(good)
        failure = self.failureResultOf(
            store.put_blob(b"other bytes", expected_hash=name), BlobHashMismatchError
        )
        self.assertEqual(failure.value.actual, blob_hash(b"other bytes"))
        self.assertFalse(store.has_blob(blob_hash(b"other bytes")))
        self.assertEqual(store.used_bytes(), 0)
        blob = self.successResultOf(store.put_blob(good, expected_hash=name))
        self.assertEqual(blob.blob_hash, name)

    def test_put_blob_cancels_running_writers(self) -> None:
        """
        A blob given whole while writers of it are running wins the race.
        """
        store = self.make_store()
        data = b"delivered two ways"
        writer = store.open_writer(blob_hash(data), len(data))
        writer.write(data[:5])
        blob = self.successResultOf(store.put_blob(data))
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertEqual(blob.blob_hash, blob_hash(data))
        self.assertEqual(store.used_bytes(), len(data))

    def test_bad_names_and_lengths(self) -> None:
        """
        Writers need a real blob name and a length within the blob size
        limit; a whole blob over the limit is refused.
        """
        store = self.make_store()
        for bad in ("../etc/passwd", "A" * 96, "a" * 95, "a" * 97, "g" * 96, ""):
            error = self.assertRaises(InvalidBlobHashError, store.open_writer, bad, 1)
            self.assertEqual(error.blob_hash, bad)
        name = blob_hash(b"x" * (MAX_BLOB_SIZE + 1))
        error = self.assertRaises(BlobTooLargeError, store.open_writer, name, MAX_BLOB_SIZE + 1)
        self.assertEqual((error.length, error.limit), (MAX_BLOB_SIZE + 1, MAX_BLOB_SIZE))
        failure = self.failureResultOf(
            store.put_blob(b"x" * (MAX_BLOB_SIZE + 1)), BlobTooLargeError
        )
        self.assertEqual(failure.value.limit, MAX_BLOB_SIZE)
        self.assertNothingStored(store)
        biggest = self.successResultOf(store.put_blob(b"y" * MAX_BLOB_SIZE))
        self.assertEqual(biggest.length, MAX_BLOB_SIZE)

    def test_add_stream_rejects_bad_names(self) -> None:
        """
        C{add_stream} fails with L{InvalidBlobHashError} when a name is not a
        blob hash.
        """
        store = self.make_store()
        good = blob_hash(b"good")
        self.failureResultOf(
            store.add_stream("not a hash", [good], ROLE_DOWNLOADED), InvalidBlobHashError
        )
        self.failureResultOf(
            store.add_stream(stream_name("s"), [good, "A" * 96], ROLE_PUBLISHED),
            InvalidBlobHashError,
        )

    # deleting and checking

    def test_delete(self) -> None:
        """
        Deleted blobs are gone, including for L{IBlob}s obtained before;
        unknown names are ignored.
        """
        store = self.make_store()
        gone = self.successResultOf(store.put_blob(b"to delete"))
        kept = self.put(store, b"to keep")
        self.successResultOf(store.delete_blobs([gone.blob_hash, blob_hash(b"unknown")]))
        self.assertFalse(store.has_blob(gone.blob_hash))
        self.assertRaises(BlobNotFoundError, store.get_blob, gone.blob_hash)
        self.failureResultOf(store.read_blob(gone.blob_hash), BlobNotFoundError)
        self.failureResultOf(gone.read(), BlobNotFoundError)
        self.assertRaises(BlobNotFoundError, gone.open_for_reading)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [kept])
        self.assertEqual(store.used_bytes(), 7)
        self.successResultOf(store.delete_blobs([]))
        self.assertTrue(store.has_blob(kept))

    def test_verified_blobs(self) -> None:
        """
        C{verified_blobs} lists every verified blob and nothing else.
        """
        store = self.make_store()
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        put = self.put(store, b"put whole")
        written = store.open_writer(blob_hash(b"written"), 7)
        written.write(b"written")
        self.successResultOf(written.finished)
        running = store.open_writer(blob_hash(b"running"), 7)
        running.write(b"run")
        failed = store.open_writer(blob_hash(b"failed"), 6)
        failed.write(b"FAILED")
        self.failureResultOf(failed.finished, BlobHashMismatchError)
        self.assertEqual(
            sorted(self.listed(store)),
            sorted([put, blob_hash(b"written")]),
        )
        running.cancel()
        self.failureResultOf(running.finished, BlobWriteCancelledError)

    def test_check_blob(self) -> None:
        """
        C{check_blob} tells intact blobs from damaged ones, which it removes,
        and from missing ones.
        """
        store = self.make_store()
        good = self.put(store, b"good data")
        bad = self.put(store, b"bad data!")
        self.damage(store, bad)
        self.assertEqual(self.successResultOf(store.check_blob(good)), "ok")
        self.assertEqual(self.successResultOf(store.check_blob(bad)), "corrupt")
        self.assertFalse(store.has_blob(bad))
        self.failureResultOf(store.read_blob(bad), BlobNotFoundError)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [good])
        self.assertEqual(store.used_bytes(), 9)
        self.assertEqual(self.successResultOf(store.check_blob(bad)), "missing")
        self.assertEqual(self.successResultOf(store.check_blob(blob_hash(b"no"))), "missing")
        self.assertEqual(self.successResultOf(store.check_blob(good)), "ok")

    # the disk-use limit

    def test_evicts_finished_downloads_oldest_first(self) -> None:
        """
        To make room, the blobs of finished downloads go, oldest stored
        first, and no more of them than needed.
        """
        store = self.make_store(disk_limit=1000)
        old = [self.put(store, bytes([i]) * 200) for i in range(2)]
        new = [self.put(store, bytes([10 + i]) * 200) for i in range(2)]
        # the newer stream finishes first: age is the blob's, not the stream's
        self.downloaded(store, "new", new)
        self.downloaded(store, "old", old)
        self.assertEqual(store.used_bytes(), 800)
        third = self.put(store, b"z" * 350)  # 150 bytes over the limit
        self.assertEqual(store.used_bytes(), 950)
        self.assertFalse(store.has_blob(old[0]))
        for name in [old[1], *new, third]:
            self.assertTrue(store.has_blob(name))
        fourth = self.put(store, b"y" * 400)  # 350 over
        self.assertEqual(store.used_bytes(), 950)
        self.assertEqual(
            sorted(self.listed(store)),
            sorted([new[1], third, fourth]),
        )

    def test_no_partial_eviction(self) -> None:
        """
        When evicting everything allowed would still not make room, nothing
        is evicted: the refused write costs no data.
        """
        store = self.make_store(disk_limit=1000)
        cached = self.put(store, b"c" * 100)
        kept = self.put(store, b"k" * 800)
        self.downloaded(store, "cache", [cached])
        self.successResultOf(store.add_stream(stream_name("pub"), [kept], ROLE_PUBLISHED))
        self.failureResultOf(store.put_blob(b"n" * 300), DiskLimitError)
        self.assertRaises(DiskLimitError, store.open_writer, blob_hash(b"m" * 300), 300)
        self.assertTrue(store.has_blob(cached))
        self.assertEqual(store.used_bytes(), 900)
        self.put(store, b"n" * 150)  # 50 bytes over: the cached blob goes
        self.assertFalse(store.has_blob(cached))

    def test_never_evicts_published_pinned_or_unfinished(self) -> None:
        """
        Published, pinned and unfinished streams are kept; when nothing can
        go, the write is refused with L{DiskLimitError}.
        """
        store = self.make_store(disk_limit=1000)
        published = self.put(store, b"p" * 300)
        pinned = self.put(store, b"q" * 300)
        running = self.put(store, b"r" * 300)
        self.successResultOf(store.add_stream(stream_name("pub"), [published], ROLE_PUBLISHED))
        pin = self.downloaded(store, "pin", [pinned])
        self.successResultOf(store.pin_stream(pin, True))
        self.successResultOf(store.add_stream(stream_name("run"), [running], ROLE_DOWNLOADED))
        failure = self.failureResultOf(store.put_blob(b"x" * 200), DiskLimitError)
        self.assertEqual(
            (failure.value.needed, failure.value.used, failure.value.limit), (200, 900, 1000)
        )
        error = self.assertRaises(DiskLimitError, store.open_writer, blob_hash(b"w"), 150)
        self.assertEqual((error.needed, error.used, error.limit), (150, 900, 1000))
        for name in (published, pinned, running):
            self.assertTrue(store.has_blob(name))
        self.assertEqual(store.used_bytes(), 900)
        self.successResultOf(store.pin_stream(pin, False))
        self.put(store, b"x" * 200)
        self.assertFalse(store.has_blob(pinned))
        self.assertTrue(store.has_blob(published))
        self.assertTrue(store.has_blob(running))

    def test_shared_blob_kept_while_any_stream_keeps_it(self) -> None:
        """
        A blob of a finished download that also belongs to a published
        stream, or to a download not yet finished, is kept; a blob of no
        stream is never evicted.
        """
        store = self.make_store(disk_limit=1000)
        with_published = self.put(store, b"s" * 300)
        with_running = self.put(store, b"t" * 300)
        no_stream = self.put(store, b"u" * 300)
        self.downloaded(store, "done", [with_published, with_running])
        self.successResultOf(store.add_stream(stream_name("pub"), [with_published], ROLE_PUBLISHED))
        self.successResultOf(store.add_stream(stream_name("run"), [with_running], ROLE_DOWNLOADED))
        self.failureResultOf(store.put_blob(b"v" * 200), DiskLimitError)
        for name in (with_published, with_running, no_stream):
            self.assertTrue(store.has_blob(name))

    def test_published_role_wins(self) -> None:
        """
        Recording a downloaded stream again as published keeps its blobs.
        """
        store = self.make_store(disk_limit=500)
        blob = self.put(store, b"b" * 400)
        sd_hash = self.downloaded(store, "mine", [blob])
        self.successResultOf(store.add_stream(sd_hash, [blob], ROLE_PUBLISHED))
        self.successResultOf(store.add_stream(sd_hash, [blob], ROLE_DOWNLOADED))
        self.failureResultOf(store.put_blob(b"c" * 200), DiskLimitError)
        self.assertTrue(store.has_blob(blob))

    def test_running_writers_reserve_space(self) -> None:
        """
        A running writer counts its whole length against the limit until it
        ends.
        """
        store = self.make_store(disk_limit=1000)
        data = b"w" * 800
        writer = store.open_writer(blob_hash(data), 800)
        self.assertEqual(store.used_bytes(), 800)
        error = self.assertRaises(DiskLimitError, store.open_writer, blob_hash(b"v" * 300), 300)
        self.assertEqual((error.needed, error.used, error.limit), (300, 800, 1000))
        self.failureResultOf(store.put_blob(b"v" * 300), DiskLimitError)
        writer.cancel()
        self.failureResultOf(writer.finished, BlobWriteCancelledError)
        self.assertEqual(store.used_bytes(), 0)
        later = store.open_writer(blob_hash(b"v" * 300), 300)
        self.assertEqual(store.used_bytes(), 300)
        later.write(b"v" * 300)
        self.successResultOf(later.finished)
        self.assertEqual(store.used_bytes(), 300)
        self.assertRaises(DiskLimitError, store.open_writer, blob_hash(data), 800)
        self.assertEqual(store.used_bytes(), 300)

    def test_writer_evicts_to_make_room(self) -> None:
        """
        Opening a writer evicts finished downloads when it needs the room.
        """
        store = self.make_store(disk_limit=1000)
        old = self.put(store, b"o" * 600)
        self.downloaded(store, "old", [old])
        data = b"n" * 500
        writer = store.open_writer(blob_hash(data), 500)
        self.assertFalse(store.has_blob(old))
        self.assertEqual(store.used_bytes(), 500)
        writer.write(data)
        self.successResultOf(writer.finished)
        self.assertEqual(self.successResultOf(store.verified_blobs()), [blob_hash(data)])

    # streams

    def test_remove_stream_deletes_only_orphans(self) -> None:
        """
        Removing a stream with its blobs deletes those no other stream uses.
        """
        store = self.make_store()
        shared = self.put(store, b"shared")
        only = self.put(store, b"only")
        loose = self.put(store, b"in no stream")
        self.successResultOf(store.add_stream(stream_name("a"), [shared, only], ROLE_DOWNLOADED))
        self.successResultOf(store.add_stream(stream_name("b"), [shared], ROLE_PUBLISHED))
        self.successResultOf(store.remove_stream(stream_name("a"), delete_blobs=True))
        self.assertTrue(store.has_blob(shared))
        self.assertFalse(store.has_blob(only))
        self.assertTrue(store.has_blob(loose))
        self.successResultOf(store.remove_stream(stream_name("b"), delete_blobs=False))
        self.assertEqual(sorted(self.listed(store)), sorted([shared, loose]))
        self.successResultOf(store.remove_stream(stream_name("never added"), delete_blobs=True))
        self.assertEqual(store.used_bytes(), 6 + 12)

    def test_removed_stream_no_longer_makes_blobs_evictable(self) -> None:
        """
        Once its stream is forgotten, a blob of a finished download belongs
        to no stream and is no longer evicted.
        """
        store = self.make_store(disk_limit=500)
        blob = self.put(store, b"f" * 400)
        sd_hash = self.downloaded(store, "forgotten", [blob])
        self.successResultOf(store.remove_stream(sd_hash, delete_blobs=False))
        self.failureResultOf(store.put_blob(b"g" * 200), DiskLimitError)
        self.assertTrue(store.has_blob(blob))


class DiskBlobStoreTests(IBlobStoreTestsMixin, SynchronousTestCase):
    """
    The contract, on real files and a real SQLite index.
    """

    def make_store(self, disk_limit: int | None = None) -> BlobStore:
        self.clock = Clock()
        directory = Path(self.mktemp())
        store = BlobStore(
            self.clock,
            run_inline,
            directory / "blobfiles",
            directory / "index.sqlite",
            disk_limit,
        )
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def damage(self, store: IBlobStore, blob_hash: str) -> None:
        assert isinstance(store, BlobStore)
        path = store.path_of(blob_hash)
        path.write_bytes(flipped(path.read_bytes()))

    def tick(self) -> None:
        self.clock.advance(1)


class MemoryBlobStoreTests(IBlobStoreTestsMixin, SynchronousTestCase):
    """
    The contract, on the in-memory fake.
    """

    def make_store(self, disk_limit: int | None = None) -> MemoryBlobStore:
        return MemoryBlobStore(disk_limit)

    def damage(self, store: IBlobStore, blob_hash: str) -> None:
        assert isinstance(store, MemoryBlobStore)
        store.corrupt(blob_hash, flipped(self.successResultOf(store.read_blob(blob_hash))))

    def tick(self) -> None:
        """
        The fake ages blobs by the order they are stored in.
        """

    def test_corrupt_missing_blob(self) -> None:
        """
        The fake's C{corrupt} helper refuses a blob it does not hold.
        """
        store = self.make_store()
        self.assertRaises(BlobNotFoundError, store.corrupt, blob_hash(b"absent"), b"x")

    def test_corrupt_is_seen_by_readers(self) -> None:
        """
        Damaged bytes are what readers get until C{check_blob} finds them.
        """
        store = self.make_store()
        name = self.put(store, b"fine")
        store.corrupt(name, b"ruined")
        self.assertEqual(self.successResultOf(store.read_blob(name)), b"ruined")
        self.assertEqual(self.successResultOf(store.check_blob(name)), "corrupt")
        self.assertNothingStored(store)


class BackendBlobStoreTests(IBlobStoreTestsMixin, SynchronousTestCase):
    """
    The contract, with the blobs kept by a storage backend (the in-memory
    one) and the index in a real SQLite file.
    """

    def make_store(self, disk_limit: int | None = None) -> BackendBlobStore:
        self.clock = Clock()
        self.memory = MemoryStorageBackend()
        host = StorageHost(MemoryStoragePlugin(self.memory), {}, self.clock)
        store = BackendBlobStore(
            self.clock, run_inline, host, Path(self.mktemp()) / "index.sqlite", disk_limit
        )
        Path(store._index_path).parent.mkdir(parents=True)
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def damage(self, store: IBlobStore, blob_hash: str) -> None:
        self.memory.files[blob_hash] = flipped(self.memory.files[blob_hash])

    def tick(self) -> None:
        self.clock.advance(1)

    def assertNothingStored(self, store: IBlobStore) -> None:
        super().assertNothingStored(store)
        self.assertEqual((self.memory.files, self.memory.uploading()), ({}, []))


class LocalBackendBlobStoreTests(IBlobStoreTestsMixin, SynchronousTestCase):
    """
    The contract, with the blobs kept by the C{local} storage plugin's
    backend through a host: the generic path any plugin takes (the node's
    own disk store is the same layout with group commits of its own).
    """

    def make_store(self, disk_limit: int | None = None) -> BackendBlobStore:
        self.clock = Clock()
        self.root = Path(self.mktemp())
        host = StorageHost(builtin_plugin(self, "local"), {"root": str(self.root)}, self.clock)
        store = BackendBlobStore(
            self.clock, run_inline, host, Path(self.mktemp()) / "index.sqlite", disk_limit
        )
        Path(store._index_path).parent.mkdir(parents=True)
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def damage(self, store: IBlobStore, blob_hash: str) -> None:
        path = self.root / blob_hash
        path.write_bytes(flipped(path.read_bytes()))

    def tick(self) -> None:
        self.clock.advance(1)

    def assertNothingStored(self, store: IBlobStore) -> None:
        super().assertNothingStored(store)
        self.assertEqual(list(self.root.iterdir()) if self.root.exists() else [], [])
