"""
How peers reach a running node, in one place: what the user configured
(C{--unreachable}, C{--external-address}), what the router's port mapper
found (C{--upnp}) and the onion service of the Tor provider (C{--tor}).

The announcer asks L{Reachability.reachable} before it announces the
node's blobs on the DHT, the DHT's peer finder uses
L{Reachability.external_address} to know this node when the DHT names it,
and the API shows L{Reachability.status}.

L{MappingWhenListening} starts a port mapper once the node knows which
ports to map: its peer server's, once it listens, and its DHT's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._threads import ThreadWorker
from p2pblob.interfaces import IPortMapper
from p2pblob.reach._mapping import PortMapping

__all__ = ["MappingWhenListening", "Reachability"]


class Reachability:
    """
    Whether, and where, peers on the internet can connect to this node.

    @param configured: whether the user let the node count itself reachable
        (C{False} after C{--unreachable}).
    @param external_address: the address the user configured for this node
        (ports forwarded by hand), or L{None}.
    @param mapper: the port mapper, if the node maps its ports.
    @param tor: the Tor provider, if the node uses Tor (its C{status()} is
        shown; an onion service does not make the node's IP reachable).
    """

    def __init__(
        self,
        configured: bool = True,
        external_address: str | None = None,
        mapper: Any = None,
        tor: Any = None,
    ) -> None:
        self._configured = configured
        self._address = external_address
        self.mapper = mapper
        self.tor = tor

    @property
    def reachable(self) -> bool:
        """
        Whether peers can connect to this node's IP address: not if the
        user said they cannot; if a port mapper runs, as it finds; else as
        configured.
        """
        if not self._configured:
            return False
        if self.mapper is not None:
            return bool(self.mapper.reachable)
        return True

    @property
    def external_address(self) -> str | None:
        """
        The IP address peers reach this node at, if known: the configured
        one, else the one the router reported.
        """
        if self._address is not None:
            return self._address
        if self.mapper is not None:
            address: str | None = self.mapper.external_address
            return address
        return None

    def status(self) -> dict[str, Any]:
        """
        What C{p2pblob status} and C{GET /api/v1/status} show.
        """
        return {
            "reachable": self.reachable,
            "external_address": self.external_address,
            "port_mapping": None if self.mapper is None else self.mapper.status(),
            "tor": None if self.tor is None else self.tor.status(),
        }


@implementer(IPortMapper)
class MappingWhenListening(Service):
    """
    A port mapper started once the ports are known.

    @param ports: called when the service starts; returns a Deferred that
        fires with C{(tcp_port, udp_port or None)} once the node listens
        (it may never fire, when the node cannot listen: then the node
        stops anyway).
    @param make: makes the mapper of those ports, a service providing
        L{IPortMapper}.
    @param method: what the mapper uses, for L{status} while it waits.
    @param external_address: the address the user configured, if any: the
        node counts as reachable at it meanwhile.
    @param worker: the threads the mapper's blocking calls run in, started
        and stopped with this service (after the mapper has stopped).

    @ivar mapper: the mapper, once made.
    """

    def __init__(
        self,
        ports: Callable[[], Deferred[tuple[int, int | None]]],
        make: Callable[[int, int | None], Any],
        method: str = "upnp",
        external_address: str | None = None,
        worker: ThreadWorker | None = None,
    ) -> None:
        self._ports = ports
        self._make = make
        self._method = method
        self._configured = external_address
        self._worker = worker
        self._waiting: Deferred[tuple[int, int | None]] | None = None
        self.mapper: Any = None

    @property
    def mappings(self) -> tuple[PortMapping, ...]:
        if self.mapper is None:
            return ()
        mappings: tuple[PortMapping, ...] = self.mapper.mappings
        return mappings

    @property
    def external_address(self) -> str | None:
        if self.mapper is None:
            return self._configured
        address: str | None = self.mapper.external_address
        return address

    @property
    def reachable(self) -> bool:
        if self.mapper is None:
            return self._configured is not None
        return bool(self.mapper.reachable)

    def startService(self) -> None:
        super().startService()
        if self._worker is not None:
            self._worker.start()
        waiting = self._waiting = self._ports()
        waiting.addCallbacks(self._known, self._not_known)

    def _known(self, ports: tuple[int, int | None]) -> None:
        self._waiting = None
        if not self.running:
            return
        tcp_port, udp_port = ports
        self.mapper = self._make(tcp_port, udp_port)
        self.mapper.startService()

    def _not_known(self, failure: Failure) -> None:
        # cancelled by stopService (the node stopped before it listened)
        self._waiting = None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._waiting is not None:
            self._waiting.cancel()
        mapper, self.mapper = self.mapper, None
        stopped: Deferred[None] = (
            maybeDeferred(mapper.stopService) if mapper is not None else succeed(None)
        )
        worker = self._worker
        if worker is not None:

            def idle(result: object) -> object:
                # (once the mapper's last call to the router has returned)
                worker.stop()
                return result

            stopped.addBoth(idle)
        return stopped

    def status(self) -> dict[str, Any]:
        if self.mapper is not None:
            status: dict[str, Any] = self.mapper.status()
            return status
        return {
            "method": self._method,
            "state": "mapping" if self.running else "stopped",
            "reachable": self.reachable,
            "external_address": self.external_address,
            "configured_address": self._configured,
            "gateway": None,
            "lan_address": None,
            "mappings": [],
            "problem": None,
        }
