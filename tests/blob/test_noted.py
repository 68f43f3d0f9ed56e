"""
Tests for L{p2pblob.blob.noted}: a blob store that tells a blob's name
before the blob is written, and the removal of blobs no stream uses, over a
real L{BlobStore}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.noted import NotingStore, remove_unused_blobs
from p2pblob.blob.store import ROLE_PUBLISHED, BlobStore
from p2pblob.errors import BlobHashMismatchError
from p2pblob.interfaces import IBlobStore


class NotingStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        self.store = BlobStore(Clock(), run_inline, directory / "blobs",
                               directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        # (what was told, the name, whether the store held it then)
        self.told: list[tuple[str, str, bool]] = []

    def tell(self, what: str, name: str) -> None:
        held = self.store.has_blob(name) or self.store.index.has_stream(name)
        self.told.append((what, name, held))

    def noting(self) -> NotingStore:
        return NotingStore(self.store, lambda name: self.tell("note", name),
                           lambda name: self.tell("stored", name),
                           note_stream=lambda name: self.tell("stream", name))

    def test_interface(self) -> None:
        verifyObject(IBlobStore, self.noting())
        verifyObject(IBlobStore, NotingStore(self.store, lambda name: None))

    def test_noted_before_written(self) -> None:
        """
        A blob put under its name is noted before it is in the store, and
        told once it is; one put without its name is noted once hashed.
        """
        noting = self.noting()
        name = blob_hash(b"data")
        self.successResultOf(noting.put_blob(b"data", name))
        self.assertEqual(self.told, [("note", name, False), ("stored", name, True)])
        self.told.clear()
        other = blob_hash(b"other")
        self.successResultOf(noting.put_blob(b"other"))
        self.assertEqual(self.told, [("note", other, True), ("stored", other, True)])
        self.failureResultOf(noting.put_blob(b"wrong", other), BlobHashMismatchError)

    def test_writer_noted(self) -> None:
        noting = self.noting()
        name = blob_hash(b"data")
        writer = noting.open_writer(name, 4)
        self.assertEqual(self.told, [("note", name, False)])
        writer.write(b"data")
        self.assertEqual(self.successResultOf(writer.finished).blob_hash, name)

    def test_stream_noted_before_recorded(self) -> None:
        noting = self.noting()
        name = blob_hash(b"data")
        self.successResultOf(noting.put_blob(b"data", name))
        self.told.clear()
        sd_hash = blob_hash(b"sd")
        self.successResultOf(noting.add_stream(sd_hash, [name], ROLE_PUBLISHED))
        self.assertEqual(self.told, [("stream", sd_hash, False)])
        self.assertTrue(self.store.index.has_stream(sd_hash))

    def test_failed_noting(self) -> None:
        """
        If noting fails, nothing is written or recorded: the call fails
        with the error.
        """

        def broken(name: str) -> None:
            raise OSError("no room for the note")

        noting = NotingStore(self.store, broken, note_stream=broken)
        name = blob_hash(b"data")
        self.failureResultOf(noting.put_blob(b"data", name), OSError)
        self.assertFalse(self.store.has_blob(name))
        self.assertRaises(OSError, noting.open_writer, name, 4)
        self.failureResultOf(noting.add_stream(blob_hash(b"sd"), [], ROLE_PUBLISHED), OSError)
        self.assertFalse(self.store.index.has_stream(blob_hash(b"sd")))

    def test_remove_unused_blobs(self) -> None:
        """
        The blobs given are removed, but for one a recorded stream uses;
        names the store does not hold are passed over.
        """
        used, unused = blob_hash(b"used"), blob_hash(b"unused")
        for data in (b"used", b"unused"):
            self.successResultOf(self.store.put_blob(data))
        sd_hash = blob_hash(b"sd")
        self.successResultOf(self.store.add_stream(sd_hash, [used], ROLE_PUBLISHED))
        removing = remove_unused_blobs(self.store, [used, unused, blob_hash(b"never")])
        self.successResultOf(Deferred.fromCoroutine(removing))
        self.assertEqual(self.successResultOf(self.store.verified_blobs()), [used])
        self.assertEqual([s[0] for s in self.store.index.streams()], [sd_hash])
