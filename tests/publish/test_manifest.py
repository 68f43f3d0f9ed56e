"""
Tests for L{p2pblob.publish.manifest}: admitting manifests all or nothing,
uploads published with their MD5 checked, resumed after a cut or a restart,
cancelled, and swept when their transfer key expires, over a real blob
store in a temporary directory, on a L{Clock}, with blocking work inline.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.noted import NotingStore
from p2pblob.blob.store import BlobStore
from p2pblob.errors import (
    BlobHashMismatchError,
    ChecksumMismatchError,
    DiskLimitError,
    ManifestError,
    ManifestRefusedError,
    OffsetMismatchError,
    PublisherNotReadyError,
    UnknownNameError,
    UnknownPrefixError,
    UnknownUploadError,
    UploadBusyError,
    UploadCancelledError,
    UploadCompleteError,
    WrongLengthError,
)
from p2pblob.interfaces import IBlobStore
from p2pblob.node import make_node
from p2pblob.publish._manifest_checks import (
    MAX_FILE_SIZE,
    check_name,
    check_prefix,
    parse_manifest,
    store_room,
    stored_size,
)
from p2pblob.publish._manifest_state import ManifestState
from p2pblob.publish.manifest import IDLE_TAKEOVER, FileSpec, ManifestPublisher
from p2pblob.stream.creator import publish_file
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from p2pblob.stream.descriptor import parse_sd_blob
from p2pblob.stream.writer import derived_iv
from p2pblob.tap import Options

C = PLAINTEXT_CHUNK_SIZE
TTL = 600.0
_T = TypeVar("_T")


def content(size: int, seed: int = 0) -> bytes:
    """
    C{size} bytes, different for each seed (cheaper than urandom).
    """
    block = hashlib.sha512(seed.to_bytes(4, "big")).digest() * 1024
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += block[counter % 53:] + counter.to_bytes(8, "big")
        counter += 1
    return bytes(out[:size])


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def spec(name: str, data: bytes) -> FileSpec:
    return FileSpec(name, len(data), md5(data))


def one_shot_sd_hash(test: SynchronousTestCase, name: str, data: bytes, key: bytes) -> str:
    """
    The sd hash C{publish_file} gives the file C{name} holding C{data}, with
    C{key} and the IVs derived from it, in a store of its own.
    """
    directory = Path(test.mktemp())
    (directory / "files").mkdir(parents=True)
    path = directory / "files" / name
    path.write_bytes(data)
    store = BlobStore(Clock(), run_inline, directory / "blobs", directory / "index.sqlite")
    test.successResultOf(Deferred.fromCoroutine(store.start()))
    test.addCleanup(store.stop)
    numbers = iter(range(1 << 20))
    _, sd_hash = test.successResultOf(Deferred.fromCoroutine(publish_file(
        store, run_inline, path, key=key, iv_source=lambda: derived_iv(key, next(numbers)))))
    return sd_hash


class PublisherTestCase(SynchronousTestCase):
    """
    A started L{ManifestPublisher} (C{self.publisher}) into a real blob
    store, with prefixes C{files} and C{music}, on a clock.
    """

    quota: int | None = None

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = BlobStore(self.clock, run_inline, self.directory / "blobfiles",
                               self.directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.room: int | None = None
        self.announced = 0
        self.publisher = self.start_publisher()

    def start_publisher(self) -> ManifestPublisher:
        def announce() -> None:
            self.announced += 1

        publisher = ManifestPublisher(
            self.clock, self.store, run_inline, self.directory / "publish.sqlite",
            prefixes=("files", "music"), ttl=TTL, quota=self.quota,
            room=lambda: self.room, announce=announce)
        publisher.startService()
        self.addCleanup(self.stop, publisher)
        self.successResultOf(publisher.ready)
        return publisher

    def stop(self, publisher: ManifestPublisher) -> None:
        if publisher.running:
            self.successResultOf(_fired(publisher.stopService()))

    def restart(self) -> ManifestPublisher:
        self.stop(self.publisher)
        self.publisher = self.start_publisher()
        return self.publisher

    def result(self, d: Deferred[_T]) -> _T:
        return self.successResultOf(d)

    def upload(self, key: str, number: int, data: bytes, start: int = 0,
               prefix: str = "files") -> Any:
        """
        Upload C{data} (from byte C{start}) in pieces of 64 kB; return the
        name published.
        """
        session = self.publisher.begin(prefix, key, number, start=start,
                                       length=len(data) - start)
        for offset in range(start, len(data), 65536):
            self.result(session.write(data[offset:offset + 65536]))
        return self.result(session.finish())

    def blobs(self) -> set[str]:
        return set(self.store.held_blobs())


def _fired(d: Deferred[None] | None) -> Deferred[None]:
    if d is None:
        done: Deferred[None] = Deferred()
        done.callback(None)
        return done
    return d


class ParsingTests(SynchronousTestCase):
    def test_manifest_forms(self) -> None:
        """
        A manifest is C{{"files": [...]}} or the list alone; MD5s are kept
        in lowercase.
        """
        files = parse_manifest(b'{"files": [{"name": "a b.txt", "size": 3, "md5": "'
                               + b"A" * 32 + b'"}]}')
        self.assertEqual(files, [FileSpec("a b.txt", 3, "a" * 32)])
        self.assertEqual(parse_manifest(b'[{"name": "x", "size": 0, "md5": "' + b"0" * 32
                                        + b'"}]'), [FileSpec("x", 0, "0" * 32)])

    def test_malformed(self) -> None:
        """
        Anything else is refused, saying where.
        """
        good = {"name": "a", "size": 1, "md5": "0" * 32}
        for body, words in [
            (b"not json", "not JSON"),
            (b"{}", "must list the files"),
            (b"[]", "must list the files"),
            (b'{"files": [], "x": 1}', "unknown field"),
            (b"[1]", "file 0 of the manifest is not an object"),
            (f'[{{"size": 1, "md5": "{"0" * 32}"}}]'.encode(), "has no name"),
            (f'[{{"name": "a", "size": -1, "md5": "{"0" * 32}"}}]'.encode(), "has no size"),
            (f'[{{"name": "a", "size": true, "md5": "{"0" * 32}"}}]'.encode(), "has no size"),
            (b'[{"name": "a", "size": 1, "md5": "abc"}]', "has no md5"),
            (b'[{"name": "a", "size": 1, "md5": "' + b"0" * 32 + b'", "owner": "x"}]',
             "unknown field"),
            (b"[" + b",".join([str(good).replace("'", '"').encode()] * 1001) + b"]",
             "1000 files at most"),
            (b" " * (1024 * 1024 + 1), "over"),
        ]:
            with self.assertRaises(ManifestError) as caught:
                parse_manifest(body)
            self.assertIn(words, str(caught.exception), body[:60])

    def test_names(self) -> None:
        """
        Any UTF-8 text is a name, spaces inside included, made NFC; paths,
        control characters, outer blanks and lone surrogates are not.
        """
        self.assertEqual(check_name("my holiday video.mp4"), "my holiday video.mp4")
        self.assertEqual(check_name("caf\u0065\u0301.txt"), "caf\u00e9.txt")
        self.assertEqual(check_name("\u6587\u4ef6 (1).pdf"), "\u6587\u4ef6 (1).pdf")
        for bad in ["", ".", "..", "a/b", "a\\b", " a", "a ", "a\nb", "a\x00", "\ud800x",
                    "a\u202eb", "x" * 256, "\u00e9" * 128]:
            with self.assertRaises(ValueError):
                check_name(bad)

    def test_prefixes(self) -> None:
        self.assertEqual(check_prefix("venue-1.files_a"), "venue-1.files_a")
        for bad in ["", "Files", "-x", "a/b", "a" * 64, "manifest\n"]:
            with self.assertRaises(ValueError):
                check_prefix(bad)

    def test_stored_size(self) -> None:
        """
        A file takes a little more than its size in the store: padding and
        the sd blob.
        """
        self.assertGreater(stored_size(0), 0)
        self.assertGreater(stored_size(3 * C), 3 * C + 3)
        self.assertLess(stored_size(3 * C), 3 * C + 4096)

    def test_store_room(self) -> None:
        """
        Room: under the disk-use limit less 5 %, eviction counted; and on the
        disk of the blob directory, less 5 % of the disk.
        """
        directory = Path(self.mktemp())
        store = BlobStore(Clock(), run_inline, directory / "blobs", directory / "index.sqlite",
                          disk_limit=1000)
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        self.assertEqual(store_room(store, None)(), 950)
        self.successResultOf(store.put_blob(b"x" * 100))
        self.assertEqual(store_room(store, None)(), 850)
        store.disk_limit = None
        self.assertIsNone(store_room(store, None)())
        room = store_room(store, directory)()
        self.assertIsNotNone(room)
        assert room is not None
        self.assertLess(room, os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize)


class AdmissionTests(PublisherTestCase):
    quota = 10 * C

    def test_admitted(self) -> None:
        """
        A manifest is admitted under a new transfer key, valid C{ttl}
        seconds; its files are pending in their prefix, under their names
        made NFC, each with a stream key of its own.
        """
        transfer = self.publisher.admit("files", [spec("a b.txt", b"abc"),
                                                  spec("cafe\u0301", b"")])
        self.assertEqual(len(transfer.key), 32)
        self.assertEqual(transfer.expires, 1000 + TTL)
        self.assertEqual([(u.number, u.name, u.size, u.state) for u in transfer.uploads],
                         [(0, "a b.txt", 3, "pending"), (1, "caf\u00e9", 0, "pending")])
        self.assertNotEqual(transfer.uploads[0].stream_key, transfer.uploads[1].stream_key)
        self.assertEqual([u.name for u in self.publisher.pending("files")],
                         ["a b.txt", "caf\u00e9"])
        self.assertEqual(self.publisher.pending("music"), [])
        other = self.publisher.admit("files", [spec("c", b"c")])
        self.assertNotEqual(other.key, transfer.key)
        with self.assertRaises(UnknownNameError) as caught:
            self.publisher.lookup("files", "a b.txt")
        self.assertTrue(caught.exception.pending)
        self.assertEqual(self.publisher.summary()["prefixes"]["files"],
                         {"published": 0, "pending": 3, "bytes": 4})

    def test_unknown_prefix(self) -> None:
        with self.assertRaises(UnknownPrefixError):
            self.publisher.admit("nope", [spec("a", b"a")])
        self.publisher.register_prefix("nope")
        self.publisher.admit("nope", [spec("a", b"a")])

    def assertRefused(self, files: list[FileSpec], expected: list[tuple[int, str]],
                      kind: str, prefix: str = "files") -> ManifestRefusedError:
        before = self.publisher.state.uploads()
        with self.assertRaises(ManifestRefusedError) as caught:
            self.publisher.admit(prefix, files)
        refused: ManifestRefusedError = caught.exception
        self.assertEqual([(r.number, r.code) for r in refused.refusals], expected)
        self.assertEqual(refused.kind, kind)
        self.assertEqual(self.publisher.state.uploads(), before)
        return refused

    def test_all_or_nothing(self) -> None:
        """
        One file refused and none is admitted; every file refused is named,
        with its reason.
        """
        refused = self.assertRefused(
            [spec("good", b"x"), spec("bad/name", b"x"), spec("  ", b"x"), spec("fine", b"y")],
            [(1, "bad_name"), (2, "bad_name")], "bad_name")
        self.assertIn("2 of the 4 file(s)", str(refused))
        self.assertIn("names are not paths", refused.refusals[0].reason)
        self.assertEqual(self.publisher.pending("files"), [])

    def test_names_taken(self) -> None:
        """
        A name pending or published in the prefix, or given twice, is
        refused; the same name in another prefix is free.
        """
        self.publisher.admit("files", [spec("song.mp3", b"x")])
        self.assertRefused([spec("song.mp3", b"x")], [(0, "name_taken")], "name_taken")
        self.assertRefused([spec("b", b"x"), spec("b", b"y")], [(1, "duplicate_name")],
                           "name_taken")
        self.assertRefused([spec("song.mp3", b"x"), spec("bad\x00", b"y")],
                           [(0, "name_taken"), (1, "bad_name")], "bad_name")
        self.publisher.admit("music", [spec("song.mp3", b"x")])
        transfer = self.publisher.admit("files", [spec("done", b"data")])
        self.upload(transfer.key, 0, b"data")
        self.assertRefused([spec("done", b"data")], [(0, "name_taken")], "name_taken")

    def test_quota(self) -> None:
        """
        Each prefix holds at most its quota, counting its pending files.
        """
        self.publisher.admit("files", [FileSpec("a", 6 * C, "0" * 32)])
        refused = self.assertRefused(
            [FileSpec("b", 3 * C, "0" * 32), FileSpec("c", 2 * C, "0" * 32)],
            [(1, "quota")], "no_room")
        self.assertIn("quota", refused.refusals[0].reason)
        self.publisher.admit("music", [FileSpec("c", 10 * C, "0" * 32)])
        self.publisher.admit("files", [FileSpec("b", 4 * C, "0" * 32)])

    def test_disk_room(self) -> None:
        """
        The files must fit the room the store has (with its headroom), less
        what the pending files have yet to store.
        """
        self.room = stored_size(C) + stored_size(100)
        self.publisher.admit("files", [FileSpec("a", C, "0" * 32)])
        self.assertRefused([FileSpec("b", 200, "0" * 32)], [(0, "disk_full")], "no_room")
        self.publisher.admit("files", [FileSpec("b", 100, "0" * 32)])

    def test_too_large(self) -> None:
        self.assertRefused([FileSpec("huge", MAX_FILE_SIZE + 1, "0" * 32)],
                           [(0, "too_large")], "too_large")


class UploadTests(PublisherTestCase):
    def test_published(self) -> None:
        """
        An upload whose MD5 matches is published: its stream is the one a
        one-shot publish of the same file with the same key makes, recorded
        as published, announced, and named in the prefix.
        """
        data = content(2 * C + 1000)
        transfer = self.publisher.admit("files", [spec("clip one.bin", data)])
        published = self.upload(transfer.key, 0, data)
        upload = transfer.uploads[0]
        self.assertEqual(published.sd_hash,
                         one_shot_sd_hash(self, "clip one.bin", data, upload.stream_key))
        self.assertEqual((published.name, published.size, published.md5),
                         ("clip one.bin", len(data), md5(data)))
        self.assertEqual(self.announced, 1)
        self.assertEqual(self.publisher.lookup("files", "clip one.bin"), published)
        self.assertIn((published.sd_hash, "published", False, False), self.store.index.streams())
        descriptor = parse_sd_blob(self.result(self.store.read_blob(published.sd_hash)))
        self.assertEqual(descriptor.suggested_file_name, "clip one.bin")
        self.assertEqual(self.publisher.pending("files"), [])
        self.assertEqual(self.publisher.names("files"), [published])
        done = self.publisher.upload("files", transfer.key, 0)
        self.assertEqual((done.state, self.publisher.offset(done)), ("complete", len(data)))
        with self.assertRaises(UploadCompleteError):
            self.publisher.begin("files", transfer.key, 0)
        self.assertEqual(self.publisher.state.blobs_of(transfer.key, 0), [])

    def test_empty_file(self) -> None:
        transfer = self.publisher.admit("files", [spec("empty", b"")])
        published = self.upload(transfer.key, 0, b"")
        self.assertEqual(published.sd_hash,
                         one_shot_sd_hash(self, "empty", b"", transfer.uploads[0].stream_key))

    def test_unknown(self) -> None:
        transfer = self.publisher.admit("files", [spec("a", b"a")])
        for prefix, key, number in [("files", "nope", 0), ("files", transfer.key, 1),
                                    ("files", transfer.key, -1), ("music", transfer.key, 0)]:
            with self.assertRaises(UnknownUploadError):
                self.publisher.begin(prefix, key, number)
        with self.assertRaises(UnknownPrefixError):
            self.publisher.begin("nope", transfer.key, 0)

    def test_checksum_mismatch(self) -> None:
        """
        Bytes whose MD5 is not the one declared are not published: the
        blobs just made go, none of the stream is recorded, the entry is
        cancelled and its name is free again.
        """
        data = content(C + 10)
        transfer = self.publisher.admit("files", [FileSpec("a", len(data), md5(b"other"))])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data))
        failure = self.failureResultOf(session.finish(), ChecksumMismatchError)
        self.assertIn(md5(data), str(failure.value))
        self.assertEqual(self.blobs(), set())
        self.assertEqual(self.store.index.streams(), [])
        self.assertEqual(self.announced, 0)
        self.assertEqual(self.publisher.upload("files", transfer.key, 0).state, "cancelled")
        with self.assertRaises(UploadCancelledError):
            self.publisher.begin("files", transfer.key, 0)
        with self.assertRaises(UnknownNameError):
            self.publisher.lookup("files", "a")
        self.publisher.admit("files", [spec("a", data)])

    def test_too_many_bytes(self) -> None:
        """
        Bytes beyond the declared size end the upload, resumable from the
        blobs it stored.
        """
        data = content(C + 10)
        transfer = self.publisher.admit("files", [spec("a", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data))
        failure = self.failureResultOf(session.write(b"x"), WrongLengthError)
        self.assertEqual(failure.value.offset, C)
        self.assertEqual(self.publisher.upload("files", transfer.key, 0).stored, C)
        self.failureResultOf(session.finish(), WrongLengthError)
        self.upload(transfer.key, 0, data, start=C)

    def test_too_few_bytes(self) -> None:
        data = content(C + 10)
        transfer = self.publisher.admit("files", [spec("a", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data[:-1]))
        failure = self.failureResultOf(session.finish(), WrongLengthError)
        self.assertEqual(failure.value.offset, C)
        self.upload(transfer.key, 0, data, start=C)

    def test_declared_length(self) -> None:
        """
        A request that says it carries other than the rest of the file is
        refused before any byte.
        """
        transfer = self.publisher.admit("files", [spec("a", b"abc")])
        with self.assertRaises(WrongLengthError):
            self.publisher.begin("files", transfer.key, 0, length=4)
        self.upload(transfer.key, 0, b"abc")

    def test_busy(self) -> None:
        """
        A file being uploaded cannot be uploaded by another request, until
        the first has been silent for a while: then the new one takes over.
        """
        data = content(C + 10)
        transfer = self.publisher.admit("files", [spec("a", data)])
        first = self.publisher.begin("files", transfer.key, 0)
        cut: list[bool] = []
        first.cut = lambda: cut.append(True)
        self.result(first.write(data[:C + 5]))
        self.clock.advance(IDLE_TAKEOVER - 1)
        with self.assertRaises(UploadBusyError):
            self.publisher.begin("files", transfer.key, 0, start=C)
        self.clock.advance(1)
        with self.assertRaises(OffsetMismatchError):
            self.publisher.begin("files", transfer.key, 0, start=5)
        self.assertEqual(cut, [True])
        self.failureResultOf(first.write(data[C + 5:]), UploadCancelledError)
        self.upload(transfer.key, 0, data, start=C)

    def test_disk_limit(self) -> None:
        """
        A store that refuses a blob ends the upload; its blobs are gone, and
        it starts again from byte 0.
        """
        data = content(3 * C)
        transfer = self.publisher.admit("files", [spec("a", data)])
        self.store.disk_limit = 2 * C + 100
        session = self.publisher.begin("files", transfer.key, 0)
        self.failureResultOf(session.write(data), DiskLimitError)
        self.assertEqual(self.publisher.upload("files", transfer.key, 0).stored, 0)
        self.assertEqual(self.blobs(), set())
        with self.assertRaises(OffsetMismatchError):
            self.publisher.begin("files", transfer.key, 0, start=C)
        self.store.disk_limit = None
        self.upload(transfer.key, 0, data)


class ResumeTests(PublisherTestCase):
    def cut_off(self, data: bytes, at: int) -> tuple[str, bytes]:
        """
        Admit C{data}, upload it up to byte C{at}, then lose the connection.
        """
        transfer = self.publisher.admit("files", [spec("video.bin", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data[:at]))
        session.abandon("the connection was lost")
        return transfer.key, transfer.uploads[0].stream_key

    def test_resumed(self) -> None:
        """
        An upload cut off goes on from the last full blob stored, and the
        stream is the one a one-shot publish makes.
        """
        data = content(3 * C + 77)
        key, stream_key = self.cut_off(data, 2 * C + 500)
        upload = self.publisher.upload("files", key, 0)
        self.assertEqual((upload.state, upload.stored, self.publisher.offset(upload)),
                         ("pending", 2 * C, 2 * C))
        with self.assertRaises(OffsetMismatchError) as caught:
            self.publisher.begin("files", key, 0, start=2 * C + 500)
        self.assertEqual(caught.exception.offset, 2 * C)
        published = self.upload(key, 0, data, start=2 * C)
        self.assertEqual(published.sd_hash, one_shot_sd_hash(self, "video.bin", data, stream_key))

    def test_blobs_landing_after_the_cut(self) -> None:
        """
        Blobs still being made when the connection dropped count once they
        land: the offset grows to include them.
        """
        held: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

        def run(f: Callable[..., _T], *args: Any) -> Deferred[_T]:
            d: Deferred[_T] = Deferred()
            held.append((lambda: d.callback(f(*args)), ()))
            return d

        self.patch(self.publisher, "_run", run)
        data = content(3 * C)
        transfer = self.publisher.admit("files", [spec("a", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        session.write(data[:2 * C + 10])
        session.abandon("the connection was lost")
        self.assertEqual(self.publisher.upload("files", transfer.key, 0).stored, 0)
        while held:
            job, _ = held.pop(0)
            job()
        self.clock.advance(0)
        self.assertEqual(self.publisher.upload("files", transfer.key, 0).stored, 2 * C)
        self.patch(self.publisher, "_run", run_inline)
        self.upload(transfer.key, 0, data, start=2 * C)

    def test_resumed_after_restart(self) -> None:
        """
        The checkpoint outlives the node: after a restart the upload goes
        on where it was.
        """
        data = content(2 * C + 1)
        key, stream_key = self.cut_off(data, C + 5)
        self.restart()
        self.assertEqual(self.publisher.upload("files", key, 0).stored, C)
        published = self.upload(key, 0, data, start=C)
        self.assertEqual(published.sd_hash, one_shot_sd_hash(self, "video.bin", data, stream_key))

    def held_run(self) -> list[Callable[[], None]]:
        """
        Have the blobs of uploads begun from now on wait to be made until
        the jobs returned are run.
        """
        held: list[Callable[[], None]] = []

        def run(f: Callable[..., _T], *args: Any) -> Deferred[_T]:
            d: Deferred[_T] = Deferred()
            held.append(lambda: d.callback(f(*args)))
            return d

        self.patch(self.publisher, "_run", run)
        return held

    def saved(self, key: str) -> tuple[str, int, bool]:
        """
        What the state file of the stopped publisher says of file 0 of
        transfer C{key}: its state, the bytes its checkpoint holds, and
        whether it has one.
        """
        state = ManifestState(self.directory / "publish.sqlite")
        try:
            upload = state.upload(key, 0)
        finally:
            state.close()
        assert upload is not None
        return upload.state, upload.stored, upload.checkpoint is not None

    def test_node_stops_mid_upload(self) -> None:
        """
        When the node stops while a file is being uploaded, the checkpoint
        of what the upload stored is saved (the blobs that landed since the
        last bytes it took too), and its request is cut off: its connection
        dropped, its session taking no more bytes.  After a restart over the
        same state and store, the upload goes on from the checkpoint, and
        the stream is the one a one-shot publish makes.
        """
        held = self.held_run()
        data = content(3 * C + 77)
        transfer = self.publisher.admit("files", [spec("video.bin", data)])
        session = self.publisher.begin("files", transfer.key, 0, length=len(data))
        cut: list[bool] = []
        session.cut = lambda: cut.append(True)
        self.result(session.write(data[:2 * C + 500]))
        while held:
            held.pop(0)()
        self.clock.advance(0)
        upload = self.publisher.upload("files", transfer.key, 0)
        self.assertEqual((upload.stored, self.publisher.offset(upload)), (0, 2 * C))
        with capturedLogs() as events:
            self.stop(self.publisher)
        self.assertEqual(cut, [True])
        stopped = [e for e in events if e.get("why") == "the node stops"]
        self.assertEqual([(e["name"], e["received"], e["offset"]) for e in stopped],
                         [("video.bin", 2 * C + 500, 2 * C)])
        self.failureResultOf(session.write(data[2 * C + 500:]), UploadCancelledError)
        self.failureResultOf(session.finish(), UploadCancelledError)
        self.assertEqual(self.saved(transfer.key), ("pending", 2 * C, True))

        self.publisher = self.start_publisher()
        upload = self.publisher.upload("files", transfer.key, 0)
        self.assertEqual(self.publisher.offset(upload), 2 * C)
        with self.assertRaises(OffsetMismatchError):
            self.publisher.begin("files", transfer.key, 0, start=2 * C + 500)
        published = self.upload(transfer.key, 0, data, start=2 * C)
        self.assertEqual(published.sd_hash, one_shot_sd_hash(
            self, "video.bin", data, transfer.uploads[0].stream_key))
        self.assertEqual(self.blobs(), {published.sd_hash,
                                        *self.store.index.stream_blobs(published.sd_hash)})

    def test_node_stops_with_blobs_in_flight(self) -> None:
        """
        Blobs still being made when the node stops, that land once it
        stopped, leave nothing behind: after a restart an upload goes on
        from the checkpoint saved and gives the stream a one-shot publish
        makes, and a file cancelled leaves no blob in the store.
        """
        held = self.held_run()
        data = content(3 * C + 77)
        transfer = self.publisher.admit("files", [spec("a", data), spec("b", data)])
        for number in (0, 1):
            self.publisher.begin("files", transfer.key, number).write(data[:2 * C + 10])
        self.assertTrue(held)
        stopped = self.publisher.stopService()
        while held:
            held.pop(0)()
        self.clock.advance(0)
        self.successResultOf(_fired(stopped))

        self.publisher = self.start_publisher()
        first = self.publisher.upload("files", transfer.key, 0)
        offset = self.publisher.offset(first)
        self.assertEqual(offset % C, 0)
        published = self.upload(transfer.key, 0, data, start=offset)
        self.assertEqual(published.sd_hash, one_shot_sd_hash(self, "a", data, first.stream_key))
        self.result(self.publisher.cancel_upload("files", transfer.key, 1))
        self.assertEqual(self.blobs(), {published.sd_hash,
                                        *self.store.index.stream_blobs(published.sd_hash)})

    def test_whole_again(self) -> None:
        """
        An upload of the whole file starts again from its first byte.
        """
        data = content(2 * C + 1)
        key, stream_key = self.cut_off(data, C + 5)
        published = self.upload(key, 0, data)
        self.assertEqual(published.sd_hash, one_shot_sd_hash(self, "video.bin", data, stream_key))

    def test_blobs_lost(self) -> None:
        """
        If the blobs stored are gone, the upload must start again.
        """
        data = content(2 * C + 1)
        key, _ = self.cut_off(data, C + 5)
        self.result(self.store.delete_blobs(list(self.blobs())))
        session = self.publisher.begin("files", key, 0, start=C)
        failure = self.failureResultOf(session.write(data[C:]), OffsetMismatchError)
        self.assertEqual(failure.value.offset, 0)
        self.assertEqual(self.publisher.upload("files", key, 0).stored, 0)
        self.upload(key, 0, data)


class ExpiryTests(PublisherTestCase):
    def test_expired(self) -> None:
        """
        When its key expires, a transfer's files still pending are
        cancelled and their blobs removed; those it published stay.
        """
        done, data = content(10, 1), content(2 * C, 2)
        transfer = self.publisher.admit("files", [spec("done", done), spec("left", data)])
        published = self.upload(transfer.key, 0, done)
        session = self.publisher.begin("files", transfer.key, 1)
        self.result(session.write(data[:C + 1]))
        session.abandon("the connection was lost")
        kept = {published.sd_hash, *self.store.index.stream_blobs(published.sd_hash)}
        self.assertGreater(self.blobs(), kept)
        self.clock.advance(TTL - 1)
        self.assertEqual(len(self.publisher.pending("files")), 1)
        self.clock.advance(1)
        self.assertEqual(self.publisher.pending("files"), [])
        self.assertEqual(self.blobs(), kept)
        self.assertEqual(self.publisher.lookup("files", "done"), published)
        with self.assertRaises(UnknownUploadError):
            self.publisher.begin("files", transfer.key, 1)
        self.publisher.admit("files", [spec("left", data)])

    def test_kept_while_uploading(self) -> None:
        """
        A key does not expire while a file of it is being uploaded, and
        stays valid C{ttl} seconds after that upload ends.
        """
        data = content(C + 1)
        transfer = self.publisher.admit("files", [spec("a", data), spec("b", b"b")])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data[:100]))
        self.clock.advance(TTL * 3)
        self.assertEqual(len(self.publisher.pending("files")), 2)
        self.result(session.write(data[100:]))
        self.result(session.finish())
        self.clock.advance(TTL - 1)
        self.assertEqual([u.name for u in self.publisher.pending("files")], ["b"])
        self.clock.advance(1)
        self.assertEqual(self.publisher.pending("files"), [])

    def test_swept_at_start(self) -> None:
        """
        A node that was down when a key expired sweeps it when it starts.
        """
        data = content(C + 1)
        transfer = self.publisher.admit("files", [spec("a", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data[:C + 1]))
        session.abandon("the node stops")
        self.stop(self.publisher)
        self.assertNotEqual(self.blobs(), set())
        self.clock.advance(TTL)
        self.publisher = self.start_publisher()
        self.assertEqual(self.publisher.pending("files"), [])
        self.assertEqual(self.blobs(), set())

    def test_cancellation_finished_at_start(self) -> None:
        """
        Blobs of an upload cancelled just before a crash are removed when
        the node starts; so is every blob noted for it, even one its
        checkpoint does not list (stored just before the crash).
        """
        data = content(2 * C)
        transfer = self.publisher.admit("files", [spec("a", data)])
        session = self.publisher.begin("files", transfer.key, 0)
        self.result(session.write(data[:C + 1]))
        session.abandon("the node stops")
        stray = self.result(self.store.put_blob(b"stray blob of the upload"))
        self.publisher.state.record_blob(transfer.key, 0, stray.blob_hash)
        self.stop(self.publisher)
        state = ManifestState(self.directory / "publish.sqlite")
        state.cancel(transfer.key, 0)
        state.close()
        self.publisher = self.start_publisher()
        self.assertEqual(self.blobs(), set())
        self.assertEqual(self.publisher.state.blobs_of(transfer.key, 0), [])


class CancelTests(PublisherTestCase):
    def test_cancel_transfer(self) -> None:
        """
        Cancelling a transfer cancels its pending files, stops the one being
        uploaded, and removes their blobs; a file it published stays.
        """
        done, data = content(5, 1), content(2 * C, 2)
        transfer = self.publisher.admit("files", [spec("done", done), spec("big", data),
                                                  spec("never", b"n")])
        published = self.upload(transfer.key, 0, done)
        session = self.publisher.begin("files", transfer.key, 1)
        cut: list[bool] = []
        session.cut = lambda: cut.append(True)
        self.result(session.write(data[:C + 5]))
        cancelled = self.result(self.publisher.cancel_transfer("files", transfer.key))
        self.assertEqual([u.name for u in cancelled], ["big", "never"])
        self.assertEqual(cut, [True])
        self.failureResultOf(session.write(data[C + 5:]), UploadCancelledError)
        self.assertEqual(self.blobs(), {published.sd_hash,
                                        *self.store.index.stream_blobs(published.sd_hash)})
        self.assertEqual(self.publisher.pending("files"), [])
        with self.assertRaises(UploadCancelledError):
            self.publisher.begin("files", transfer.key, 1)
        self.assertEqual(self.result(self.publisher.cancel_transfer("files", transfer.key)), [])

    def test_cancel_one(self) -> None:
        transfer = self.publisher.admit("files", [spec("a", b"a"), spec("b", b"b")])
        self.result(self.publisher.cancel_upload("files", transfer.key, 1))
        self.assertEqual([u.name for u in self.publisher.pending("files")], ["a"])
        self.upload(transfer.key, 0, b"a")
        with self.assertRaises(UploadCompleteError):
            self.publisher.cancel_upload("files", transfer.key, 0)

    def test_late_blob(self) -> None:
        """
        A blob of a cancelled upload that lands afterwards (its work was
        under way) is removed as it lands.
        """
        transfer = self.publisher.admit("files", [spec("a", b"a")])
        self.result(self.publisher.cancel_transfer("files", transfer.key))
        store = self.publisher._recording_store(transfer.uploads[0])
        blob = self.result(store.put_blob(b"late"))
        self.assertFalse(self.store.has_blob(blob.blob_hash))


class LifeCycleTests(SynchronousTestCase):
    def test_waits_for_the_store(self) -> None:
        """
        Until the store is open, requests are refused as not ready.
        """
        directory = Path(self.mktemp())
        clock = Clock()
        store = BlobStore(clock, run_inline, directory / "blobs", directory / "index.sqlite")
        ready: Deferred[None] = Deferred()
        publisher = ManifestPublisher(clock, store, run_inline, directory / "publish.sqlite",
                                      store_ready=ready)
        publisher.startService()
        self.addCleanup(publisher.stopService)
        self.assertNoResult(publisher.ready)
        with self.assertRaises(PublisherNotReadyError):
            publisher.admit("files", [FileSpec("a", 1, "0" * 32)])
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        ready.callback(None)
        self.successResultOf(publisher.ready)
        publisher.admit("files", [FileSpec("a", 1, "0" * 32)])

    def test_broken_state(self) -> None:
        """
        A state file that cannot be used makes publishing unavailable, saying
        why, without stopping the node.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "publish.sqlite").write_bytes(b"not a database" * 100)
        store = BlobStore(Clock(), run_inline, directory / "blobs", directory / "index.sqlite")
        publisher = ManifestPublisher(Clock(), store, run_inline, directory / "publish.sqlite")
        publisher.startService()
        self.addCleanup(publisher.stopService)
        with self.assertRaises(PublisherNotReadyError) as caught:
            publisher.admit("files", [FileSpec("a", 1, "0" * 32)])
        self.assertIn("publish.sqlite", str(caught.exception))

    def test_recording_store(self) -> None:
        """
        The store uploads write through provides L{IBlobStore}, and notes
        a blob's name before it is written.
        """
        directory = Path(self.mktemp())
        store = BlobStore(Clock(), run_inline, directory / "blobs", directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        noted: list[tuple[str, str, bool]] = []
        recording = NotingStore(
            store, lambda h: noted.append(("record", h, store.has_blob(h))),
            lambda h: noted.append(("stored", h, store.has_blob(h))))
        verifyObject(IBlobStore, recording)
        name = blob_hash(b"data")
        self.successResultOf(recording.put_blob(b"data", name))
        self.assertEqual(noted, [("record", name, False), ("stored", name, True)])
        noted.clear()
        self.successResultOf(recording.put_blob(b"data"))
        self.assertEqual(noted, [("record", name, True), ("stored", name, True)])
        self.failureResultOf(recording.put_blob(b"other", name), BlobHashMismatchError)


class ConfigTests(SynchronousTestCase):
    def test_options(self) -> None:
        """
        C{twistd p2pblob} takes more prefixes (C{files} is always there), a
        quota per prefix and the keys' lifetime; the node publishes into
        them when it has an API.
        """
        directory = self.mktemp()
        options = Options()
        options.parseOptions(["--data-dir", directory, "--publish-prefix", "music",
                              "--publish-prefix", "files", "--publish-quota", "1GB",
                              "--publish-ttl", "60"])
        config = options["config"]
        self.assertEqual((config.publish_prefixes, config.publish_quota, config.publish_ttl),
                         (("files", "music"), 10**9, 60.0))
        self.assertEqual(config.publish_state_path, Path(directory) / "publish.sqlite")
        node = make_node(MemoryReactorClock(), config)
        assert node.publisher is not None
        self.assertEqual((node.publisher.prefixes, node.publisher.quota, node.publisher.ttl),
                         (["files", "music"], 10**9, 60.0))
        self.assertIs(node.publisher.parent, node)
        options = Options()
        options.parseOptions(["--data-dir", directory, "--api-listen", "none"])
        self.assertIsNone(make_node(MemoryReactorClock(), options["config"]).publisher)

    def test_bad_options(self) -> None:
        for arguments, words in [
            (["--publish-prefix", "Music"], "publish-prefix"),
            (["--publish-ttl", "0"], "publish-ttl"),
            (["--publish-ttl", "soon"], "publish-ttl"),
            (["--publish-quota", "lots"], "publish-quota"),
        ]:
            with self.assertRaises(UsageError) as caught:
                Options().parseOptions(["--data-dir", self.mktemp(), *arguments])
            self.assertIn(words, str(caught.exception))
