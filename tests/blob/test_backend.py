"""
What is particular to the blob store whose blobs a storage backend keeps
(L{p2pblob.blob.backend.BackendBlobStore}); the L{IBlobStore} contract is
in L{tests.blob.test_conformance}.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob._threads import run_inline
from p2pblob.blob.backend import BackendBlobStore
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.store import ROLE_DOWNLOADED
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobNotFoundError,
    DriverError,
    StorageError,
)
from p2pblob.storage.host import StorageHost
from p2pblob.testing import MemoryStorageBackend, MemoryStoragePlugin
from tests.blob.test_conformance import stream_name


class BackendStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.memory = MemoryStorageBackend()
        self.index = Path(self.mktemp()) / "index.sqlite"
        self.index.parent.mkdir()
        self.store = self.make_store()

    def make_store(self, disk_limit: int | None = None) -> BackendBlobStore:
        host = StorageHost(MemoryStoragePlugin(self.memory), {}, self.clock)
        store = BackendBlobStore(self.clock, run_inline, host, self.index, disk_limit)
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def test_put_sends_one_file_named_by_hash(self) -> None:
        """
        A blob is sent whole, under its hash, and is then held and indexed.
        """
        data = os.urandom(5000)
        blob = self.successResultOf(self.store.put_blob(data))
        self.assertEqual(self.memory.files, {blob.blob_hash: data})
        self.assertEqual(self.memory.calls.count("upload_file"), 1)
        self.assertEqual(self.store.index.blobs(), {blob.blob_hash: 5000})
        self.assertEqual(dict(self.store.held_blobs()), {blob.blob_hash: 5000})
        opened = self.successResultOf(blob.open())
        self.assertEqual(opened.read(), data)

    def test_mismatch_sends_nothing(self) -> None:
        """
        Bytes that do not hash to the blob's name are refused before
        anything reaches the backend, by a writer and by C{put_blob}.
        """
        name = blob_hash(b"the real one")
        writer = self.store.open_writer(name, 12)
        writer.write(b"an impostor!")
        self.failureResultOf(writer.finished, BlobHashMismatchError)
        self.failureResultOf(self.store.put_blob(b"an impostor!", name), BlobHashMismatchError)
        self.assertNotIn("upload_file", self.memory.calls)
        self.assertNotIn("start_upload", self.memory.calls)
        self.assertEqual(self.memory.files, {})
        self.assertFalse(self.store.has_blob(name))
        self.assertEqual(self.store.used_bytes(), 0)

    def test_writer_in_pieces(self) -> None:
        """
        A writer gathers the pieces, checks them and sends the blob once.
        """
        data = os.urandom(300_000)
        name = blob_hash(data)
        writer = self.store.open_writer(name, len(data))
        for at in range(0, len(data), 65536):
            writer.write(data[at : at + 65536])
        blob = self.successResultOf(writer.finished)
        self.assertEqual((blob.blob_hash, blob.length), (name, len(data)))
        self.assertEqual(self.memory.files[name], data)
        self.assertEqual(self.memory.calls.count("upload_file"), 1)

    def test_service_error_retried(self) -> None:
        """
        A blob the service fails to store at first is sent again after a
        pause; it is held only once stored.
        """
        data = b"retried blob"
        self.memory.fail("upload_file", 2)
        putting = self.store.put_blob(data)
        self.assertNoResult(putting)
        self.assertFalse(self.store.has_blob(blob_hash(data)))
        self.clock.advance(0.5)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(putting).blob_hash, blob_hash(data))
        self.assertTrue(self.store.has_blob(blob_hash(data)))

    def test_driver_error_fails_the_write_only(self) -> None:
        """
        A refused write fails its writer, holds nothing, gives its space
        back, and the store goes on working.
        """
        data = b"refused blob"
        self.memory.fail("upload_file", 1, DriverError("bucket is read-only"))
        writer = self.store.open_writer(blob_hash(data), len(data))
        writer.write(data)
        error = self.failureResultOf(writer.finished, DriverError).value
        self.assertIn("read-only", str(error))
        self.assertFalse(self.store.has_blob(blob_hash(data)))
        self.assertEqual(self.store.used_bytes(), 0)
        self.assertEqual(self.store.index.blobs(), {})
        self.successResultOf(self.store.put_blob(data))
        self.assertTrue(self.store.has_blob(blob_hash(data)))

    def test_lost_blob_forgotten(self) -> None:
        """
        A blob the backend no longer has is forgotten when a read finds it
        missing: it is not listed (or announced) again.
        """
        name = self.successResultOf(self.store.put_blob(b"to be lost")).blob_hash
        del self.memory.files[name]
        self.failureResultOf(self.store.read_blob(name), BlobNotFoundError)
        self.assertFalse(self.store.has_blob(name))
        self.assertEqual(self.store.index.blobs(), {})

    def test_reopened_from_the_index(self) -> None:
        """
        A store started again lists what the index lists, without listing
        the backend.
        """
        name = self.successResultOf(self.store.put_blob(b"kept")).blob_hash
        self.store.stop()
        again = self.make_store()
        self.assertTrue(again.has_blob(name))
        self.assertEqual(self.successResultOf(again.read_blob(name)), b"kept")

    def test_start_fails_when_backend_refuses(self) -> None:
        """
        A backend that refuses the first call (a wrong bucket, a wrong
        password) stops the store from starting, in words, and leaves the
        index closed.
        """
        self.memory.fail("exists", 1, DriverError("no bucket named 'blobs'"))
        host = StorageHost(MemoryStoragePlugin(self.memory), {}, self.clock)
        other = BackendBlobStore(self.clock, run_inline, host, self.index)
        error = self.failureResultOf(Deferred.fromCoroutine(other.start()), DriverError).value
        self.assertIn("no bucket", str(error))
        self.assertRaises(StorageError, lambda: other.index)

    def test_eviction_removes_from_backend(self) -> None:
        """
        A blob evicted to stay under the limit is removed from the backend.
        """
        store = self.make_store(disk_limit=500)
        self.store.stop()
        old = self.successResultOf(store.put_blob(b"o" * 300)).blob_hash
        self.clock.advance(1)
        self.successResultOf(store.add_stream(stream_name("done"), [old], ROLE_DOWNLOADED))
        self.successResultOf(store.set_stream_finished(stream_name("done")))
        new = self.successResultOf(store.put_blob(b"n" * 300)).blob_hash
        self.assertEqual(set(self.memory.files), {new})

    def test_open_for_reading_refused_while_pending(self) -> None:
        """
        On the reactor thread, a blob whose backend does not answer at once
        cannot be opened without blocking: that is refused in words.
        """
        blob = self.successResultOf(self.store.put_blob(b"slow to read"))
        self.memory.fail("get_file", 1)
        error = self.assertRaises(StorageError, blob.open_for_reading)
        self.assertIn("without blocking", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WorkerThreadReadTests(TestCase):
    def test_open_for_reading_in_a_thread(self) -> None:
        """
        A worker thread (decrypting a download) opens a blob kept by a
        backend: it is fetched through the reactor while the thread waits.
        """
        memory = MemoryStorageBackend()
        index = Path(self.mktemp()) / "index.sqlite"
        index.parent.mkdir()
        host = StorageHost(MemoryStoragePlugin(memory), {}, reactor)
        store = BackendBlobStore(reactor, run_inline, host, index)
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        data = os.urandom(1000)
        blob = self.successResultOf(store.put_blob(data))

        def in_thread() -> bytes:
            with blob.open_for_reading() as f:
                return f.read()

        return deferToThread(in_thread).addCallback(self.assertEqual, data)
