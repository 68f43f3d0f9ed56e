"""
A fake UPnP gateway and a fake C{miniupnpc.UPnP} client that talks to it,
for tests of code that maps ports (L{p2pblob.reach.UPnPPortMapper}).

The client has C{miniupnpc.UPnP}'s method names and positional arguments
(C{tests.reach.test_upnp} checks them against the installed module) and
fails the way it does: C{Exception} carrying the UPnP error's text.  The
gateway keeps a mapping table whose leases end on a L{task.Clock}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime

__all__ = ["FakeGateway", "FakeMapping", "FakeUPnP", "NO_GATEWAY_DELAY"]

# how long miniupnpc's discover() takes to give up when nothing answers
NO_GATEWAY_DELAY = 4.0


@dataclass
class FakeMapping:
    internal_address: str
    internal_port: int
    description: str
    lease: int
    ends: float


@dataclass
class FakeGateway:
    """
    A UPnP Internet Gateway Device on a fake LAN.

    @ivar present: whether it answers discovery at all.
    @ivar igd: whether it is an Internet Gateway Device (else selectigd
        finds nothing valid).
    @ivar up: whether it answers requests (discovery included).
    @ivar external_address: what GetExternalIPAddress says (C{""} when the
        router has no public address, as miniupnpd then says).
    @ivar refuse: protocol -> the error text AddPortMapping fails with.
    @ivar table: (external port, protocol) -> the mapping.
    @ivar calls: every call made to a client, as (method, arguments).
    @ivar on_call: called before each call is carried out (to check where
        it runs, for instance).
    """

    clock: IReactorTime
    control_url: str = "http://127.0.0.1:5555/ctl/IPConn"
    lan_address: str = "127.0.0.1"
    external_address: str = "100.128.0.1"
    present: bool = True
    igd: bool = True
    up: bool = True
    refuse: dict[str, str] = field(default_factory=dict)
    table: dict[tuple[int, str], FakeMapping] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    on_call: Callable[[str], None] = lambda method: None

    def client(self) -> FakeUPnP:
        """
        A new client, as C{miniupnpc.UPnP()} would make one.
        """
        return FakeUPnP(self)

    def live_table(self) -> dict[tuple[int, str], FakeMapping]:
        """
        The mappings whose lease has not ended.
        """
        now = self.clock.seconds()
        for key in [key for key, entry in self.table.items() if entry.ends <= now]:
            del self.table[key]
        return self.table


class FakeUPnP:
    """
    A client of a L{FakeGateway}, with C{miniupnpc.UPnP}'s interface.
    """

    def __init__(self, gateway: FakeGateway) -> None:
        self._gateway = gateway
        self._selected = False
        self.lanaddr = ""
        self.discoverdelay = 0

    def _call(self, method: str, *args: Any) -> None:
        self._gateway.calls.append((method, args))
        self._gateway.on_call(method)

    def _soap(self) -> None:
        if not self._selected:
            raise Exception("Miniupnpc Invalid Arguments")
        if not self._gateway.up:
            raise Exception("Miniupnpc HTTP error")

    def discover(self, /) -> int:
        self._call("discover")
        gateway = self._gateway
        if not (gateway.present and gateway.up):
            # the real one gives up after about 4 s, raising with errno's text
            advance = getattr(gateway.clock, "advance", None)
            if advance is not None:
                advance(NO_GATEWAY_DELAY)
            raise Exception("Success")
        return 1

    def selectigd(self, root_description_url: str | None = None, /) -> str:
        self._call("selectigd", root_description_url)
        gateway = self._gateway
        if not (gateway.present and gateway.up):
            raise Exception("No UPnP device discovered")
        if not gateway.igd:
            raise Exception("No valid UPnP IGD found")
        self._selected = True
        self.lanaddr = gateway.lan_address
        return gateway.control_url

    def externalipaddress(self, /) -> str:
        self._call("externalipaddress")
        self._soap()
        return self._gateway.external_address

    def addportmapping(
        self,
        external_port: int,
        protocol: str,
        internal_address: str,
        internal_port: int,
        description: str,
        remote_host: str,
        lease: int = 0,
        /,
    ) -> bool:
        self._call(
            "addportmapping", external_port, protocol, internal_address,
            internal_port, description, remote_host, lease,
        )
        self._soap()
        gateway = self._gateway
        if protocol in gateway.refuse:
            raise Exception(gateway.refuse[protocol])
        table = gateway.live_table()
        held = table.get((external_port, protocol))
        if held is not None and held.internal_address != internal_address:
            raise Exception("ConflictInMappingEntry")
        table[(external_port, protocol)] = FakeMapping(
            internal_address, internal_port, description, lease,
            gateway.clock.seconds() + (lease or 604800),
        )
        return True

    def deleteportmapping(
        self, external_port: int, protocol: str, remote_host: str = "", /
    ) -> bool:
        self._call("deleteportmapping", external_port, protocol, remote_host)
        self._soap()
        # miniupnpd 2.3 answers success for a mapping it does not hold
        self._gateway.live_table().pop((external_port, protocol), None)
        return True

    def getspecificportmapping(
        self, external_port: int, protocol: str, remote_host: str = "", /
    ) -> tuple[str, int, str, bool, int] | None:
        self._call("getspecificportmapping", external_port, protocol, remote_host)
        self._soap()
        entry = self._gateway.live_table().get((external_port, protocol))
        if entry is None:
            return None
        remaining = int(entry.ends - self._gateway.clock.seconds())
        return (entry.internal_address, entry.internal_port, entry.description, True, remaining)
