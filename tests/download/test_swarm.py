"""
Download scheduling, failover and resume, in an in-process swarm (no
sockets; see L{tests.download._swarm}).
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.download.downloader import FileStreamDownloader
from p2pblob.download.manager import StreamDescriptorValidator
from p2pblob.errors import NoPeersError
from p2pblob.testing import MemoryBlobStore
from tests.blob.test_store import HeldRunner
from tests.download._swarm import Published, SwarmHarness, publish

# five data blobs, the last one short
SIZE = 4 * (MAX_BLOB_SIZE - 1) + 12345


class SwarmDownloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.published = publish(self.base / "source", SIZE)
        self.harness = SwarmHarness()
        self.store = MemoryBlobStore()
        self.out = self.base / "out"

    def download(self, published: Published | None = None, **swarm_options: float) -> Path:
        published = published or self.published
        swarm = self.harness.swarm(self.store, **swarm_options)  # type: ignore[arg-type]
        downloader = self.harness.downloader(swarm, published, self.out)
        d = downloader.start()
        self.harness.run(d)
        return self.successResultOf(d)  # type: ignore[no-any-return]

    def assertVisibleFiles(self, *names: str) -> None:
        self.assertEqual(sorted(p.name for p in self.out.iterdir() if not p.name.startswith(".")),
                         sorted(names))

    def test_three_seeders(self) -> None:
        """
        From three seeders the file arrives intact under its suggested name,
        fetched from more than one of them, each blob uploaded once.
        """
        seeders = [self.harness.add_seeder(self.published) for _ in range(3)]
        path = self.download()
        self.assertEqual(path, self.out / "movie.mp4")
        self.assertEqual(path.read_bytes(), self.published.data)
        self.assertEqual(list(self.out.iterdir()), [path])  # no part or state file left
        uploads = [h for s in seeders for h in s.uploads]
        self.assertEqual(sorted(uploads), sorted(self.published.descriptor.blob_hashes))  # no races
        self.assertGreater(sum(1 for s in seeders if s.uploads), 1)

    def test_blobs_spread_over_seeders(self) -> None:
        """
        Each seeder holding only some of the blobs: the download asks each
        peer for what it has.
        """
        self.harness.add_seeder(self.published, only=[0, 2, 4])
        self.harness.add_seeder(self.published, only=[1, 3])
        path = self.download()
        self.assertEqual(path.read_bytes(), self.published.data)

    def test_peer_lacking_blobs_is_not_a_dead_end(self) -> None:
        """
        A peer that has none of the data blobs does not stop the download
        (lbry-sdk #2938): the others serve it.
        """
        empty = self.harness.add_seeder(None)
        self.harness.add_seeder(self.published)
        path = self.download()
        self.assertEqual(path.read_bytes(), self.published.data)
        self.assertEqual(empty.uploads, [])

    def test_corrupting_seeder_is_avoided(self) -> None:
        """
        Bad bytes from a seeder are never stored or written; the blob is
        fetched from an honest one, and the bad peer is scored down.
        """
        bad = self.harness.add_seeder(self.published, corrupt=True)
        self.harness.add_seeder(self.published)
        path = self.download()
        self.assertEqual(path.read_bytes(), self.published.data)
        peer = self.harness.registry.get(*bad.address)
        self.assertLess(peer.score, 0)
        self.assertLessEqual(len(bad.uploads), 2)

    def test_killed_seeder(self) -> None:
        """
        A seeder that dies mid-download: the blobs it was sending are
        fetched from the others.
        """
        seeders = [self.harness.add_seeder(self.published) for _ in range(3)]
        swarm = self.harness.swarm(self.store)
        downloader = self.harness.downloader(swarm, self.published, self.out)
        d = downloader.start()
        # let the transfers begin, then kill one seeder while it is sending
        while not seeders[0].uploads:
            self.harness.clock.advance(0)
            self.harness.pump()
        seeders[0].kill()
        self.harness.run(d)
        self.assertEqual(self.successResultOf(d).read_bytes(), self.published.data)

    def test_stalled_seeder(self) -> None:
        """
        A seeder that stops sending in the middle of a blob does not hold
        the download up: the blob is raced on another peer after a second
        (long before the 30 s timeout), and the stalled connection is
        dropped when the download ends.
        """
        stalled = self.harness.add_seeder(self.published)
        self.harness.add_seeder(self.published)
        swarm = self.harness.swarm(self.store)
        downloader = self.harness.downloader(swarm, self.published, self.out)
        d = downloader.start()
        stalled.frozen = True
        self.harness.run(d)
        self.assertEqual(self.successResultOf(d).read_bytes(), self.published.data)
        self.assertLess(self.harness.clock.seconds(), 10.0)
        pumps = list(stalled.pumps)
        self.assertTrue(pumps)
        stalled.frozen = False
        while self.harness.pump():
            pass
        self.assertTrue(all(p.clientIO.disconnected for p in pumps))

    def test_timed_out_seeder_is_backed_off(self) -> None:
        """
        A stream whose only blob is held by a seeder that stalls: its
        connection times out after 30 s, the peer is scored down and backed
        off, and the download succeeds once it is healthy again.
        """
        published = publish(self.base / "small", 1000, "small.txt")
        seeder = self.harness.add_seeder(published)
        swarm = self.harness.swarm(self.store)
        downloader = self.harness.downloader(swarm, published, self.out)
        d = downloader.start()
        seeder.frozen = True
        for _ in range(200):
            self.harness.clock.advance(0.25)
            self.harness.pump()
        peer = self.harness.registry.get(*seeder.address)
        self.assertGreater(peer.failures, 0)
        self.assertLess(peer.score, 0)
        seeder.frozen = False
        self.harness.run(d)
        self.assertEqual(self.successResultOf(d).read_bytes(), published.data)

    def test_no_seeder_has_a_blob(self) -> None:
        """
        When no peer has blob 3 the download fails with L{NoPeersError}
        after the stall timeout, keeping what it has; the final name never
        appears.
        """
        self.harness.add_seeder(self.published, only=[0, 1, 2, 4])
        swarm = self.harness.swarm(self.store, stall_timeout=60.0)
        downloader = self.harness.downloader(swarm, self.published, self.out)
        d = downloader.start()
        self.harness.run(d)
        failure = self.failureResultOf(d, NoPeersError)
        self.assertEqual(failure.value.missing, 1)
        self.assertVisibleFiles()
        infos = self.published.descriptor.data_blobs
        self.assertTrue(all(self.store.has_blob(i.blob_hash) for i in infos if i.blob_num != 3))

    def test_resume_fetches_only_missing_blobs(self) -> None:
        """
        A download stopped part-way continues: the second run fetches only
        the blobs the first did not, appends to the part file, and the
        result is identical.
        """
        seeder = self.harness.add_seeder(self.published)
        swarm = self.harness.swarm(self.store)
        first = self.harness.downloader(swarm, self.published, self.out)
        d = first.start()
        while first.status().blobs_done < 2:
            self.harness.clock.advance(0)
            self.harness.pump()
        stopped = first.stop()
        self.harness.run(stopped)
        self.failureResultOf(d, CancelledError)
        self.assertVisibleFiles()
        hashes = self.published.descriptor.blob_hashes
        stored = {h for h in hashes if self.store.has_blob(h)}
        self.assertGreaterEqual(len(stored), 2)
        self.assertLess(len(stored), len(hashes))
        uploads_before = len(seeder.uploads)

        second = self.harness.downloader(self.harness.swarm(self.store), self.published, self.out)
        d2 = second.start()
        self.harness.run(d2)
        path = self.successResultOf(d2)
        self.assertEqual(path.read_bytes(), self.published.data)
        self.assertGreater(second.resumed_blobs, 0)
        refetched = seeder.uploads[uploads_before:]
        self.assertEqual(sorted(refetched), sorted(set(hashes) - stored))

    def test_resume_after_crash_without_checkpoint(self) -> None:
        """
        Blobs in the store but a part file with no usable state (a crash
        before any checkpoint): nothing is fetched again, the output is
        rebuilt from the stored blobs.
        """
        seeder = self.harness.add_seeder(self.published)
        for info in self.published.descriptor.data_blobs[:3]:
            self.store.put_blob(self.published.blobs[info.blob_hash])
        self.out.mkdir(parents=True)
        stem = f".{self.published.sd_hash[:32]}.p2pblob"
        (self.out / f"{stem}-part").write_bytes(b"garbage from a crashed run")
        path = self.download()
        self.assertEqual(path.read_bytes(), self.published.data)
        self.assertEqual(len(seeder.uploads), 2)

    def test_fetch_descriptor_by_sd_hash(self) -> None:
        """
        The sd blob, of unknown length, is fetched by its hash and kept.
        """
        self.harness.add_seeder(None)
        self.harness.add_seeder(self.published)
        swarm = self.harness.swarm(self.store)
        d = self.harness.fetch_descriptor(swarm, self.published.sd_hash)
        self.harness.run(d)
        validator = self.successResultOf(d)
        self.assertEqual(validator.descriptor.blob_hashes, self.published.descriptor.blob_hashes)
        self.assertTrue(self.store.has_blob(self.published.sd_hash))

    def test_fetch_descriptor_cancelled(self) -> None:
        """
        Giving up on an sd blob that no peer has hangs up on the peers and
        leaves no timer running.
        """
        seeder = self.harness.add_seeder(None)
        swarm = self.harness.swarm(self.store)
        d = self.harness.fetch_descriptor(swarm, self.published.sd_hash)
        for _ in range(4):
            self.harness.clock.advance(0.5)
            self.harness.pump()
        self.assertTrue(seeder.pumps)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        while self.harness.pump():
            pass
        self.harness.clock.advance(0)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertTrue(all(p.clientIO.disconnected for p in seeder.pumps))

    def test_stopped_while_opening(self) -> None:
        """
        A download stopped while its file is being opened starts no
        transfers once the file is open.
        """
        self.harness.add_seeder(self.published)
        swarm = self.harness.swarm(self.store)
        self.out.mkdir(parents=True)
        validator = StreamDescriptorValidator(self.published.sd_blob, self.published.sd_hash)
        runner = HeldRunner()
        downloader = FileStreamDownloader(swarm, runner, validator, self.out, runner)
        d = downloader.start()
        stopped = downloader.stop()
        runner.release_all()
        self.successResultOf(stopped)
        self.failureResultOf(d, CancelledError)
        self.assertIsNone(downloader.manager)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertEqual(list(self.out.iterdir()), [])

    def test_existing_file_is_not_replaced(self) -> None:
        """
        If the suggested name is taken, the download gets the next free
        variant.
        """
        self.harness.add_seeder(self.published)
        self.out.mkdir(parents=True)
        (self.out / "movie.mp4").write_bytes(b"mine")
        path = self.download()
        self.assertEqual(path.name, "movie_1.mp4")
        self.assertEqual((self.out / "movie.mp4").read_bytes(), b"mine")
