"""
An in-memory network of DHT nodes for tests and benchmarks: no sockets, one
process, every datagram delivered by a L{Clock} after a small latency.

Each node is a real L{KademliaProtocol} and L{DHTNode} with a real routing
table, datastore and token keeper; only the transport is simulated.  Hosts
are loopback addresses (127.x.y.z), so the nodes run with
C{allow_loopback=True}.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from p2pblob.dht.datastore import PeerStore
from p2pblob.dht.node import DHTNode
from p2pblob.dht.protocol import Address, KademliaProtocol
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from tests.dht._lbry import LBRYLikeProtocol

UDP_PORT = 4444
TCP_PORT = 3333


@implementer(IReactorTime)
class HeapClock:
    """
    A deterministic clock like L{twisted.internet.task.Clock}, with its calls
    in a heap: the simulation has tens of thousands of pending timeouts,
    and C{Clock} sorts its whole list on every C{callLater}.

    Besides C{callLater}, L{schedule} takes a call that can be neither
    cancelled nor reset, without making a L{DelayedCall} for it: the
    network delivers every datagram that way (most of the calls of a large
    simulation).  Such calls made in time order, as deliveries after a fixed
    latency are, wait in a plain queue instead of the heap.  Calls that fall
    due at the same time run in the order they were made, whichever way
    they were made.
    """

    def __init__(self) -> None:
        self.now = 0.0
        # entries (when, order, DelayedCall, None) or (when, order, function,
        # args); no two have the same order, so only (when, order) is compared
        self._heap: list[tuple[float, int, Any, tuple[Any, ...] | None]] = []
        # scheduled calls in the order of their entries
        self._queue: deque[tuple[float, int, Any, tuple[Any, ...] | None]] = deque()
        self._order = itertools.count()

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(
            self.now + delay, callable, args, kw, self._cancelled, self._reset, seconds=self.seconds
        )
        heapq.heappush(self._heap, (call.getTime(), next(self._order), call, None))
        return call

    def schedule(self, delay: float, callable: Any, *args: Any) -> None:
        """
        Call C{callable(*args)} C{delay} seconds from now, for good: unlike
        C{callLater}, the call cannot be cancelled, and L{getDelayedCalls}
        does not list it.
        """
        entry = (self.now + delay, next(self._order), callable, args)
        if self._queue and entry[0] < self._queue[-1][0]:
            heapq.heappush(self._heap, entry)  # earlier than the queue's last
        else:
            self._queue.append(entry)

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [call for _, _, call, args in self._heap if args is None and call.active()]

    def _cancelled(self, call: DelayedCall) -> None:
        pass  # skipped when its time comes

    def _reset(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.getTime(), next(self._order), call, None))

    def advance(self, amount: float) -> None:
        """
        Move time on by C{amount}, running every call that falls due, in
        order.
        """
        end = self.now + amount
        heap, queue, pop = self._heap, self._queue, heapq.heappop
        while True:
            if queue and (not heap or queue[0] < heap[0]):
                if queue[0][0] > end:
                    break
                when, _, call, args = queue.popleft()
            elif heap and heap[0][0] <= end:
                when, _, call, args = pop(heap)
            else:
                break
            if args is not None:
                if when > self.now:
                    self.now = when
                call(*args)
                continue
            if call.cancelled or call.called or call.getTime() != when:
                continue  # cancelled, or reset to another time
            self.now = max(self.now, when)
            call.called = 1
            call.func(*call.args, **call.kw)
        self.now = end


class SimTransport:
    """
    What a node's protocol writes to: hands each datagram to the network.
    """

    def __init__(self, network: SimNetwork, address: Address) -> None:
        self.network = network
        self.address = address

    def write(self, data: bytes, addr: Any) -> None:
        self.network.send(self.address, (addr[0], addr[1]), data)

    def getHost(self) -> Any:
        return self.address


class SimNetwork:
    """
    Nodes by address, a clock and a deterministic random source.

    @ivar sent: datagrams sent so far (delivered or not).
    """

    def __init__(self, seed: int = 1, latency: float = 0.01) -> None:
        self.clock = HeapClock()
        self.rng = random.Random(seed)
        self.latency = latency
        self.nodes: dict[Address, DHTNode] = {}
        self.sent = 0

    def address(self, number: int) -> Address:
        return (f"127.{number // 62500 % 256}.{number // 250 % 250}.{number % 250 + 1}", UDP_PORT)

    def add_node(
        self, number: int, bootstrap: list[Address] | None = None, lbry: bool = False
    ) -> DHTNode:
        """
        Node C{number} (one that answers as LBRY nodes do, with C{lbry}),
        joining through C{bootstrap}.
        """
        address = self.address(number)
        node_id = self.rng.randbytes(48)
        routing = RoutingTable(node_id, self.clock)
        tokens = TokenKeeper(self.clock, secret_source=self.rng.randbytes)
        kind = LBRYLikeProtocol if lbry else KademliaProtocol
        protocol = kind(
            self.clock, node_id, routing, PeerStore(self.clock), tokens,
            allow_loopback=True, random_bytes=self.rng.randbytes,
        )
        protocol.makeConnection(SimTransport(self, address))  # type: ignore[arg-type]
        node = DHTNode(self.clock, protocol, bootstrap or [], rng=random.Random(self.rng.random()))
        self.nodes[address] = node
        node.start()
        return node

    def remove_node(self, address: Address) -> None:
        node = self.nodes.pop(address)
        node.stop()
        node.protocol.doStop()

    def send(self, source: Address, destination: Address, data: bytes) -> None:
        self.sent += 1
        self.clock.schedule(self.latency, self._deliver, source, destination, data)

    def _deliver(self, source: Address, destination: Address, data: bytes) -> None:
        node = self.nodes.get(destination)
        if node is not None:
            node.protocol.datagramReceived(data, source)

    def run(self, seconds: float) -> None:
        """
        Let C{seconds} of simulated time pass.
        """
        self.clock.advance(seconds)


@dataclass
class LookupFigures:
    """
    What a round of lookups found, and what it cost.
    """

    lookups: int
    found: int
    rpcs: list[int]
    hops: list[int]

    @property
    def success(self) -> float:
        return self.found / self.lookups if self.lookups else 0.0

    def summary(self) -> str:
        rpcs, hops = sorted(self.rpcs), sorted(self.hops)
        return (
            f"{self.found}/{self.lookups} lookups found the announcer ({self.success:.1%}); "
            f"RPCs per lookup median {median(rpcs):g}, 95th percentile {_p95(rpcs):g}; "
            f"hops median {median(hops):g}, 95th percentile {_p95(hops):g}"
        )


def _p95(values: list[int]) -> float:
    return float(values[min(len(values) - 1, int(len(values) * 0.95))]) if values else 0.0


def build_network(
    size: int,
    seed: int = 1,
    batch: int = 50,
    progress: Callable[[SimNetwork], None] | None = None,
    lbry: Callable[[int], bool] = lambda number: False,
) -> SimNetwork:
    """
    A network of C{size} nodes that all joined through node 0, C{batch} at
    a time, then left a minute to settle.

    @param progress: called with the network after every batch (for long
        runs to tell how far they got).
    @param lbry: says which nodes (by number, from 1) answer as LBRY nodes
        do (L{LBRYLikeProtocol}).
    """
    network = SimNetwork(seed)
    network.add_node(0)
    for number in range(1, size):
        network.add_node(number, [network.address(0)], lbry=lbry(number))
        if number % batch == 0:
            network.run(2)
            if progress is not None:
                progress(network)
    network.run(60)
    return network


def announce(network: SimNetwork, count: int) -> list[tuple[bytes, DHTNode]]:
    """
    C{count} random nodes each announce a random blob, all at once.
    """
    nodes = list(network.nodes.values())
    announced = []
    for _ in range(count):
        node = network.rng.choice(nodes)
        key = network.rng.randbytes(48)
        Deferred.fromCoroutine(node.announce(key, TCP_PORT))
        announced.append((key, node))
    network.run(30)
    return announced


def look_up(network: SimNetwork, announced: list[tuple[bytes, DHTNode]]) -> LookupFigures:
    """
    For each announced blob whose announcer is still up, a random node
    looks up its peers, all at once; count those that found the announcer.
    """
    live = [(key, node) for key, node in announced if node in network.nodes.values()]
    nodes = list(network.nodes.values())
    lookups = [(network.rng.choice(nodes).find_value(key), node) for key, node in live]
    network.run(30)
    found = sum(
        1 for lookup, node in lookups
        if any(peer[6:] == node.node_id for peer in lookup.peers)
    )
    return LookupFigures(
        len(lookups), found, [lookup.rpcs for lookup, _ in lookups],
        [lookup.hops for lookup, _ in lookups],
    )


def remove_fraction(network: SimNetwork, fraction: float) -> int:
    """
    Take C{fraction} of the nodes (chosen at random) off the network.
    """
    gone = network.rng.sample(sorted(network.nodes), k=int(len(network.nodes) * fraction))
    for address in gone:
        network.remove_node(address)
    return len(gone)
