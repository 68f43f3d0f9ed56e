"""
The node's download service (L{p2pblob.download.service}) on real TCP
connections of 127.0.0.1: seeders are peer servers in this process, the
downloads land in a real blob store and real files.

Seeders that lack the last blob hold a download in the middle, so that it
can be paused, cancelled, deleted or interrupted at a known point.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.tcp import Client
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download._records import DownloadRecords, StreamRecord
from p2pblob.download._streams import RateMeter, failure_kind
from p2pblob.download.service import (
    CANCELLED,
    FAILED,
    FINISHED,
    PAUSED,
    RUNNING,
    WAITING,
    DownloadService,
    StreamInfo,
)
from p2pblob.errors import (
    ConfigError,
    DescriptorError,
    DiskLimitError,
    IncompleteStreamError,
    InsufficientFundsError,
    InvalidDescriptorError,
    NoPeersError,
    PeerTimeoutError,
    StorageError,
    UnknownStreamError,
)
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry
from p2pblob.peer.service import make_server_factory
from p2pblob.testing import MemoryBlobStore
from tests.download._swarm import CountingStore, Published, publish

# three data blobs, the last one short
SIZE = 2 * (MAX_BLOB_SIZE - 1) + 4321


class LiveSeeder:
    """
    A peer server on an ephemeral port of 127.0.0.1, serving the sd blob of
    a stream and those of its data blobs given.
    """

    def __init__(self, published: Published, blob_nums: Iterable[int] | None = None) -> None:
        self.store = MemoryBlobStore()
        self.store.put_blob(published.sd_blob)
        self.add(published, blob_nums)
        self.counted = CountingStore(self.store)
        self.factory = make_server_factory(self.counted, reactor, "test-address", 65536, 30.0, 8)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port.getHost().port)

    def add(self, published: Published, blob_nums: Iterable[int] | None = None) -> None:
        wanted = None if blob_nums is None else set(blob_nums)
        for info in published.descriptor.data_blobs:
            if info.blob_hash and (wanted is None or info.blob_num in wanted):
                self.store.put_blob(published.blobs[info.blob_hash])

    def uploads_of(self, published: Published) -> list[str]:
        data = set(published.descriptor.blob_hashes)
        return [h for h in self.counted.uploads if h in data]

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.factory.close_all()


async def _settle(seconds: float = 0.02) -> None:
    await deferLater(reactor, seconds, lambda: None)


class DownloadServiceTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        self.published = publish(self.base / "source", SIZE)
        node = self.base / "node"
        self.store = BlobStore(reactor, run_inline, node / "blobfiles", node / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.config = Config(data_dir=node)
        self.state_path = node / "downloads.sqlite"
        self.out = self.base / "out"
        self.registry = PeerRegistry(reactor)
        self.finder: IPeerFinder | None = None
        self.seeders: list[LiveSeeder] = []
        self.addCleanup(self._close_seeders)

    async def _close_seeders(self) -> None:
        for seeder in self.seeders:
            await seeder.stop()
        # the downloads' side of the connections closes a moment later
        for _ in range(200):
            if not any(isinstance(r, Client) for r in reactor.getReaders()):
                break
            await _settle(0.01)

    def seeder(self, published: Published | None = None, blob_nums: Iterable[int] | None = None
               ) -> LiveSeeder:
        """
        Start a seeder and make it (with the others) the peers downloads use.
        """
        seeder = LiveSeeder(published or self.published, blob_nums)
        self.seeders.append(seeder)
        self.finder = StaticPeerFinder(self.registry, [s.address for s in self.seeders])
        return seeder

    def service(self, **options: Any) -> DownloadService:
        service = DownloadService(
            reactor, self.config, self.store,
            peer_finder=lambda: self.finder,
            state_path=self.state_path,
            default_output=self.out,
            **options,
        )
        service.startService()

        def stop() -> Deferred[None] | None:
            return service.stopService() if service.running else None

        self.addCleanup(stop)
        return service

    async def wait_for(self, service: DownloadService, sd_hash: str, *states: str,
                       timeout: float = 20.0) -> StreamInfo:
        """
        Poll the service until the stream is in one of C{states}.
        """
        for _ in range(int(timeout / 0.02)):
            info = service.stream(sd_hash)
            if info.state in states:
                return info
            await _settle()
        raise AssertionError(f"still {service.stream(sd_hash).state}, not {states}")

    async def wait_for_blobs(self, count: int, published: Published | None = None) -> None:
        """
        Wait until the store holds C{count} data blobs of the stream.
        """
        hashes = (published or self.published).descriptor.blob_hashes
        for _ in range(1000):
            if sum(1 for h in hashes if self.store.has_blob(h)) >= count:
                return
            await _settle()
        raise AssertionError(f"fewer than {count} blobs arrived")

    def part_files(self) -> list[str]:
        if not self.out.exists():
            return []
        return sorted(p.name for p in self.out.iterdir() if p.name.startswith("."))

    async def started_halfway(self) -> tuple[DownloadService, LiveSeeder]:
        """
        A download running with two of its three blobs in: its seeder lacks
        the last one.
        """
        seeder = self.seeder(blob_nums=[0, 1])
        service = self.service()
        service.start_download(self.published.sd_hash)
        await self.wait_for(service, self.published.sd_hash, RUNNING)
        await self.wait_for_blobs(2)
        return service, seeder

    # starting

    async def test_by_sd_hash(self) -> None:
        """
        A stream named by its sd hash: the descriptor is fetched, the file
        is written under its suggested name and equals the source.
        """
        self.seeder()
        service = self.service()
        info = service.start_download(self.published.sd_hash)
        self.assertEqual((info.state, info.name, info.output), (WAITING, None, None))
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(info.output, str(self.out / "movie.mp4"))
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)
        self.assertEqual(info.name, "movie.mp4")
        self.assertEqual(info.done_bytes, info.total_bytes)
        self.assertEqual((info.peers, info.rate, info.error), (0, 0.0, None))
        self.assertEqual(service.streams(), [info])
        self.assertEqual(self.part_files(), [])
        self.assertTrue(self.store.has_blob(self.published.sd_hash))

    async def test_by_sd_blob(self) -> None:
        """
        A stream named by its sd blob's bytes is known at once by name and
        size, and saved in the directory asked for.
        """
        self.seeder()
        service = self.service()
        elsewhere = self.base / "elsewhere"
        info = service.start_download(self.published.sd_blob, elsewhere)
        self.assertEqual(info.sd_hash, self.published.sd_hash)
        self.assertEqual(info.name, "movie.mp4")
        self.assertEqual(info.total_bytes, sum(i.length for i in self.published.descriptor.data_blobs))
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual((elsewhere / "movie.mp4").read_bytes(), self.published.data)

    async def test_started_twice(self) -> None:
        """
        Starting a stream that is known gives its download, not a second.
        """
        self.seeder()
        service = self.service()
        service.start_download(self.published.sd_hash)
        info = service.start_download(self.published.sd_blob)
        self.assertEqual(len(service.streams()), 1)
        self.assertEqual(info.name, "movie.mp4")
        await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(service.start_download(self.published.sd_hash).state, FINISHED)

    def test_bad_sources(self) -> None:
        """
        What names no stream is refused at once, with a reason, and nothing
        is added.
        """
        service = self.service()
        with self.assertRaises(InvalidDescriptorError) as caught:
            service.start_download(b"{not json")
        self.assertIn("invalid stream descriptor", str(caught.exception))
        for bad in ("xyz", "ab" * 47, "zz" * 48, "", b"x" * (MAX_BLOB_SIZE + 1)):
            self.assertRaises(DescriptorError, service.start_download, bad)
        a_file = self.base / "a-file"
        a_file.write_bytes(b"")
        self.assertRaises(ConfigError, service.start_download, self.published.sd_hash, a_file)
        self.assertEqual(service.streams(), [])

    def test_unknown_stream(self) -> None:
        service = self.service()
        with self.assertRaises(UnknownStreamError) as caught:
            service.stream("ab" * 48)
        self.assertIn("no download of stream", str(caught.exception))
        self.assertRaises(UnknownStreamError, service.resume, "ab" * 48)
        self.failureResultOf(service.pause("ab" * 48), UnknownStreamError)
        self.failureResultOf(service.cancel("nope"), UnknownStreamError)
        self.failureResultOf(service.delete("ab" * 48), UnknownStreamError)

    async def test_waits_for_the_store(self) -> None:
        """
        No download starts before the blob store is open.
        """
        self.seeder()
        ready: Deferred[object] = Deferred()
        service = self.service(store_ready=ready)
        service.start_download(self.published.sd_hash)
        await _settle(0.1)
        self.assertEqual(service.stream(self.published.sd_hash).state, WAITING)
        ready.callback("scan result")
        self.assertEqual(self.successResultOf(ready), "scan result")
        await self.wait_for(service, self.published.sd_hash, FINISHED)

    # failing

    async def test_no_peers(self) -> None:
        """
        Without a peer finder a download fails, saying why; the service
        goes on, and the download succeeds when resumed with peers.
        """
        service = self.service()
        info = await self.wait_for(
            service, service.start_download(self.published.sd_hash).sd_hash, FAILED
        )
        self.assertIn("no peers", str(info.error))
        self.seeder()
        self.assertEqual(service.resume(self.published.sd_hash).error, None)
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)

    async def test_stalled(self) -> None:
        """
        A download that gets no blob for the stall timeout fails; resumed
        once a peer has the blob, it completes.
        """
        seeder = self.seeder(blob_nums=[0, 1])
        service = self.service(stall_timeout=1.0)
        service.start_download(self.published.sd_hash)
        info = await self.wait_for(service, self.published.sd_hash, FAILED)
        self.assertIn("stalled with 1 blob(s) missing", str(info.error))
        seeder.add(self.published)
        service.resume(self.published.sd_hash)
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)

    # pausing, cancelling, deleting

    async def test_pause_and_resume(self) -> None:
        """
        A paused download keeps its part file; resumed, it fetches only the
        blobs it lacked.
        """
        service, seeder = await self.started_halfway()
        info = await service.pause(self.published.sd_hash)
        self.assertEqual((info.state, info.peers, info.rate), (PAUSED, 0, 0.0))
        self.assertGreater(info.done_bytes, 0)
        self.assertEqual(len(self.part_files()), 2)
        seeder.add(self.published)
        # the descriptor is in the store: it may be running at once
        self.assertIn(service.resume(self.published.sd_hash).state, (WAITING, RUNNING))
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)
        self.assertEqual(sorted(seeder.uploads_of(self.published)),
                         sorted(self.published.descriptor.blob_hashes))
        self.assertEqual(self.part_files(), [])

    async def test_pause_while_waiting(self) -> None:
        """
        A download still looking for its descriptor can be paused.
        """
        self.finder = StaticPeerFinder(self.registry, [])
        service = self.service()
        service.start_download(self.published.sd_hash)
        info = await service.pause(self.published.sd_hash)
        self.assertEqual(info.state, PAUSED)
        self.assertEqual((await service.pause(self.published.sd_hash)).state, PAUSED)

    async def test_cancel(self) -> None:
        """
        A cancelled download loses its part file but not its blobs.
        """
        service, seeder = await self.started_halfway()
        info = await service.cancel(self.published.sd_hash)
        self.assertEqual((info.state, info.done_bytes), (CANCELLED, 0))
        self.assertEqual(self.part_files(), [])
        for info_ in self.published.descriptor.data_blobs[:2]:
            self.assertTrue(self.store.has_blob(str(info_.blob_hash)))
        seeder.add(self.published)
        service.start_download(self.published.sd_hash)
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)

    async def test_delete_finished(self) -> None:
        """
        Deleting a finished download forgets it and keeps its file and
        blobs.
        """
        self.seeder()
        service = self.service()
        service.start_download(self.published.sd_hash)
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        await service.delete(self.published.sd_hash)
        self.assertEqual(service.streams(), [])
        self.assertRaises(UnknownStreamError, service.stream, self.published.sd_hash)
        self.assertTrue(Path(str(info.output)).exists())
        for blob_hash in [self.published.sd_hash, *self.published.descriptor.blob_hashes]:
            self.assertTrue(self.store.has_blob(blob_hash))

    async def test_delete_with_blobs(self) -> None:
        """
        With its blobs, a deleted download leaves nothing in the store, and
        its finished file stays.
        """
        self.seeder()
        service = self.service()
        service.start_download(self.published.sd_hash)
        info = await self.wait_for(service, self.published.sd_hash, FINISHED)
        await service.delete(self.published.sd_hash, delete_blobs=True)
        for blob_hash in [self.published.sd_hash, *self.published.descriptor.blob_hashes]:
            self.assertFalse(self.store.has_blob(blob_hash))
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)

    async def test_delete_running(self) -> None:
        """
        Deleting a running download stops it and removes its part file.
        """
        service, _ = await self.started_halfway()
        await service.delete(self.published.sd_hash, delete_blobs=True)
        self.assertEqual(service.streams(), [])
        self.assertEqual(self.part_files(), [])
        self.assertFalse(self.store.has_blob(self.published.descriptor.blob_hashes[0]))

    # several at once

    async def test_queue(self) -> None:
        """
        Beyond C{max_running}, downloads wait their turn.
        """
        other = publish(self.base / "other", 1000, "other.txt")
        self.seeder(blob_nums=[0, 1])
        self.seeder(other)
        service = self.service(max_running=1)
        service.start_download(self.published.sd_hash)
        await self.wait_for(service, self.published.sd_hash, RUNNING)
        self.assertEqual(service.start_download(other.sd_blob).state, WAITING)
        await _settle(0.2)
        self.assertEqual(service.stream(other.sd_hash).state, WAITING)
        await service.pause(self.published.sd_hash)
        info = await self.wait_for(service, other.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), other.data)
        self.assertEqual([i.sd_hash for i in service.streams()],
                         [self.published.sd_hash, other.sd_hash])

    # restarting

    async def test_restart_resumes(self) -> None:
        """
        A node stopped in the middle of a download resumes it at its next
        start, fetching only what it lacked.
        """
        service, seeder = await self.started_halfway()
        await service.stopService()
        self.assertEqual(len(self.part_files()), 2)
        seeder.add(self.published)
        again = self.service()
        info = await self.wait_for(again, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)
        self.assertEqual(sorted(seeder.uploads_of(self.published)),
                         sorted(self.published.descriptor.blob_hashes))
        self.assertEqual(seeder.counted.uploads.count(self.published.sd_hash), 1)

    async def test_restart_keeps_paused_and_finished(self) -> None:
        """
        Paused and finished downloads are listed again after a restart, as
        they were; the paused one stays paused.
        """
        other = publish(self.base / "other", 1000, "other.txt")
        self.seeder(other)
        service, seeder = await self.started_halfway()
        service.start_download(other.sd_hash)
        finished = await self.wait_for(service, other.sd_hash, FINISHED)
        paused = await service.pause(self.published.sd_hash)
        await service.stopService()
        again = self.service()
        self.assertEqual(again.streams(), [paused, finished])
        await _settle(0.2)
        self.assertEqual(again.stream(self.published.sd_hash).state, PAUSED)
        seeder.add(self.published)
        again.resume(self.published.sd_hash)
        info = await self.wait_for(again, self.published.sd_hash, FINISHED)
        self.assertEqual(Path(str(info.output)).read_bytes(), self.published.data)

    async def test_logs(self) -> None:
        """
        A download logs its start, its end (where, how many bytes, how
        long), its pause and its failure, with the reason.
        """
        sd_hash = self.published.sd_hash
        with capturedLogs() as events:
            service = self.service()
            service.start_download(sd_hash)
            await self.wait_for(service, sd_hash, FAILED)
            seeder = self.seeder(blob_nums=[0, 1])
            service.resume(sd_hash)
            await self.wait_for(service, sd_hash, RUNNING)
            await self.wait_for_blobs(2)
            await service.pause(sd_hash)
            seeder.add(self.published)
            service.resume(sd_hash)
            info = await self.wait_for(service, sd_hash, FINISHED)
        messages = [formatEvent(event) for event in events]
        self.assertTrue(any(m.startswith(f"The download of stream {sd_hash[:16]}")
                            and "failed: no peers to download from" in m for m in messages))
        self.assertTrue(any(m.startswith("Downloading movie.mp4 (") for m in messages))
        finished = [m for m in messages if m.startswith("Downloaded movie.mp4 to ")]
        self.assertEqual(len(finished), 1)
        self.assertIn(f"{info.output}: {SIZE} bytes in ", finished[0])
        self.assertIn("Paused the download of movie.mp4", messages)

    def test_to_json(self) -> None:
        info = StreamInfo("ab" * 48, "a.txt", RUNNING, 5, 10, 1.5, 2, None, None, 3.0)
        self.assertEqual(
            info.to_json(),
            {"sd_hash": "ab" * 48, "name": "a.txt", "state": "running", "done_bytes": 5,
             "total_bytes": 10, "rate": 1.5, "peers": 2, "output": None, "error": None,
             "added": 3.0},
        )


class RateMeterTests(SynchronousTestCase):
    def test_over_the_window(self) -> None:
        meter = RateMeter()
        self.assertEqual(meter.rate(), 0.0)
        meter.add(0.0, 0)
        self.assertEqual(meter.rate(), 0.0)
        for second in range(1, 11):
            meter.add(float(second), second * 100 if second <= 5 else 500)
        self.assertEqual(meter.rate(), 0.0)  # nothing for the last 5 s
        meter.add(11.0, 1500)
        self.assertEqual(meter.rate(), 200.0)


class DownloadRecordsTests(SynchronousTestCase):
    def test_saved_and_loaded(self) -> None:
        path = Path(self.mktemp()) / "sub" / "downloads.sqlite"
        records = DownloadRecords(path)
        first = StreamRecord("ab" * 48, "/tmp/out", PAUSED, "a.txt", 2.0, None, None, 10, 20,
                             b"{}")
        second = StreamRecord("cd" * 48, "/tmp/out", WAITING, added=1.0)
        records.save(first)
        records.save(second)
        first.state, first.error = FAILED, "it broke"
        records.save(first)
        records.close()
        records = DownloadRecords(path)
        self.assertEqual(records.load(), [second, first])
        records.remove(second.sd_hash)
        self.assertEqual(records.load(), [first])
        records.close()

    def test_newer_schema(self) -> None:
        path = Path(self.mktemp())
        db = sqlite3.connect(str(path))
        db.execute("PRAGMA user_version=99")
        db.close()
        with self.assertRaises(StorageError) as caught:
            DownloadRecords(path)
        self.assertIn("newer p2pblob", str(caught.exception))


class FailureKindTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        """
        Each failure of a download falls in one of a few kinds.
        """
        for error, kind in [
            (NoPeersError(1, "gone"), "no_peers"), (PeerTimeoutError("p", 30.0), "peer"),
            (InvalidDescriptorError("bad"), "descriptor"), (DiskLimitError(1, 2, 3), "disk"),
            (OSError(28, "No space left on device"), "disk"),
            (InsufficientFundsError(5, 1), "funds"), (ConfigError("no peers"), "config"),
            (IncompleteStreamError(["x"], []), "stream"), (ZeroDivisionError(), "other"),
        ]:
            self.assertEqual(failure_kind(Failure(error)), kind, error)
