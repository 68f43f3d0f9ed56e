"""
The DHT's routing table: the contacts a node knows, in k-buckets (spec
section 7.4, "Expiry/refresh").

Everything here is pure bookkeeping driven by an injected clock: the table
never sends a datagram.  Where Kademlia wants a contact pinged, the table
says which one (L{RoutingTable.add_contact} returns it) and the protocol
reports the outcome back with L{RoutingTable.add_contact} (it answered) or
L{RoutingTable.remove_contact} / L{RoutingTable.contact_failed} (it did not).

Buckets cover ranges of the id space, C{[low, high)} with C{high - low} a
power of two and C{low} a multiple of it (that is, all ids sharing a
prefix): the table starts with one bucket covering everything and only ever
halves buckets, so the buckets always partition the id space.  Empty
buckets are not merged again; they cost a few bytes and a refresh lookup.

The contacts are L{p2pblob.dht.contact.Contact}s.  Which addresses may
become contacts is decided in L{p2pblob.dht.addresses}, and the contacts are
kept across restarts by L{p2pblob.dht.contacts_file}.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_right

from twisted.internet.interfaces import IReactorTime

from p2pblob.dht.constants import REFRESH_INTERVAL, K
from p2pblob.dht.contact import Contact, ContactState
from p2pblob.dht.ids import ID_SPACE, check_id, id_to_int, random_id_in_range

__all__ = ["SPLIT_BUCKETS_UNDER_INDEX", "KBucket", "RoutingTable"]

SPLIT_BUCKETS_UNDER_INDEX = 2
"""
LBRY's default for C{split_buckets_under_index}: the two buckets nearest to
our own id may always be split.
"""


class KBucket:
    """
    The contacts of one range of the id space: at most C{k}, least recently
    seen first, and a small cache of replacements for them, oldest first.

    Only its L{RoutingTable} changes it.

    @ivar low: the smallest id of its range, as an integer.
    @ivar high: one more than the largest id of its range.
    @ivar last_refreshed: when a contact in it was last added or updated, or
        a lookup in its range was last made (L{RoutingTable.touch_bucket}).
    """

    def __init__(self, low: int, high: int, k: int, cache_size: int, last_refreshed: float) -> None:
        self.low = low
        self.high = high
        self.last_refreshed = last_refreshed
        self._k = k
        self._cache_size = cache_size
        self._contacts: list[Contact] = []
        self._replacements: list[Contact] = []

    def __repr__(self) -> str:
        return (
            f"<KBucket [{self.low:#x}, {self.high:#x}) {len(self._contacts)} contacts, "
            f"{len(self._replacements)} replacements>"
        )

    def __len__(self) -> int:
        return len(self._contacts)

    def covers(self, node_id: bytes) -> bool:
        """
        @return: whether C{node_id} falls in this bucket's range.
        """
        return self._covers(id_to_int(node_id))

    def contacts(self) -> list[Contact]:
        """
        @return: its contacts, least recently seen first.
        """
        return list(self._contacts)

    def replacements(self) -> list[Contact]:
        """
        @return: the contacts waiting for a place in it, the one seen last
            at the end.
        """
        return list(self._replacements)

    def is_full(self) -> bool:
        """
        @return: whether it holds C{k} contacts.
        """
        return len(self._contacts) >= self._k

    def _covers(self, value: int) -> bool:
        return self.low <= value < self.high

    def _distance_low(self, own: int) -> int:
        """
        @return: the smallest distance from C{own} to an id of this bucket.
            (The range is aligned, so its ids' distances to C{own} form
            another aligned range; ordering buckets by this value orders
            them by distance from C{own}.)
        """
        return self.low ^ (own & ~(self.high - self.low - 1))

    def _append(self, contact: Contact) -> None:
        """
        Put C{contact} at the most-recently-seen end, moving it if present.
        """
        if contact in self._contacts:
            self._contacts.remove(contact)
        self._contacts.append(contact)

    def _remove(self, contact: Contact) -> None:
        self._contacts.remove(contact)

    def _first(self, state: ContactState | None, now: float) -> Contact | None:
        """
        @return: the least recently seen contact in C{state}, or that is not
            L{ContactState.GOOD} if C{state} is C{None}; or C{None}.
        """
        for contact in self._contacts:
            current = contact.state(now)
            if current == state or (state is None and current != ContactState.GOOD):
                return contact
        return None

    def _cache(self, contact: Contact) -> None:
        """
        Remember C{contact} as the newest replacement, forgetting the oldest
        one if the cache is full.
        """
        self._uncache(contact.node_id)
        self._replacements.append(contact)
        excess = len(self._replacements) - self._cache_size
        if excess > 0:
            del self._replacements[:excess]

    def _uncache(self, node_id: bytes) -> Contact | None:
        for index, contact in enumerate(self._replacements):
            if contact.node_id == node_id:
                return self._replacements.pop(index)
        return None

    def _pop_replacement(self) -> Contact | None:
        """
        @return: the replacement seen last, taken out of the cache, or
            C{None} if there is none.
        """
        return self._replacements.pop() if self._replacements else None

    def _split(self) -> tuple[KBucket, KBucket]:
        """
        @return: two buckets covering the lower and the upper half of this
            one's range, with its contacts and replacements shared out in
            their order.
        """
        middle = self.low + (self.high - self.low) // 2
        halves = (
            KBucket(self.low, middle, self._k, self._cache_size, self.last_refreshed),
            KBucket(middle, self.high, self._k, self._cache_size, self.last_refreshed),
        )
        for contact in self._contacts:
            halves[contact._node_int >= middle]._contacts.append(contact)
        for contact in self._replacements:
            halves[contact._node_int >= middle]._replacements.append(contact)
        return halves


class RoutingTable:
    """
    The k-buckets of one node.

    Contacts are only admitted after they answered one of I{our} requests
    (BEP-5, spec section 7.4): a node that merely sent us a request may be
    lying about its id or address.  L{add_contact} relies on its caller for
    that.
    """

    def __init__(
        self,
        own_id: bytes,
        clock: IReactorTime,
        k: int = K,
        split_under_index: int = SPLIT_BUCKETS_UNDER_INDEX,
        *,
        replacement_cache_size: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        @param own_id: our node id; it never enters the table.
        @param clock: the time of replies, failures and refreshes.
        @param k: the most contacts a bucket holds.
        @param split_under_index: a full bucket whose position, counted from
            the one holding our own id in order of distance from it, is
            below this may always be split (LBRY's
            C{split_buckets_under_index}).
        @param replacement_cache_size: the most replacements a bucket keeps;
            C{k} by default.
        @param rng: where the ids of refresh lookups come from.
        @raise ValueError: if C{own_id} is not a node id or C{k} is not
            positive.
        """
        if k < 1:
            raise ValueError(f"k must be positive, not {k}")
        self._own_id = check_id(own_id)
        self._own = id_to_int(self._own_id)
        self._clock = clock
        self._k = k
        self._split_under_index = split_under_index
        cache_size = k if replacement_cache_size is None else replacement_cache_size
        self._rng = rng if rng is not None else random.Random()
        self._buckets = [KBucket(0, ID_SPACE, k, cache_size, clock.seconds())]
        self._lows = [0]
        self._by_id: dict[bytes, Contact] = {}
        self._by_address: dict[tuple[str, int], bytes] = {}

    # looking things up

    @property
    def own_id(self) -> bytes:
        """
        Our node id.
        """
        return self._own_id

    def __len__(self) -> int:
        """
        @return: how many contacts the buckets hold (not counting their
            replacement caches).
        """
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> Contact | None:
        """
        @return: the contact in the table with id C{node_id}, or C{None}.
        """
        return self._by_id.get(node_id)

    def get_by_address(self, address: tuple[str, int]) -> Contact | None:
        """
        @param address: C{(host, udp_port)}.
        @return: the contact in the table at C{address}, or C{None}.  (No
            two contacts in the table share an address.)
        """
        node_id = self._by_address.get(address)
        return None if node_id is None else self._by_id[node_id]

    def contacts(self) -> list[Contact]:
        """
        @return: every contact in the table, bucket by bucket in id order,
            least recently seen first within each bucket.
        """
        return [contact for bucket in self._buckets for contact in bucket._contacts]

    def buckets(self) -> list[KBucket]:
        """
        @return: the buckets in order of their ranges.
        """
        return list(self._buckets)

    def bucket_for(self, key: bytes) -> KBucket:
        """
        @return: the bucket whose range holds C{key}.
        """
        return self._buckets[self._index_of(id_to_int(check_id(key)))]

    def closest(
        self,
        key: bytes,
        count: int = K,
        exclude: bytes | None = None,
        *,
        include_bad: bool = True,
    ) -> list[Contact]:
        """
        The contacts nearest to C{key}.

        @param key: the id or blob hash searched for.
        @param count: the most contacts to return.
        @param exclude: an id never to return, typically the requester's.
        @param include_bad: whether L{ContactState.BAD} contacts may be
            returned.  They can seed our own lookups (after our network was
            down every contact looks bad) but should not be handed to
            others.
        @return: up to C{count} contacts, closest to C{key} (by XOR) first.
        """
        target = id_to_int(check_id(key))
        if count <= 0:
            return []
        # Every bucket's ids are an aligned range, so their distances to
        # the key are one too, and the ranges do not overlap: going through
        # the buckets nearest range first, the contacts of a later bucket
        # are all farther than those of an earlier one.
        chosen: list[Contact] = []
        for bucket in sorted(self._buckets, key=lambda b: b._distance_low(target)):
            chosen.extend(
                contact
                for contact in bucket._contacts
                if contact._node_id != exclude and (include_bad or not contact.is_bad)
            )
            if len(chosen) >= count:
                break
        chosen.sort(key=lambda contact: contact._node_int ^ target)
        del chosen[count:]
        return chosen

    # changing the table

    def add_contact(self, contact: Contact) -> Contact | None:
        """
        Admit or refresh a contact that has just answered one of our
        requests.  Call it I{only} for such contacts; it marks the contact
        as having replied now.

          - A known contact (same node id) is moved to the most-recently-seen
            end of its bucket, its address updated if it changed.  The
            contact kept is the one already in the table; C{contact} only
            supplies the address.
          - Another id held at the same address has been replaced by this
            one (the node restarted with a new id) and is removed.
          - A new contact goes into its bucket if there is room.
          - If the bucket is full it is split (and the insertion retried)
            when it covers our own id, when its index in order of distance
            from our id is below C{split_under_index}, or when C{contact} is
            closer to our id than our C{k}-th closest contact.
          - Otherwise, the bucket's least recently seen
            L{ContactState.BAD} contact, if any, is dropped for it.
          - Otherwise C{contact} waits in the bucket's replacement cache.

        Our own id is ignored.

        @return: C{None} when nothing more is to be done; or, when
            C{contact} went to the replacement cache, the least recently
            seen contact of the full bucket that is not L{ContactState.GOOD}
            for the caller to ping.  If that ping fails, call
            L{remove_contact} with its id (the newest replacement takes its
            place); if it answers, call C{add_contact} with it.  C{None} is
            also returned when every contact of the full bucket is good: the
            newcomer then only waits in the cache.
        """
        node_id = contact.node_id
        if node_id == self._own_id:
            return None
        now = self._clock.seconds()
        self._release_address(contact.address, node_id)
        known = self._by_id.get(node_id)
        if known is not None:
            self._move(known, contact.address)
            known.replied(now)
            bucket = self._buckets[self._index_of(known._node_int)]
            bucket._append(known)
            bucket.last_refreshed = now
            return None
        contact.replied(now)
        return self._insert(contact, now)

    def remove_contact(self, node_id: bytes) -> Contact | None:
        """
        Forget a contact, e.g. one that did not answer the ping
        L{add_contact} asked for.  The newest replacement of its bucket, if
        any, takes its place.

        @return: the contact removed (from the bucket, or else from a
            replacement cache), or C{None} if it was unknown.
        """
        index = self._index_of(id_to_int(check_id(node_id)))
        bucket = self._buckets[index]
        contact = self._by_id.get(node_id)
        if contact is None:
            return bucket._uncache(node_id)
        self._drop(bucket, contact)
        self._promote(bucket)
        return contact

    def contact_failed(self, node_id: bytes) -> bool:
        """
        Note that a request to a contact failed.  Once it is
        L{ContactState.BAD} it is replaced by the newest replacement of its
        bucket, if there is one; without one it stays (the fault may be our
        own network's) until a newcomer takes its place.  A bad contact in a
        replacement cache is dropped from it.

        @return: whether the contact left the table or cache.
        """
        now = self._clock.seconds()
        bucket = self._buckets[self._index_of(id_to_int(check_id(node_id)))]
        contact = self._by_id.get(node_id)
        if contact is None:
            cached = next((c for c in bucket._replacements if c.node_id == node_id), None)
            if cached is None:
                return False
            cached.failed(now)
            if cached.is_bad:
                bucket._uncache(node_id)
                return True
            return False
        contact.failed(now)
        if contact.is_bad and bucket._replacements:
            self.remove_contact(node_id)
            return True
        return False

    # refreshing

    def touch_bucket(self, key: bytes, now: float) -> None:
        """
        Note that a lookup for C{key} was made at C{now}, which refreshes
        the bucket covering it.
        """
        self.bucket_for(key).last_refreshed = now

    def buckets_to_refresh(self, now: float) -> list[bytes]:
        """
        @return: for each bucket not refreshed within the last
            L{REFRESH_INTERVAL} seconds before C{now}, a random id in its
            range to look up (which refreshes it via L{touch_bucket}).
        """
        return [
            random_id_in_range(bucket.low, bucket.high, self._rng)
            for bucket in self._buckets
            if now - bucket.last_refreshed >= REFRESH_INTERVAL
        ]

    # the machinery

    def _index_of(self, value: int) -> int:
        return bisect_right(self._lows, value) - 1

    def _insert(self, contact: Contact, now: float) -> Contact | None:
        """
        Place a new contact, splitting its bucket as often as the rules of
        L{add_contact} allow; see there for the result.
        """
        while True:
            index = self._index_of(contact._node_int)
            bucket = self._buckets[index]
            bucket._uncache(contact.node_id)
            if not bucket.is_full():
                self._place(bucket, contact)
                bucket.last_refreshed = now
                return None
            if not self._should_split(index, contact._node_int):
                break
            self._split(index)
        bad = bucket._first(ContactState.BAD, now)
        if bad is not None:
            self._drop(bucket, bad)
            self._place(bucket, contact)
            bucket.last_refreshed = now
            return None
        bucket._cache(contact)
        return bucket._first(None, now)

    def _should_split(self, index: int, newcomer: int) -> bool:
        bucket = self._buckets[index]
        if bucket.high - bucket.low < 2:
            return False
        if bucket._covers(self._own):
            return True
        own_low = bucket._distance_low(self._own)
        rank = sum(1 for b in self._buckets if b._distance_low(self._own) < own_low)
        if rank < self._split_under_index:
            return True
        # the bucket is full, so there are at least k contacts
        kth = heapq.nsmallest(self._k, (c._node_int ^ self._own for c in self._by_id.values()))
        return newcomer ^ self._own < kth[-1]

    def _split(self, index: int) -> None:
        lower, upper = self._buckets[index]._split()
        self._buckets[index : index + 1] = [lower, upper]
        self._lows.insert(index + 1, upper.low)

    def _promote(self, bucket: KBucket) -> None:
        """
        Move the newest replacement whose address no contact in the table
        holds into C{bucket}; replacements seen later than it whose address
        is taken are forgotten.
        """
        while (replacement := bucket._pop_replacement()) is not None:
            if replacement.address not in self._by_address:
                self._place(bucket, replacement)
                return

    def _place(self, bucket: KBucket, contact: Contact) -> None:
        bucket._append(contact)
        self._by_id[contact.node_id] = contact
        self._by_address[contact.address] = contact.node_id

    def _drop(self, bucket: KBucket, contact: Contact) -> None:
        bucket._remove(contact)
        del self._by_id[contact.node_id]
        if self._by_address.get(contact.address) == contact.node_id:
            del self._by_address[contact.address]

    def _move(self, contact: Contact, address: tuple[str, int]) -> None:
        """
        Give a contact in the table a new address.
        """
        if contact.address == address:
            return
        if self._by_address.get(contact.address) == contact.node_id:
            del self._by_address[contact.address]
        contact.host, contact.udp_port = address
        self._by_address[address] = contact.node_id

    def _release_address(self, address: tuple[str, int], node_id: bytes) -> None:
        """
        Remove the contact holding C{address} under another id than
        C{node_id}, if there is one.
        """
        holder = self._by_address.get(address)
        if holder is not None and holder != node_id:
            self.remove_contact(holder)
