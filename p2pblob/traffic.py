"""
What the node has moved: bytes up and down, in all, per peer and per stream.
The rate limiter counts into a L{TrafficCounters}; the API and the metrics
read it.

What is counted: every byte the peer protocols read from or write to their
connections (the JSON messages and the blob bodies; not TCP/IP headers, not
the DHT's UDP datagrams).  The totals and the figures of each peer (named
by its host, whichever side opened the connection) grow with every read and
write; the figures of each stream (its sd hash) grow by the body bytes of
each of its blobs moved, when that blob's transfer ends (complete or cut
short), for the blobs that C{stream_of} maps to a stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

__all__ = ["Traffic", "TrafficCounters"]

_log = Logger()


@dataclass
class Traffic:
    """
    Bytes moved in each direction.
    """

    up: int = 0
    down: int = 0


class TrafficCounters:
    """
    Bytes moved by the node: in all, per peer and per stream.

    @ivar total: every byte counted with L{add}.
    @ivar stream_of: maps a blob hash to the sd hash of a stream it belongs
        to, or to L{None}; without it, nothing is counted per stream.
    """

    def __init__(self, stream_of: Callable[[str], str | None] | None = None) -> None:
        self.stream_of = stream_of
        self.total = Traffic()
        self._peers: dict[str, Traffic] = {}
        self._streams: dict[str, Traffic] = {}

    def add(self, peer: str | None, stream: str | None, up: int = 0, down: int = 0) -> None:
        """
        Count bytes moved: in the totals, and for C{peer} and C{stream} when
        they are given.
        """
        total = self.total
        total.up += up
        total.down += down
        if peer is not None:
            traffic = self._peers.get(peer)
            if traffic is None:
                traffic = self._peers[peer] = Traffic()
            traffic.up += up
            traffic.down += down
        if stream is not None:
            self._add_to_stream(stream, up, down)

    def add_blob(self, blob_hash: str, up: int = 0, down: int = 0) -> None:
        """
        Count bytes already counted with L{add} for the stream of blob
        C{blob_hash} as well, if C{stream_of} knows it.
        """
        if self.stream_of is None:
            return
        try:
            stream = self.stream_of(blob_hash)
        except Exception:
            _log.failure("Could not find the stream of blob {blob}", blob=blob_hash)
            return
        if stream is not None:
            self._add_to_stream(stream, up, down)

    def _add_to_stream(self, stream: str, up: int, down: int) -> None:
        traffic = self._streams.get(stream)
        if traffic is None:
            traffic = self._streams[stream] = Traffic()
        traffic.up += up
        traffic.down += down

    def by_peer(self) -> dict[str, Traffic]:
        """
        The bytes moved with each peer (a copy).
        """
        return {peer: Traffic(t.up, t.down) for peer, t in self._peers.items()}

    def by_stream(self) -> dict[str, Traffic]:
        """
        The bytes of each stream's blobs moved (a copy).
        """
        return {stream: Traffic(t.up, t.down) for stream, t in self._streams.items()}
