"""
How L{p2pblob.node.make_node} puts a node together for each way of being
reached: built (not started) on a memory reactor.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.config import Config
from p2pblob.node import Node, make_node
from p2pblob.reach.reachability import MappingWhenListening
from p2pblob.reach.tor import TorProvider


class ReachPartsTests(SynchronousTestCase):
    def node(self, **settings: object) -> Node:
        config = Config(data_dir=Path(self.mktemp()), **settings)  # type: ignore[arg-type]
        return make_node(MemoryReactorClock(), config)

    def test_direct(self) -> None:
        """
        By default: no Tor, no port mapping, a DHT, and a node that counts
        itself reachable.
        """
        node = self.node()
        self.assertIsNone(node.tor)
        self.assertIsNone(node.port_mapper)
        self.assertIsNone(node.onion_server)
        self.assertIsNotNone(node.dht)
        self.assertEqual(node.peer_server.endpoint, "tcp:3333")
        self.assertTrue(node.reach.reachable)

    def test_upnp(self) -> None:
        """
        With UPnP the node's reachability is the mapper's.
        """
        node = self.node(upnp=True)
        self.assertIsInstance(node.port_mapper, MappingWhenListening)
        self.assertIs(node.reach.mapper, node.port_mapper)
        self.assertFalse(node.reach.reachable)  # nothing mapped yet
        self.assertIn(node.port_mapper, list(node))

    def test_tor(self) -> None:
        """
        With C{--tor} the peer server listens on its endpoint and, beside
        it, as an onion service; the DHT stays.
        """
        node = self.node(tor=True)
        self.assertIsInstance(node.tor, TorProvider)
        self.assertEqual(node.peer_server.endpoint, "tcp:3333")
        assert node.onion_server is not None
        self.assertNotIsInstance(node.onion_server.endpoint, str)
        self.assertEqual(node.onion_server.name, "onion-peer-server")
        self.assertIsNotNone(node.dht)
        self.assertTrue(node.reach.reachable)

    def test_tor_only(self) -> None:
        """
        With C{--tor-only} the peer server is an onion service only, and
        there is no DHT nor announcer.
        """
        node = self.node(tor_only=True, bootstrap=(("127.0.0.1", 4444),))
        self.assertIsInstance(node.tor, TorProvider)
        self.assertNotIsInstance(node.peer_server.endpoint, str)
        self.assertIsNone(node.onion_server)
        self.assertIsNone(node.dht)
        self.assertIsNone(node.announcer)

    def test_onion_endpoint(self) -> None:
        """
        With C{--peer-listen onion:PORT} the peer server is an onion
        service only: the node's address is not reachable (it announces its
        onion only), and its DHT listens on every interface, on the UDP
        port that goes with the onion service's port.
        """
        node = self.node(peer_listen="onion:3340")
        self.assertIsInstance(node.tor, TorProvider)
        self.assertNotIsInstance(node.peer_server.endpoint, str)
        self.assertFalse(node.reach.reachable)
        assert node.dht is not None
        self.assertEqual(node.dht._interface, "")
        self.assertEqual(node.dht._port_number, 4451)
