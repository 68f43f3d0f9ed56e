"""
Finding peers on the DHT (L{DHTPeerFinder}) and through several finders at
once (L{CombinedPeerFinder}), on a clock, with a scripted DHT node.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.dht.peers import compact_peer
from p2pblob.discovery.combined import CombinedPeerFinder
from p2pblob.discovery.dht import (
    DEFAULT_TIMEOUT,
    REMEMBER_FOUND,
    REMEMBER_NOTHING,
    SETTLE,
    DHTPeerFinder,
)
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.errors import DHTError, InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry
from tests.dht._onions import onion, onion_address
from tests.dht._simnet import TCP_PORT, build_network

BLOB = "ab" * 48
OTHER = "cd" * 48
NODE_ID = b"\x01" * 48


def peer(host: str, port: int) -> bytes:
    return compact_peer(host, port, NODE_ID)


class _Lookup:
    def __init__(self, key: bytes, on_peers: Any, on_onions: Any = None) -> None:
        self.key = key
        self.on_peers = on_peers
        self.on_onions = on_onions
        self.result: Deferred[list[Any]] = Deferred()


class ScriptedNode:
    """
    A DHT node whose lookups the test drives: each call of C{find_value}
    is recorded, and the test reports peers and ends the lookup.
    """

    def __init__(self) -> None:
        self.lookups: list[_Lookup] = []

    def find_value(self, key: bytes, on_peers: Any = None, on_onions: Any = None) -> _Lookup:
        lookup = _Lookup(key, on_peers, on_onions)
        self.lookups.append(lookup)
        return lookup


class OnionPeersTests(SynchronousTestCase):
    """
    A finder told that the node reaches onion services asks for onion
    endpoints and hands them out as peers; otherwise it does not ask.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.node = ScriptedNode()
        self.registry = PeerRegistry(self.clock)

    def test_not_asked(self) -> None:
        finder = DHTPeerFinder(self.clock, self.node, self.registry, allow_loopback=True)
        d = finder.find_peers_for_blob(BLOB)
        [lookup] = self.node.lookups
        self.assertIsNone(lookup.on_onions)
        lookup.on_peers([peer("127.0.0.2", 3333)])
        lookup.result.callback([])
        self.assertEqual([p.address for p in self.successResultOf(d)], [("127.0.0.2", 3333)])

    def test_onion_peers(self) -> None:
        """
        Onion endpoints come out as peers whose host is the onion address,
        the registry's, besides the others; malformed ones, repeats and
        those to ignore are left out.
        """
        ignored = (onion_address(3), 3333)
        finder = DHTPeerFinder(self.clock, self.node, self.registry, allow_loopback=True,
                               onions=True, ignore=lambda host, port: (host, port) == ignored)
        d = finder.find_peers_for_blob(BLOB)
        [lookup] = self.node.lookups
        lookup.on_peers([peer("127.0.0.2", 3333)])
        lookup.on_onions([onion(1), b"bad.onion:1", onion(2, 80), onion(3)])
        lookup.on_onions([onion(1)])
        lookup.result.callback([])
        found = self.successResultOf(d)
        self.assertEqual([p.address for p in found], [
            ("127.0.0.2", 3333), (onion_address(1), 3333), (onion_address(2), 80),
        ])
        self.assertIs(found[1], self.registry.get(onion_address(1), 3333))

    def test_onions_alone(self) -> None:
        """
        Onions found first are given out as soon as any peers are.
        """
        finder = DHTPeerFinder(self.clock, self.node, self.registry, onions=True)
        d = finder.find_peers_for_blob(BLOB)
        self.node.lookups[0].on_onions([onion(1)])
        self.clock.advance(SETTLE)
        self.assertEqual([p.address for p in self.successResultOf(d)], [(onion_address(1), 3333)])


class DHTPeerFinderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = ScriptedNode()
        self.registry = PeerRegistry(self.clock)
        self.finder = DHTPeerFinder(self.clock, self.node, self.registry, allow_loopback=True)

    def results(self, d: Deferred[list[Any]]) -> list[list[Any]]:
        got: list[list[Any]] = []
        d.addCallback(got.append)
        return got

    def addresses(self, peers: list[Any]) -> list[tuple[str, int]]:
        return [p.address for p in peers]

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IPeerFinder, self.finder))

    def test_invalid_hash(self) -> None:
        self.failureResultOf(self.finder.find_peers_for_blob("nope"), InvalidBlobHashError)
        self.assertEqual(self.node.lookups, [])

    def test_peers_as_soon_as_found(self) -> None:
        """
        The caller gets the first peers a short moment after they arrive,
        while the lookup is still running, with those that came meanwhile.
        """
        got = self.results(self.finder.find_peers_for_blob(BLOB))
        [lookup] = self.node.lookups
        self.assertEqual(lookup.key, bytes.fromhex(BLOB))
        self.clock.advance(2)
        lookup.on_peers([peer("127.0.0.2", 3333)])
        self.assertEqual(got, [])
        lookup.on_peers([peer("127.0.0.3", 3334)])
        self.clock.advance(SETTLE)
        self.assertEqual(
            [self.addresses(g) for g in got], [[("127.0.0.2", 3333), ("127.0.0.3", 3334)]]
        )
        self.assertFalse(lookup.result.called)

    def test_peers_are_the_registrys(self) -> None:
        got = self.results(self.finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].on_peers([peer("127.0.0.2", 3333)])
        self.node.lookups[0].result.callback([])
        self.assertIs(got[0][0], self.registry.get("127.0.0.2", 3333))

    def test_one_lookup_at_a_time(self) -> None:
        """
        Callers asking while a lookup runs share it; a second blob gets its
        own lookup.
        """
        first = self.results(self.finder.find_peers_for_blob(BLOB))
        second = self.results(self.finder.find_peers_for_blob(BLOB))
        self.results(self.finder.find_peers_for_blob(OTHER))
        self.assertEqual(len(self.node.lookups), 2)
        self.node.lookups[0].on_peers([peer("127.0.0.2", 3333)])
        self.node.lookups[0].result.callback([])
        self.assertEqual(len(first[0]), 1)
        self.assertEqual(len(second[0]), 1)

    def test_running_lookup_gives_what_it_has(self) -> None:
        self.results(self.finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].on_peers([peer("127.0.0.2", 3333)])
        self.clock.advance(SETTLE)
        later = self.successResultOf(self.finder.find_peers_for_blob(BLOB))
        self.assertEqual(self.addresses(later), [("127.0.0.2", 3333)])
        self.assertEqual(len(self.node.lookups), 1)

    def test_timeout(self) -> None:
        """
        A lookup that finds nobody and does not end leaves the caller
        waiting C{timeout} seconds at most, with nothing.
        """
        got = self.results(self.finder.find_peers_for_blob(BLOB))
        self.clock.advance(DEFAULT_TIMEOUT - 0.1)
        self.assertEqual(got, [])
        self.clock.advance(0.1)
        self.assertEqual(got, [[]])

    def test_remembered(self) -> None:
        """
        A finished lookup's peers are given from memory for a minute; then
        the DHT is asked again.
        """
        self.results(self.finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].on_peers([peer("127.0.0.2", 3333)])
        self.node.lookups[0].result.callback([])
        self.clock.advance(REMEMBER_FOUND - 1)
        self.assertEqual(len(self.successResultOf(self.finder.find_peers_for_blob(BLOB))), 1)
        self.assertEqual(len(self.node.lookups), 1)
        self.clock.advance(1)
        self.results(self.finder.find_peers_for_blob(BLOB))
        self.assertEqual(len(self.node.lookups), 2)

    def test_nothing_found_asked_again_sooner(self) -> None:
        self.results(self.finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].result.callback([])
        self.assertEqual(self.successResultOf(self.finder.find_peers_for_blob(BLOB)), [])
        self.clock.advance(REMEMBER_NOTHING)
        self.results(self.finder.find_peers_for_blob(BLOB))
        self.assertEqual(len(self.node.lookups), 2)

    def test_lookup_over_at_once(self) -> None:
        """
        A node with an empty routing table ends its lookup at once.
        """
        node = ScriptedNode()

        def over(key: bytes, on_peers: Any = None) -> _Lookup:
            lookup = _Lookup(key, on_peers)
            lookup.result.callback([])
            return lookup

        node.find_value = over  # type: ignore[method-assign]
        finder = DHTPeerFinder(self.clock, node, self.registry)
        self.assertEqual(self.successResultOf(finder.find_peers_for_blob(BLOB)), [])

    def test_failed_lookup(self) -> None:
        got = self.results(self.finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].on_peers([peer("127.0.0.2", 3333)])
        self.node.lookups[0].result.errback(DHTError("the DHT stopped"))
        self.assertEqual(len(got[0]), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_unusable_peers_left_out(self) -> None:
        """
        Duplicates, malformed addresses, ignored addresses and (unless
        allowed) loopback and private addresses are not handed out.
        """
        finder = DHTPeerFinder(
            self.clock, self.node, self.registry,
            ignore=lambda host, port: (host, port) == ("8.8.4.4", 3333),
        )
        got = self.results(finder.find_peers_for_blob(BLOB))
        self.node.lookups[0].on_peers([
            peer("8.8.8.8", 3333),
            peer("8.8.8.8", 3333),
            peer("8.8.4.4", 3333),
            peer("127.0.0.1", 3333),
            peer("192.168.1.2", 3333),
            b"\x00" * 7,
        ])
        self.node.lookups[0].result.callback([])
        self.assertEqual(self.addresses(got[0]), [("8.8.8.8", 3333)])

    def test_stop_answers_waiting_callers(self) -> None:
        got = self.results(self.finder.find_peers_for_blob(BLOB))
        self.finder.stop()
        self.assertEqual(got, [[]])
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])


class _Failing:
    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        return fail(DHTError("broken"))


class CombinedPeerFinderTests(SynchronousTestCase):
    def test_union_in_order(self) -> None:
        registry = PeerRegistry(Clock())
        first = StaticPeerFinder(registry, [("127.0.0.1", 1), ("127.0.0.1", 2)])
        second = StaticPeerFinder(registry, [("127.0.0.1", 2), ("127.0.0.1", 3)])
        combined = CombinedPeerFinder([first, second])
        self.assertTrue(verifyObject(IPeerFinder, combined))
        found = self.successResultOf(combined.find_peers_for_blob(BLOB))
        self.assertEqual([p.address[1] for p in found], [1, 2, 3])

    def test_a_failing_finder_is_left_out(self) -> None:
        registry = PeerRegistry(Clock())
        combined = CombinedPeerFinder(
            [_Failing(), StaticPeerFinder(registry, [("127.0.0.1", 1)])]  # type: ignore[list-item]
        )
        found = self.successResultOf(combined.find_peers_for_blob(BLOB))
        self.assertEqual([p.address for p in found], [("127.0.0.1", 1)])

    def test_invalid_hash(self) -> None:
        self.failureResultOf(
            CombinedPeerFinder([]).find_peers_for_blob("xyz"), InvalidBlobHashError
        )


class FinderOnSimulatedNetworkTests(SynchronousTestCase):
    """
    L{DHTPeerFinder} over real lookups of an in-memory network of DHT
    nodes.
    """

    def test_finds_the_announcer(self) -> None:
        network = build_network(60, seed=7)
        nodes = list(network.nodes.items())
        (host, _), announcer = nodes[17]
        _, searcher = nodes[42]
        blob = network.rng.randbytes(48)
        stored = Deferred.fromCoroutine(announcer.announce(blob, TCP_PORT))
        network.run(10)
        self.assertGreater(self.successResultOf(stored), 0)
        finder = DHTPeerFinder(
            network.clock, searcher, PeerRegistry(network.clock), allow_loopback=True
        )
        found = finder.find_peers_for_blob(blob.hex())
        network.run(10)
        self.assertEqual([p.address for p in self.successResultOf(found)], [(host, TCP_PORT)])
