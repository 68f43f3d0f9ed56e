"""
Tests for L{p2pblob.dht.datastore}: announced peers by blob hash, their
expiry after 24 hours and the store's bounds.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.constants import DATA_EXPIRATION, HASH_LENGTH
from p2pblob.dht.datastore import PeerStore

BLOB = b"\xb1" * HASH_LENGTH
OTHER_BLOB = b"\xb2" * HASH_LENGTH
PUBLISHER = b"\x99" * HASH_LENGTH


def compact(host: str, port: int, node: int = 1) -> bytes:
    """
    A compact address: IPv4, big-endian TCP port, node id.
    """
    ip = bytes(int(part) for part in host.split("."))
    return ip + port.to_bytes(2, "big") + bytes([node]) * HASH_LENGTH


ALICE = compact("1.2.3.4", 3333, 1)
BOB = compact("5.6.7.8", 4444, 2)
CAROL = compact("9.9.9.9", 5555, 3)


class AddTests(SynchronousTestCase):
    """
    L{PeerStore.add} and L{PeerStore.peers_for}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = PeerStore(self.clock)

    def test_empty(self) -> None:
        """
        An empty store knows no peers.
        """
        self.assertEqual(self.store.peers_for(BLOB), [])
        self.assertEqual((len(self.store), self.store.blob_count()), (0, 0))

    def test_peers_newest_first(self) -> None:
        """
        The peers of a blob are listed most recently announced first, and
        only for that blob.
        """
        self.assertTrue(self.store.add(BLOB, ALICE, PUBLISHER))
        self.clock.advance(1)
        self.assertTrue(self.store.add(BLOB, BOB, PUBLISHER))
        self.assertTrue(self.store.add(OTHER_BLOB, CAROL, PUBLISHER))
        self.assertEqual(self.store.peers_for(BLOB), [BOB, ALICE])
        self.assertEqual(self.store.peers_for(OTHER_BLOB), [CAROL])
        self.assertEqual((len(self.store), self.store.blob_count()), (3, 2))

    def test_duplicate(self) -> None:
        """
        The same announcement twice makes one record, now the newest.
        """
        self.store.add(BLOB, ALICE, PUBLISHER)
        self.store.add(BLOB, BOB, PUBLISHER)
        self.assertFalse(self.store.add(BLOB, ALICE, PUBLISHER))
        self.assertEqual(self.store.peers_for(BLOB), [ALICE, BOB])
        self.assertEqual(len(self.store), 2)

    def test_new_node_id_same_endpoint(self) -> None:
        """
        An announcement from a known address and port with another node id
        replaces the record: one endpoint is never listed twice.
        """
        self.store.add(BLOB, ALICE, PUBLISHER)
        restarted = compact("1.2.3.4", 3333, 7)
        self.assertFalse(self.store.add(BLOB, restarted, PUBLISHER))
        self.assertEqual(self.store.peers_for(BLOB), [restarted])

    def test_same_host_other_port(self) -> None:
        """
        Two peers on one host with different ports are two records.
        """
        self.store.add(BLOB, ALICE, PUBLISHER)
        second = compact("1.2.3.4", 3334, 8)
        self.store.add(BLOB, second, PUBLISHER)
        self.assertEqual(self.store.peers_for(BLOB), [second, ALICE])

    def test_exclude_host(self) -> None:
        """
        The records of the excluded host are left out; an exclusion that is
        not an IPv4 address excludes nothing.
        """
        self.store.add(BLOB, ALICE, PUBLISHER)
        self.store.add(BLOB, compact("1.2.3.4", 3334, 8), PUBLISHER)
        self.store.add(BLOB, BOB, PUBLISHER)
        self.assertEqual(self.store.peers_for(BLOB, exclude_host="1.2.3.4"), [BOB])
        self.assertEqual(self.store.peers_for(BLOB, exclude_host="5.6.7.8")[-1], ALICE)
        self.assertEqual(len(self.store.peers_for(BLOB, exclude_host="not an address")), 3)

    def test_explicit_time(self) -> None:
        """
        The time of an announcement may be given instead of the clock's.
        """
        self.clock.advance(DATA_EXPIRATION)
        self.store.add(BLOB, ALICE, PUBLISHER, now=0)
        self.assertEqual(self.store.peers_for(BLOB), [])
        self.assertEqual(self.store.expire(), 1)

    def test_invalid(self) -> None:
        """
        Hashes, ids and compact addresses of the wrong length are refused.
        """
        self.assertRaises(ValueError, self.store.add, b"short", ALICE, PUBLISHER)
        self.assertRaises(ValueError, self.store.add, BLOB, ALICE[:-1], PUBLISHER)
        self.assertRaises(ValueError, self.store.add, BLOB, ALICE + b"x", PUBLISHER)
        self.assertRaises(ValueError, self.store.add, BLOB, ALICE, b"short")
        self.assertRaises(ValueError, self.store.add, BLOB, "x" * 54, PUBLISHER)
        self.assertEqual(len(self.store), 0)


class ExpiryTests(SynchronousTestCase):
    """
    Records expire C{DATA_EXPIRATION} (24 hours) after their last
    announcement.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = PeerStore(self.clock)
        self.clock.advance(1000)
        self.store.add(BLOB, ALICE, PUBLISHER)

    def test_exactly_24_hours(self) -> None:
        """
        A record is live until just before 24 hours and gone at 24 hours.
        """
        self.assertEqual(DATA_EXPIRATION, 24 * 60 * 60)
        self.clock.advance(DATA_EXPIRATION - 0.5)
        self.assertEqual(self.store.peers_for(BLOB), [ALICE])
        self.assertEqual(self.store.expire(), 0)
        self.assertEqual(len(self.store), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.store.peers_for(BLOB), [])
        self.assertEqual(len(self.store), 1)
        self.assertEqual(self.store.expire(), 1)
        self.assertEqual((len(self.store), self.store.blob_count()), (0, 0))
        self.assertEqual(self.store.expire(), 0)

    def test_restore_refreshes(self) -> None:
        """
        A new announcement restarts the 24 hours.
        """
        self.clock.advance(DATA_EXPIRATION - 1)
        self.store.add(BLOB, ALICE, PUBLISHER)
        self.clock.advance(DATA_EXPIRATION - 1)
        self.assertEqual(self.store.peers_for(BLOB), [ALICE])
        self.assertEqual(self.store.expire(), 0)
        self.clock.advance(1)
        self.assertEqual(self.store.expire(), 1)

    def test_only_old_removed(self) -> None:
        """
        Expiring removes the old records and keeps the younger ones.
        """
        self.clock.advance(10)
        self.store.add(BLOB, BOB, PUBLISHER)
        self.store.add(OTHER_BLOB, CAROL, PUBLISHER)
        self.clock.advance(DATA_EXPIRATION - 10)
        self.assertEqual(self.store.peers_for(BLOB), [BOB])
        self.assertEqual(self.store.expire(), 1)
        self.assertEqual((len(self.store), self.store.blob_count()), (2, 2))
        self.clock.advance(10)
        self.assertEqual(self.store.expire(), 2)
        self.assertEqual(self.store.blob_count(), 0)


class BoundTests(SynchronousTestCase):
    """
    The store never holds more than its bounds; the oldest record goes.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_invalid_bounds(self) -> None:
        """
        Bounds must be positive.
        """
        self.assertRaises(ValueError, PeerStore, self.clock, max_per_blob=0)
        self.assertRaises(ValueError, PeerStore, self.clock, max_total=0)

    def test_per_blob(self) -> None:
        """
        A new peer for a blob with C{max_per_blob} records pushes out its
        oldest; refreshing a record makes it the newest.
        """
        store = PeerStore(self.clock, max_per_blob=2)
        store.add(BLOB, ALICE, PUBLISHER)
        store.add(BLOB, BOB, PUBLISHER)
        store.add(BLOB, ALICE, PUBLISHER)
        store.add(BLOB, CAROL, PUBLISHER)
        self.assertEqual(store.peers_for(BLOB), [CAROL, ALICE])
        store.add(OTHER_BLOB, BOB, PUBLISHER)
        self.assertEqual(len(store), 3)

    def test_total(self) -> None:
        """
        A new record in a store with C{max_total} records pushes out the
        oldest of all, whatever its blob.
        """
        store = PeerStore(self.clock, max_total=2)
        store.add(BLOB, ALICE, PUBLISHER)
        store.add(OTHER_BLOB, BOB, PUBLISHER)
        store.add(OTHER_BLOB, CAROL, PUBLISHER)
        self.assertEqual(store.peers_for(BLOB), [])
        self.assertEqual(store.peers_for(OTHER_BLOB), [CAROL, BOB])
        self.assertEqual((len(store), store.blob_count()), (2, 1))
        store.add(OTHER_BLOB, BOB, PUBLISHER)
        store.add(BLOB, ALICE, PUBLISHER)
        self.assertEqual(store.peers_for(OTHER_BLOB), [BOB])

    def test_total_same_blob(self) -> None:
        """
        With one blob, the total bound drops that blob's oldest record.
        """
        store = PeerStore(self.clock, max_total=1)
        store.add(BLOB, ALICE, PUBLISHER)
        store.add(BLOB, BOB, PUBLISHER)
        self.assertEqual(store.peers_for(BLOB), [BOB])
        self.assertEqual((len(store), store.blob_count()), (1, 1))

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=3),  # blob
                st.integers(min_value=0, max_value=6),  # peer
                st.integers(min_value=0, max_value=DATA_EXPIRATION // 3),  # wait first
                st.booleans(),  # expire afterwards
            ),
            max_size=60,
        ),
        st.integers(min_value=1, max_value=5),
        st.integers(min_value=1, max_value=12),
    )
    def test_bounds_and_liveness(
        self,
        operations: list[tuple[int, int, int, bool]],
        max_per_blob: int,
        max_total: int,
    ) -> None:
        """
        After any sequence of announcements, waits and expiries, the bounds
        hold, no endpoint is listed twice for a blob, and only records
        younger than C{DATA_EXPIRATION} are listed, newest first.
        """
        clock = Clock()
        store = PeerStore(clock, max_per_blob=max_per_blob, max_total=max_total)
        blobs = [bytes([b]) * HASH_LENGTH for b in range(4)]
        peers = [compact(f"8.8.8.{p}", 4000 + p % 3, p) for p in range(7)]
        stored_at: dict[tuple[int, int], float] = {}
        for blob, peer, wait, expire in operations:
            clock.advance(wait)
            store.add(blobs[blob], peers[peer], PUBLISHER)
            stored_at[(blob, peer)] = clock.seconds()
            if expire:
                store.expire()
            self.assertLessEqual(len(store), max_total)
            now = clock.seconds()
            total = 0
            for b, blob_hash in enumerate(blobs):
                listed = store.peers_for(blob_hash)
                self.assertLessEqual(len(listed), max_per_blob)
                self.assertEqual(len(listed), len(set(listed)))
                ages = [now - stored_at[(b, peers.index(c))] for c in listed]
                self.assertEqual(ages, sorted(ages))
                for age in ages:
                    self.assertLess(age, DATA_EXPIRATION)
                total += len(listed)
            self.assertLessEqual(total, len(store))
        store.expire()
        live = sum(len(store.peers_for(b)) for b in blobs)
        self.assertEqual(live, len(store))
