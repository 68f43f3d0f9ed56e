"""
Tests for L{p2pblob.storage.mirror}: a stream read as a transfer source,
the mirrors' configuration, and the service that exports streams to the
memory backend (on a L{Clock}) and to moto's S3 server.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.errors import ConfigError, DriverError, InvalidBlobHashError, SourceGoneError
from p2pblob.interfaces import IStoragePlugin
from p2pblob.storage.journal import TransferJournal
from p2pblob.storage.mirror import (
    SCAN_INTERVAL,
    MirrorJob,
    MirrorService,
    MirrorTarget,
    MirrorUnavailableError,
    StreamNotHeldError,
    StreamSource,
    StreamUnfinishedError,
    UnknownMirrorError,
    check_mirrors,
    mirror_keys,
    mirror_targets,
    open_stream_source,
    parse_mirror,
    parse_mirror_option,
    parse_mirror_rule,
)
from p2pblob.storage.transfer import ITransferSource
from p2pblob.stream.creator import publish_file
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from p2pblob.stream.descriptor import StreamDescriptor
from p2pblob.tap import Options
from p2pblob.testing import MemoryStorageBackend, MemoryStoragePlugin
from tests.storage_conformance import builtin_plugin, use_checkout_plugins
from tests.storage_conformance._moto import (
    moto_server,
    new_bucket,
    remove_bucket,
    s3_client,
    s3_options,
)

MiB = 1024 * 1024
BLOB = PLAINTEXT_CHUNK_SIZE


def content(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class _Store(SynchronousTestCase):
    """
    A real blob store in a temporary directory, whose blob reads are
    counted, and a way to publish files into it.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.clock = Clock()
        self.store = self.open_store("store")
        self.reads: list[str] = []
        read_blob = self.store.read_blob

        def reading(blob: str) -> Deferred[bytes]:
            self.reads.append(blob)
            return read_blob(blob)

        self.patch(self.store, "read_blob", reading)

    def open_store(self, name: str) -> BlobStore:
        store = BlobStore(self.clock, run_inline, self.directory / name / "blobfiles",
                          self.directory / name / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def publish(self, data: bytes, name: str = "holiday.mp4", folder: str = "files",
                store: BlobStore | None = None,
                **fixed: Any) -> tuple[StreamDescriptor, str]:
        """
        Publish C{data} as a file called C{name} (with the C{key} and
        C{iv_source} of L{publish_file}, if given).
        """
        path = self.directory / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        result = self.successResultOf(Deferred.fromCoroutine(
            publish_file(store or self.store, run_inline, path, **fixed)))
        del self.reads[:]
        return result

    def download(self, data: bytes, name: str, finished: bool = True) -> str:
        """
        Put a stream into the store as a download (finished or not): its
        blobs are published in another store and copied.
        """
        other = self.open_store(f"other-{name}")
        descriptor, sd_hash = self.publish(data, name, folder=f"downloaded-{name}", store=other)
        blobs = [sd_hash, *descriptor.blob_hashes]
        for blob in blobs:
            self.successResultOf(self.store.put_blob(other.path_of(blob).read_bytes()))
        self.successResultOf(self.store.add_stream(sd_hash, blobs, "downloaded"))
        if finished:
            self.successResultOf(self.store.set_stream_finished(sd_hash))
        return sd_hash

    def damage(self, blob: str) -> None:
        """
        Change a byte of a blob's file, keeping its length.
        """
        path = self.store.path_of(blob)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


class StreamSourceTests(_Store):
    """
    L{StreamSource} reads the plaintext of a stream from the blob store.
    """

    def source(self, sd_hash: str) -> StreamSource:
        source = StreamSource(self.store, sd_hash, run_inline)
        self.assertEqual(self.successResultOf(source.version()), sd_hash)
        return source

    def test_interface(self) -> None:
        _, sd_hash = self.publish(b"abc")
        source = StreamSource(self.store, sd_hash)
        self.assertTrue(verifyObject(ITransferSource, source))
        self.assertEqual(source.description, f"stream:{sd_hash}")

    def test_version_and_size(self) -> None:
        """
        The version is the sd hash; the size, the plaintext's length, known
        once the version is asked; the file name is the suggested one.
        """
        data = content(BLOB + 1000)
        descriptor, sd_hash = self.publish(data, "clip.mp4")
        source = StreamSource(self.store, sd_hash)
        self.assertEqual(source.size, 0)
        self.assertEqual(self.successResultOf(source.version()), sd_hash)
        self.assertEqual(source.size, len(data))
        self.assertEqual(source.file_name, "clip.mp4")
        self.assertEqual(source.descriptor, descriptor)

    def test_sizes(self) -> None:
        """
        Streams of every shape have the size of their file: empty, shorter
        than a block, a block, one full blob (the last, whose padding is
        read), one full blob and one byte.
        """
        for size in (0, 1, 15, 16, 17, BLOB - 1, BLOB, BLOB + 1):
            data = content(size, seed=size)
            _, sd_hash = self.publish(data, f"f{size}", folder=f"s{size}")
            source = self.source(sd_hash)
            self.assertEqual(source.size, size)
            self.assertEqual(self.successResultOf(source.read(0, size + 10)), data)

    def test_reads(self) -> None:
        """
        A read at any offset, of any size, gives the bytes of the file there
        (fewer at the end, none past it), across blob boundaries.
        """
        data = content(2 * BLOB + 12345)
        _, sd_hash = self.publish(data)
        source = self.source(sd_hash)
        offsets = sorted({0, 1, 15, 16, 17, BLOB - 1, BLOB, BLOB + 1, 2 * BLOB - 3,
                          2 * BLOB, len(data) - 1, len(data), len(data) + 5,
                          *random.Random(1).sample(range(len(data)), 5)})
        sizes = (0, 1, 17, 4096, BLOB, 2 * BLOB + 1)
        for offset in offsets:
            for size in sizes:
                self.assertEqual(self.successResultOf(source.read(offset, size)),
                                 data[offset:offset + size], (offset, size))

    def test_sequential_reads_decrypt_each_blob_once(self) -> None:
        """
        Reading the stream from start to end in chunks that do not fall on
        blob boundaries reads and decrypts each blob once.
        """
        data = content(3 * BLOB + 999)
        descriptor, sd_hash = self.publish(data)
        source = self.source(sd_hash)
        read = []
        for offset in range(0, len(data), MiB):
            read.append(self.successResultOf(source.read(offset, MiB)))
        self.assertEqual(b"".join(read), data)
        self.assertEqual(source.blobs_decrypted, 4)
        self.assertEqual(self.reads, [sd_hash, *descriptor.blob_hashes])

    def test_missing_blob(self) -> None:
        """
        A blob the store lacks fails the read, naming it.
        """
        data = content(2 * BLOB + 10)
        descriptor, sd_hash = self.publish(data)
        source = self.source(sd_hash)
        missing = descriptor.blob_hashes[1]
        self.successResultOf(self.store.delete_blobs([missing]))
        self.assertEqual(self.successResultOf(source.read(0, 100)), data[:100])
        error = self.failureResultOf(source.read(BLOB - 10, 100), SourceGoneError).value
        self.assertIn(f"blob 1 of the stream ({missing}) is not in the local store", str(error))
        self.assertEqual(error.source, f"stream:{sd_hash}")

    def test_missing_last_blob(self) -> None:
        """
        The last blob is needed for the size: without it the version fails.
        """
        descriptor, sd_hash = self.publish(content(BLOB + 10))
        self.successResultOf(self.store.delete_blobs([descriptor.blob_hashes[-1]]))
        error = self.failureResultOf(StreamSource(self.store, sd_hash).version(),
                                     SourceGoneError).value
        self.assertIn("blob 1 of the stream", str(error))

    def test_missing_descriptor(self) -> None:
        sd_hash = "ab" * 48
        error = self.failureResultOf(StreamSource(self.store, sd_hash).version(),
                                     SourceGoneError).value
        self.assertIn("descriptor", str(error))

    def test_damaged_blob(self) -> None:
        """
        A blob whose bytes do not match its hash fails the read, in words,
        and is removed from the store; nothing of it is returned.
        """
        data = content(2 * BLOB + 10)
        descriptor, sd_hash = self.publish(data)
        source = self.source(sd_hash)
        damaged = descriptor.blob_hashes[0]
        self.damage(damaged)
        error = self.failureResultOf(source.read(0, 10), SourceGoneError).value
        self.assertIn(f"blob 0 of the stream ({damaged}) is damaged", str(error))
        self.assertFalse(self.store.has_blob(damaged))

    def test_damaged_last_blob(self) -> None:
        """
        A damaged last blob, whose padding is read for the size, is reported
        as damaged, and removed.
        """
        # (a key and IVs of its own, so that the damage surely spoils the
        # padding)
        descriptor, sd_hash = self.publish(content(BLOB + 100), key=b"k" * 16,
                                           iv_source=lambda: b"i" * 16)
        last = descriptor.blob_hashes[-1]
        path = self.store.path_of(last)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        error = self.failureResultOf(StreamSource(self.store, sd_hash).version(),
                                     SourceGoneError).value
        self.assertIn(f"blob 1 of the stream ({last}) is damaged", str(error))
        self.assertFalse(self.store.has_blob(last))

    def test_bad_sd_hash(self) -> None:
        self.assertRaises(InvalidBlobHashError, StreamSource, self.store, "nope")

    def test_closed(self) -> None:
        """
        A closed source reads nothing more from the store: a read that
        would need a blob fails with L{CancelledError}.
        """
        data = content(BLOB + 10)
        _, sd_hash = self.publish(data)
        source = self.source(sd_hash)
        self.assertEqual(self.successResultOf(source.read(0, 5)), data[:5])
        source.close()
        self.assertEqual(self.successResultOf(source.read(5, 5)), data[5:10])
        self.failureResultOf(source.read(BLOB, 5), CancelledError)

    def test_open_again(self) -> None:
        _, sd_hash = self.publish(b"abc")
        source = open_stream_source(f"stream:{sd_hash}", self.store)
        assert source is not None
        self.assertEqual(source.sd_hash, sd_hash)
        self.assertIsNone(open_stream_source("file:/etc/passwd", self.store))
        self.assertIsNone(open_stream_source("stream:nothex", self.store))


class ConfigurationTests(SynchronousTestCase):
    """
    The mirrors as the options name them.
    """

    def test_parse(self) -> None:
        self.assertEqual(parse_mirror("backup=s3"), ("backup", "s3"))
        self.assertEqual(parse_mirror_option("backup:endpoint_url=http://h:9000/x"),
                         ("backup", "endpoint_url", "http://h:9000/x"))
        self.assertEqual(parse_mirror_rule("backup=Published"), ("backup", "published"))
        for parse, text, words in [
            (parse_mirror, "backup", "NAME=VALUE"),
            (parse_mirror, "backup=", "names no storage plugin"),
            (parse_mirror, "a/b=s3", "not a mirror name"),
            (parse_mirror_option, "bucket=x", "NAME:OPTION=VALUE"),
            (parse_mirror_option, "backup:bucket", "NAME:OPTION=VALUE"),
            (parse_mirror_rule, "backup=sometimes", "not a rule"),
        ]:
            error = self.assertRaises(ConfigError, parse, text)
            self.assertIn(words, str(error))

    def test_targets(self) -> None:
        targets = mirror_targets(
            [("backup", "s3"), ("disk", "local")],
            [("backup", "bucket", "b"), ("disk", "root", "/srv"), ("backup", "prefix", "p/")],
            [("disk", "all")],
        )
        self.assertEqual(targets, (
            MirrorTarget("backup", "s3", (("bucket", "b"), ("prefix", "p/")), "none"),
            MirrorTarget("disk", "local", (("root", "/srv"),), "all"),
        ))

    def test_bad_targets(self) -> None:
        for arguments, words in [
            (([("a", "s3"), ("a", "local")],), "'a' is declared twice"),
            (([("a", "s3")], [("b", "bucket", "x")]), "mirror-option: there is no mirror 'b'"),
            (([("a", "s3")], [], [("b", "all")]), "mirror-rule: there is no mirror 'b'"),
        ]:
            error = self.assertRaises(ConfigError, mirror_targets, *arguments)
            self.assertIn(words, str(error))

    def test_check(self) -> None:
        """
        The plugins and their options are checked; the message names the
        mirror, the plugin and the option.
        """
        use_checkout_plugins(self)
        check_mirrors([MirrorTarget("backup", "s3", (("bucket", "b"),))])
        for target, words in [
            (MirrorTarget("backup", "floppy"), "mirror 'backup': there is no storage plugin "
                                               "named 'floppy'"),
            (MirrorTarget("backup", "s3"), "mirror 'backup': storage plugin 's3' needs the "
                                           "option 'bucket'"),
            (MirrorTarget("backup", "s3", (("bucket", "b"), ("bukket", "c"))),
             "storage plugin 's3' has no option 'bukket'"),
            (MirrorTarget("backup", "s3", (("bucket", "b"), ("create_bucket", "maybe"))),
             "option 'create_bucket' must be true or false"),
        ]:
            error = self.assertRaises(ConfigError, check_mirrors, [target])
            self.assertIn(words, str(error))

    def test_twistd_options(self) -> None:
        use_checkout_plugins(self)
        options = Options()
        options.parseOptions([
            "--mirror", "backup=s3", "--mirror-option", "backup:bucket=my-backups",
            "--mirror-option", "backup:endpoint_url=http://127.0.0.1:9000",
            "--mirror-rule", "backup=published", "--mirror", "disk=local",
            "--mirror-option", "disk:root=/srv/mirror",
        ])
        config: Config = options["config"]
        self.assertEqual(config.mirrors, (
            MirrorTarget("backup", "s3", (("bucket", "my-backups"),
                                          ("endpoint_url", "http://127.0.0.1:9000")),
                         "published"),
            MirrorTarget("disk", "local", (("root", "/srv/mirror"),)),
        ))
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"].mirrors, ())

    def test_bad_twistd_options(self) -> None:
        use_checkout_plugins(self)
        for arguments, words in [
            (["--mirror", "backup=floppy"], "no storage plugin named 'floppy'"),
            (["--mirror", "backup=s3"], "needs the option 'bucket'"),
            (["--mirror", "backup=s3", "--mirror-option", "backup:bucket=b",
              "--mirror-option", "backup:colour=red"], "has no option 'colour'"),
            (["--mirror", "b=s3", "--mirror-option", "b:bucket=x",
              "--mirror-option", "b:retries=many"], "option 'retries' must be a whole number"),
            (["--mirror-option", "backup:bucket=b"], "there is no mirror 'backup'"),
            (["--mirror-rule", "backup=all"], "there is no mirror 'backup'"),
            (["--mirror", "b=local", "--mirror-option", "b:root=/x",
              "--mirror-rule", "b=often"], "'often' is not a rule"),
            (["--mirror", "no name=local"], "not a mirror name"),
        ]:
            error = self.assertRaises(usage.UsageError, Options().parseOptions, arguments)
            self.assertIn(words, str(error))

    def test_keys(self) -> None:
        """
        A stream's names on a mirror: its own, then with 16 hex digits of
        its sd hash before the extension, then with all of it; a long name
        is shortened to fit in 255 bytes.
        """
        sd_hash = "0123456789abcdef" * 6
        self.assertEqual(mirror_keys("holiday.mp4", sd_hash), (
            "holiday.mp4", "holiday_0123456789abcdef.mp4", f"holiday_{sd_hash}.mp4"))
        self.assertEqual(mirror_keys("README", sd_hash)[1], "README_0123456789abcdef")
        self.assertEqual(mirror_keys(".profile", sd_hash)[1], ".profile_0123456789abcdef")
        long = "é" * 200 + ".tar.gz"
        for key in mirror_keys(long, sd_hash)[1:]:
            self.assertLessEqual(len(key.encode("utf-8")), 255)
            self.assertTrue(key.endswith(".gz"))
            self.assertTrue(key.startswith("éé"))


class PausingBackend(MemoryStorageBackend):
    """
    A memory backend whose chunk uploads at the offsets in C{hold} wait
    until the test fires them (C{held}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold: set[int] = set()
        self.held: dict[int, Deferred[None]] = {}
        self.offsets: list[int] = []

    def upload_chunk(self, key: str, offset: int, data: bytes) -> Any:
        self.offsets.append(offset)
        if offset not in self.hold:
            return super().upload_chunk(key, offset, data)
        self.hold.discard(offset)
        waiting: Deferred[None] = Deferred()
        waiting.addCallback(lambda _: super(PausingBackend, self).upload_chunk(key, offset, data))
        self.held[offset] = waiting
        return waiting


class MirrorServiceTests(_Store):
    """
    L{MirrorService} exporting to the memory backend, in chunks of 1 MiB.
    """

    def setUp(self) -> None:
        super().setUp()
        self.memory = PausingBackend()
        self.plugin = MemoryStoragePlugin(self.memory)

    def plugins(self, name: str) -> IStoragePlugin:
        self.assertEqual(name, "memory")
        return self.plugin

    def start(self, rule: str = "none", store_ready: Deferred[Any] | None = None,
              **options: str) -> MirrorService:
        target = MirrorTarget("backup", "memory",
                              tuple({"chunk_size": str(MiB), **options}.items()), rule)
        service = MirrorService(self.clock, self.store, [target],
                                self.directory / "transfers.sqlite",
                                self.directory / "mirrors.sqlite",
                                store_ready=store_ready, plugins=self.plugins)
        service.startService()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: MirrorService) -> None:
        if service.running:
            self.successResultOf(service.stopService())

    def export(self, service: MirrorService, sd_hash: str) -> MirrorJob:
        job = service.export(sd_hash, "backup")
        return self.successResultOf(job.when_done())

    def open_uploads(self) -> list[str]:
        journal = TransferJournal(self.directory / "transfers.sqlite")
        try:
            return [entry.key for entry in journal.open_transfers("mirror:backup")]
        finally:
            journal.close()

    def test_export(self) -> None:
        """
        An export stores the stream's plaintext under its file name, and is
        remembered.
        """
        data = content(2 * BLOB + 5)
        _, sd_hash = self.publish(data, "holiday.mp4")
        service = self.start()
        job = self.export(service, sd_hash)
        self.assertEqual((job.state, job.key, job.name, job.done, job.size, job.error,
                          job.origin, job.outcome),
                         ("finished", "holiday.mp4", "holiday.mp4", len(data), len(data), None,
                          "request", "stored"))
        self.assertEqual(self.memory.files, {"holiday.mp4": data})
        self.assertEqual(self.memory.uploading(), [])
        self.assertEqual(self.open_uploads(), [])
        [record] = service.history()
        self.assertEqual((record.target, record.sd_hash, record.key, record.size),
                         ("backup", sd_hash, "holiday.mp4", len(data)))
        status = service.status()
        self.assertEqual(status["targets"], [{
            "name": "backup", "plugin": "memory", "rule": "none", "state": "ready",
            "error": None, "chunk_size": MiB, "waiting": 0, "mirrored": 1}])
        self.assertEqual(status["jobs"], [job.to_json()])
        self.assertEqual(status["history"], [record.to_json()])
        self.assertIsNone(status["error"])

    def test_empty_stream(self) -> None:
        _, sd_hash = self.publish(b"", "empty.txt")
        service = self.start()
        self.assertEqual(self.export(service, sd_hash).state, "finished")
        self.assertEqual(self.memory.files, {"empty.txt": b""})

    def test_downloaded(self) -> None:
        """
        A finished download can be exported; an unfinished one cannot.
        """
        data = content(1000)
        finished = self.download(data, "done.bin")
        unfinished = self.download(b"x", "partial.bin", finished=False)
        service = self.start()
        self.assertEqual(self.export(service, finished).key, "done.bin")
        self.assertEqual(self.memory.files, {"done.bin": data})
        self.assertRaises(StreamUnfinishedError, service.export, unfinished, "backup")

    def test_refusals(self) -> None:
        _, sd_hash = self.publish(b"abc")
        service = self.start()
        error = self.assertRaises(UnknownMirrorError, service.export, sd_hash, "nowhere")
        self.assertIn("no mirror named 'nowhere' (its mirrors: backup)", str(error))
        self.assertRaises(StreamNotHeldError, service.export, "ab" * 48, "backup")
        self.assertRaises(InvalidBlobHashError, service.export, "ab", "backup")
        self.assertEqual(service.jobs(), [])

    def test_same_name(self) -> None:
        """
        Another stream of the same name goes to a name with its sd hash;
        exporting a stream again goes to the name it had.
        """
        first, second = content(100, 1), content(200, 2)
        _, one = self.publish(first, "same.txt", folder="a")
        _, two = self.publish(second, "same.txt", folder="b")
        service = self.start()
        self.assertEqual(self.export(service, one).key, "same.txt")
        self.assertEqual(self.export(service, two).key, f"same_{two[:16]}.txt")
        self.assertEqual(self.export(service, one).key, "same.txt")
        self.assertEqual(self.memory.files, {"same.txt": first, f"same_{two[:16]}.txt": second})

    def test_name_taken_on_mirror(self) -> None:
        """
        A file the node did not put on the mirror is never replaced.
        """
        self.memory.files["notes.txt"] = b"the user's own"
        _, sd_hash = self.publish(b"the stream's", "notes.txt")
        service = self.start()
        self.assertEqual(self.export(service, sd_hash).key, f"notes_{sd_hash[:16]}.txt")
        self.assertEqual(self.memory.files["notes.txt"], b"the user's own")

    def test_progress(self) -> None:
        """
        The job shows how far the upload got; asking again while it runs
        gives the same job; another export waits its turn.
        """
        data = content(3 * MiB + 10)
        _, sd_hash = self.publish(data, "big.bin")
        _, other = self.publish(b"small", "small.bin")
        service = self.start()
        self.memory.hold = {2 * MiB}
        job = service.export(sd_hash, "backup")
        self.assertEqual((job.state, job.done, job.size), ("running", 2 * MiB, len(data)))
        self.assertIs(service.export(sd_hash, "backup"), job)
        waiting = service.export(other, "backup")
        self.assertEqual(waiting.state, "waiting")
        self.assertEqual(service.status()["targets"][0]["waiting"], 1)
        self.memory.held[2 * MiB].callback(None)
        self.assertEqual((job.state, job.done), ("finished", len(data)))
        self.assertEqual(self.successResultOf(waiting.when_done()).state, "finished")
        self.assertEqual(self.memory.files, {"big.bin": data, "small.bin": b"small"})

    def test_damaged_blob(self) -> None:
        """
        A damaged blob fails the export, in words; nothing is stored, and
        nothing is left staged or journaled.
        """
        data = content(3 * BLOB)
        descriptor, sd_hash = self.publish(data, "holiday.mp4")
        self.damage(descriptor.blob_hashes[1])
        service = self.start()
        job = self.export(service, sd_hash)
        self.assertEqual(job.state, "failed")
        assert job.error is not None
        self.assertIn("blob 1 of the stream", job.error)
        self.assertIn("is damaged", job.error)
        self.assertEqual(self.memory.files, {})
        self.assertEqual(self.memory.uploading(), [])
        self.assertEqual(self.open_uploads(), [])
        self.assertEqual(service.history(), [])

    def test_backend_refuses(self) -> None:
        """
        A backend that refuses the upload fails the export, in words.
        """
        _, sd_hash = self.publish(b"abc", "a.txt")
        service = self.start()
        self.memory.fail("end_upload", error=DriverError("the bucket is read-only"))
        job = self.export(service, sd_hash)
        self.assertEqual(job.state, "failed")
        self.assertIn("the bucket is read-only", job.error or "")
        self.assertEqual(self.memory.files, {})

    def test_rules(self) -> None:
        """
        Each rule exports the streams it selects, once, oldest first: at
        start, and those that come later at the next look.
        """
        published = content(1000, 1)
        _, first = self.publish(published, "published.bin")
        downloaded = content(1000, 2)
        self.download(downloaded, "downloaded.bin")
        self.download(b"partial", "partial.bin", finished=False)
        expected = {
            "none": {},
            "published": {"published.bin": published},
            "downloaded": {"downloaded.bin": downloaded},
            "all": {"published.bin": published, "downloaded.bin": downloaded},
        }
        for rule, files in expected.items():
            self.memory.files.clear()
            (self.directory / "mirrors.sqlite").unlink(missing_ok=True)
            service = self.start(rule)
            self.assertEqual(self.memory.files, files, rule)
            self.assertEqual({job.origin for job in service.jobs()}, {"rule"} if files else set())
            self.clock.advance(SCAN_INTERVAL)
            self.assertEqual(len(service.jobs()), len(files), rule)
            self.stop(service)

    def test_rule_later_streams(self) -> None:
        """
        A stream that comes after the start is exported at the next look;
        one already exported is not exported again, across restarts too.
        """
        _, first = self.publish(b"one", "one.txt")
        service = self.start("published")
        self.assertEqual(list(self.memory.files), ["one.txt"])
        _, second = self.publish(b"two", "two.txt")
        self.clock.advance(SCAN_INTERVAL)
        self.assertEqual(sorted(self.memory.files), ["one.txt", "two.txt"])
        self.stop(service)
        self.memory.calls.clear()
        service = self.start("published")
        self.clock.advance(SCAN_INTERVAL)
        self.assertEqual(service.jobs(), [])
        self.assertNotIn("start_upload", self.memory.calls)

    def test_rule_retries(self) -> None:
        """
        A stream whose export by the rule failed is tried again later, and
        not again once exported.
        """
        _, sd_hash = self.publish(b"abc", "a.txt")
        self.memory.fail("end_upload", error=DriverError("not today"))
        service = self.start("published")
        self.assertEqual([job.state for job in service.jobs()], ["failed"])
        self.clock.advance(SCAN_INTERVAL)
        self.assertEqual([job.state for job in service.jobs()], ["failed", "finished"])
        self.clock.advance(10 * SCAN_INTERVAL)
        self.assertEqual(len(service.jobs()), 2)
        self.assertEqual(self.memory.files, {"a.txt": b"abc"})

    def test_rule_skips_incomplete_streams(self) -> None:
        """
        A stream whose blobs the store does not all hold is left alone by
        the rules (an evicted download, say).
        """
        sd_hash = self.download(content(BLOB + 10), "evicted.bin")
        blobs = self.store.index.stream_blobs(sd_hash)
        self.successResultOf(self.store.delete_blobs([blobs[-1]]))
        service = self.start("downloaded")
        self.clock.advance(SCAN_INTERVAL)
        self.assertEqual(service.jobs(), [])

    def test_resume_after_restart(self) -> None:
        """
        An upload under way when the node stops goes on at the next start,
        from what the backend holds.
        """
        data = content(4 * MiB + 10)
        _, sd_hash = self.publish(data, "big.bin")
        service = self.start()
        self.memory.hold = {2 * MiB}
        job = service.export(sd_hash, "backup")
        waiting = service.export(self.publish(b"x", "x.bin")[1], "backup")
        stopping = service.stopService()
        self.assertNoResult(stopping)
        self.memory.held[2 * MiB].callback(None)
        self.successResultOf(stopping)
        self.assertEqual(job.state, "interrupted")
        self.assertEqual(waiting.state, "interrupted")
        self.assertIn("before its turn came", waiting.error or "")
        self.assertEqual(self.open_uploads(), ["big.bin"])
        self.assertEqual(self.memory.uploading(), ["big.bin"])
        self.memory.offsets.clear()

        service = self.start()
        [resumed] = service.jobs()
        self.assertEqual((resumed.origin, resumed.state, resumed.outcome, resumed.key,
                          resumed.sd_hash),
                         ("resume", "finished", "resumed", "big.bin", sd_hash))
        self.assertEqual(self.memory.offsets, [3 * MiB, 4 * MiB])
        self.assertEqual(self.memory.files, {"big.bin": data})
        self.assertEqual(self.open_uploads(), [])
        self.assertEqual([record.key for record in service.history()], ["big.bin"])

    def test_waits_for_the_store(self) -> None:
        """
        Nothing is exported before the blob store is open.
        """
        _, sd_hash = self.publish(b"abc", "a.txt")
        ready: Deferred[str] = Deferred()
        service = self.start("published", store_ready=ready)
        self.assertRaises(MirrorUnavailableError, service.export, sd_hash, "backup")
        self.assertEqual(self.memory.files, {})
        ready.callback("scanned")
        self.assertEqual(self.successResultOf(ready), "scanned")
        self.assertEqual(self.memory.files, {"a.txt": b"abc"})

    def test_journal_unavailable(self) -> None:
        """
        If its files cannot be opened, the mirrors are off, saying why; the
        node goes on.
        """
        (self.directory / "transfers.sqlite").mkdir()
        _, sd_hash = self.publish(b"abc")
        service = self.start()
        error = self.assertRaises(MirrorUnavailableError, service.export, sd_hash, "backup")
        self.assertIn("the mirrors are off: cannot open the transfer journal", str(error))
        self.assertIn("the mirrors are off", service.status()["error"])


class S3MirrorTests(_Store):
    """
    An export to moto's S3 server: a multipart upload in parts of 5 MiB.
    """

    def setUp(self) -> None:
        super().setUp()
        self.endpoint = moto_server()
        self.bucket = new_bucket(self.endpoint)
        self.addCleanup(remove_bucket, self.endpoint, self.bucket)
        self.s3 = s3_client(self.endpoint)
        self.options = {key: str(value)
                        for key, value in s3_options(self.endpoint, self.bucket).items()}

    def test_parts_of_5_5_and_2_MiB(self) -> None:
        """
        A 12 MiB stream goes to S3 as a multipart upload of three parts: 5,
        5 and 2 MiB (S3's smallest part is 5 MiB, to which the chunk size is
        raised); the object is the file.
        """
        data = content(12 * MiB)
        _, sd_hash = self.publish(data, "twelve.bin")
        target = MirrorTarget("s3", "s3", tuple(self.options.items()))
        builtin_plugin(self, "s3")
        service = MirrorService(self.clock, self.store, [target],
                                self.directory / "transfers.sqlite",
                                self.directory / "mirrors.sqlite")
        service.startService()
        self.addCleanup(lambda: self.successResultOf(service.stopService()))
        job = self.successResultOf(service.export(sd_hash, "s3").when_done())
        self.assertEqual((job.state, job.key, job.error), ("finished", "twelve.bin", None))
        self.assertEqual(service.status()["targets"][0]["chunk_size"], 5 * MiB)
        head = self.s3.head_object(Bucket=self.bucket, Key="twelve.bin")
        self.assertEqual(head["ContentLength"], 12 * MiB)
        self.assertTrue(head["ETag"].endswith('-3"'), head["ETag"])
        parts = []
        for number in (1, 2, 3):
            part = self.s3.head_object(Bucket=self.bucket, Key="twelve.bin", PartNumber=number)
            self.assertEqual(part["PartsCount"], 3)
            parts.append(part["ContentLength"])
        self.assertEqual(parts, [5 * MiB, 5 * MiB, 2 * MiB])
        body = self.s3.get_object(Bucket=self.bucket, Key="twelve.bin")["Body"].read()
        self.assertEqual(body, data)
        self.assertEqual(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []),
                         [])
