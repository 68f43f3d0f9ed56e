"""
Port mapping with UPnP: ask the Internet Gateway Device on the LAN (the home
router) to forward the peer TCP port and the DHT UDP port to this host.

L{UPnPPortMapper} is a service.  When it starts it finds the gateway (SSDP
discovery), maps both ports to this host's LAN address, asks the gateway for
its internet address, and from then on renews the mappings at half their
lease; when it stops it removes them.  Every call to C{miniupnpc} blocks (a
discovery that finds nothing takes about 4 seconds), so each runs through a
L{BlockingRunner}, one at a time: a L{ThreadWorker} in the node,
L{run_inline} in unit tests.

Failing is not an error of the service: it says why once, in words, keeps
running, retries at the next renewal, and reports itself unreachable unless
the user configured an external address (a port forwarded by hand).

C{miniupnpc} is optional (C{pip install 'p2pblob[upnp]'}) and imported only
when the first gateway is looked for.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from p2pblob._threads import BlockingRunner, one_at_a_time
from p2pblob.errors import (
    MappingRefusedError,
    NoGatewayError,
    PortMappingError,
    UPnPUnavailableError,
)
from p2pblob.interfaces import IPortMapper
from p2pblob.reach._mapping import PortMapping

__all__ = ["UPnPClient", "UPnPPortMapper", "load_miniupnpc", "routed_address"]

_log = Logger()


class UPnPClient(Protocol):
    """
    The part of C{miniupnpc.UPnP} this module uses (its methods take
    positional arguments only, and raise C{Exception} with the UPnP error's
    text when the gateway refuses).
    """

    lanaddr: str
    discoverdelay: int

    def discover(self) -> int: ...

    def selectigd(self, root_description_url: str | None = ..., /) -> str: ...

    def externalipaddress(self) -> str: ...

    def addportmapping(
        self,
        external_port: int,
        protocol: str,
        internal_address: str,
        internal_port: int,
        description: str,
        remote_host: str,
        lease: int = ...,
        /,
    ) -> bool: ...

    def deleteportmapping(
        self, external_port: int, protocol: str, remote_host: str = ..., /
    ) -> bool: ...


def load_miniupnpc(
    importer: Callable[[str], ModuleType] = importlib.import_module,
) -> ModuleType:
    """
    Import C{miniupnpc}.

    @raise UPnPUnavailableError: it is not installed.
    """
    try:
        return importer("miniupnpc")
    except ImportError:
        raise UPnPUnavailableError() from None


def _default_upnp() -> UPnPClient:
    client: UPnPClient = load_miniupnpc().UPnP()
    return client


def routed_address(host: str) -> str | None:
    """
    The address of this host on the interface that routes to C{host} (an
    IPv4 address), found the way the kernel chooses it: by connecting a UDP
    socket, which sends nothing, and reading its local address.

    @return: the address, or C{None} if C{host} is not an IPv4 address or
        there is no route to it.
    """
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 1900))
            local: str = probe.getsockname()[0]
            return local
    except OSError:
        return None


@dataclass(frozen=True)
class _Gateway:
    """
    A gateway found on the LAN, and this host's address on the way to it.
    """

    upnp: UPnPClient
    control_url: str
    lan_address: str


@implementer(IPortMapper)
class UPnPPortMapper(Service):
    """
    Keeps the peer TCP port and the DHT UDP port mapped on the LAN's UPnP
    gateway while the service runs.

    @ivar problem: why the ports are not mapped now, in words, or C{None}.
    """

    method = "upnp"

    def __init__(
        self,
        clock: IReactorTime,
        run: BlockingRunner,
        tcp_port: int,
        udp_port: int | None,
        lease: int = 3600,
        description: str = "p2pblob",
        upnp_factory: Callable[[], UPnPClient] = _default_upnp,
        external_address: str | None = None,
        gateway_url: str | None = None,
        discover_delay: int | None = None,
        local_address: Callable[[str], str | None] = routed_address,
    ) -> None:
        """
        @param clock: schedules renewals.
        @param run: runs the blocking C{miniupnpc} calls (off the reactor
            thread in the node); they are passed to it one at a time.
        @param tcp_port: the peer protocol's port on this host, mapped to
            the same external port.
        @param udp_port: the DHT's port on this host, likewise; L{None} for a
            node off the DHT (only the TCP port is mapped).
        @param lease: how long the gateway keeps a mapping, in seconds; it is
            renewed every C{lease / 2} seconds (and retried as often after a
            failure).
        @param description: the mappings' description, shown by the router.
        @param upnp_factory: makes a C{miniupnpc.UPnP} (or a fake).
        @param external_address: the address the user configured, if any:
            then the node counts as reachable even when mapping fails, and
            this address is the one reported.
        @param gateway_url: the gateway's root description URL, to skip the
            SSDP discovery; C{None} to discover.
        @param discover_delay: how long discovery waits for answers, in
            milliseconds; C{None} for C{miniupnpc}'s default.
        @param local_address: finds this host's address on the interface
            routing to a given IPv4 address (see L{routed_address}).
        """
        if lease <= 0:
            raise ValueError(f"a UPnP lease must be positive, not {lease}")
        self._clock = clock
        self._run = one_at_a_time(run)
        self._ports = {"TCP": tcp_port}
        if udp_port is not None:
            self._ports["UDP"] = udp_port
        self._lease = lease
        self._description = description
        self._upnp_factory = upnp_factory
        self._configured = external_address
        self._gateway_url = gateway_url
        self._discover_delay = discover_delay
        self._local_address = local_address
        # the gateway last found; looked for again after any failure, but kept
        # to remove the mappings made through it
        self._gateway: _Gateway | None = None
        self._rediscover = True
        self._external: str | None = None
        # protocol -> (mapping, when its lease ends on our clock)
        self._held: dict[str, tuple[PortMapping, float]] = {}
        self._attempted = False
        self.problem: str | None = None
        self._busy: Deferred[None] | None = None
        self._renewer = LoopingCall(self._refresh)
        self._renewer.clock = clock

    # -- IPortMapper -------------------------------------------------------

    @property
    def mappings(self) -> tuple[PortMapping, ...]:
        now = self._clock.seconds()
        return tuple(mapping for mapping, ends in self._held.values() if ends > now)

    @property
    def external_address(self) -> str | None:
        if self._configured is not None:
            return self._configured
        return self._external

    @property
    def reachable(self) -> bool:
        return self._configured is not None or self._mapped()

    def startService(self) -> None:
        super().startService()
        self._attempted = False
        self._renewer.start(self._lease / 2, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._renewer.running:
            self._renewer.stop()
        return Deferred.fromCoroutine(self._remove_all())

    def status(self) -> dict[str, Any]:
        gateway = self._gateway
        return {
            "method": self.method,
            "state": self._state(),
            "reachable": self.reachable,
            "external_address": self.external_address,
            "configured_address": self._configured,
            "gateway": gateway.control_url if gateway else None,
            "lan_address": gateway.lan_address if gateway else None,
            "mappings": [mapping.as_dict() for mapping in self.mappings],
            "problem": self.problem,
        }

    # -- extras ------------------------------------------------------------

    def settled(self) -> Deferred[None]:
        """
        @return: a Deferred that fires with C{None} once no attempt to map
            is under way (at once if none is).
        """
        busy = self._busy
        if busy is None:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def passed(result: object) -> object:
            done.callback(None)
            return result

        busy.addBoth(passed)
        return done

    # -- mapping -----------------------------------------------------------

    def _state(self) -> str:
        if not self.running:
            return "stopped"
        if not self._attempted:
            return "mapping"
        return "mapped" if self._mapped() else "unreachable"

    def _mapped(self) -> bool:
        """
        Whether every port is mapped now and the gateway's internet address
        is one peers can reach.
        """
        held = {mapping.protocol for mapping in self.mappings}
        if held != set(self._ports):
            return False
        return self._external is not None and _is_public(self._external)

    def _refresh(self) -> Deferred[None]:
        """
        Map (or renew) both ports, finding the gateway first if need be; the
        Deferred never fails.
        """
        busy = Deferred.fromCoroutine(self._attempt())
        self._busy = busy

        def idle(result: None) -> None:
            self._attempted = True
            if self._busy is busy:
                self._busy = None

        busy.addBoth(idle)
        return busy

    async def _attempt(self) -> None:
        try:
            if self._gateway is None or self._rediscover:
                self._gateway = await self._run(self._find_gateway)
                self._rediscover = False
            gateway = self._gateway
            self._external = await self._run(self._external_address, gateway)
            if self._external is None:
                # (such a router refuses every mapping anyway: say why)
                raise PortMappingError(
                    f"the UPnP gateway at {gateway.control_url} does not know its"
                    " internet address (is its own WAN connection up, or is its WAN"
                    " address a private one?)"
                )
            for protocol, port in self._ports.items():
                mapping = await self._run(self._add, gateway, protocol, port)
                self._held[protocol] = (mapping, self._clock.seconds() + self._lease)
        except PortMappingError as e:
            self._failed(str(e))
            return
        except Exception as e:
            _log.failure("UPnP port mapping failed unexpectedly")
            self._failed(f"UPnP port mapping failed unexpectedly: {e}")
            return
        if self._external is not None and not _is_public(self._external):
            self._failed(
                f"the UPnP gateway's internet address {self._external} is a private"
                " one: another router (your provider's NAT) sits in front of it"
            )
        else:
            self._succeeded(gateway)

    def _failed(self, problem: str) -> None:
        """
        Note why mapping failed and say so if it is news.  The gateway is
        looked for again next time (it may have gone, or changed address).
        """
        self._rediscover = True
        if not self.mappings:
            self._external = None
        if problem == self.problem:
            return
        self.problem = problem
        if self._mapped():
            ends = min(ends for _, ends in self._held.values())
            consequence = (
                "The ports stay forwarded until their lease ends, in"
                f" {ends - self._clock.seconds():.0f} seconds."
            )
        elif self._configured is not None:
            consequence = (
                f"Peers are told to use the configured address {self._configured};"
                " forward the ports to this host by hand."
            )
        else:
            consequence = (
                "The node keeps running, but peers on the internet cannot connect"
                " to it, so it does not announce itself (configure an external"
                " address if the ports are forwarded by hand)."
            )
        _log.warn(
            "Could not map this node's ports on the router: {problem}. {consequence}"
            " Trying again in {retry:.0f} seconds.",
            problem=problem,
            consequence=consequence,
            retry=self._lease / 2,
        )

    def _succeeded(self, gateway: _Gateway) -> None:
        if self.problem is None and self._attempted:
            return
        self.problem = None
        ports = " and ".join(
            f"{protocol} port {port}" for protocol, port in self._ports.items()
        )
        _log.info(
            "The router ({gateway}) forwards {ports} to {lan}; peers reach this"
            " node at {external}.",
            gateway=gateway.control_url,
            ports=ports,
            lan=gateway.lan_address,
            external=self.external_address,
        )

    async def _remove_all(self) -> None:
        if self._busy is not None:
            await self.settled()
        gateway = self._gateway
        held = self.mappings
        self._held = {}
        self._gateway = None
        self._rediscover = True
        self._external = None
        if gateway is None:
            return
        for mapping in held:
            try:
                await self._run(
                    gateway.upnp.deleteportmapping, mapping.external_port, mapping.protocol
                )
            except Exception as e:
                _log.warn(
                    "Could not remove the mapping of {protocol} port {port} from the"
                    " router: {error}",
                    protocol=mapping.protocol,
                    port=mapping.external_port,
                    error=str(e),
                )

    # -- blocking: these run in the runner's thread --------------------------

    def _find_gateway(self) -> _Gateway:
        upnp = self._upnp_factory()
        if self._discover_delay is not None:
            upnp.discoverdelay = self._discover_delay
        try:
            if self._gateway_url is None:
                try:
                    found = upnp.discover()
                except Exception:
                    # miniupnpc raises (with a meaningless text) when nothing
                    # answered; it is documented to return 0
                    found = 0
                if not found:
                    raise NoGatewayError("no device answered the discovery")
                control_url = upnp.selectigd()
            else:
                control_url = upnp.selectigd(self._gateway_url)
        except NoGatewayError:
            raise
        except Exception as e:
            raise NoGatewayError(str(e)) from e
        host = urlsplit(control_url).hostname or ""
        lan_address = self._local_address(host) or upnp.lanaddr
        if not lan_address:
            raise PortMappingError(
                f"found no address of this host on the way to the gateway {control_url}"
            )
        return _Gateway(upnp, control_url, lan_address)

    def _add(self, gateway: _Gateway, protocol: str, port: int) -> PortMapping:
        try:
            gateway.upnp.addportmapping(
                port, protocol, gateway.lan_address, port, self._description, "",
                self._lease,
            )
        except Exception as e:
            raise MappingRefusedError(protocol, port, str(e)) from e
        return PortMapping(protocol, port, gateway.lan_address, port, self._lease)

    def _external_address(self, gateway: _Gateway) -> str | None:
        try:
            address = gateway.upnp.externalipaddress()
        except Exception as e:
            raise PortMappingError(
                f"the UPnP gateway at {gateway.control_url} would not say its"
                f" internet address: {e}"
            ) from e
        return address or None


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False
