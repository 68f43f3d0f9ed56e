"""
A DHT node: iterative lookups, announcing, joining and keeping the routing
table fresh (spec section 7.4).

The lookups follow Kademlia as LBRY runs it: start from the C{K} closest
contacts we know, keep up to C{ALPHA} requests in flight, add every contact
the answers name to a shortlist ordered by distance to the key, and stop
once the C{K} closest contacts of the shortlist have all answered (or
failed).  A value lookup also collects the peers each answer carries,
asking a node that has more pages of peers for the rest, and, if asked to,
the onion endpoints p2pblob nodes list (L{p2pblob.dht.messages.ONIONS_KEY}).

Announcing stores this node at the C{K} closest nodes, with its onion
endpoint if it has one; a node whose IP address peers cannot reach
announces its onion endpoint only, and only to the p2pblob nodes among
them (those whose C{findValue} answer carried the p2pblob marker): an LBRY
node would record the unreachable IP address instead.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.dht.constants import ALPHA, TOKEN_SECRET_REFRESH, K
from p2pblob.dht.contact import Contact
from p2pblob.dht.ids import distance, random_id_in_range
from p2pblob.dht.peers import onion_endpoint
from p2pblob.dht.protocol import Address, KademliaProtocol
from p2pblob.dht.results import FindValueResult

__all__ = ["DHTNode", "Lookup"]

_log = Logger()

# Joining: retry after 1, 2, 4 … seconds, at most this long apart.
MAX_JOIN_DELAY = 60.0
# How often the table is checked for stale buckets, expired peers and a
# lost network.
MAINTENANCE_INTERVAL = 60.0
# Peers per page of a findValue answer (LBRY: K).
PAGE_SIZE = K
# At most this many pages are asked of one node.
MAX_PAGES = 8


class Lookup:
    """
    One iterative lookup of C{key}: for nodes (C{find_value=False}) or for
    the peers of a blob.

    A value lookup given C{on_onions} asks the nodes for onion endpoints
    too, and calls it with those it finds, as C{on_peers} with peers.

    @ivar result: fires with the C{K} closest contacts that answered.
    @ivar peers: the compact peer addresses found, in the order found.
    @ivar onions: the onion endpoints found, in the order found.
    @ivar marked: the node ids of the nodes whose answer carried the
        p2pblob marker (p2pblob nodes).
    @ivar rpcs: how many requests the lookup sent.
    @ivar hops: the longest chain of answers that led to a contact queried.
    """

    def __init__(
        self,
        protocol: KademliaProtocol,
        key: bytes,
        start: Iterable[Contact],
        *,
        find_value: bool = False,
        on_peers: Callable[[list[bytes]], None] | None = None,
        on_onions: Callable[[list[bytes]], None] | None = None,
        k: int = K,
        alpha: int = ALPHA,
    ) -> None:
        self._protocol = protocol
        self.key = key
        self._find_value = find_value
        self._on_peers = on_peers
        self._on_onions = on_onions
        self._k = k
        self._alpha = alpha
        self._shortlist: dict[bytes, Contact] = {}
        self._depth: dict[bytes, int] = {}
        self._queried: set[bytes] = set()
        self._answered: dict[bytes, Contact] = {}
        self._in_flight = 0
        self.tokens: dict[bytes, bytes] = {}
        self.peers: list[bytes] = []
        self._seen_peers: set[bytes] = set()
        self.onions: list[bytes] = []
        self._seen_onions: set[bytes] = set()
        self.marked: set[bytes] = set()
        self.rpcs = 0
        self.hops = 0
        self.result: Deferred[list[Contact]] = Deferred()
        for contact in start:
            self._offer(contact, 0)

    def start(self) -> Deferred[list[Contact]]:
        self._step()
        return self.result

    def _offer(self, contact: Contact, depth: int) -> None:
        node_id = contact.node_id
        if node_id == self._protocol.node_id or node_id in self._shortlist:
            return
        self._shortlist[node_id] = contact
        self._depth[node_id] = depth

    def _closest(self) -> list[Contact]:
        return sorted(self._shortlist.values(), key=lambda c: distance(c.node_id, self.key))

    def _step(self) -> None:
        if self.result.called:
            return
        for contact in self._closest()[: self._k]:
            # (a request that fails at once re-enters _step through _done,
            # which may end the lookup)
            if self._in_flight >= self._alpha or self.result.called:
                break
            if contact.node_id not in self._queried:
                self._query(contact)
        if self._in_flight == 0 and not self.result.called:
            closest = sorted(self._answered.values(), key=lambda c: distance(c.node_id, self.key))
            self.result.callback(closest[: self._k])

    def _query(self, contact: Contact) -> None:
        self._queried.add(contact.node_id)
        self._in_flight += 1
        self.rpcs += 1
        depth = self._depth[contact.node_id]
        self.hops = max(self.hops, depth + 1)
        asked: Deferred[Any]
        if self._find_value:
            asked = self._protocol.find_value(
                contact.address, self.key, onions=self._on_onions is not None
            )
            asked.addCallback(self._value_answer, contact, depth)
        else:
            asked = self._protocol.find_node(contact.address, self.key)
            asked.addCallback(self._node_answer, contact, depth)
        asked.addErrback(self._failed, contact)
        asked.addBoth(self._done)

    def _node_answer(self, contacts: list[Contact], contact: Contact, depth: int) -> None:
        self._answered[contact.node_id] = contact
        for found in contacts:
            self._offer(found, depth + 1)

    def _value_answer(self, result: FindValueResult, contact: Contact, depth: int) -> Deferred[None] | None:
        self._answered[contact.node_id] = contact
        self.tokens[contact.node_id] = result.token
        if result.marked:
            self.marked.add(contact.node_id)
        for triple in result.contacts or ():
            node_id, host, port = triple
            if node_id != self._protocol.node_id and self._protocol._valid(host, port):
                self._offer(Contact(host, port, node_id), depth + 1)
        self._add_page(result)
        if result.pages > 1:
            return self._more_pages(contact, min(result.pages, MAX_PAGES))
        return None

    def _more_pages(self, contact: Contact, pages: int) -> Deferred[None]:
        asked = []
        for page in range(1, pages):
            self.rpcs += 1
            d = self._protocol.find_value(
                contact.address, self.key, page, onions=self._on_onions is not None
            )
            d.addCallbacks(self._add_page, lambda f: None)
            asked.append(d)
        return DeferredList(asked).addCallback(lambda _: None)

    def _add_page(self, result: FindValueResult) -> None:
        self._add_peers(result.peers)
        if self._on_onions is not None:
            self._add_onions(result.onions)

    def _add_peers(self, peers: Sequence[bytes]) -> None:
        new = [p for p in peers if p not in self._seen_peers]
        if not new:
            return
        self._seen_peers.update(new)
        self.peers.extend(new)
        if self._on_peers is not None:
            self._on_peers(new)

    def _add_onions(self, onions: Sequence[bytes]) -> None:
        new = [o for o in dict.fromkeys(onions) if o not in self._seen_onions]
        if not new:
            return
        self._seen_onions.update(new)
        self.onions.extend(new)
        if self._on_onions is not None:
            self._on_onions(new)

    def _failed(self, failure: Failure, contact: Contact) -> None:
        self._shortlist.pop(contact.node_id, None)

    def _done(self, _: object) -> None:
        self._in_flight -= 1
        self._step()


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class DHTNode:
    """
    Our node in the DHT: lookups, announcing, joining and upkeep.

    @param bootstrap: addresses of nodes to join through; a host may be a
        name if C{resolve} is given.
    @param saved: contacts remembered from the last run, tried first.
    @param resolve: turns a host name into an IPv4 address (for example
        C{reactor.resolve}); names are resolved again at every attempt to
        join, so a node started before its network is up joins later.

    @ivar lookups: how many iterative lookups it started (of nodes and of
        peers; those of joining, refreshing and announcing included).
    """

    def __init__(
        self,
        clock: IReactorTime,
        protocol: KademliaProtocol,
        bootstrap: Iterable[Address] = (),
        saved: Iterable[Address] = (),
        rng: random.Random | None = None,
        resolve: Callable[[str], Deferred[str]] | None = None,
    ) -> None:
        self.clock = clock
        self.protocol = protocol
        self.routing = protocol.routing
        self.bootstrap = list(bootstrap)
        self.saved = list(saved)
        self._rng = rng or random.Random()
        self._resolve = resolve
        self._join_delay = 1.0
        self._join_call: IDelayedCall | None = None
        self._joining: Deferred[None] | None = None
        self._maintenance = LoopingCall(self._maintain)
        self._maintenance.clock = clock
        # node id -> (token, when it was given, whether the node is a
        # p2pblob node: its answer carried the marker)
        self._tokens: dict[bytes, tuple[bytes, float, bool]] = {}
        # whether the table was filled since it was last empty
        self._filled = False
        self._running = False
        self._contacted: list[Deferred[None]] = []
        self.lookups = 0

    @property
    def node_id(self) -> bytes:
        return self.protocol.node_id

    @property
    def joined(self) -> bool:
        """
        Whether we know a node of the DHT that is not known to be down
        (through joining, or because others found us).
        """
        return any(not contact.is_bad for contact in self.routing.contacts())

    def start(self) -> None:
        self._running = True
        self.protocol.tokens.start()
        self._maintenance.start(MAINTENANCE_INTERVAL, now=False)
        self.join()

    def stop(self) -> None:
        self._running = False
        if self._maintenance.running:
            self._maintenance.stop()
        if self._join_call is not None and self._join_call.active():
            self._join_call.cancel()
        self._join_call = None
        self.protocol.tokens.stop()

    # joining

    def join(self) -> Deferred[None]:
        """
        Ping the remembered contacts and the bootstrap nodes, then look up
        our own id; while the table stays empty, try again later (after 1,
        2, 4 … seconds, at most a minute apart).
        """
        if self._joining is not None:
            return self._joining
        if self._join_call is not None and self._join_call.active():
            # asked to join now: the scheduled retry is not needed
            self._join_call.cancel()
        self._join_call = None
        joining = Deferred.fromCoroutine(self._join())
        if not joining.called:
            # (a join with nobody to ask is over at once; _join clears this)
            self._joining = joining
        return joining

    async def _join(self) -> None:
        try:
            addresses = list(dict.fromkeys([*self.saved, *await self._bootstrap_addresses()]))
            if not addresses and not len(self.routing):
                # nobody to ask: wait for other nodes to find us
                return
            pings = [self.protocol.ping(address) for address in addresses]
            await DeferredList(pings, consumeErrors=True)
            self._tell_contacted()
            if self.joined:
                await self.find_node(self.node_id)
                if not self._filled:
                    # fill the table: a lookup in every bucket's range, as
                    # Kademlia joins (our own id's lookup only finds the
                    # nodes near us)
                    await self._refresh(self._every_bucket())
        finally:
            self._joining = None
            self._tell_contacted()
        if self.joined:
            if not self._filled:
                _log.info("Joined the DHT: {count} contacts", count=len(self.routing))
            self._filled = True
            self._join_delay = 1.0
        elif self._running:
            self._filled = False
            _log.info(
                "No DHT node answered; trying again in {delay:g} s", delay=self._join_delay
            )
            self._join_call = self.clock.callLater(self._join_delay, self._rejoin)
            self._join_delay = min(self._join_delay * 2, MAX_JOIN_DELAY)

    def contacted(self) -> Deferred[None]:
        """
        Fires once the nodes of the attempt to join under way have answered
        or timed out (at once if none is under way): C{joined} then says
        whether any answered.  A node that only looks things up need not
        wait for the rest of the join (the lookups that fill the routing
        table).
        """
        waiting: Deferred[None] = Deferred()
        if self.joined or self._joining is None:
            waiting.callback(None)
        else:
            self._contacted.append(waiting)
        return waiting

    def _tell_contacted(self) -> None:
        waiting, self._contacted = self._contacted, []
        for d in waiting:
            d.callback(None)

    async def _bootstrap_addresses(self) -> list[Address]:
        addresses = []
        for host, port in self.bootstrap:
            if self._resolve is None or _is_ipv4(host):
                addresses.append((host, port))
                continue
            try:
                addresses.append((await self._resolve(host), port))
            except Exception as e:
                _log.warn(
                    "Cannot find DHT bootstrap node {host}: {error}", host=host, error=e
                )
        return addresses

    def _rejoin(self) -> None:
        self._join_call = None
        self.join()

    # lookups

    def find_node(self, key: bytes) -> Deferred[list[Contact]]:
        """
        The C{K} nodes closest to C{key} that answered.
        """
        # a lookup in a bucket's range refreshes it, whatever it finds
        self.routing.touch_bucket(key, self.clock.seconds())
        return self._lookup(key).start()

    def find_value(
        self,
        key: bytes,
        on_peers: Callable[[list[bytes]], None] | None = None,
        on_onions: Callable[[list[bytes]], None] | None = None,
    ) -> Lookup:
        """
        Start a lookup of the peers of blob C{key}; C{on_peers} is called
        with the compact addresses as they are found.  Given C{on_onions},
        the lookup asks p2pblob nodes for the blob's onion endpoints too,
        and calls it with them as they are found.
        """
        lookup = self._lookup(key, find_value=True, on_peers=on_peers, on_onions=on_onions)
        lookup.start()
        return lookup

    def _lookup(
        self,
        key: bytes,
        find_value: bool = False,
        on_peers: Callable[[list[bytes]], None] | None = None,
        on_onions: Callable[[list[bytes]], None] | None = None,
    ) -> Lookup:
        """
        A lookup of C{key} from the C{K} closest contacts we know, counted
        in L{lookups}; the caller starts it.
        """
        self.lookups += 1
        return Lookup(
            self.protocol, key, self.routing.closest(key, K), find_value=find_value,
            on_peers=on_peers, on_onions=on_onions,
        )

    # announcing

    async def announce(
        self, blob_hash: bytes, tcp_port: int, onion: str | None = None, onion_only: bool = False
    ) -> int:
        """
        Store ourselves as a peer of C{blob_hash} at the C{K} closest nodes;
        return at how many it was stored.

        @param tcp_port: the TCP port of our peer server.
        @param onion: our onion endpoint, C{"<address>.onion:<port>"}, if
            we serve blobs as an onion service too: p2pblob nodes record it
            besides our address (LBRY nodes ignore it).
        @param onion_only: peers cannot reach our IP address: store the
            C{onion} endpoint only, and only at the p2pblob nodes among the
            closest.
        @raise DatagramError: if C{onion} is not an onion endpoint.
        @raise ValueError: if C{onion_only} is set without an C{onion}.
        """
        wire = None if onion is None else onion_endpoint(onion)
        if onion_only and wire is None:
            raise ValueError("an onion-only announcement needs an onion endpoint")
        lookup = self._lookup(blob_hash, find_value=True)
        closest = await lookup.start()
        now = self.clock.seconds()
        for node_id, token in lookup.tokens.items():
            self._tokens[node_id] = (token, now, node_id in lookup.marked)
        stores = []
        for contact in closest:
            entry = self._tokens.get(contact.node_id)
            if entry is None or now - entry[1] > TOKEN_SECRET_REFRESH:
                continue
            token, _, p2pblob = entry
            if onion_only and not p2pblob:
                continue  # (an LBRY node would record our IP address)
            stores.append(self.protocol.store(
                contact.address, blob_hash, token, tcp_port, onion=wire, onion_only=onion_only
            ))
        if onion_only:
            _log.debug(
                "Announcing {blob} by onion endpoint only, to the {count} p2pblob node(s) "
                "of the {closest} closest", blob=blob_hash.hex()[:12], count=len(stores),
                closest=len(closest),
            )
        results = await DeferredList(stores, consumeErrors=True)
        return sum(1 for ok, _ in results if ok)

    # upkeep

    def _maintain(self) -> Deferred[None] | None:
        """
        Every minute: drop expired peers and old tokens; join again if the
        table is empty; refresh the buckets nobody looked into for an hour
        (and our own neighbourhood while we know fewer than C{K} nodes).
        """
        now = self.clock.seconds()
        self.protocol.peers.expire()
        self.protocol.onions.expire()
        self._tokens = {
            node_id: entry for node_id, entry in self._tokens.items()
            if now - entry[1] <= TOKEN_SECRET_REFRESH
        }
        joined = self.joined
        if not joined or not self._filled:
            # the network was lost or never found (join again), or other
            # nodes found us (fill the table through them)
            self._filled = self._filled and joined
            if self._join_call is None and self._joining is None:
                self.join()
            return None
        keys = self.routing.buckets_to_refresh(now)
        if len(self.routing) < K and self.node_id not in keys:
            # a small table: the first nodes of a network joined through
            # a node that knew nobody yet, and nobody looks them up; look
            # for our neighbours again until there are K of them
            keys.append(self.node_id)
        return self._refresh(keys)

    def _every_bucket(self) -> list[bytes]:
        return [
            random_id_in_range(bucket.low, bucket.high, self._rng)
            for bucket in self.routing.buckets()
        ]

    def _refresh(self, keys: list[bytes]) -> Deferred[None]:
        """
        Look up each of C{keys} (random ids in buckets to refresh).
        """
        lookups = [self.find_node(key) for key in keys]
        return DeferredList(lookups, consumeErrors=True).addCallback(lambda _: None)

