"""
Tests for L{p2pblob.discovery.holdings}: which blobs of each stream are
announced, and the holdings of a blob store.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.store import ROLE_DOWNLOADED, ROLE_PUBLISHED, BlobStore
from p2pblob.discovery.holdings import POLICIES, blobs_to_announce, store_holdings
from p2pblob.errors import StorageError
from tests.discovery.test_announcer import AnnouncerTestsMixin, run


class BlobsToAnnounceTests(SynchronousTestCase):
    streams = [
        ("s1", ["a1", "a2", "a3"]),
        ("s2", ["s2", "b1", "b2"]),  # a list that starts with the sd hash
        ("s3", []),  # no data blob
    ]

    def test_all(self) -> None:
        """
        Policy C{"all"} gives every blob: the heads (each sd blob and first
        data blob), then the rest in stream order; an sd hash listed first
        among the data blobs is given once.
        """
        self.assertEqual(
            blobs_to_announce(self.streams, "all"),
            (["s1", "a1", "s2", "b1", "s3"], ["a2", "a3", "b2"]),
        )

    def test_head(self) -> None:
        """
        Policy C{"head"} gives the heads only.
        """
        self.assertEqual(
            blobs_to_announce(iter(self.streams), "head"),
            (["s1", "a1", "s2", "b1", "s3"], []),
        )
        self.assertEqual(POLICIES, ("all", "head"))


class StoreHoldingsTests(AnnouncerTestsMixin, SynchronousTestCase):
    def make_store(self) -> BlobStore:
        directory = Path(self.mktemp())
        store = BlobStore(
            Clock(), run_inline, directory / "blobfiles", directory / "index.sqlite"
        )
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def put(self, store: BlobStore, label: str) -> str:
        data = label.encode()
        self.successResultOf(store.put_blob(data))
        return blob_hash(data)

    def test_store_holdings(self) -> None:
        """
        C{store_holdings} gives each stream whose sd blob the store holds,
        with the data blobs the store holds, in stream order; the announcer
        announces exactly those.
        """
        store = self.make_store()
        holdings = store_holdings(store)
        self.assertEqual(holdings(), [])

        published_sd = self.put(store, "sd of published")
        published = [self.put(store, f"published {i}") for i in range(3)]
        store.add_stream(published_sd, [published_sd, *published], ROLE_PUBLISHED)
        downloading_sd = self.put(store, "sd of downloading")
        downloading = [blob_hash(f"downloading {i}".encode()) for i in range(4)]
        self.put(store, "downloading 0")
        self.put(store, "downloading 2")
        store.add_stream(downloading_sd, [downloading_sd, *downloading], ROLE_DOWNLOADED)
        evicted_sd = blob_hash(b"sd of evicted")
        store.add_stream(
            evicted_sd, [evicted_sd, self.put(store, "evicted 0")], ROLE_DOWNLOADED
        )

        expected = [
            (published_sd, published),
            (downloading_sd, [downloading[0], downloading[2]]),
        ]
        self.assertEqual(holdings(), expected)

        announcer = self.make([])
        announcer._holdings = holdings
        announcer.startService()
        self.addCleanup(self.stop)
        run(self.clock, 10)
        self.assertEqual(
            set(self.dht.announced()),
            {published_sd, *published, downloading_sd, downloading[0], downloading[2]},
        )

    def test_store_not_started(self) -> None:
        """
        Before the store is started its holdings cannot be read.
        """
        directory = Path(self.mktemp())
        store = BlobStore(Clock(), run_inline, directory / "b", directory / "i.sqlite")
        self.assertRaises(StorageError, store_holdings(store))
