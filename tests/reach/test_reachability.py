"""
Tests for L{p2pblob.reach.reachability}: what the node counts as reachable,
and the mapper that starts once the node's ports are known.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.interfaces import IPortMapper
from p2pblob.node_reach import onion_of
from p2pblob.reach import PortMapping, UPnPPortMapper
from p2pblob.reach.reachability import MappingWhenListening, Reachability
from p2pblob.reach.testing import FakeGateway


class _Mapper:
    """
    A port mapper whose findings the test sets.
    """

    def __init__(self, reachable: bool, external_address: str | None) -> None:
        self.reachable = reachable
        self.external_address = external_address

    def status(self) -> dict[str, Any]:
        return {"method": "fake", "reachable": self.reachable}


class _Tor:
    def status(self) -> dict[str, Any]:
        return {"state": "ready", "onion_address": "x" * 56 + ".onion"}


class ReachabilityTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        With nothing configured and no mapper, the node counts itself
        reachable at an address it does not know.
        """
        reach = Reachability()
        self.assertTrue(reach.reachable)
        self.assertIsNone(reach.external_address)
        self.assertEqual(reach.status(), {"reachable": True, "external_address": None,
                                          "port_mapping": None, "tor": None})

    def test_configured_unreachable(self) -> None:
        """
        C{--unreachable} wins over a mapper that found the ports mapped.
        """
        reach = Reachability(False, mapper=_Mapper(True, "100.128.0.1"))
        self.assertFalse(reach.reachable)
        self.assertEqual(reach.external_address, "100.128.0.1")

    def test_mapper_decides(self) -> None:
        """
        With a mapper, the node is reachable when and where it says.
        """
        mapper = _Mapper(False, None)
        reach = Reachability(mapper=mapper)
        self.assertFalse(reach.reachable)
        mapper.reachable, mapper.external_address = True, "100.128.0.1"
        self.assertTrue(reach.reachable)
        self.assertEqual(reach.external_address, "100.128.0.1")
        self.assertEqual(reach.status()["port_mapping"], {"method": "fake", "reachable": True})

    def test_configured_address(self) -> None:
        """
        A configured external address is the one peers are told, whatever
        the router reports.
        """
        reach = Reachability(external_address="198.51.100.7",
                             mapper=_Mapper(True, "100.128.0.1"))
        self.assertEqual(reach.external_address, "198.51.100.7")

    def test_tor_shown(self) -> None:
        """
        The Tor provider's status is part of the node's, and an onion
        service alone does not make the IP address reachable or not.
        """
        reach = Reachability(tor=_Tor())
        self.assertTrue(reach.reachable)
        self.assertEqual(reach.status()["tor"]["state"], "ready")


class MappingWhenListeningTests(SynchronousTestCase):
    """
    L{MappingWhenListening} makes and runs the real mapper once the ports
    are known.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = FakeGateway(self.clock)
        self.ports: Deferred[tuple[int, int | None]] = Deferred()
        self.made: list[tuple[int, int | None]] = []
        self.service = MappingWhenListening(lambda: self.ports, self.make)

    def make(self, tcp_port: int, udp_port: int | None) -> UPnPPortMapper:
        self.made.append((tcp_port, udp_port))
        return UPnPPortMapper(self.clock, run_inline, tcp_port, udp_port,
                              upnp_factory=self.gateway.client)

    def test_interface(self) -> None:
        verifyObject(IPortMapper, self.service)

    def test_waits_for_ports(self) -> None:
        """
        Until the node listens, nothing is mapped and the status says the
        mapping is under way; then the ports it listens on are mapped.
        """
        self.service.startService()
        self.assertEqual(self.made, [])
        self.assertFalse(self.service.reachable)
        self.assertEqual(self.service.mappings, ())
        status = self.service.status()
        self.assertEqual((status["state"], status["mappings"]), ("mapping", []))
        self.ports.callback((4444, 4445))
        self.assertEqual(self.made, [(4444, 4445)])
        self.assertTrue(self.service.reachable)
        self.assertEqual(self.service.external_address, "100.128.0.1")
        self.assertEqual({m.protocol for m in self.service.mappings}, {"TCP", "UDP"})
        self.assertEqual(self.service.status()["state"], "mapped")

    def test_tcp_only(self) -> None:
        """
        A node off the DHT has no UDP port: only its TCP port is mapped,
        and that is enough to be reachable.
        """
        self.service.startService()
        self.ports.callback((4444, None))
        self.assertEqual(self.service.mappings,
                         (PortMapping("TCP", 4444, "127.0.0.1", 4444, 3600),))
        self.assertEqual(set(self.gateway.table), {(4444, "TCP")})
        self.assertTrue(self.service.reachable)

    def test_stop_removes(self) -> None:
        """
        Stopping stops the mapper, which removes its mappings.
        """
        self.service.startService()
        self.ports.callback((4444, 4445))
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.gateway.table, {})
        self.assertEqual(self.service.status()["state"], "stopped")

    def test_stopped_before_listening(self) -> None:
        """
        A node stopped before it listened makes no mapper, then or later.
        """
        self.service.startService()
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.made, [])
        self.assertEqual(self.gateway.calls, [])

    def test_configured_address_meanwhile(self) -> None:
        """
        With an external address configured, the node counts as reachable
        there even before it maps.
        """
        service = MappingWhenListening(lambda: Deferred(), self.make,
                                       external_address="198.51.100.7")
        service.startService()
        self.assertTrue(service.reachable)
        self.assertEqual(service.external_address, "198.51.100.7")
        self.assertEqual(service.status()["configured_address"], "198.51.100.7")


class OnionOfTests(SynchronousTestCase):
    """
    L{onion_of} gives the node's onion endpoint while the Tor provider
    publishes its onion service, for the DHT to announce.
    """

    def test_onion_of(self) -> None:
        self.assertIsNone(onion_of(None)())
        tor = SimpleNamespace(onion_address=None, onion_port=None)
        onion = onion_of(tor)
        self.assertIsNone(onion())
        tor.onion_address, tor.onion_port = "abc.onion", 3333
        self.assertEqual(onion(), "abc.onion:3333")
        tor.onion_address = tor.onion_port = None
        self.assertIsNone(onion())
