"""
Tests for publishing (L{p2pblob.stream.creator}) and assembling and verifying
(L{p2pblob.stream.assembler}) streams through a real blob store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob._threads import ThreadWorker, run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.store import BlobStore
from p2pblob.errors import DiskLimitError, IncompleteStreamError, StreamError
from p2pblob.stream.assembler import assemble_stream, verify_stream
from p2pblob.stream.creator import publish_file
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from p2pblob.stream.descriptor import StreamDescriptor, parse_sd_blob
from tests._vectors import case_names, generate_plaintext, load_case, sd_blob_bytes


def make_store(directory: Path, disk_limit: int | None = None) -> BlobStore:
    store = BlobStore(
        Clock(), run_inline, directory / "blobfiles", directory / "index.sqlite", disk_limit
    )
    Deferred.fromCoroutine(store.start())
    return store


class VectorPublishTests(SynchronousTestCase):
    """
    Publishing the vectors' plaintexts with their keys and IVs reproduces
    lbry-sdk's blobs and sd blobs byte for byte.
    """

    def test_every_stream_case(self) -> None:
        for name in case_names():
            case = load_case(name)
            with self.subTest(case=name):
                directory = Path(self.mktemp())
                directory.mkdir(parents=True)
                source = directory / case["input"]["file_name"]
                source.write_bytes(generate_plaintext(case["input"]["length"]))
                store = make_store(directory)
                ivs = iter([bytes.fromhex(iv) for iv in case["ivs_hex"]])
                next_iv = ivs.__next__
                descriptor, sd_hash = self.successResultOf(
                    Deferred.fromCoroutine(
                        publish_file(
                            store, run_inline, source,
                            key=bytes.fromhex(case["key_hex"]), iv_source=next_iv,
                        )
                    )
                )
                self.assertEqual(descriptor.to_sd_blob(), sd_blob_bytes(name))
                self.assertEqual(sd_hash, case["sd_blob"]["sd_hash"])
                self.assertEqual(descriptor.stream_hash, case["stream_hash"])
                data = [b for b in case["blobs"] if not b.get("terminator")]
                self.assertEqual(descriptor.blob_hashes, [b["blob_hash"] for b in data])
                for info in data:
                    self.assertTrue(store.has_blob(info["blob_hash"]))
                self.assertEqual(
                    self.successResultOf(store.read_blob(sd_hash)), sd_blob_bytes(name)
                )
                out = directory / "out"
                size = self.successResultOf(
                    Deferred.fromCoroutine(assemble_stream(store, run_inline, descriptor, out))
                )
                self.assertEqual(size, case["input"]["length"])
                self.assertEqual(
                    hashlib.sha384(out.read_bytes()).hexdigest(), case["input"]["sha384"]
                )
                store.stop()


class PublishTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def publish(self, store: BlobStore, data: bytes, name: str = "file.bin") -> tuple[StreamDescriptor, str]:
        source = self.directory / name
        source.write_bytes(data)
        return self.successResultOf(Deferred.fromCoroutine(publish_file(store, run_inline, source)))

    def assemble(self, store: BlobStore, descriptor: StreamDescriptor, name: str = "out") -> Deferred[int]:
        return Deferred.fromCoroutine(
            assemble_stream(store, run_inline, descriptor, self.directory / name)
        )

    @settings(max_examples=25, deadline=None)
    @given(
        length=st.one_of(
            st.integers(0, 5000),
            st.sampled_from(
                [PLAINTEXT_CHUNK_SIZE - 1, PLAINTEXT_CHUNK_SIZE, PLAINTEXT_CHUNK_SIZE + 1,
                 2 * PLAINTEXT_CHUNK_SIZE + 16]
            ),
        ),
        seed=st.binary(min_size=1, max_size=8),
    )
    def test_round_trip(self, length: int, seed: bytes) -> None:
        """
        Any file splits into full chunks plus a remainder, encrypts to blobs of
        at most 2 MiB, and decrypts back to itself.
        """
        store = make_store(Path(self.mktemp()))
        data = (hashlib.sha256(seed).digest() * (length // 32 + 1))[:length]
        descriptor, sd_hash = self.publish(store, data)
        self.assertEqual(len(descriptor.data_blobs), -(-length // PLAINTEXT_CHUNK_SIZE))
        for info in descriptor.data_blobs:
            self.assertLessEqual(info.length, MAX_BLOB_SIZE)
            self.assertEqual(info.length % 16, 0)
        self.assertEqual(descriptor.blobs[-1].length, 0)
        self.assertEqual(parse_sd_blob(self.successResultOf(store.read_blob(sd_hash))), descriptor)
        name = f"out-{os.urandom(4).hex()}"
        self.assertEqual(self.successResultOf(self.assemble(store, descriptor, name)), length)
        self.assertEqual((self.directory / name).read_bytes(), data)
        store.stop()

    def test_fresh_key_and_ivs(self) -> None:
        store = make_store(self.directory)
        first, _ = self.publish(store, b"x" * 5_000_000, "a")
        second, _ = self.publish(store, b"x" * 5_000_000, "b")
        self.assertNotEqual(first.key, second.key)
        ivs = [info.iv for info in first.blobs + second.blobs]
        self.assertEqual(len(set(ivs)), len(ivs))

    def test_published_streams_are_recorded(self) -> None:
        store = make_store(self.directory)
        descriptor, sd_hash = self.publish(store, os.urandom(3_000_000))
        self.assertEqual(store.index.streams(), [(sd_hash, "published", False, False)])
        self.assertEqual(store.index.stream_blobs(sd_hash), [sd_hash, *descriptor.blob_hashes])

    def test_disk_limit_cleans_up(self) -> None:
        """
        A publish that does not fit fails with the disk-limit error and leaves
        no blob behind.
        """
        store = make_store(self.directory, disk_limit=5_000_000)
        source = self.directory / "big"
        source.write_bytes(os.urandom(7_000_000))
        failure = self.failureResultOf(
            Deferred.fromCoroutine(publish_file(store, run_inline, source)), DiskLimitError
        )
        self.assertIn("disk-use limit", str(failure.value))
        self.assertEqual(self.successResultOf(store.verified_blobs()), [])
        self.assertEqual(store.used_bytes(), 0)
        self.assertEqual(store.index.streams(), [])

    def test_unreadable_file(self) -> None:
        store = make_store(self.directory)
        failure = self.failureResultOf(
            Deferred.fromCoroutine(publish_file(store, run_inline, self.directory / "nope")),
            StreamError,
        )
        self.assertIn("cannot read", str(failure.value))


class AssembleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.store = make_store(self.directory)
        source = self.directory / "source"
        self.data = os.urandom(5_000_000)
        source.write_bytes(self.data)
        self.descriptor, self.sd_hash = self.successResultOf(
            Deferred.fromCoroutine(publish_file(self.store, run_inline, source))
        )
        self.hashes = self.descriptor.blob_hashes

    def assemble(self, name: str = "out") -> Deferred[int]:
        return Deferred.fromCoroutine(
            assemble_stream(self.store, run_inline, self.descriptor, self.directory / name)
        )

    def leftovers(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n not in ("source", "blobfiles") and not n.startswith("index.sqlite"))

    def test_missing_blob(self) -> None:
        self.successResultOf(self.store.delete_blobs([self.hashes[1]]))
        failure = self.failureResultOf(self.assemble(), IncompleteStreamError)
        self.assertEqual(failure.value.missing, [self.hashes[1]])
        self.assertEqual(self.leftovers(), [])
        check = self.successResultOf(Deferred.fromCoroutine(verify_stream(self.store, self.descriptor)))
        self.assertEqual((check.missing, check.corrupt, check.complete), ([self.hashes[1]], [], False))

    def test_corrupt_blob(self) -> None:
        """
        A blob damaged on disk after it was verified is detected while
        assembling; it is removed, reported, and no output appears.
        """
        path = self.store.path_of(self.hashes[2])
        damaged = bytearray(path.read_bytes())
        damaged[100] ^= 0xFF
        path.write_bytes(bytes(damaged))
        failure = self.failureResultOf(self.assemble(), IncompleteStreamError)
        self.assertEqual(failure.value.corrupt, [self.hashes[2]])
        self.assertFalse(self.store.has_blob(self.hashes[2]))
        self.assertEqual(self.leftovers(), [])

    def test_verify(self) -> None:
        check = self.successResultOf(Deferred.fromCoroutine(verify_stream(self.store, self.descriptor)))
        self.assertEqual(check.ok, self.hashes)
        self.assertTrue(check.complete)
        self.store.path_of(self.hashes[0]).write_bytes(b"\0" * self.descriptor.blobs[0].length)
        check = self.successResultOf(Deferred.fromCoroutine(verify_stream(self.store, self.descriptor)))
        self.assertEqual((check.ok, check.corrupt), (self.hashes[1:], [self.hashes[0]]))
        self.assertFalse(self.store.has_blob(self.hashes[0]))

    def test_never_overwrites(self) -> None:
        (self.directory / "out").write_bytes(b"precious")
        failure = self.failureResultOf(self.assemble(), StreamError)
        self.assertIn("already exists", str(failure.value))
        self.assertEqual((self.directory / "out").read_bytes(), b"precious")
        self.assertEqual(self.leftovers(), ["out"])


class ThreadedRoundTripTests(TestCase):
    """
    The real arrangement: disk work in a thread pool, the reactor running.
    """

    timeout = 120

    async def test_50_mib_round_trip(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        worker = ThreadWorker(reactor, "test-disk", 4)
        worker.start()
        self.addCleanup(worker.stop)
        store = BlobStore(
            reactor, worker, directory / "blobfiles", directory / "index.sqlite"  # type: ignore[arg-type]
        )
        await store.start()
        self.addCleanup(store.stop)
        source = directory / "random.bin"
        digest = hashlib.sha256()
        with open(source, "wb") as f:
            for _ in range(50):
                chunk = os.urandom(1024 * 1024)
                digest.update(chunk)
                f.write(chunk)
        descriptor, sd_hash = await publish_file(store, worker, source)
        self.assertEqual(len(descriptor.data_blobs), 26)
        self.assertTrue(store.has_blob(sd_hash))
        out = directory / "assembled.bin"
        written = await assemble_stream(store, worker, descriptor, out)
        self.assertEqual(written, 50 * 1024 * 1024)
        check = hashlib.sha256()
        with open(out, "rb") as f:
            while chunk := f.read(1 << 20):
                check.update(chunk)
        self.assertEqual(check.hexdigest(), digest.hexdigest())
