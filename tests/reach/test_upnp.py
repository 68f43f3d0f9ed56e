"""
Tests for L{p2pblob.reach.upnp}: the UPnP port mapper against a fake gateway
(L{p2pblob.reach.testing}), on a L{task.Clock} with blocking calls run
inline.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from p2pblob._threads import run_inline
from p2pblob.errors import PortMappingError, UPnPUnavailableError
from p2pblob.interfaces import IPortMapper
from p2pblob.reach import PortMapping, UPnPPortMapper, load_miniupnpc
from p2pblob.reach.testing import NO_GATEWAY_DELAY, FakeGateway, FakeMapping, FakeUPnP
from p2pblob.reach.upnp import routed_address

_T = TypeVar("_T")

TCP = 4444
UDP = 4445
LEASE = 3600

# How many positional arguments each method of miniupnpc.UPnP that the fake
# has accepts (miniupnpc 2.3.3; its C methods have no introspectable
# signature, so the counts were found by calling them, as
# test_fake_matches_installed_miniupnpc does again when it is installed).
MINIUPNPC_ARITY = {
    "discover": (0, 0),
    "selectigd": (0, 1),
    "externalipaddress": (0, 0),
    "addportmapping": (6, 7),
    "deleteportmapping": (2, 3),
    "getspecificportmapping": (2, 3),
}
MINIUPNPC_ATTRIBUTES = {"lanaddr", "discoverdelay"}


def _accepts(method: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(method).bind(*[object()] * count)
    except TypeError:
        return False
    return True


def _real_accepts(method: Callable[..., Any], count: int) -> bool:
    """
    Whether a C method of miniupnpc takes C{count} positional arguments,
    found without running it: every argument is an C{object()}, which none
    of its argument conversions accepts, so the call fails either on the
    count or on the first conversion, before it does anything.
    """
    assert count > 0
    try:
        method(*[object()] * count)
    except TypeError as e:
        text = str(e)
        return not any(
            words in text
            for words in ("no arguments", "at least", "at most", "exactly")
        )
    raise AssertionError(f"{method} ran with {count} object() arguments")


def _miniupnpc() -> ModuleType | None:
    try:
        return load_miniupnpc()
    except UPnPUnavailableError:
        return None


class FakeUPnPTests(SynchronousTestCase):
    """
    The fake client is faithful to C{miniupnpc.UPnP}.
    """

    def test_fake_matches_recorded_miniupnpc(self) -> None:
        """
        The fake's public methods are the recorded ones of C{miniupnpc.UPnP},
        taking as many positional arguments, and it has the attributes used.
        """
        fake = FakeUPnP(FakeGateway(Clock()))
        methods = {
            name for name, value in inspect.getmembers(fake, callable)
            if not name.startswith("_")
        }
        self.assertEqual(methods, set(MINIUPNPC_ARITY))
        for name, (least, most) in MINIUPNPC_ARITY.items():
            method = getattr(fake, name)
            for count in range(0, 9):
                self.assertEqual(
                    _accepts(method, count), least <= count <= most, (name, count)
                )
        for attribute in MINIUPNPC_ATTRIBUTES:
            self.assertTrue(hasattr(fake, attribute), attribute)

    def test_fake_matches_installed_miniupnpc(self) -> None:
        """
        When C{miniupnpc} is installed, its C{UPnP} has every method and
        attribute the fake has, taking as many positional arguments (counts
        from 1 up are checked without running anything; none is checked,
        because a call without arguments might run).
        """
        module = _miniupnpc()
        if module is None:
            if os.environ.get("P2PBLOB_REQUIRE_UPNP"):
                self.fail("miniupnpc is not installed but P2PBLOB_REQUIRE_UPNP is set")
            raise self.skipTest("miniupnpc is not installed")
        real = module.UPnP()
        for name in MINIUPNPC_ATTRIBUTES:
            self.assertTrue(hasattr(real, name), name)
        for name, (least, most) in MINIUPNPC_ARITY.items():
            method = getattr(real, name)
            self.assertTrue(callable(method), name)
            for count in range(1, 9):
                self.assertEqual(
                    _real_accepts(method, count), least <= count <= most, (name, count)
                )


class Harness:
    """
    A mapper, its clock and its gateway; every blocking call is counted by
    the runner, and the gateway checks that each of its calls is made
    through it.
    """

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.inside_runner = False
        self.outside_calls: list[str] = []
        self.gateway = FakeGateway(self.clock, on_call=self._check_call)
        self.mapper = UPnPPortMapper(
            self.clock, self.run, TCP, UDP, lease=LEASE,
            upnp_factory=self.gateway.client, **options,
        )

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        self.inside_runner = True
        try:
            return run_inline(f, *args, **kwargs)
        finally:
            self.inside_runner = False

    def _check_call(self, method: str) -> None:
        if not self.inside_runner:
            self.outside_calls.append(method)

    def methods(self) -> list[str]:
        return [method for method, _ in self.gateway.calls]


class MapperTests(SynchronousTestCase):
    """
    L{UPnPPortMapper} maps, renews and removes, and says what went wrong.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.mapper = self.h.mapper
        self.gateway = self.h.gateway

    def tearDown(self) -> None:
        self.assertEqual(self.h.outside_calls, [])

    def start(self) -> list[dict[str, Any]]:
        with capturedLogs() as events:
            self.mapper.startService()
        return list(events)

    def warnings(self, events: list[dict[str, Any]]) -> list[str]:
        return [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]

    def test_interface(self) -> None:
        """
        The mapper provides L{IPortMapper}.
        """
        verifyClass(IPortMapper, UPnPPortMapper)
        verifyObject(IPortMapper, self.mapper)

    def test_maps_both_ports(self) -> None:
        """
        Starting finds the gateway and maps the TCP and the UDP port to
        this host's address, the same port outside as inside, with the
        lease and description asked for; the node is then reachable at the
        gateway's internet address.
        """
        events = self.start()
        self.assertEqual(self.warnings(events), [])
        self.assertEqual(
            self.gateway.table,
            {
                (TCP, "TCP"): FakeMapping("127.0.0.1", TCP, "p2pblob", LEASE, LEASE),
                (UDP, "UDP"): FakeMapping("127.0.0.1", UDP, "p2pblob", LEASE, LEASE),
            },
        )
        self.assertEqual(
            set(self.mapper.mappings),
            {
                PortMapping("TCP", TCP, "127.0.0.1", TCP, LEASE),
                PortMapping("UDP", UDP, "127.0.0.1", UDP, LEASE),
            },
        )
        self.assertEqual(self.h.methods()[:2], ["discover", "selectigd"])
        self.assertTrue(self.mapper.reachable)
        infos = [formatEvent(e) for e in events if e["log_level"] == LogLevel.info]
        self.assertEqual(len(infos), 1)
        self.assertIn("peers reach this node at 100.128.0.1", infos[0])

    def test_external_address_learned(self) -> None:
        """
        The external address is the one the gateway reports, and the status
        shows it with the mappings.
        """
        self.assertIsNone(self.mapper.external_address)
        self.assertEqual(self.mapper.status()["state"], "stopped")
        self.start()
        self.assertEqual(self.mapper.external_address, "100.128.0.1")
        status = self.mapper.status()
        self.assertEqual(
            {k: v for k, v in status.items() if k != "mappings"},
            {
                "method": "upnp",
                "state": "mapped",
                "reachable": True,
                "external_address": "100.128.0.1",
                "configured_address": None,
                "gateway": "http://127.0.0.1:5555/ctl/IPConn",
                "lan_address": "127.0.0.1",
                "problem": None,
            },
        )
        self.assertEqual(
            sorted(status["mappings"], key=lambda m: m["protocol"]),
            [
                {"protocol": "TCP", "external_port": TCP, "internal_address": "127.0.0.1",
                 "internal_port": TCP, "lease": LEASE},
                {"protocol": "UDP", "external_port": UDP, "internal_address": "127.0.0.1",
                 "internal_port": UDP, "lease": LEASE},
            ],
        )

    def test_no_gateway(self) -> None:
        """
        When nothing answers the discovery (miniupnpc then raises after
        about 4 s), the node says so once, in words, keeps running and is
        unreachable; it looks again at each renewal time, silently while
        nothing changes.
        """
        self.gateway.present = False
        events = self.start()
        self.assertEqual(self.h.clock.seconds(), NO_GATEWAY_DELAY)
        [warning] = self.warnings(events)
        self.assertIn("no UPnP gateway answered on the local network", warning)
        self.assertIn("does not announce itself", warning)
        self.assertTrue(self.mapper.running)
        self.assertFalse(self.mapper.reachable)
        self.assertIsNone(self.mapper.external_address)
        self.assertEqual(self.mapper.mappings, ())
        status = self.mapper.status()
        self.assertEqual(status["state"], "unreachable")
        self.assertIn("no UPnP gateway answered", status["problem"])
        with capturedLogs() as later:
            self.h.clock.advance(LEASE / 2)
            self.h.clock.advance(LEASE / 2)
        self.assertEqual(self.h.methods().count("discover"), 3)
        self.assertEqual(self.warnings(list(later)), [])

    def test_gateway_appears_later(self) -> None:
        """
        A gateway that answers at a later attempt gets the ports mapped then.
        """
        self.gateway.present = False
        self.start()
        self.gateway.present = True
        with capturedLogs() as events:
            self.h.clock.advance(LEASE / 2)
        self.assertTrue(self.mapper.reachable)
        self.assertIsNone(self.mapper.status()["problem"])
        self.assertEqual(len(self.gateway.table), 2)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.info]), 1)

    def test_not_an_igd(self) -> None:
        """
        A UPnP device that is no Internet Gateway Device is no gateway.
        """
        self.gateway.igd = False
        events = self.start()
        [warning] = self.warnings(events)
        self.assertIn("no UPnP gateway answered", warning)
        self.assertIn("No valid UPnP IGD found", warning)
        self.assertFalse(self.mapper.reachable)
        self.assertNotIn("addportmapping", self.h.methods())

    def test_mapping_refused(self) -> None:
        """
        When the gateway refuses a mapping (501 Action Failed), the node
        says which port, is unreachable, and still removes at stop what it
        did map.
        """
        self.gateway.refuse["UDP"] = "Action Failed"
        events = self.start()
        [warning] = self.warnings(events)
        self.assertIn(
            f"the UPnP gateway refused to forward UDP port {UDP}: Action Failed", warning
        )
        self.assertFalse(self.mapper.reachable)
        self.assertEqual(self.mapper.status()["state"], "unreachable")
        self.assertEqual(
            self.mapper.mappings, (PortMapping("TCP", TCP, "127.0.0.1", TCP, LEASE),)
        )
        self.assertEqual(list(self.gateway.table), [(TCP, "TCP")])
        self.successResultOf(self.mapper.stopService())
        self.assertEqual(self.gateway.table, {})

    def test_private_external_address(self) -> None:
        """
        A gateway whose own internet address is private sits behind another
        NAT: the mappings are made, but the node is unreachable, and says
        why.
        """
        self.gateway.external_address = "192.168.0.1"
        events = self.start()
        [warning] = self.warnings(events)
        self.assertIn("192.168.0.1 is a private one", warning)
        self.assertFalse(self.mapper.reachable)

    def test_no_external_address(self) -> None:
        """
        A gateway that reports no internet address (miniupnpd's answer when
        its own is private, before it refuses every mapping) leaves the node
        unreachable, saying why in those words rather than the router's
        refusal; it does not try to map.
        """
        self.gateway.external_address = ""
        self.gateway.refuse.update(TCP="Action Failed", UDP="Action Failed")
        events = self.start()
        [warning] = self.warnings(events)
        self.assertIn("does not know its internet address", warning)
        self.assertNotIn("addportmapping", self.h.methods())
        self.assertIsNone(self.mapper.external_address)
        self.assertFalse(self.mapper.reachable)

    def test_configured_address(self) -> None:
        """
        With an external address configured, the node stays reachable at it
        even when no gateway answers, and the warning says so.
        """
        h = Harness(external_address="198.51.100.7")
        h.gateway.present = False
        with capturedLogs() as events:
            h.mapper.startService()
        [warning] = self.warnings(list(events))
        self.assertIn("configured address 198.51.100.7", warning)
        self.assertTrue(h.mapper.reachable)
        self.assertEqual(h.mapper.external_address, "198.51.100.7")
        self.assertEqual(h.mapper.status()["state"], "unreachable")

    def test_renewal(self) -> None:
        """
        The mappings are renewed every half lease, so that the gateway never
        drops them.
        """
        self.start()
        for _ in range(6):
            self.h.clock.advance(LEASE / 2)
            self.assertEqual(len(self.gateway.live_table()), 2)
            self.assertTrue(self.mapper.reachable)
        adds = [args for method, args in self.gateway.calls if method == "addportmapping"]
        self.assertEqual(len(adds), 14)
        self.assertEqual(self.h.methods().count("discover"), 1)
        self.assertEqual(self.gateway.table[(TCP, "TCP")].ends, 3 * LEASE + LEASE)

    def test_lease_expiry_remapped(self) -> None:
        """
        While the gateway does not answer, the mappings stay counted until
        their lease ends; then the node is unreachable (and says so: that is
        news), and once the gateway is back they are made again.
        """
        self.start()
        self.gateway.up = False
        with capturedLogs() as events:
            self.h.clock.advance(LEASE / 2)
        [warning] = self.warnings(list(events))
        self.assertIn("would not say its internet address: Miniupnpc HTTP error", warning)
        self.assertIn("stay forwarded until their lease ends, in 1800 seconds", warning)
        self.assertTrue(self.mapper.reachable)
        self.assertEqual(len(self.mapper.mappings), 2)
        with capturedLogs() as events:
            self.h.clock.advance(LEASE / 2)
        [warning] = self.warnings(list(events))
        self.assertIn("no UPnP gateway answered", warning)
        self.assertIn("does not announce itself", warning)
        self.assertEqual(self.mapper.mappings, ())
        self.assertFalse(self.mapper.reachable)
        self.assertEqual(self.gateway.live_table(), {})
        self.gateway.up = True
        with capturedLogs() as events:
            self.h.clock.advance(LEASE / 2)
        self.assertTrue(self.mapper.reachable)
        self.assertEqual(len(self.gateway.live_table()), 2)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.info]), 1)

    def test_stop_removes_mappings(self) -> None:
        """
        Stopping stops renewing and removes both mappings.
        """
        self.start()
        self.assertIsNone(self.successResultOf(self.mapper.stopService()))
        self.assertEqual(self.gateway.table, {})
        self.assertEqual(self.mapper.mappings, ())
        self.assertFalse(self.mapper.reachable)
        self.assertEqual(self.mapper.status()["state"], "stopped")
        deletes = sorted(args for method, args in self.gateway.calls if method == "deleteportmapping")
        self.assertEqual(deletes, [(TCP, "TCP", ""), (UDP, "UDP", "")])
        calls = len(self.gateway.calls)
        self.h.clock.advance(10 * LEASE)
        self.assertEqual(len(self.gateway.calls), calls)

    def test_stop_gateway_gone(self) -> None:
        """
        If the gateway does not answer at stop, that is logged, and stopping
        still completes.
        """
        self.start()
        self.gateway.up = False
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(self.mapper.stopService()))
        self.assertEqual(len(self.warnings(list(events))), 2)

    def test_stop_during_first_attempt(self) -> None:
        """
        Stopping while the gateway is still being looked for waits for that
        attempt, then removes whatever it mapped.
        """
        clock = Clock()
        gateway = FakeGateway(clock)
        pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

        def run(f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
            d: Deferred[_T] = Deferred()
            pending.append((d, lambda: f(*args, **kwargs)))
            return d

        mapper = UPnPPortMapper(clock, run, TCP, UDP, upnp_factory=gateway.client)
        mapper.startService()
        self.assertEqual(mapper.status()["state"], "mapping")
        stopped = mapper.stopService()
        while pending:
            d, job = pending.pop(0)
            d.callback(job())
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(gateway.table, {})
        self.assertIn("deleteportmapping", [method for method, _ in gateway.calls])

    def test_lan_address_is_the_routed_one(self) -> None:
        """
        The mappings point at this host's address on the interface that
        routes to the gateway (the host of its control URL), not at the
        address miniupnpc happened to report.
        """
        self.gateway.lan_address = "192.168.1.50"
        self.start()
        self.assertEqual(
            {entry.internal_address for entry in self.gateway.table.values()},
            {"127.0.0.1"},
        )
        self.assertEqual(self.mapper.status()["lan_address"], "127.0.0.1")

    def test_lan_address_fallback(self) -> None:
        """
        When the route cannot be found, miniupnpc's LAN address is used.
        """
        h = Harness(local_address=lambda host: None)
        h.gateway.lan_address = "192.168.1.50"
        h.mapper.startService()
        self.assertEqual(
            {entry.internal_address for entry in h.gateway.table.values()},
            {"192.168.1.50"},
        )

    def test_gateway_url(self) -> None:
        """
        With the gateway's description URL given, discovery is skipped; a
        discovery delay is passed on to miniupnpc.
        """
        url = "http://127.0.0.1:5555/rootDesc.xml"
        h = Harness(gateway_url=url, discover_delay=200)
        clients: list[FakeUPnP] = []
        make = h.gateway.client
        h.mapper._upnp_factory = lambda: clients.append(make()) or clients[-1]
        h.mapper.startService()
        self.assertTrue(h.mapper.reachable)
        self.assertNotIn("discover", h.methods())
        self.assertIn(("selectigd", (url,)), h.gateway.calls)
        self.assertEqual(clients[0].discoverdelay, 200)

    def test_missing_miniupnpc(self) -> None:
        """
        Without miniupnpc the node says how to install it, and is
        unreachable.
        """
        def missing() -> Any:
            def importer(name: str) -> ModuleType:
                raise ImportError(name)

            return load_miniupnpc(importer)

        mapper = UPnPPortMapper(Clock(), run_inline, TCP, UDP, upnp_factory=missing)
        with capturedLogs() as events:
            mapper.startService()
        [warning] = self.warnings(list(events))
        self.assertIn("pip install 'p2pblob[upnp]'", warning)
        self.assertFalse(mapper.reachable)
        error = self.assertRaises(UPnPUnavailableError, missing)
        self.assertIsInstance(error, PortMappingError)

    def test_unexpected_error(self) -> None:
        """
        A bug in the blocking part is logged with its traceback; the service
        keeps running, unreachable.
        """
        def broken() -> Any:
            raise ZeroDivisionError("boom")

        mapper = UPnPPortMapper(Clock(), run_inline, TCP, UDP, upnp_factory=broken)
        mapper.startService()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(mapper.running)
        self.assertIn("boom", mapper.status()["problem"])

    def test_bad_lease(self) -> None:
        """
        A lease must be positive.
        """
        self.assertRaises(
            ValueError, UPnPPortMapper, Clock(), run_inline, TCP, UDP, lease=0
        )


class RoutedAddressTests(SynchronousTestCase):
    """
    L{routed_address} finds the local address on the route to a host.
    """

    def test_loopback(self) -> None:
        self.assertEqual(routed_address("127.0.0.1"), "127.0.0.1")

    def test_not_ipv4(self) -> None:
        self.assertIsNone(routed_address("router.lan"))
        self.assertIsNone(routed_address(""))
