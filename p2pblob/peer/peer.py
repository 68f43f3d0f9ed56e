"""
Peers, and what we have learnt about each: how fast it served us, how often
it failed, and when we may try it again.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["Peer", "PeerRegistry"]

# Points, as in lbrynet's 2015 BlobRequester.
SUCCESS_POINTS = 5.0
FAILURE_POINTS = -10.0
MINOR_FAILURE_POINTS = -2.0
# lbry-sdk ignores a failing peer for min(30 s, failures ** 2).
MAX_BACKOFF = 30.0


class Peer:
    """
    A node we can connect to, at C{host:port} (TCP).

    @ivar score: the sum of points for blobs served (+) and failures (-),
        over the life of this process.
    @ivar failures: consecutive failures; reset by a success.
    @ivar retry_at: the time before which we should not connect again.
    @ivar rate: bytes per second of the last blob it served us.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.score = 0.0
        self.failures = 0
        self.retry_at = 0.0
        self.rate = 0.0
        self.blobs_served = 0
        self.bytes_served = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Peer {self} score={self.score:g} failures={self.failures}>"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def available(self, now: float) -> bool:
        return now >= self.retry_at

    def report_success(self, num_bytes: int, seconds: float) -> None:
        self.score += SUCCESS_POINTS
        self.failures = 0
        self.retry_at = 0.0
        self.blobs_served += 1
        self.bytes_served += num_bytes
        if seconds > 0:
            self.rate = num_bytes / seconds

    def report_failure(self, now: float, points: float = FAILURE_POINTS) -> None:
        """
        The peer failed us: lower its score and keep away from it for
        C{min(30, failures ** 2)} seconds.
        """
        self.score += points
        self.failures += 1
        self.retry_at = now + min(MAX_BACKOFF, float(self.failures**2))


class PeerRegistry:
    """
    One L{Peer} object per address, so that what one download learns about a
    peer the others know too.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._peers: dict[tuple[str, int], Peer] = {}

    def get(self, host: str, port: int) -> Peer:
        key = (host, port)
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = Peer(host, port)
        return peer

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._peers.values()))
