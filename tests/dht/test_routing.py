"""
Tests for L{p2pblob.dht.routing}: the k-bucket rules of the routing table;
and for the modules it builds on: contact states (L{p2pblob.dht.contact}),
address validation (L{p2pblob.dht.addresses}) and the saved contacts
(L{p2pblob.dht.contacts_file}).
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.addresses import is_valid_address
from p2pblob.dht.constants import CHECK_REFRESH_INTERVAL, HASH_LENGTH, REFRESH_INTERVAL, K
from p2pblob.dht.contact import Contact, ContactState
from p2pblob.dht.contacts_file import load_contacts, save_contacts
from p2pblob.dht.ids import ID_SPACE, distance, id_from_int, id_to_int
from p2pblob.dht.routing import RoutingTable

OWN = bytes(HASH_LENGTH)
"""
Our id in most tests: 0, so that the distance of an id to us is its value.
"""

TOP = ID_SPACE // 2
"""
The first id of the upper half of the id space, the half without our id.
"""

_serial = itertools.count(1)


def contact(value: int) -> Contact:
    """
    A contact with id C{value} and an address no other contact has.
    """
    n = next(_serial)
    host = f"1.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    return Contact(host, 4444, id_from_int(value))


def ids_of(contacts: list[Contact]) -> list[int]:
    return [id_to_int(c.node_id) for c in contacts]


def full_upper_bucket(clock: Clock, split_under_index: int = 0) -> tuple[RoutingTable, list[int]]:
    """
    A table whose upper-half bucket is full of contacts with ids
    C{TOP + 1 .. TOP + K}, added in that order, and whose lower half, with
    our id, is empty.  With C{split_under_index=0} only the rule "closer
    than our K-th closest contact" can split the upper bucket again.
    """
    table = RoutingTable(OWN, clock, split_under_index=split_under_index)
    values = [TOP + i for i in range(1, K + 1)]
    for value in values:
        table.add_contact(contact(value))
    table.add_contact(contact(1))  # splits the whole space in halves
    table.remove_contact(id_from_int(1))
    assert [(b.low, b.high, len(b)) for b in table.buckets()] == [(0, TOP, 0), (TOP, ID_SPACE, K)]
    return table, values


class ContactStateTests(SynchronousTestCase):
    """
    L{Contact.state} follows BEP-5: good after a recent reply, bad after
    two failures in a row, unknown otherwise.
    """

    def test_new(self) -> None:
        """
        A contact that never replied is unknown.
        """
        self.assertEqual(contact(5).state(0), ContactState.UNKNOWN)

    def test_recent_reply(self) -> None:
        """
        A reply keeps a contact good for C{CHECK_REFRESH_INTERVAL} seconds.
        """
        c = contact(5)
        c.replied(100)
        self.assertEqual(c.state(100), ContactState.GOOD)
        self.assertEqual(c.state(100 + CHECK_REFRESH_INTERVAL - 0.5), ContactState.GOOD)
        self.assertEqual(c.state(100 + CHECK_REFRESH_INTERVAL), ContactState.UNKNOWN)

    def test_recent_request(self) -> None:
        """
        A contact that replied once and has sent us a request recently is
        good; a request alone does not make a contact good.
        """
        c = contact(5)
        c.requested(0)
        self.assertEqual(c.state(1), ContactState.UNKNOWN)
        c.replied(10)
        c.requested(5000)
        self.assertEqual(c.state(5001), ContactState.GOOD)
        self.assertEqual(c.state(5000 + CHECK_REFRESH_INTERVAL), ContactState.UNKNOWN)

    def test_failures(self) -> None:
        """
        One failure after a reply makes a contact unknown, a second one bad;
        a reply makes it good again.
        """
        c = contact(5)
        c.replied(0)
        c.failed(1)
        self.assertEqual((c.state(2), c.failures, c.last_failed), (ContactState.UNKNOWN, 1, 1))
        c.failed(3)
        self.assertEqual(c.state(4), ContactState.BAD)
        self.assertTrue(c.is_bad)
        c.replied(5)
        self.assertEqual((c.state(6), c.failures), (ContactState.GOOD, 0))

    def test_bad_does_not_age(self) -> None:
        """
        A bad contact stays bad however much time passes, even if it sent
        us requests.
        """
        c = contact(5)
        c.failed(0)
        c.failed(1)
        c.requested(2)
        self.assertEqual(c.state(10**6), ContactState.BAD)

    def test_invalid_id(self) -> None:
        """
        A contact's id must be 48 bytes.
        """
        self.assertRaises(ValueError, Contact, "1.2.3.4", 4444, b"short")


class AdmissionTests(SynchronousTestCase):
    """
    L{RoutingTable.add_contact} with room in the bucket.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table = RoutingTable(OWN, self.clock)

    def test_insert_in_order(self) -> None:
        """
        New contacts are appended, least recently seen first, marked as
        having replied now, and can be found again.
        """
        self.clock.advance(50)
        contacts = [contact(v) for v in (TOP + 3, 7, TOP + 1)]
        for c in contacts:
            self.assertIsNone(self.table.add_contact(c))
        self.assertEqual(self.table.buckets()[0].contacts(), contacts)
        self.assertEqual(self.table.contacts(), contacts)
        self.assertEqual(len(self.table), 3)
        self.assertIs(self.table.get(contacts[1].node_id), contacts[1])
        self.assertIn(contacts[1].node_id, self.table)
        self.assertEqual([c.last_replied for c in contacts], [50, 50, 50])
        self.assertIsNone(self.table.get(id_from_int(99)))
        self.assertIs(self.table.get_by_address(contacts[2].address), contacts[2])
        self.assertIsNone(self.table.get_by_address(("8.8.8.8", 4444)))

    def test_update_moves_to_end(self) -> None:
        """
        A known contact that replies again moves to the most recently seen
        end; the object kept is the one already in the table, with the new
        address.
        """
        first, second = contact(10), contact(20)
        self.table.add_contact(first)
        self.table.add_contact(second)
        self.clock.advance(30)
        again = Contact("2.2.2.2", 5555, first.node_id)
        self.assertIsNone(self.table.add_contact(again))
        self.assertEqual(self.table.contacts(), [second, first])
        self.assertEqual((first.address, first.last_replied), (("2.2.2.2", 5555), 30))
        self.assertIs(self.table.get_by_address(("2.2.2.2", 5555)), first)
        self.assertEqual(len(self.table), 2)

    def test_update_clears_failures(self) -> None:
        """
        A reply from a failing contact makes it good again.
        """
        c = contact(10)
        self.table.add_contact(c)
        self.table.contact_failed(c.node_id)
        self.table.contact_failed(c.node_id)
        self.assertTrue(c.is_bad)
        self.table.add_contact(c)
        self.assertEqual(c.state(self.clock.seconds()), ContactState.GOOD)

    def test_own_id_ignored(self) -> None:
        """
        Our own id never enters the table.
        """
        self.assertIsNone(self.table.add_contact(Contact("1.1.1.1", 4444, OWN)))
        self.assertEqual(len(self.table), 0)

    def test_address_taken_over(self) -> None:
        """
        A new id answering from the address of a known contact replaces it:
        the node restarted with another id.
        """
        old = contact(10)
        self.table.add_contact(old)
        new = Contact(old.host, old.udp_port, id_from_int(11))
        self.table.add_contact(new)
        self.assertEqual(self.table.contacts(), [new])

    def test_address_moved_onto_another(self) -> None:
        """
        A known contact whose address changed to that of another contact
        replaces it there.
        """
        one, two = contact(10), contact(20)
        self.table.add_contact(one)
        self.table.add_contact(two)
        self.table.add_contact(Contact(two.host, two.udp_port, one.node_id))
        self.assertEqual(self.table.contacts(), [one])
        self.assertEqual(one.address, two.address)

    def test_invalid_own_id(self) -> None:
        """
        Our own id must be a node id, and k positive.
        """
        self.assertRaises(ValueError, RoutingTable, b"short", self.clock)
        self.assertRaises(ValueError, RoutingTable, OWN, self.clock, k=0)


class SplitTests(SynchronousTestCase):
    """
    When a full bucket is split instead of refusing a newcomer.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_own_bucket_splits(self) -> None:
        """
        The bucket that covers our id is split when full, as often as
        needed, however far the newcomer is.
        """
        table = RoutingTable(OWN, self.clock, split_under_index=0)
        for value in range(1, K + 1):
            table.add_contact(contact(value))
        newcomer = contact(2**380)
        self.assertIsNone(table.add_contact(newcomer))
        self.assertIs(table.get(newcomer.node_id), newcomer)
        self.assertEqual(len(table), K + 1)
        self.assertEqual(table.bucket_for(newcomer.node_id).low, 2**380)
        self.assertEqual(table.bucket_for(OWN).high, 2**380)

    def test_far_bucket_not_split(self) -> None:
        """
        With C{split_under_index=0}, a full bucket away from our id is not
        split for a newcomer farther than our K-th closest contact: the
        newcomer waits in the replacement cache.
        """
        table, values = full_upper_bucket(self.clock)
        newcomer = contact(TOP + 100)
        self.assertIsNone(table.add_contact(newcomer))
        self.assertIsNone(table.get(newcomer.node_id))
        self.assertEqual(len(table.buckets()), 2)
        self.assertEqual(table.buckets()[1].replacements(), [newcomer])
        self.assertEqual(ids_of(table.contacts()), values)

    def test_closer_than_kth_splits(self) -> None:
        """
        A full bucket away from our id is split for a newcomer closer to us
        than our K-th closest contact.
        """
        table = RoutingTable(OWN, self.clock, split_under_index=0)
        values = [TOP + i * 2**300 for i in range(1, K + 1)]
        for value in values:
            table.add_contact(contact(value))
        table.add_contact(contact(1))
        table.remove_contact(id_from_int(1))
        newcomer = contact(TOP + 1)
        self.assertIsNone(table.add_contact(newcomer))
        self.assertIs(table.get(newcomer.node_id), newcomer)
        self.assertEqual(len(table), K + 1)
        self.assertGreater(len(table.buckets()), 3)

    def test_low_index_splits(self) -> None:
        """
        With the default C{split_under_index=2}, the full bucket next to
        ours in distance is split even for a newcomer farther than our
        K-th closest contact.
        """
        table, _ = full_upper_bucket(self.clock, split_under_index=2)
        newcomer = contact(TOP + 100)
        self.assertIsNone(table.add_contact(newcomer))
        self.assertIs(table.get(newcomer.node_id), newcomer)

    def test_split_keeps_order_and_cache(self) -> None:
        """
        Splitting shares out contacts and replacements in their order.
        """
        table, values = full_upper_bucket(self.clock)
        waiting = contact(ID_SPACE - 1)
        table.add_contact(waiting)
        self.assertEqual(table.buckets()[1].replacements(), [waiting])
        # a newcomer closer than our K-th closest splits the upper bucket
        table.add_contact(contact(5))
        table.add_contact(contact(TOP))
        upper = table.bucket_for(waiting.node_id)
        self.assertEqual(upper.replacements(), [waiting])
        # the halving went on until the last of the old contacts was apart
        self.assertEqual(ids_of(table.bucket_for(id_from_int(TOP)).contacts()), [*values[:-1], TOP])
        self.assertEqual(ids_of(table.bucket_for(id_from_int(values[-1])).contacts()), values[-1:])
        self.assertEqual(len(table), K + 2)


class FullBucketTests(SynchronousTestCase):
    """
    A full bucket that cannot be split: bad contacts are replaced, else the
    newcomer waits and the caller pings.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table, self.values = full_upper_bucket(self.clock)
        self.upper = self.table.buckets()[1]

    def test_bad_contact_replaced(self) -> None:
        """
        The least recently seen bad contact gives its place to the newcomer.
        """
        for value in (self.values[5], self.values[2]):
            for _ in range(2):
                self.table.contact_failed(id_from_int(value))
        newcomer = contact(TOP + 100)
        self.assertIsNone(self.table.add_contact(newcomer))
        self.assertIsNone(self.table.get(id_from_int(self.values[2])))
        self.assertIsNotNone(self.table.get(id_from_int(self.values[5])))
        self.assertEqual(self.upper.contacts()[-1], newcomer)
        self.assertEqual(self.upper.replacements(), [])

    def test_all_good(self) -> None:
        """
        When every contact of the bucket is good, there is nobody to ping.
        """
        self.assertIsNone(self.table.add_contact(contact(TOP + 100)))

    def test_ping_least_recently_seen(self) -> None:
        """
        When contacts are no longer known to be good, the least recently
        seen one of them is to be pinged; a good one is skipped.
        """
        self.clock.advance(CHECK_REFRESH_INTERVAL)
        self.table.get(id_from_int(self.values[0])).replied(self.clock.seconds())  # type: ignore[union-attr]
        to_ping = self.table.add_contact(contact(TOP + 100))
        self.assertIs(to_ping, self.table.get(id_from_int(self.values[1])))

    def test_ping_failed(self) -> None:
        """
        If the pinged contact fails, removing it promotes the newcomer.
        """
        self.clock.advance(CHECK_REFRESH_INTERVAL)
        newcomer = contact(TOP + 100)
        to_ping = self.table.add_contact(newcomer)
        assert to_ping is not None
        self.assertEqual(id_to_int(to_ping.node_id), self.values[0])
        self.assertIs(self.table.remove_contact(to_ping.node_id), to_ping)
        self.assertEqual(self.upper.contacts()[-1], newcomer)
        self.assertEqual(self.upper.replacements(), [])
        self.assertEqual(len(self.table), K)

    def test_ping_answered(self) -> None:
        """
        If the pinged contact answers, it becomes the most recently seen and
        the next one is proposed for the next newcomer.
        """
        self.clock.advance(CHECK_REFRESH_INTERVAL)
        first = self.table.add_contact(contact(TOP + 100))
        assert first is not None
        self.table.add_contact(first)
        second = self.table.add_contact(contact(TOP + 101))
        assert second is not None
        self.assertEqual(id_to_int(second.node_id), self.values[1])
        self.assertEqual(ids_of(self.upper.replacements()), [TOP + 100, TOP + 101])

    def test_cache_bounded(self) -> None:
        """
        The replacement cache keeps the newest C{k} newcomers; one seen
        again moves to the newest end.
        """
        for i in range(K + 3):
            self.table.add_contact(contact(TOP + 100 + i))
        expected = [TOP + 100 + i for i in range(3, K + 3)]
        self.assertEqual(ids_of(self.upper.replacements()), expected)
        self.table.add_contact(contact(TOP + 103))
        self.assertEqual(ids_of(self.upper.replacements()), [*expected[1:], TOP + 103])

    def test_cache_size(self) -> None:
        """
        The size of replacement caches can be chosen, down to none.
        """
        table = RoutingTable(OWN, self.clock, split_under_index=0, replacement_cache_size=0)
        for value in [TOP + i for i in range(1, K + 2)]:
            table.add_contact(contact(value))
        table.add_contact(contact(1))
        self.assertEqual(table.bucket_for(id_from_int(TOP)).replacements(), [])

    def test_promotion_skips_taken_address(self) -> None:
        """
        A replacement whose address is now held by a contact in the table
        is not promoted.
        """
        self.clock.advance(CHECK_REFRESH_INTERVAL)
        older, newer = contact(TOP + 100), contact(TOP + 101)
        self.table.add_contact(older)
        self.table.add_contact(newer)
        holder = self.table.get(id_from_int(self.values[3]))
        assert holder is not None
        newer.host, newer.udp_port = holder.address
        self.table.remove_contact(id_from_int(self.values[0]))
        self.assertIs(self.upper.contacts()[-1], older)
        self.assertEqual(self.upper.replacements(), [])

    def test_remove_unknown(self) -> None:
        """
        Removing an unknown id does nothing; removing a waiting replacement
        takes it out of the cache.
        """
        self.assertIsNone(self.table.remove_contact(id_from_int(TOP + 999)))
        waiting = contact(TOP + 100)
        self.table.add_contact(waiting)
        self.assertIs(self.table.remove_contact(waiting.node_id), waiting)
        self.assertEqual(self.upper.replacements(), [])
        self.assertEqual(len(self.table), K)


class ContactFailedTests(SynchronousTestCase):
    """
    L{RoutingTable.contact_failed}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table, self.values = full_upper_bucket(self.clock)
        self.upper = self.table.buckets()[1]
        self.victim = id_from_int(self.values[4])

    def test_bad_without_replacement_stays(self) -> None:
        """
        A bad contact stays while there is nobody to replace it.
        """
        self.assertFalse(self.table.contact_failed(self.victim))
        self.assertFalse(self.table.contact_failed(self.victim))
        contact = self.table.get(self.victim)
        assert contact is not None
        self.assertEqual(contact.state(self.clock.seconds()), ContactState.BAD)

    def test_bad_replaced_from_cache(self) -> None:
        """
        A contact is replaced by the newest replacement once it is bad, not
        after its first failure.
        """
        waiting = [contact(TOP + 100), contact(TOP + 101)]
        for c in waiting:
            self.table.add_contact(c)
        self.assertFalse(self.table.contact_failed(self.victim))
        self.assertIsNotNone(self.table.get(self.victim))
        self.assertTrue(self.table.contact_failed(self.victim))
        self.assertIsNone(self.table.get(self.victim))
        self.assertIs(self.upper.contacts()[-1], waiting[1])
        self.assertEqual(self.upper.replacements(), [waiting[0]])

    def test_bad_replacement_dropped(self) -> None:
        """
        A replacement that fails twice is dropped from the cache.
        """
        waiting = contact(TOP + 100)
        self.table.add_contact(waiting)
        self.assertFalse(self.table.contact_failed(waiting.node_id))
        self.assertTrue(self.table.contact_failed(waiting.node_id))
        self.assertEqual(self.upper.replacements(), [])

    def test_unknown(self) -> None:
        """
        A failure of an unknown id is ignored.
        """
        self.assertFalse(self.table.contact_failed(id_from_int(TOP + 999)))


class ClosestTests(SynchronousTestCase):
    """
    L{RoutingTable.closest}.
    """

    def setUp(self) -> None:
        self.table = RoutingTable(OWN, Clock())
        for value in (1, 2, 3, 8, TOP + 1, TOP + 2, 2**200):
            self.table.add_contact(contact(value))

    def test_order(self) -> None:
        """
        Contacts come closest to the key first, at most C{count}.
        """
        self.assertEqual(ids_of(self.table.closest(id_from_int(0))), [1, 2, 3, 8, 2**200, TOP + 1, TOP + 2])
        self.assertEqual(ids_of(self.table.closest(id_from_int(TOP), 3)), [TOP + 1, TOP + 2, 1])
        self.assertEqual(self.table.closest(id_from_int(0), 0), [])

    def test_exclude(self) -> None:
        """
        The excluded id is never returned.
        """
        result = self.table.closest(id_from_int(3), 2, exclude=id_from_int(3))
        self.assertEqual(ids_of(result), [2, 1])

    def test_bad_contacts(self) -> None:
        """
        Bad contacts are returned unless C{include_bad=False}.
        """
        for _ in range(2):
            self.table.contact_failed(id_from_int(1))
        self.assertEqual(ids_of(self.table.closest(id_from_int(0), 2)), [1, 2])
        self.assertEqual(ids_of(self.table.closest(id_from_int(0), 2, include_bad=False)), [2, 3])

    def test_bad_key(self) -> None:
        """
        The key must be 48 bytes.
        """
        self.assertRaises(ValueError, self.table.closest, b"short")


class RefreshTests(SynchronousTestCase):
    """
    L{RoutingTable.buckets_to_refresh} and L{RoutingTable.touch_bucket}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table, _ = full_upper_bucket(self.clock)
        # a few more buckets near our id
        for value in (2**10, 2**11, 2**100, 2**200, 2**300, 2**301, 2**302, 2**303, 2**350):
            self.table.add_contact(contact(value))

    def test_fresh_table(self) -> None:
        """
        Nothing is due before C{REFRESH_INTERVAL} has passed.
        """
        self.clock.advance(REFRESH_INTERVAL - 1)
        self.assertEqual(self.table.buckets_to_refresh(self.clock.seconds()), [])

    def test_ids_in_their_buckets(self) -> None:
        """
        After C{REFRESH_INTERVAL}, each bucket gives one id, in its range.
        """
        self.clock.advance(REFRESH_INTERVAL)
        buckets = self.table.buckets()
        due = self.table.buckets_to_refresh(self.clock.seconds())
        self.assertEqual(len(due), len(buckets))
        self.assertGreater(len(buckets), 2)
        for bucket, key in zip(buckets, due, strict=True):
            self.assertTrue(bucket.covers(key))
            self.assertTrue(bucket.low <= id_to_int(key) < bucket.high)

    def test_touched_not_due(self) -> None:
        """
        A bucket in which a lookup was made, or a contact added, is not due.
        """
        self.clock.advance(REFRESH_INTERVAL)
        now = self.clock.seconds()
        self.table.touch_bucket(id_from_int(TOP + 5), now)
        self.table.add_contact(contact(2**10))
        due = self.table.buckets_to_refresh(now)
        self.assertEqual(len(due), len(self.table.buckets()) - 2)
        for key in due:
            self.assertFalse(self.table.bucket_for(key).covers(id_from_int(TOP)))
            self.assertFalse(self.table.bucket_for(key).covers(id_from_int(2**10)))

    def test_seeded(self) -> None:
        """
        The refresh ids come from the table's random generator.
        """
        tables = [RoutingTable(OWN, self.clock, rng=random.Random(3)) for _ in range(2)]
        self.clock.advance(REFRESH_INTERVAL)
        first, second = (t.buckets_to_refresh(self.clock.seconds()) for t in tables)
        self.assertEqual(first, second)


# hypothesis: any sequence of operations keeps the table well-formed

_OWN_IDS = st.binary(min_size=HASH_LENGTH, max_size=HASH_LENGTH)
# distances spread over all bucket depths, so that buckets split deeply
_DISTANCES = st.integers(min_value=0, max_value=8 * HASH_LENGTH - 1).flatmap(
    lambda bit: st.integers(1 << bit, (1 << (bit + 1)) - 1)
)
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "remove", "fail", "wait"]),
        st.integers(min_value=0, max_value=39),
    ),
    max_size=120,
)


class PropertyTests(SynchronousTestCase):
    """
    Properties that hold after any sequence of adds, removals, failures and
    time.
    """

    def run_operations(
        self,
        own: bytes,
        distances: list[int],
        operations: list[tuple[str, int]],
        k: int,
        split_under_index: int,
    ) -> tuple[RoutingTable, Clock, list[Contact]]:
        clock = Clock()
        table = RoutingTable(own, clock, k=k, split_under_index=split_under_index)
        pool = [Contact(f"1.1.1.{i}", 4444, id_from_int(id_to_int(own) ^ d)) for i, d in enumerate(distances)]
        for operation, index in operations:
            c = pool[index % len(pool)]
            if operation == "add":
                table.add_contact(c)
            elif operation == "remove":
                table.remove_contact(c.node_id)
            elif operation == "fail":
                table.contact_failed(c.node_id)
            else:
                clock.advance(CHECK_REFRESH_INTERVAL / 2)
            self.check_well_formed(table, k)
        return table, clock, pool

    def check_well_formed(self, table: RoutingTable, k: int) -> None:
        buckets = table.buckets()
        self.assertEqual(buckets[0].low, 0)
        self.assertEqual(buckets[-1].high, ID_SPACE)
        seen: set[bytes] = set()
        for before, after in itertools.pairwise(buckets):
            self.assertEqual(before.high, after.low)
        for bucket in buckets:
            size = bucket.high - bucket.low
            self.assertEqual(size & (size - 1), 0)
            self.assertEqual(bucket.low % size, 0)
            self.assertLessEqual(len(bucket), k)
            for c in bucket.contacts() + bucket.replacements():
                self.assertTrue(bucket.covers(c.node_id))
                self.assertNotIn(c.node_id, seen)
                seen.add(c.node_id)
            for c in bucket.contacts():
                self.assertIs(table.get(c.node_id), c)
                self.assertIs(table.get_by_address(c.address), c)
        self.assertEqual(len(table), sum(len(b) for b in buckets))
        self.assertIsNone(table.get(table.own_id))
        addresses = [c.address for c in table.contacts()]
        self.assertEqual(len(addresses), len(set(addresses)))

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        _OWN_IDS,
        st.lists(_DISTANCES, min_size=1, max_size=40, unique=True),
        _OPERATIONS,
        st.integers(min_value=1, max_value=4),
        st.integers(min_value=0, max_value=3),
    )
    def test_well_formed(
        self,
        own: bytes,
        distances: list[int],
        operations: list[tuple[str, int]],
        k: int,
        split_under_index: int,
    ) -> None:
        """
        The buckets partition the id space into aligned ranges with no gap
        or overlap, hold at most C{k} contacts each, all in their range,
        and the table's index agrees with them.
        """
        self.run_operations(own, distances, operations, k, split_under_index)

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        _OWN_IDS,
        st.lists(_DISTANCES, min_size=1, max_size=40, unique=True),
        _OPERATIONS,
        st.integers(min_value=1, max_value=4),
    )
    def test_own_bucket_splittable(
        self, own: bytes, distances: list[int], operations: list[tuple[str, int]], k: int
    ) -> None:
        """
        Even with C{split_under_index=0}, a contact closer to us than every
        other is always admitted: the bucket with our id can always split.
        """
        table, _, _ = self.run_operations(own, distances, operations, k, 0)
        nearest = Contact("9.9.9.9", 9999, id_from_int(id_to_int(own) ^ 1))
        self.assertIsNone(table.add_contact(nearest))
        admitted = table.get(nearest.node_id)  # the pool may hold that id already
        assert admitted is not None
        self.assertEqual(admitted.address, nearest.address)
        self.check_well_formed(table, k)

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        _OWN_IDS,
        st.lists(_DISTANCES, min_size=1, max_size=40, unique=True),
        _OPERATIONS,
        st.binary(min_size=HASH_LENGTH, max_size=HASH_LENGTH),
        st.integers(min_value=0, max_value=12),
        st.integers(min_value=0, max_value=39),
        st.booleans(),
    )
    def test_closest(
        self,
        own: bytes,
        distances: list[int],
        operations: list[tuple[str, int]],
        key: bytes,
        count: int,
        exclude_index: int,
        include_bad: bool,
    ) -> None:
        """
        L{RoutingTable.closest} returns the C{count} contacts nearest to the
        key, ordered, never the excluded one.
        """
        table, clock, pool = self.run_operations(own, distances, operations, 3, 2)
        exclude = pool[exclude_index % len(pool)].node_id
        result = table.closest(key, count, exclude=exclude, include_bad=include_bad)
        eligible = [
            c for c in table.contacts() if c.node_id != exclude and (include_bad or not c.is_bad)
        ]
        self.assertLessEqual(len(result), count)
        self.assertEqual(len(result), min(count, len(eligible)))
        self.assertNotIn(exclude, [c.node_id for c in result])
        found = [distance(c.node_id, key) for c in result]
        self.assertEqual(found, sorted(found))
        expected = sorted(distance(c.node_id, key) for c in eligible)[:count]
        self.assertEqual(found, expected)


class AddressValidationTests(SynchronousTestCase):
    """
    L{is_valid_address} accepts public IPv4 addresses and high ports only.
    """

    def test_table(self) -> None:
        """
        Each address and port gives the expected verdict, with and without
        loopback allowed.
        """
        table = [
            # host, port, valid, valid with loopback allowed
            ("8.8.8.8", 4444, True, True),
            ("1.2.3.4", 1024, True, True),
            ("1.2.3.4", 65535, True, True),
            ("1.2.3.4", 1023, False, False),
            ("1.2.3.4", 65536, False, False),
            ("1.2.3.4", 0, False, False),
            ("1.2.3.4", -1, False, False),
            ("127.0.0.1", 4444, False, True),
            ("127.1.2.3", 4444, False, True),
            ("127.0.0.1", 80, False, False),
            ("10.0.0.1", 4444, False, False),
            ("172.16.5.4", 4444, False, False),
            ("192.168.1.1", 4444, False, False),
            ("100.64.0.1", 4444, False, False),
            ("100.127.255.254", 4444, False, False),
            ("169.254.1.1", 4444, False, False),
            ("224.0.0.1", 4444, False, False),
            ("239.255.255.250", 4444, False, False),
            ("240.0.0.1", 4444, False, False),
            ("255.255.255.255", 4444, False, False),
            ("0.0.0.0", 4444, False, False),
            ("192.0.2.1", 4444, False, False),
            ("192.88.99.1", 4444, False, False),
            ("::1", 4444, False, False),
            ("2001:4860:4860::8888", 4444, False, False),
            ("lbrynet1.lbry.com", 4444, False, False),
            ("01.2.3.4", 4444, False, False),
            ("1.2.3", 4444, False, False),
            ("", 4444, False, False),
        ]
        for host, port, valid, with_loopback in table:
            self.assertEqual(is_valid_address(host, port, False), valid, (host, port))
            self.assertEqual(is_valid_address(host, port, True), with_loopback, (host, port))

    def test_port_type(self) -> None:
        """
        A port that is not an integer is refused.
        """
        self.assertFalse(is_valid_address("8.8.8.8", True, False))
        self.assertFalse(is_valid_address("8.8.8.8", "4444", False))  # type: ignore[arg-type]


class PersistenceTests(SynchronousTestCase):
    """
    L{save_contacts} and L{load_contacts}.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def test_round_trip(self) -> None:
        """
        Saved contacts that are not bad load back in their order.
        """
        contacts = [contact(v) for v in (5, TOP, 2**100)]
        bad = contact(7)
        bad.failed(0)
        bad.failed(1)
        unknown = contact(9)
        unknown.failed(0)
        saved = save_contacts(self.path, [contacts[0], bad, contacts[1], unknown, contacts[2]])
        self.assertEqual(saved, 4)
        expected = [(c.host, c.udp_port, c.node_id) for c in [*contacts[:2], unknown, contacts[2]]]
        self.assertEqual(load_contacts(self.path), expected)
        self.assertEqual(load_contacts(str(self.path)), expected)

    def test_overwrite(self) -> None:
        """
        Saving replaces what was saved before.
        """
        save_contacts(self.path, [contact(1), contact(2)])
        latest = contact(3)
        save_contacts(self.path, [latest])
        self.assertEqual(load_contacts(self.path), [(latest.host, latest.udp_port, latest.node_id)])
        save_contacts(self.path, [])
        self.assertEqual(load_contacts(self.path), [])

    def test_rejoin(self) -> None:
        """
        A table's contacts saved and loaded fill a new table alike.
        """
        clock = Clock()
        table = RoutingTable(OWN, clock)
        for value in (1, 2, TOP + 1, 2**300):
            table.add_contact(contact(value))
        save_contacts(self.path, table.contacts())
        restarted = RoutingTable(OWN, clock)
        for host, port, node_id in load_contacts(self.path):
            restarted.add_contact(Contact(host, port, node_id))
        self.assertEqual(
            [c.address for c in restarted.contacts()], [c.address for c in table.contacts()]
        )

    def test_missing(self) -> None:
        """
        A missing file holds no contacts and is not created.
        """
        self.assertEqual(load_contacts(self.path), [])
        self.assertFalse(self.path.exists())

    def test_corrupt(self) -> None:
        """
        A file that is not a database holds no contacts, with a warning;
        saving replaces it.
        """
        self.path.write_bytes(b"this is not an SQLite database, not at all" * 100)
        with capturedLogs() as events:
            self.assertEqual(load_contacts(self.path), [])
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertEqual(events[0]["path"], str(self.path))
        fresh = contact(3)
        with capturedLogs():
            save_contacts(self.path, [fresh])
        self.assertEqual(load_contacts(self.path), [(fresh.host, fresh.udp_port, fresh.node_id)])

    def test_other_database(self) -> None:
        """
        An SQLite file without our table holds no contacts.
        """
        with sqlite3.connect(self.path) as db:
            db.execute("CREATE TABLE something (x)")
        db.close()
        with capturedLogs() as events:
            self.assertEqual(load_contacts(self.path), [])
        self.assertEqual(len(events), 1)

    def test_malformed_rows_skipped(self) -> None:
        """
        Rows with a wrong id, host or port are skipped.
        """
        good = contact(3)
        save_contacts(self.path, [good])
        db = sqlite3.connect(self.path)
        with db:
            db.executemany(
                "INSERT INTO contact (node_id, host, udp_port) VALUES (?, ?, ?)",
                [
                    (b"short", "1.2.3.4", 4444),
                    (id_from_int(4), b"1.2.3.4", 4444),
                    (id_from_int(5), "1.2.3.4", 70000),
                    (id_from_int(6), "1.2.3.4", "high"),
                    (id_from_int(7), "1.2.3.4", 0),
                    (id_from_int(8).hex(), "1.2.3.4", 4444),
                ],
            )
        db.close()
        self.assertEqual(load_contacts(self.path), [(good.host, good.udp_port, good.node_id)])
