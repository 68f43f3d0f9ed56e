"""
Finding the peers of a blob on the DHT.

A lookup takes a few round trips and may run for several seconds when
nodes on the way do not answer, while a download asks for peers every
second or so.  L{DHTPeerFinder} therefore runs at most one lookup per blob at
a time, hands its peers over as soon as some are found (a download should
not wait for the slowest node of the lookup), and remembers the result for a
while.

A finder told that the node can reach onion services (through Tor) asks
p2pblob nodes for the onion endpoints of the blob too, and hands them out as
peers whose host is C{"<address>.onion"}; the download's dialer reaches
them through Tor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.blob.hashing import check_blob_hash
from p2pblob.dht.addresses import is_valid_address
from p2pblob.dht.peers import decode_compact_peer, decode_onion_endpoint
from p2pblob.errors import DatagramError, InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import Peer, PeerRegistry

__all__ = ["DHTPeerFinder"]

_log = Logger()

# A caller waits at most this long for the first peers of a lookup.
DEFAULT_TIMEOUT = 15.0
# Once a lookup found a first peer, more usually follow within this time;
# the caller gets them together.
SETTLE = 0.3
# What a finished lookup found is given out this long before a new lookup
# (a lookup that found nobody is repeated sooner: the blob may have been
# announced since).
REMEMBER_FOUND = 60.0
REMEMBER_NOTHING = 5.0


class _Lookup(Protocol):
    result: Deferred[Any]


class _Node(Protocol):
    def find_value(
        self,
        key: bytes,
        on_peers: Callable[[list[bytes]], None] | None = None,
        on_onions: Callable[[list[bytes]], None] | None = None,
    ) -> _Lookup: ...


class _Search:
    """
    One lookup of the peers of a blob and the callers waiting for it.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.ended: float | None = None
        self.peers: list[Peer] = []
        self.waiting: list[tuple[Deferred[list[Any]], IDelayedCall]] = []
        self.settling: IDelayedCall | None = None


@implementer(IPeerFinder)
class DHTPeerFinder:
    """
    The peers the DHT names for a blob.

    @param node: a L{p2pblob.dht.node.DHTNode} (or anything with its
        C{find_value}).
    @param registry: gives the L{Peer} of an address, so that what the
        downloads learn about a peer is kept whoever found it.
    @param allow_loopback: accept peers on 127.0.0.0/8 (local swarms).
    @param ignore: addresses never returned (our own peer server, and our
        own onion service).
    @param timeout: the longest a caller waits for the first peers.
    @param onions: whether to ask for the onion endpoints of blobs too and
        return them as peers (only for a node that reaches onion services).
    """

    def __init__(
        self,
        clock: IReactorTime,
        node: _Node,
        registry: PeerRegistry,
        *,
        allow_loopback: bool = False,
        ignore: Callable[[str, int], bool] = lambda host, port: False,
        timeout: float = DEFAULT_TIMEOUT,
        onions: bool = False,
    ) -> None:
        self._clock = clock
        self._node = node
        self._onions = onions
        self._registry = registry
        self._allow_loopback = allow_loopback
        self._ignore = ignore
        self.timeout = timeout
        self._searches: dict[str, _Search] = {}
        self.lookups = 0

    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        """
        The peers found for C{blob_hash}: as soon as a lookup found some
        (or ended, or C{timeout} passed), then from memory for a minute.
        """
        try:
            check_blob_hash(blob_hash)
        except InvalidBlobHashError as e:
            return fail(e)
        now = self._clock.seconds()
        search = self._searches.get(blob_hash)
        if search is not None and search.ended is not None:
            remember = REMEMBER_FOUND if search.peers else REMEMBER_NOTHING
            if now - search.ended < remember:
                return succeed(list(search.peers))
            search = None
        if search is None:
            search = self._start(blob_hash, now)
            if search.ended is not None:
                return succeed(list(search.peers))
        elif search.peers and search.settling is None:
            # a running lookup that already found peers
            return succeed(list(search.peers))
        waiter: Deferred[list[Any]] = Deferred()
        timer = self._clock.callLater(self.timeout, self._give, search, waiter)
        search.waiting.append((waiter, timer))
        return waiter

    def _start(self, blob_hash: str, now: float) -> _Search:
        self._forget_old(now)
        search = self._searches[blob_hash] = _Search(now)
        self.lookups += 1
        key = bytes.fromhex(blob_hash)
        if self._onions:
            lookup = self._node.find_value(
                key, lambda found: self._found(search, found),
                on_onions=lambda found: self._found_onions(search, found),
            )
        else:
            lookup = self._node.find_value(key, lambda found: self._found(search, found))

        def ended(result: object) -> None:
            search.ended = self._clock.seconds()
            if isinstance(result, Failure):
                _log.warn(
                    "The DHT lookup of {blob} failed: {error}",
                    blob=blob_hash[:12], error=result.value,
                )
            self._give_all(search)

        lookup.result.addBoth(ended)
        return search

    def _found(self, search: _Search, found: list[bytes]) -> None:
        addresses = []
        for compact in found:
            try:
                host, port, _ = decode_compact_peer(compact)
            except DatagramError:
                continue
            if is_valid_address(host, port, self._allow_loopback):
                addresses.append((host, port))
        self._add(search, addresses)

    def _found_onions(self, search: _Search, found: list[bytes]) -> None:
        addresses = []
        for onion in found:
            try:
                addresses.append(decode_onion_endpoint(onion))
            except DatagramError:
                continue
        self._add(search, addresses)

    def _add(self, search: _Search, addresses: list[tuple[str, int]]) -> None:
        known = {peer.address for peer in search.peers}
        for host, port in addresses:
            if (host, port) in known or self._ignore(host, port):
                continue
            known.add((host, port))
            search.peers.append(self._registry.get(host, port))
        if search.peers and search.waiting and search.settling is None:
            search.settling = self._clock.callLater(SETTLE, self._give_all, search)

    def _give_all(self, search: _Search) -> None:
        if search.settling is not None and search.settling.active():
            search.settling.cancel()
        search.settling = None
        waiting, search.waiting = search.waiting, []
        for waiter, timer in waiting:
            if timer.active():
                timer.cancel()
            waiter.callback(list(search.peers))

    def _give(self, search: _Search, waiter: Deferred[list[Any]]) -> None:
        search.waiting = [(w, t) for w, t in search.waiting if w is not waiter]
        waiter.callback(list(search.peers))

    def _forget_old(self, now: float) -> None:
        old = [
            blob_hash for blob_hash, search in self._searches.items()
            if search.ended is not None and now - search.ended >= REMEMBER_FOUND
        ]
        for blob_hash in old:
            del self._searches[blob_hash]

    def stop(self) -> None:
        """
        Answer every waiting caller with what was found so far.
        """
        for search in self._searches.values():
            self._give_all(search)
