"""
Tests for L{p2pblob.download.fetching.BlobFetcher}: single blobs brought
from peers on demand.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download.fetching import BlobFetcher
from p2pblob.errors import ConfigError
from p2pblob.peer.peer import PeerRegistry


class BlobFetcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        self.clock = Clock()
        self.store = BlobStore(self.clock, run_inline, directory / "blobfiles",
                               directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.asked = 0

    def finder(self) -> StaticPeerFinder | None:
        self.asked += 1
        return None

    def test_held(self) -> None:
        """
        A blob the store holds is there at once; no peer is asked.
        """
        blob = self.successResultOf(self.store.put_blob(b"held"))
        fetcher = BlobFetcher(self.clock, self.store, self.finder)
        self.successResultOf(fetcher(blob.blob_hash))
        self.assertEqual(self.asked, 0)

    def test_no_peers(self) -> None:
        """
        Without peers the fetch fails, saying so.
        """
        fetcher = BlobFetcher(self.clock, self.store, self.finder)
        failure = self.failureResultOf(fetcher("ab" * 48), ConfigError)
        self.assertIn("no peers to fetch the blob from", str(failure.value))

    def test_shared(self) -> None:
        """
        Two requests for a blob being fetched share the fetch, and both
        hear how it ends.
        """
        nobody = StaticPeerFinder(PeerRegistry(self.clock), [])

        def finder() -> StaticPeerFinder:
            self.asked += 1
            return nobody

        fetcher = BlobFetcher(self.clock, self.store, finder, stall_timeout=5.0)
        first, second = fetcher("cd" * 48), fetcher("cd" * 48)
        self.assertEqual(self.asked, 1)
        self.assertNoResult(first)
        self.clock.advance(5.0)
        self.failureResultOf(first)
        self.failureResultOf(second)
        # a later request fetches again
        self.assertNoResult(fetcher("cd" * 48))
        self.assertEqual(self.asked, 2)
