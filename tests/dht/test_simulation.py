"""
The DHT as a whole, on an in-memory network of 1,000 nodes (see
L{tests.dht._simnet}): every node joins through one bootstrap node, 100
random nodes announce a blob each, and random nodes look the blobs up.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.dht._simnet import announce, build_network, look_up, remove_fraction

NODES = 1000


class SimulatedNetworkTests(SynchronousTestCase):
    def test_lookups_find_announcers(self) -> None:
        """
        After bootstrap, lookups find the announcing peer in at least 99%
        of cases; with 20% of the nodes gone, in at least 95%.  The figures
        are printed for the record.
        """
        network = build_network(NODES, seed=4)
        self.assertTrue(all(node.joined for node in network.nodes.values()))
        announced = announce(network, 100)
        figures = look_up(network, announced)
        print(f"\n{NODES} nodes: {figures.summary()}")
        self.assertEqual(figures.lookups, 100)
        self.assertGreaterEqual(figures.success, 0.99)
        removed = remove_fraction(network, 0.2)
        figures = look_up(network, announced)
        print(f"{removed} nodes removed: {figures.summary()}")
        self.assertGreater(figures.lookups, 60)
        self.assertGreaterEqual(figures.success, 0.95)
