"""
Tests for L{p2pblob.dht.node}: how L{DHTNode} joins and rejoins the DHT,
keeps its buckets fresh, expires stored peers, stops and announces, on a
fake clock.

Our node is a real L{KademliaProtocol} and L{DHTNode}.  The nodes it talks
to are real L{KademliaProtocol}s too, on a L{Network} that carries every
datagram in L{LATENCY} seconds of our clock and records what our node
sends.  The remote nodes run on a clock of their own that the tests never
advance: they answer at once, and never send requests of their own (their
pings of requesters never come due).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import itertools
import random
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from p2pblob.dht.constants import (
    DATA_EXPIRATION,
    HASH_LENGTH,
    REFRESH_INTERVAL,
    RPC_TIMEOUT,
)
from p2pblob.dht.contact import Contact
from p2pblob.dht.datastore import PeerStore
from p2pblob.dht.ids import ID_SPACE, id_from_int, id_to_int
from p2pblob.dht.messages import Message, Request, decode_datagram
from p2pblob.dht.node import MAINTENANCE_INTERVAL, MAX_JOIN_DELAY, DHTNode
from p2pblob.dht.peers import compact_peer
from p2pblob.dht.protocol import Address, KademliaProtocol
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from tests.dht._udp import FakeUDPPort

LATENCY = 0.01
"""
Seconds a datagram takes on the simulated network.
"""

OWN_ID = bytes(HASH_LENGTH)
"""
Our node id: 0, so that an id's distance to us is its value.
"""

OUR_ADDRESS: Address = ("45.0.0.1", 4444)
BLOB = hashlib.sha384(b"blob").digest()
TCP_PORT = 3333

TOP = ID_SPACE // 2
"""
The first id of the upper half of the id space, the half without our id.
"""


def address(n: int) -> Address:
    """
    The address of remote node number C{n}.
    """
    return (f"45.1.{n // 250}.{n % 250 + 1}", 4444)


def remote_id(n: int) -> bytes:
    """
    A node id for remote node number C{n}, scattered over the id space.
    """
    return hashlib.sha384(b"remote %d" % n).digest()


def counting_bytes() -> Callable[[int], bytes]:
    """
    A C{random_bytes} for a protocol that gives 1, 2, 3 ... in as many bytes
    as asked: rpc ids, predictable and all different.
    """
    counter = itertools.count(1)
    return lambda size: next(counter).to_bytes(size, "big")


class SimulatedPort(FakeUDPPort):
    """
    A node's UDP port on a L{Network}: what is written to it is carried to
    the node at the destination.
    """

    def __init__(self, network: Network, host: Address) -> None:
        super().__init__(host)
        self.network = network

    def send(self, packet: bytes, address: Address) -> None:
        self.network.carry(self.host, address, packet)


verifyClass(IUDPTransport, SimulatedPort)


class Network:
    """
    Our node and the remote nodes it can reach.

    @ivar sent: C{(time, destination, message)} of every datagram our node
        sent, delivered or not.
    @ivar lost: addresses of nodes that are down or cut off: datagrams to
        or from them are lost.
    @ivar unreachable: when true, our node's port refuses to send at all
        (our side of the network is down: no route).
    @ivar remote_clock: the clock of the remote nodes, never advanced.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.remote_clock = Clock()
        self.sent: list[tuple[float, Address, Message]] = []
        self.lost: set[Address] = set()
        self.unreachable = False
        self._protocols: dict[Address, KademliaProtocol] = {}

    def attach(self, host: Address, protocol: KademliaProtocol) -> None:
        protocol.makeConnection(SimulatedPort(self, host))
        self._protocols[host] = protocol

    def add_remote(
        self, host: Address, node_id: bytes, tokens: TokenKeeper | None = None
    ) -> KademliaProtocol:
        """
        A node at C{host} that answers every request.
        """
        clock = self.remote_clock
        protocol = KademliaProtocol(
            clock, node_id, RoutingTable(node_id, clock), PeerStore(clock),
            tokens or TokenKeeper(clock),
        )
        self.attach(host, protocol)
        return protocol

    def carry(self, source: Address, destination: Address, data: bytes) -> None:
        if source == OUR_ADDRESS:
            if self.unreachable:
                raise OSError(errno.ENETUNREACH, "Network is unreachable")
            self.sent.append((self.clock.seconds(), destination, decode_datagram(data)))
        receiver = self._protocols.get(destination)
        if receiver is None or source in self.lost or destination in self.lost:
            return
        self.clock.callLater(LATENCY, receiver.datagramReceived, data, source)

    def requests(self, method: bytes, since: float = 0.0) -> list[tuple[float, Address, Request]]:
        """
        The requests of C{method} our node sent from time C{since} on.
        """
        return [
            (when, where, message) for when, where, message in self.sent
            if when >= since and isinstance(message, Request) and message.method == method
        ]

    def attempts(self, since: float = 0.0) -> dict[float, list[Address]]:
        """
        Where our node sent pings from time C{since} on, by the time they
        were sent: one entry per attempt to join.
        """
        pinged: dict[float, list[Address]] = {}
        for when, where, _ in self.requests(b"ping", since):
            pinged.setdefault(when, []).append(where)
        return pinged


class RefusingTokens(TokenKeeper):
    """
    The token keeper of a node that refuses every token, as if its secret
    had rotated twice since it gave it.
    """

    def verify(self, token: object, host: str) -> bool:
        return False


class NodeTestCase(SynchronousTestCase):
    """
    Our node on a L{Network}, with a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock)
        self.routing = RoutingTable(OWN_ID, self.clock, rng=random.Random(1))
        self.peers = PeerStore(self.clock)
        self.protocol = KademliaProtocol(
            self.clock, OWN_ID, self.routing, self.peers, TokenKeeper(self.clock),
            random_bytes=counting_bytes(),
        )
        self.network.attach(OUR_ADDRESS, self.protocol)
        # unhandled errors of Deferreds are logged when they are collected:
        # collect them before the test ends, to have them reported by it
        self.addCleanup(gc.collect)

    def make_node(
        self, bootstrap: Iterable[Address] = (), saved: Iterable[Address] = ()
    ) -> DHTNode:
        return DHTNode(self.clock, self.protocol, bootstrap, saved, rng=random.Random(2))

    def know(self, host: Address, node_id: bytes) -> None:
        """
        Put a contact in our routing table, as if it had answered us now.
        """
        self.routing.add_contact(Contact(host[0], host[1], node_id))

    def forget_everyone(self) -> None:
        """
        Empty our routing table.  (Contacts that stop answering become bad
        but stay while there is nobody to replace them, so a lost network
        alone does not empty it.)
        """
        for contact in self.routing.contacts():
            self.routing.remove_contact(contact.node_id)

    def run_until(self, when: float) -> None:
        """
        Advance the clock to C{when}, running each call at the very time
        it is due, as a reactor would.
        """
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls()]
            due = [time for time in due if time <= when]
            if not due:
                break
            self.clock.advance(max(min(due) - self.clock.seconds(), 0))
        self.clock.advance(when - self.clock.seconds())


class SimulatedPortTests(SynchronousTestCase):
    def test_provides_interface(self) -> None:
        verifyObject(IUDPTransport, SimulatedPort(Network(Clock()), OUR_ADDRESS))


class JoinTests(NodeTestCase):
    """
    Joining: ping the saved contacts and the bootstrap nodes, look up our
    own id; while nobody answers, try again after 1, 2, 4 ... seconds, at
    most C{MAX_JOIN_DELAY} apart; join again when the table empties.
    """

    def test_retry_backoff(self) -> None:
        """
        With no bootstrap node answering, each attempt pings every
        bootstrap node once; the next attempt comes 1, 2, 4 ... seconds
        after one failed (its pings timed out), never more than 60 s.
        """
        self.assertEqual(MAX_JOIN_DELAY, 60)
        bootstrap = [address(1), address(2)]
        node = self.make_node(bootstrap)
        node.start()
        self.run_until(230)
        attempts = self.network.attempts()
        starts = list(attempts)
        self.assertEqual(starts, [0, 6, 13, 22, 35, 56, 93, 158, 223])
        self.assertEqual(
            [later - (earlier + RPC_TIMEOUT) for earlier, later in itertools.pairwise(starts)],
            [1, 2, 4, 8, 16, 32, 60, 60],
        )
        self.assertEqual(list(attempts.values()), [bootstrap] * len(starts))
        self.assertEqual(len(self.network.sent), 2 * len(starts), "only pings were sent")
        self.assertFalse(node.joined)

    def test_saved_contacts_first(self) -> None:
        """
        The saved contacts are pinged along with the bootstrap nodes, first
        and each address once.
        """
        node = self.make_node(bootstrap=[address(1), address(2)], saved=[address(2), address(3)])
        node.start()
        self.assertEqual(self.network.attempts(), {0: [address(2), address(3), address(1)]})

    def join_through_bootstrap(self, start_lost: bool = False) -> DHTNode:
        """
        Start a node whose bootstrap node 1 knows nodes 2 and 3.
        """
        bootstrap = self.network.add_remote(address(1), remote_id(1))
        for n in (2, 3):
            self.network.add_remote(address(n), remote_id(n))
            bootstrap.routing.add_contact(Contact(*address(n), remote_id(n)))
        if start_lost:
            self.network.lost.add(address(1))
        node = self.make_node([address(1)])
        node.start()
        return node

    def test_joins_when_bootstrap_answers(self) -> None:
        """
        Once the bootstrap node answers, the node joins: it learns the
        nodes the bootstrap node knows, and stops trying.
        """
        node = self.join_through_bootstrap(start_lost=True)
        self.run_until(15)
        self.assertEqual(list(self.network.attempts()), [0, 6, 13])
        self.assertFalse(node.joined)
        self.network.lost.clear()
        self.run_until(200)
        self.assertTrue(node.joined)
        self.assertEqual(list(self.network.attempts()), [0, 6, 13, 22])
        self.assertEqual(
            {c.node_id for c in self.routing.contacts()}, {remote_id(n) for n in (1, 2, 3)}
        )

    def test_contacted_fires_after_the_pings(self) -> None:
        """
        C{contacted} fires once the bootstrap nodes answered, before the
        lookups that fill the table end; with nobody answering, when the
        pings time out; with no join under way, at once.
        """
        node = self.join_through_bootstrap()
        self.network.lost.add(address(3))  # makes the filling lookups wait
        contacted = node.contacted()
        self.assertNoResult(contacted)
        self.run_until(0.1)
        self.successResultOf(contacted)
        self.assertTrue(node.joined)
        self.assertIsNotNone(node._joining, "still filling the table")

    def test_contacted_when_nobody_answers(self) -> None:
        node = self.make_node([address(1)])
        node.start()
        contacted = node.contacted()
        self.run_until(RPC_TIMEOUT - 0.01)
        self.assertNoResult(contacted)
        self.run_until(RPC_TIMEOUT)
        self.successResultOf(contacted)
        self.assertFalse(node.joined)
        # between attempts: at once
        self.successResultOf(node.contacted())

    def test_backoff_resets_after_join(self) -> None:
        """
        After a join, the next failing attempts start over at 1 s.
        """
        node = self.join_through_bootstrap(start_lost=True)
        self.run_until(15)
        self.network.lost.clear()
        self.run_until(30)
        self.assertTrue(node.joined)
        # the network is lost, and so is every contact; the maintenance of
        # t=60 starts joining again
        self.network.lost.update(address(n) for n in (1, 2, 3))
        self.forget_everyone()
        self.run_until(75)
        self.assertEqual(list(self.network.attempts(since=30)), [60, 66, 73])
        self.assertFalse(node.joined)

    def test_rejoin_when_table_empties(self) -> None:
        """
        The maintenance of every C{MAINTENANCE_INTERVAL} seconds notices
        an empty table, and joins again through the bootstrap nodes.
        """
        self.assertEqual(MAINTENANCE_INTERVAL, 60)
        node = self.join_through_bootstrap()
        self.run_until(10)
        self.assertTrue(node.joined)
        self.forget_everyone()
        self.run_until(MAINTENANCE_INTERVAL - 0.5)
        self.assertEqual(self.network.attempts(since=10), {})
        self.run_until(MAINTENANCE_INTERVAL + 1)
        self.assertEqual(self.network.attempts(since=10), {MAINTENANCE_INTERVAL: [address(1)]})
        self.assertTrue(node.joined)
        self.assertEqual(len(self.routing), 3)

    def test_join_while_joining(self) -> None:
        """
        Asking to join during an attempt gives that attempt.
        """
        node = self.join_through_bootstrap()
        first = node.join()
        self.assertIs(node.join(), first)
        self.run_until(1)
        self.assertIsNone(self.successResultOf(first))
        self.assertEqual(list(self.network.attempts()), [0])


class RefreshTests(NodeTestCase):
    """
    Every maintenance looks up a random id in each bucket that saw no
    activity for C{REFRESH_INTERVAL} seconds.
    """

    def lookups(self, since: float) -> list[tuple[float, bytes]]:
        """
        C{(time, key)} of each C{findNode} our node sent from C{since} on.
        """
        found = []
        for when, _, request in self.network.requests(b"findNode", since):
            [key] = request.args
            assert isinstance(key, bytes)
            found.append((when, key))
        return found

    def lookup_keys(self, since: float) -> set[bytes]:
        return {key for _, key in self.lookups(since)}

    def start(self, ids: list[int]) -> DHTNode:
        """
        Start a node that knows remote nodes with C{ids}, all answering,
        and let it join through them.
        """
        for n, value in enumerate(ids, start=1):
            self.network.add_remote(address(n), id_from_int(value))
            self.know(address(n), id_from_int(value))
        node = self.make_node()
        node.start()
        self.run_until(1)
        self.assertTrue(node.joined)
        return node

    def test_stale_bucket_refreshed(self) -> None:
        """
        A bucket nobody looked into for an hour gets a lookup in its range
        at the next maintenance; a bucket with a contact that answered half
        an hour ago does not.
        """
        self.assertEqual(REFRESH_INTERVAL, 3600)
        # four contacts in the lower half, five in the upper: two buckets
        lower = [n << 370 for n in range(1, 5)]
        upper = [TOP + (n << 370) for n in range(1, 6)]
        self.start(lower + upper)
        self.assertEqual(len(self.routing.buckets()), 2)
        self.run_until(1800)
        pinged = self.protocol.ping(address(1))
        self.run_until(1801)
        self.successResultOf(pinged)
        self.run_until(REFRESH_INTERVAL + 1)
        self.assertEqual(self.lookup_keys(since=2), set())
        self.run_until(REFRESH_INTERVAL + MAINTENANCE_INTERVAL + 1)
        [key] = self.lookup_keys(since=REFRESH_INTERVAL + MAINTENANCE_INTERVAL)
        self.assertGreaterEqual(id_to_int(key), TOP)

    def test_refresh_lookup_refreshes_empty_bucket(self) -> None:
        """
        A refresh lookup refreshes its bucket even if it finds no contact
        for it, so the bucket is not refreshed again at every maintenance
        but an hour later (C{RoutingTable.buckets_to_refresh}: the lookup
        "refreshes it via touch_bucket").
        """
        # nine contacts in the lower half: the upper-half bucket stays empty
        self.start([n << 370 for n in range(1, 5)] + [(TOP // 2) + (n << 370) for n in range(1, 6)])
        [empty] = [bucket for bucket in self.routing.buckets() if len(bucket) == 0]
        self.assertEqual(empty.low, TOP)
        self.run_until(REFRESH_INTERVAL + MAINTENANCE_INTERVAL + 1)
        refreshes = [when for when, key in self.lookups(since=2) if id_to_int(key) >= TOP]
        self.assertNotEqual(refreshes, [], "the empty bucket was not refreshed")
        first = min(refreshes)
        self.run_until(first + 5 * MAINTENANCE_INTERVAL)
        self.assertEqual(
            {key for key in self.lookup_keys(since=first + 1) if id_to_int(key) >= TOP}, set()
        )


class ExpiryTests(NodeTestCase):
    def test_peers_expire_after_24_hours(self) -> None:
        """
        The maintenance removes the peers stored C{DATA_EXPIRATION} seconds
        ago (24 h), and only those.  (The length of the store counts the
        records not removed yet, expired or not.)
        """
        self.assertEqual(DATA_EXPIRATION, 24 * 3600)
        old = compact_peer("46.0.0.1", TCP_PORT, remote_id(1))
        new = compact_peer("46.0.0.2", TCP_PORT, remote_id(2))
        self.peers.add(BLOB, old, remote_id(1))
        self.make_node().start()
        self.run_until(3600)
        self.peers.add(BLOB, new, remote_id(2))
        self.run_until(DATA_EXPIRATION - 1)
        self.assertEqual(len(self.peers), 2)
        self.run_until(DATA_EXPIRATION)
        self.assertEqual(len(self.peers), 1)
        self.assertEqual(self.peers.peers_for(BLOB), [new])


class StopTests(NodeTestCase):
    """
    C{stop} cancels the node's own calls: the maintenance, the retry of a
    join and the rotation of the token secret.  Requests in flight belong
    to the protocol, whose port stops after the node.
    """

    def test_stop_while_joining(self) -> None:
        """
        Stopped while its pings are in flight, the node leaves only their
        timeouts on the clock.
        """
        node = self.make_node([address(1)])
        node.start()
        self.run_until(1)
        node.stop()
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [RPC_TIMEOUT])

    def test_stop_between_attempts(self) -> None:
        """
        Stopped while it waits to try joining again, the node leaves
        nothing on the clock.
        """
        node = self.make_node([address(1)])
        node.start()
        self.run_until(RPC_TIMEOUT + 0.5)
        node.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.run_until(100)
        self.assertEqual(list(self.network.attempts()), [0])

    def test_no_retry_after_stop(self) -> None:
        """
        An attempt to join that fails after the node stopped (its pings
        failing when the port stops) does not schedule another: nothing is
        left on the clock, nothing is sent any more.
        """
        node = self.make_node([address(1)])
        node.start()
        self.run_until(1)
        node.stop()
        self.protocol.doStop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.run_until(200)
        self.assertEqual(list(self.network.attempts()), [0])

    def test_stopped_node_starts_again(self) -> None:
        """
        A stopped node can be started again: it tries to join at once.
        """
        node = self.make_node([address(1)])
        node.start()
        self.run_until(RPC_TIMEOUT + 0.5)
        node.stop()
        node.start()
        self.assertEqual(list(self.network.attempts()), [0, RPC_TIMEOUT + 0.5])


class UnreachableNetworkTests(NodeTestCase):
    """
    When our side of the network is down, sending fails at once
    (C{ENETUNREACH}); lookups and the maintenance must live through it.
    """

    def setUp(self) -> None:
        super().setUp()
        for n in range(1, 4):
            self.network.add_remote(address(n), remote_id(n))
            self.know(address(n), remote_id(n))

    def test_lookup_fails_at_once(self) -> None:
        """
        A lookup whose every request fails as it is sent fires once, with
        no contacts, having asked each contact once.
        """
        self.network.unreachable = True
        node = self.make_node()
        d = node.find_node(BLOB)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(self.protocol.requests_sent, 3)

    def test_maintenance_goes_on(self) -> None:
        """
        Peers still expire after the refresh lookups failed for want of a
        network.
        """
        node = self.make_node()
        node.start()
        self.run_until(1)
        self.peers.add(BLOB, compact_peer("46.0.0.1", TCP_PORT, remote_id(9)), remote_id(9))
        self.network.unreachable = True
        self.run_until(DATA_EXPIRATION + 2 * MAINTENANCE_INTERVAL)
        self.assertEqual(len(self.peers), 0)


class AnnounceTests(NodeTestCase):
    """
    Announcing: a C{findValue} lookup of the blob, then a C{store} with its
    token at each of the closest nodes that gave one.
    """

    def announce(self) -> Deferred[int]:
        d = Deferred.fromCoroutine(self.make_node().announce(BLOB, TCP_PORT))
        self.run_until(RPC_TIMEOUT + 1)
        return d

    def test_announce(self) -> None:
        """
        Of four nodes, one never answers C{findValue} and is sent no
        C{store}; one refuses the token it gave; two store us: the
        announcement counts 2.
        """
        remotes = {n: self.network.add_remote(address(n), remote_id(n)) for n in (1, 2, 4)}
        remotes[3] = self.network.add_remote(
            address(3), remote_id(3), RefusingTokens(self.network.remote_clock)
        )
        for n in range(1, 5):
            self.know(address(n), remote_id(n))
        self.network.lost.add(address(4))
        self.assertEqual(self.successResultOf(self.announce()), 2)
        self.assertEqual(
            {where for _, where, _ in self.network.requests(b"findValue")},
            {address(n) for n in range(1, 5)},
        )
        stores = {where: request for _, where, request in self.network.requests(b"store")}
        self.assertEqual(set(stores), {address(1), address(2), address(3)})
        for n in (1, 2, 3):
            token = remotes[n].tokens.token_for(OUR_ADDRESS[0])
            self.assertEqual(stores[address(n)].args[:3], (BLOB, token, TCP_PORT))
        us = compact_peer(OUR_ADDRESS[0], TCP_PORT, OWN_ID)
        self.assertEqual([remotes[n].peers.peers_for(BLOB) for n in (1, 2)], [[us], [us]])
        self.assertEqual([len(remotes[n].peers) for n in (3, 4)], [0, 0])

    def test_announce_alone(self) -> None:
        """
        With no contact, nothing is sent and the announcement counts 0.
        """
        self.assertEqual(self.successResultOf(self.announce()), 0)
        self.assertEqual(self.network.sent, [])


class LookupCountTests(NodeTestCase):
    """
    L{DHTNode.lookups} counts the iterative lookups the node starts.
    """

    def test_every_kind_counted(self) -> None:
        """
        A lookup of nodes, one of peers and the lookup of an announcement
        each count one, as they start.
        """
        node = self.make_node()
        self.assertEqual(node.lookups, 0)
        self.successResultOf(node.find_node(BLOB))
        self.assertEqual(node.lookups, 1)
        self.successResultOf(node.find_value(BLOB).result)
        self.assertEqual(node.lookups, 2)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(
            node.announce(BLOB, TCP_PORT))), 0)
        self.assertEqual(node.lookups, 3)

    def test_joining_counted(self) -> None:
        """
        Joining counts the lookup of our own id and the one that fills
        each bucket of the routing table (one bucket here).
        """
        self.network.add_remote(address(1), remote_id(1))
        node = self.make_node(bootstrap=[address(1)])
        node.start()
        self.run_until(RPC_TIMEOUT + 1)
        self.assertTrue(node.joined)
        self.assertEqual(len(self.routing.buckets()), 1)
        self.assertEqual(node.lookups, 2)
