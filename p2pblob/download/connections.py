"""
Keeping a download's connections to peers open and busy.

The manager wakes up every second (and at once whenever a connection is
lost), asks its request creators for peers, and opens connections to the
best ones that are not backed off, up to C{max_connections} in all and
C{per_peer} to one peer.  A connection that is free asks the creators for
its next request; when none has anything for that peer, it hangs up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.interfaces import IConnectionManager, IRequestCreator, IRequestSender
from p2pblob.peer.peer import Peer

__all__ = ["ConnectionManager", "Connector"]

_log = Logger()

# Connect to a peer and return the connected client protocol.
Connector = Callable[[Peer, IConnectionManager], Deferred[Any]]


@implementer(IConnectionManager)
class ConnectionManager:
    def __init__(
        self,
        clock: IReactorTime,
        connect: Connector,
        request_creators: list[IRequestCreator],
        max_connections: int = 8,
        per_peer: int = 2,
        interval: float = 1.0,
    ) -> None:
        self._clock = clock
        self._connect = connect
        self._creators = request_creators
        self.max_connections = max_connections
        self.per_peer = per_peer
        self._interval = interval
        self._connections: dict[Peer, list[Any]] = {}
        self._connecting: dict[Peer, int] = {}
        self._attempts: set[Deferred[Any]] = set()
        self._loop: LoopingCall | None = None
        self._managing = False
        self._stopping = False
        self._closed: list[Deferred[None]] = []
        self._waiting: dict[Any, Deferred[None]] = {}
        self.connection_attempts = 0

    # status

    @property
    def connection_count(self) -> int:
        return sum(len(c) for c in self._connections.values())

    @property
    def peers(self) -> list[Peer]:
        return [peer for peer, protocols in self._connections.items() if protocols]

    def _count(self, peer: Peer) -> int:
        return len(self._connections.get(peer, [])) + self._connecting.get(peer, 0)

    # running

    def start(self) -> None:
        self._stopping = False
        if self._loop is not None and self._loop.running:
            return
        loop = self._loop = LoopingCall(self._manage)
        loop.clock = self._clock
        loop.start(self._interval, now=True).addErrback(
            lambda f: _log.failure("The connection manager failed", f)
        )

    def stop(self) -> Deferred[Any]:
        """
        Stop connecting and hang up every connection; the Deferred fires
        once they are all closed.
        """
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for attempt in list(self._attempts):
            attempt.cancel()
        waits = []
        for protocols in self._connections.values():
            for protocol in protocols:
                waits.append(self._waiting.setdefault(protocol, Deferred()))
                protocol.transport.loseConnection()
        return DeferredList(waits)

    def _manage(self) -> None:
        if self._managing or self._stopping:
            return
        connecting = sum(self._connecting.values())
        if self.connection_count + connecting >= self.max_connections:
            return
        self._managing = True
        found = gatherResults(
            [creator.get_new_peers() for creator in self._creators], consumeErrors=True
        )
        found.addCallback(self._connect_to)
        found.addErrback(lambda f: _log.failure("Could not find peers", f))

        def done(_: object) -> None:
            self._managing = False

        found.addBoth(done)

    def _connect_to(self, peer_lists: list[list[Peer]]) -> None:
        if self._stopping:
            return
        now = self._clock.seconds()
        seen: dict[Peer, None] = {}
        for peers in peer_lists:
            for peer in peers:
                seen.setdefault(peer)
        candidates = [p for p in seen if p.available(now)]
        candidates.sort(key=lambda p: (-p.score, -p.rate))
        room = self.max_connections - self.connection_count - sum(self._connecting.values())
        # spread first: one connection to each peer, then a second, ...
        for level in range(self.per_peer):
            for peer in candidates:
                if room <= 0:
                    return
                if self._count(peer) == level:
                    self._open(peer)
                    room -= 1

    def _open(self, peer: Peer) -> None:
        self._connecting[peer] = self._connecting.get(peer, 0) + 1
        self.connection_attempts += 1

        def connected(protocol: Any) -> None:
            self._connecting[peer] -= 1
            if self._stopping:
                protocol.transport.loseConnection()
            self._connections.setdefault(peer, []).append(protocol)

        def failed(failure: Failure) -> None:
            self._connecting[peer] -= 1
            if failure.check(CancelledError):
                return  # we gave up on it (stop), not the peer
            peer.report_failure(self._clock.seconds())
            _log.info(
                "Could not connect to {peer}: {error}", peer=str(peer), error=failure.value
            )

        try:
            d = self._connect(peer, self)
        except Exception:
            d = Deferred()
            d.errback()
        self._attempts.add(d)

        def settled(result: object) -> object:
            self._attempts.discard(d)
            return result

        d.addBoth(settled)
        d.addCallbacks(connected, failed)

    # IConnectionManager

    def get_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        if self._stopping:
            return succeed(False)
        asked = gatherResults(
            [creator.send_next_request(peer, protocol) for creator in self._creators],
            consumeErrors=True,
        )
        return asked.addCallback(any)

    def protocol_disconnected(self, peer: Any, protocol: IRequestSender) -> None:
        protocols = self._connections.get(peer, [])
        if protocol in protocols:
            protocols.remove(protocol)
        if not protocols:
            self._connections.pop(peer, None)
        waiting = self._waiting.pop(protocol, None)
        if waiting is not None:
            waiting.callback(None)
        if not self._stopping:
            self._clock.callLater(0, self._manage)
