"""
A fake UDP port for DHT tests: the part of L{IUDPTransport} a DHT protocol
does not use (it never connects, never broadcasts), for fakes to build on.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IUDPTransport
from zope.interface import implementer

Address = tuple[str, int]


@implementer(IUDPTransport)
class FakeUDPPort:
    """
    A listening UDP port at C{host}; subclasses say what C{write} does with
    a datagram, in L{send}.
    """

    def __init__(self, host: Address) -> None:
        self.host = host
        self._broadcast = False

    def send(self, packet: bytes, address: Address) -> None:
        raise NotImplementedError

    def write(self, packet: bytes, addr: Address | None = None) -> None:
        assert addr is not None, "the DHT's port is never connected"
        self.send(packet, (addr[0], addr[1]))

    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError("the DHT's port is never connected")

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.host)

    def stopListening(self) -> None:
        pass

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self._broadcast = enabled

    def getBroadcastAllowed(self) -> bool:
        return self._broadcast
