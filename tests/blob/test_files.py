"""
Tests for the blocking file operations of L{p2pblob.blob._files}: how a blob
file is written (past the page cache when it can be) and how blobs written
without syncing are made durable.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob._buffers import BufferPool
from p2pblob.blob import _files
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.errors import BlobHashMismatchError

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_LENGTHS = [0, 1, 4095, 4096, 4097, 1_000_000, MAX_BLOB_SIZE - 1, MAX_BLOB_SIZE]


class WriteFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.pool = BufferPool(MAX_BLOB_SIZE)
        # how each write was made: (length, whether the file was O_DIRECT)
        self.writes: list[tuple[int, bool]] = []
        real = _files._write_all

        def recording(fd: int, view: memoryview, offset: int) -> None:
            direct = bool(_O_DIRECT) and bool(_files.fcntl.fcntl(fd, _files.fcntl.F_GETFL) & _O_DIRECT)
            self.writes.append((len(view), direct))
            real(fd, view, offset)

        self.patch(_files, "_write_all", recording)

    def write(self, data: bytes | memoryview) -> bytes:
        path = self.directory / "blob"
        with open(path, "wb") as f:
            _files.write_file(f.fileno(), data)
        written = path.read_bytes()
        path.unlink()
        return written

    def pooled(self, data: bytes) -> memoryview:
        buffer = self.pool.acquire()
        buffer[: len(data)] = data
        return memoryview(buffer)[: len(data)]

    def test_contents(self) -> None:
        """
        Whatever the length, and whether the bytes are in a pool buffer or
        not, the file holds exactly the bytes.
        """
        for length in _LENGTHS:
            data = os.urandom(length)
            self.assertEqual(self.write(data), data, length)
            self.assertEqual(self.write(self.pooled(data)), data, length)

    def test_direct_from_pool_buffers(self) -> None:
        """
        From a pool buffer, the whole 4 KiB blocks go out with O_DIRECT (on
        a file system that has it) and only the rest through the page cache.
        """
        if not _O_DIRECT or os.uname().sysname != "Linux":
            raise self.skipTest("no O_DIRECT here")
        self.write(self.pooled(os.urandom(MAX_BLOB_SIZE)))
        self.assertEqual(self.writes, [(MAX_BLOB_SIZE, True), (0, False)])
        self.writes.clear()
        self.write(self.pooled(os.urandom(10_000)))
        self.assertEqual(self.writes, [(8192, True), (10_000 - 8192, False)])

    def test_unaligned_memory_falls_back(self) -> None:
        """
        Bytes that are not page-aligned are refused by O_DIRECT; they are
        written through the page cache instead, whole.
        """
        buffer = self.pool.acquire()
        data = os.urandom(8192)
        buffer[1:8193] = data
        self.assertEqual(self.write(memoryview(buffer)[1:8193]), data)
        self.assertEqual(self.writes[-1], (8192, False))


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def test_store_verified(self) -> None:
        data = os.urandom(5000)
        _files.store_verified(self.directory, blob_hash(data), data, durable=False)
        self.assertEqual((self.directory / blob_hash(data)).read_bytes(), data)

    def test_store_verified_refuses_other_bytes(self) -> None:
        data = os.urandom(5000)
        name = blob_hash(b"something else")
        error = self.assertRaises(
            BlobHashMismatchError, _files.store_verified, self.directory, name, data
        )
        self.assertIn(name[:16], str(error))
        self.assertEqual(os.listdir(self.directory), [])

    def test_sync_blobs_skips_deleted(self) -> None:
        """
        Syncing blobs fsyncs every file still there, then the directory; a
        blob deleted meanwhile is skipped.
        """
        kept, gone = b"kept", b"deleted before the sync"
        for data in (kept, gone):
            _files.store_bytes(self.directory, blob_hash(data), data, durable=False)
        (self.directory / blob_hash(gone)).unlink()
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") else "?")
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        _files.sync_blobs(self.directory, [blob_hash(kept), blob_hash(gone)])
        if synced[0] != "?":
            self.assertEqual(
                synced,
                [str((self.directory / blob_hash(kept)).absolute()), str(self.directory.absolute())],
            )
        else:
            self.assertEqual(len(synced), 2)
