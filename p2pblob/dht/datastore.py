"""
What a DHT node stores for others: for each blob hash, the peers that
announced it with C{store} (spec section 7.4), and the onion endpoints that
p2pblob nodes announced with it (L{p2pblob.dht.messages.ONION_KEY}), for
L{DATA_EXPIRATION} seconds after their last announcement.

The stores live in memory and are bounded: per blob and in total.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

from p2pblob.dht.constants import COMPACT_PEER_SIZE, DATA_EXPIRATION
from p2pblob.dht.ids import check_id
from p2pblob.dht.peers import decode_onion_endpoint
from p2pblob.errors import DatagramError

__all__ = ["OnionStore", "PeerStore"]

_ENDPOINT_LENGTH = 6  # IPv4 address and TCP port at the head of a compact address


class _Record:
    """
    One announcement: a peer holds a blob.

    @ivar value: what is handed out: the peer's 54-byte compact address, or
        its onion endpoint.
    @ivar node_id: the publisher node id given in the C{store} request (of
        a peer), or the node id of the node that stored it (of an onion).
    @ivar stored_at: when it was last announced to us.
    """

    __slots__ = ("node_id", "stored_at", "value")

    def __init__(self, value: bytes, node_id: bytes, stored_at: float) -> None:
        self.value = value
        self.node_id = node_id
        self.stored_at = stored_at


class _AnnouncementStore:
    """
    Announcements by blob hash, each under an endpoint: an announcement
    from an endpoint already recorded for the blob replaces that record
    (refreshing its time), so no endpoint is listed twice.

    Records are kept in the order they were last stored, which is the
    order of their age as long as the times given to L{_put} do not go
    backwards.  When a blob already has C{max_per_blob} records, a new
    endpoint for it pushes out that blob's oldest record; when the store
    holds C{max_total} records, a new one pushes out the oldest record of
    all.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_per_blob: int = 1000,
        max_total: int = 1_000_000,
    ) -> None:
        """
        @param clock: tells the time records are stored and expire at.
        @param max_per_blob: the most records kept for one blob.
        @param max_total: the most records kept in all.
        @raise ValueError: if a bound is not positive.
        """
        if max_per_blob < 1 or max_total < 1:
            raise ValueError("the bounds of a peer store must be positive")
        self._clock = clock
        self._max_per_blob = max_per_blob
        self._max_total = max_total
        self._blobs: dict[bytes, OrderedDict[bytes, _Record]] = {}
        # every (blob hash, endpoint), least recently stored first
        self._age: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()

    def __len__(self) -> int:
        """
        @return: how many records are held, counting expired ones that
            L{expire} has not removed yet.
        """
        return len(self._age)

    def blob_count(self) -> int:
        """
        @return: how many blob hashes have records.
        """
        return len(self._blobs)

    def _put(
        self, blob_hash: bytes, endpoint: bytes, value: bytes, node_id: bytes, now: float | None
    ) -> bool:
        """
        Record C{value} for C{blob_hash} under C{endpoint}; C{True} if the
        endpoint is new for this blob.
        """
        if now is None:
            now = self._clock.seconds()
        key = (blob_hash, endpoint)
        records = self._blobs.get(blob_hash)
        if records is not None and endpoint in records:
            record = records[endpoint]
            record.value = value
            record.node_id = node_id
            record.stored_at = now
            records.move_to_end(endpoint)
            self._age.move_to_end(key)
            return False
        if records is not None and len(records) >= self._max_per_blob:
            self._forget(blob_hash, next(iter(records)))
        if len(self._age) >= self._max_total:
            self._forget(*next(iter(self._age)))
        records = self._blobs.setdefault(blob_hash, OrderedDict())
        records[endpoint] = _Record(value, node_id, now)
        self._age[key] = None
        return True

    def _live(self, blob_hash: bytes) -> list[tuple[bytes, _Record]]:
        """
        The endpoints and records of C{blob_hash} stored less than
        L{DATA_EXPIRATION} seconds ago, the most recently stored first.
        """
        records = self._blobs.get(blob_hash)
        if not records:
            return []
        oldest = self._clock.seconds() - DATA_EXPIRATION
        return [
            (endpoint, record) for endpoint, record in reversed(records.items())
            if record.stored_at > oldest
        ]

    def expire(self) -> int:
        """
        Remove the records announced L{DATA_EXPIRATION} seconds ago or
        earlier.

        @return: how many were removed.
        """
        oldest = self._clock.seconds() - DATA_EXPIRATION
        removed = 0
        while self._age:
            blob_hash, endpoint = next(iter(self._age))
            if self._blobs[blob_hash][endpoint].stored_at > oldest:
                break
            self._forget(blob_hash, endpoint)
            removed += 1
        return removed

    def _forget(self, blob_hash: bytes, endpoint: bytes) -> None:
        records = self._blobs[blob_hash]
        del records[endpoint]
        if not records:
            del self._blobs[blob_hash]
        del self._age[(blob_hash, endpoint)]


class PeerStore(_AnnouncementStore):
    """
    The peers announced to us, by blob hash.

    A peer is identified by its endpoint, the IPv4 address and TCP port at
    the head of its compact address: an announcement from an endpoint
    already recorded for the blob replaces that record (refreshing its time,
    and taking the new node id if the peer restarted with another one), so
    no endpoint is listed twice.

    Records are kept in the order they were last stored, which is the
    order of their age as long as the times given to L{add} do not go
    backwards.  When a blob already has C{max_per_blob} records, a new
    peer for it pushes out that blob's oldest record; when the store holds
    C{max_total} records, a new one pushes out the oldest record of all.
    """

    def add(
        self,
        blob_hash: bytes,
        compact_address: bytes,
        publisher_id: bytes,
        now: float | None = None,
    ) -> bool:
        """
        Record that the peer at C{compact_address} holds C{blob_hash}.

        @param blob_hash: the 48-byte hash announced.
        @param compact_address: the peer's 54-byte compact address (IPv4,
            TCP port, node id).
        @param publisher_id: the 48-byte publisher id of the C{store}.
        @param now: the time of the announcement; the clock's by default.
        @return: C{True} if the peer is new for this blob, C{False} if an
            existing record was refreshed.
        @raise ValueError: if an argument has the wrong length or type.
        """
        check_id(blob_hash)
        check_id(publisher_id)
        if not isinstance(compact_address, bytes) or len(compact_address) != COMPACT_PEER_SIZE:
            raise ValueError(f"a compact address must be {COMPACT_PEER_SIZE} bytes")
        return self._put(
            blob_hash, compact_address[:_ENDPOINT_LENGTH], compact_address, publisher_id, now
        )

    def peers_for(self, blob_hash: bytes, exclude_host: str | None = None) -> list[bytes]:
        """
        @param blob_hash: the blob searched for.
        @param exclude_host: an IPv4 address whose records to leave out,
            typically the requester's own.
        @return: the compact addresses of the peers that announced
            C{blob_hash} less than L{DATA_EXPIRATION} seconds ago, the most
            recently announced first.
        """
        excluded = _packed(exclude_host) if exclude_host is not None else None
        return [
            record.value for endpoint, record in self._live(blob_hash)
            if endpoint[:4] != excluded
        ]


class OnionStore(_AnnouncementStore):
    """
    The onion endpoints announced to us, by blob hash: those p2pblob nodes
    gave in their C{store} requests (L{p2pblob.dht.messages.ONION_KEY}),
    with the node id of the node that stored each.

    Expiry and bounds are those of L{PeerStore}, an onion endpoint taking
    the place of a peer's IPv4 address and port: storing an endpoint
    already recorded for the blob refreshes that record (and takes the new
    node id).
    """

    def add(
        self, blob_hash: bytes, onion: bytes, node_id: bytes, now: float | None = None
    ) -> bool:
        """
        Record that the peer serving at onion endpoint C{onion} holds
        C{blob_hash}.

        @param blob_hash: the 48-byte hash announced.
        @param onion: C{b"<56 base32 characters>.onion:<port>"}.
        @param node_id: the 48-byte node id of the node that stored it.
        @param now: the time of the announcement; the clock's by default.
        @return: C{True} if the endpoint is new for this blob, C{False} if
            an existing record was refreshed.
        @raise ValueError: if an argument is malformed.
        """
        check_id(blob_hash)
        check_id(node_id)
        try:
            decode_onion_endpoint(onion)
        except DatagramError as e:
            raise ValueError(e.reason) from None
        return self._put(blob_hash, onion, onion, node_id, now)

    def onions_for(self, blob_hash: bytes, exclude_node: bytes | None = None) -> list[bytes]:
        """
        @param blob_hash: the blob searched for.
        @param exclude_node: a node id whose records to leave out,
            typically the requester's own.
        @return: the onion endpoints announced for C{blob_hash} less than
            L{DATA_EXPIRATION} seconds ago, the most recently announced
            first.
        """
        return [
            record.value for _, record in self._live(blob_hash)
            if record.node_id != exclude_node
        ]


def _packed(host: str) -> bytes | None:
    """
    @return: the 4 bytes of IPv4 address C{host}, or C{None} if it is not
        one.
    """
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        return None
