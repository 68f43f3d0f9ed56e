"""
How a running node finds the peers of a blob: the peers of its
configuration and those its DHT service names, for its downloads.

The DHT service starts after the peer server listens, and may be
restarted; L{DHTServicePeerFinder} therefore looks at the service's node on
every request, and names no peers while there is none (a download asks
again a second later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.blob.hashing import check_blob_hash
from p2pblob.config import is_loopback
from p2pblob.dht.node import DHTNode
from p2pblob.discovery.combined import CombinedPeerFinder
from p2pblob.discovery.dht import DHTPeerFinder
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.errors import InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry

__all__ = ["DHTServicePeerFinder", "node_peer_finder"]


class _DHT(Protocol):
    """
    What is used of a L{p2pblob.dht.service.DHTService}.
    """

    @property
    def node(self) -> DHTNode | None: ...

    @property
    def tcp_port(self) -> int | None: ...

    @property
    def error(self) -> Failure | None: ...


@implementer(IPeerFinder)
class DHTServicePeerFinder:
    """
    The peers the DHT node of a DHT service names for a blob (as
    L{DHTPeerFinder} finds them), but never this node's own peer server (on
    loopback, at its external address, or at its onion endpoint: the DHT
    names the node among the peers of the blobs it announced); none while
    the service has no node.

    @param dht: a L{p2pblob.dht.service.DHTService}.
    @param registry: gives the L{p2pblob.peer.peer.Peer} of an address.
    @param external_address: gives the address peers on the internet reach
        this node at, if known (L{p2pblob.reach.reachability.Reachability}).
    @param onions: whether the node reaches onion services: the DHT is
        then asked for the onion endpoints of blobs too.
    @param own_onion: gives this node's onion endpoint
        (C{"<address>.onion:<port>"}), if it has one.
    """

    def __init__(
        self,
        clock: IReactorTime,
        dht: _DHT,
        registry: PeerRegistry,
        external_address: Callable[[], str | None] = lambda: None,
        onions: bool = False,
        own_onion: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._clock = clock
        self._dht = dht
        self._registry = registry
        self._external_address = external_address
        self._onions = onions
        self._own_onion = own_onion
        self._finder: DHTPeerFinder | None = None
        self._node: DHTNode | None = None

    def _ours(self, host: str, port: int) -> bool:
        if host.endswith(".onion"):
            return f"{host}:{port}" == self._own_onion()
        if port != self._dht.tcp_port:
            return False
        return is_loopback(host) or host == self._external_address()

    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        try:
            check_blob_hash(blob_hash)
        except InvalidBlobHashError as e:
            return fail(e)
        node = self._dht.node
        if node is None:
            return succeed([])
        if node is not self._node or self._finder is None:
            # a node of its own for each start of the service
            self._node = node
            self._finder = DHTPeerFinder(
                self._clock, node, self._registry,
                allow_loopback=node.protocol.allow_loopback, ignore=self._ours,
                onions=self._onions,
            )
        return self._finder.find_peers_for_blob(blob_hash)


def node_peer_finder(
    clock: IReactorTime,
    peers: Iterable[tuple[str, int]],
    dht: _DHT | None,
    registry: PeerRegistry | None = None,
    external_address: Callable[[], str | None] = lambda: None,
    onions: bool = False,
    own_onion: Callable[[], str | None] = lambda: None,
) -> Callable[[], IPeerFinder | None]:
    """
    What the download service of a node calls to get its peer finder: one
    that asks the configured C{peers} and the C{dht} service, if any (and
    if it did not fail to start), or L{None} when there is neither.  The
    DHT's answers leave out this node itself (on loopback, at its
    C{external_address()} or at C{own_onion()}); with C{onions} (a node
    that reaches onion services), they include the onion endpoints p2pblob
    nodes know.

    One L{PeerRegistry} (C{registry}, or a new one) serves every download:
    what one learns about a peer, the others know.
    """
    if registry is None:
        registry = PeerRegistry(clock)
    addresses = list(peers)
    static = StaticPeerFinder(registry, addresses) if addresses else None
    on_dht = (
        DHTServicePeerFinder(clock, dht, registry, external_address, onions, own_onion)
        if dht is not None else None
    )

    def finder() -> IPeerFinder | None:
        finders: list[IPeerFinder] = []
        if static is not None:
            finders.append(static)
        if on_dht is not None and dht is not None and dht.error is None:
            finders.append(on_dht)
        if not finders:
            return None
        return finders[0] if len(finders) == 1 else CombinedPeerFinder(finders)

    return finder
