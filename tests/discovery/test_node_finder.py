"""
The peer finder of a running node (L{p2pblob.discovery.node_finder}): its
configured peers and its DHT service, on a clock, with a scripted DHT node.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.discovery.combined import CombinedPeerFinder
from p2pblob.discovery.node_finder import DHTServicePeerFinder, node_peer_finder
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.errors import DHTError, InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry
from tests.dht._onions import onion, onion_address
from tests.discovery.test_finders import BLOB, ScriptedNode, peer


class FakeDHTService:
    """
    The parts of a L{p2pblob.dht.service.DHTService} the finder reads.
    """

    def __init__(self) -> None:
        self.node: Any = None
        self.tcp_port: int | None = None
        self.error: Failure | None = None

    def start(self, tcp_port: int = 3333) -> ScriptedNode:
        node = ScriptedNode()
        node.protocol = SimpleNamespace(allow_loopback=True)  # type: ignore[attr-defined]
        self.node, self.tcp_port = node, tcp_port
        return node


class DHTServicePeerFinderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dht = FakeDHTService()
        self.finder = DHTServicePeerFinder(self.clock, self.dht, PeerRegistry(self.clock))

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IPeerFinder, self.finder))

    def test_invalid_hash(self) -> None:
        self.failureResultOf(self.finder.find_peers_for_blob("nope"), InvalidBlobHashError)

    def test_no_node_yet(self) -> None:
        """
        Before the service has a node, nobody is found (and nothing waits).
        """
        self.assertEqual(self.successResultOf(self.finder.find_peers_for_blob(BLOB)), [])

    def test_lookup_on_the_node(self) -> None:
        """
        The service's node is asked; our own peer server on loopback is
        left out.
        """
        node = self.dht.start(tcp_port=3333)
        d = self.finder.find_peers_for_blob(BLOB)
        lookup = node.lookups[0]
        lookup.on_peers([peer("127.0.0.1", 3333), peer("127.0.0.1", 3334)])
        lookup.result.callback([])
        self.assertEqual([p.address for p in self.successResultOf(d)], [("127.0.0.1", 3334)])

    def test_ourselves_at_external_address(self) -> None:
        """
        Behind a router, the DHT names this node at its external address
        (the one it announced from): that peer is left out too, while
        another node at the same address but another port is not.
        """
        external = ["100.128.0.1"]
        finder = DHTServicePeerFinder(self.clock, self.dht, PeerRegistry(self.clock),
                                      external_address=lambda: external[0])
        node = self.dht.start(tcp_port=3333)
        d = finder.find_peers_for_blob(BLOB)
        lookup = node.lookups[0]
        lookup.on_peers([peer("100.128.0.1", 3333), peer("100.128.0.1", 3334),
                         peer("100.128.0.2", 3333)])
        lookup.result.callback([])
        self.assertEqual(sorted(p.address for p in self.successResultOf(d)),
                         [("100.128.0.1", 3334), ("100.128.0.2", 3333)])

    def test_onions(self) -> None:
        """
        A node that reaches onion services asks the DHT for onion peers,
        but never gets its own onion service.
        """
        ours = f"{onion_address(1)}:3333"
        finder = DHTServicePeerFinder(self.clock, self.dht, PeerRegistry(self.clock),
                                      onions=True, own_onion=lambda: ours)
        node = self.dht.start(tcp_port=3333)
        d = finder.find_peers_for_blob(BLOB)
        lookup = node.lookups[0]
        lookup.on_onions([onion(1), onion(1, 3334), onion(2)])
        lookup.result.callback([])
        self.assertEqual([p.address for p in self.successResultOf(d)],
                         [(onion_address(1), 3334), (onion_address(2), 3333)])

    def test_no_onions(self) -> None:
        node = self.dht.start()
        self.finder.find_peers_for_blob(BLOB)
        self.assertIsNone(node.lookups[0].on_onions)

    def test_new_node_after_restart(self) -> None:
        """
        When the service starts again with a new node, the new node is
        asked.
        """
        first = self.dht.start()
        self.finder.find_peers_for_blob(BLOB)
        first.lookups[0].result.callback([])
        second = self.dht.start()
        self.finder.find_peers_for_blob(BLOB)
        self.assertEqual(len(second.lookups), 1)


class NodePeerFinderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_nothing(self) -> None:
        self.assertIsNone(node_peer_finder(self.clock, [], None)())

    def test_configured_peers(self) -> None:
        finder = node_peer_finder(self.clock, [("10.0.0.1", 3333)], None)()
        self.assertIsInstance(finder, StaticPeerFinder)
        assert finder is not None
        found = self.successResultOf(finder.find_peers_for_blob(BLOB))
        self.assertEqual([p.address for p in found], [("10.0.0.1", 3333)])

    def test_dht_only(self) -> None:
        finder = node_peer_finder(self.clock, [], FakeDHTService())()
        self.assertIsInstance(finder, DHTServicePeerFinder)

    def test_both(self) -> None:
        finder = node_peer_finder(self.clock, [("10.0.0.1", 3333)], FakeDHTService())()
        self.assertIsInstance(finder, CombinedPeerFinder)

    def test_onions_passed_on(self) -> None:
        """
        C{onions} (a node with Tor) reaches the DHT's finder.
        """
        for onions in (False, True):
            dht = FakeDHTService()
            node = dht.start()
            finder = node_peer_finder(self.clock, [], dht, onions=onions)()
            assert finder is not None
            finder.find_peers_for_blob(BLOB)
            self.assertEqual(node.lookups[0].on_onions is not None, onions)

    def test_failed_dht_left_out(self) -> None:
        """
        A DHT that could not start finds nobody: only the configured peers
        are left, if any.
        """
        dht = FakeDHTService()
        dht.error = Failure(DHTError("cannot listen"))
        self.assertIsNone(node_peer_finder(self.clock, [], dht)())
        finder = node_peer_finder(self.clock, [("10.0.0.1", 3333)], dht)()
        self.assertIsInstance(finder, StaticPeerFinder)
