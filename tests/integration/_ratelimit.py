"""
Real peer connections on 127.0.0.1 through a rate limiter, measured; for
C{tests/integration/test_ratelimit.py} and
C{benchmarks/rate_limit_accuracy.py}.

A L{BlobServerFactory} serves one 2 MiB blob from memory on an ephemeral
port of 127.0.0.1; C{connections} L{BlobExchangeClient}s ask it for the
blob again and again over real TCP connections, and throw the bytes away.
One L{RateLimiter} limits either the clients' downloads or the server's
uploads.  Every C{interval} seconds the bytes each client has read so far
are sampled, from the client's own count (not the limiter's).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import LoopingCall, deferLater
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.interfaces import IBlobWriter, IConnectionManager, IRequestSender
from p2pblob.peer.client import BlobExchangeClient, ClientState
from p2pblob.peer.handlers import BlobAvailabilityHandlerFactory, BlobRequestHandlerFactory
from p2pblob.peer.peer import Peer
from p2pblob.peer.requests import ClientBlobRequest
from p2pblob.peer.server import BlobServerFactory
from p2pblob.ratelimit import RateLimiter
from p2pblob.testing import MemoryBlobStore

__all__ = ["Measurement", "Window", "measure", "windows"]

Sample = tuple[float, list[int]]


def windows(
    samples: list[Sample], length: float = 10.0, after: float = 1.0
) -> Iterator[tuple[float, list[float]]]:
    """
    The bytes a second moved by each connection in every window of at least
    C{length} seconds between two samples, for each sample taken C{after}
    seconds or more after the first: C{(start, rates)}.
    """
    start = samples[0][0]
    for i, (t0, before) in enumerate(samples):
        if t0 - start < after - 1e-9:
            continue
        for t1, moved in samples[i:]:
            if t1 - t0 >= length - 1e-9:
                yield t0 - start, [(m - b) / (t1 - t0) for m, b in zip(moved, before, strict=True)]
                break


@dataclass
class Window:
    """
    One window: when it starts (seconds after the first sample), the bytes
    a second of all connections, and of each.
    """

    start: float
    rate: float
    rates: list[float]


@dataclass
class Measurement:
    """
    What a run measured.

    @ivar samples: C{(seconds since the start, bytes read by each client)}.
    """

    limit: float
    direction: str
    samples: list[Sample] = field(default_factory=list)

    def windows(self, length: float = 10.0, after: float = 1.0) -> list[Window]:
        return [
            Window(start, sum(rates), rates)
            for start, rates in windows(self.samples, length, after)
        ]

    def deviations(self) -> list[float]:
        """
        The relative deviation from the limit of every window.
        """
        return [w.rate / self.limit - 1 for w in self.windows()]

    def worst_deviation(self) -> float:
        """
        The deviation of largest size (with its sign).
        """
        return max(self.deviations(), key=abs)

    def min_share(self) -> float:
        """
        The smallest share of the limit one connection got in any window.
        """
        return min(min(w.rates) / self.limit for w in self.windows())


@implementer(IBlobWriter)
class _Discard:
    """
    Counts the bytes of a blob and keeps none.
    """

    def __init__(self, blob_hash: str, length: int) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self.received = 0
        self.finished: Deferred[Any] = Deferred()
        self.finished.addErrback(lambda _: None)

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.length and not self.finished.called:
            self.finished.callback(None)

    def close(self) -> None:
        pass

    def cancel(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)


verifyClass(IBlobWriter, _Discard)


@implementer(IConnectionManager)
class _Again:
    """
    Asks for the same blob on every connection, until stopped.
    """

    def __init__(self, blob_hash: str) -> None:
        self.blob_hash = blob_hash
        self.running = True
        self.gone: list[Deferred[None]] = []
        self.lost = 0

    def get_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        if not self.running:
            return succeed(False)
        blob_hash = self.blob_hash
        request = ClientBlobRequest(
            {"requested_blob": blob_hash, "blob_data_payment_rate": 0.0},
            "incoming_blob",
            blob_hash,
            MAX_BLOB_SIZE,
            lambda n: _Discard(blob_hash, n),
        )
        request.finished_deferred.addErrback(lambda _: None)
        protocol.add_blob_request(request).addErrback(lambda _: None)
        return succeed(True)

    def protocol_disconnected(self, peer: Any, protocol: IRequestSender) -> None:
        self.lost += 1
        waiting, self.gone = self.gone, []
        for d in waiting:
            d.callback(None)


verifyClass(IConnectionManager, _Again)


async def measure(
    reactor: Any,
    limit: float,
    direction: str = "download",
    connections: int = 4,
    seconds: float = 12.0,
    interval: float = 0.05,
) -> Measurement:
    """
    Run C{connections} downloads through a limit of C{limit} bytes a second
    on the clients' C{"download"}s or the server's C{"upload"}s, for
    C{seconds}; then close everything.
    """
    if direction not in ("download", "upload"):
        raise ValueError(f"direction: {direction!r}")
    store = MemoryBlobStore()
    blob = await store.put_blob(os.urandom(MAX_BLOB_SIZE))
    limiter = RateLimiter(reactor)
    if direction == "download":
        limiter.max_download = limit
    else:
        limiter.max_upload = limit
    factory = BlobServerFactory(
        [BlobAvailabilityHandlerFactory(store), BlobRequestHandlerFactory(store)],
        reactor,
        max_connections_per_ip=None,
        rate_limiter=limiter if direction == "upload" else None,
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    manager = _Again(blob.blob_hash)
    clients: list[BlobExchangeClient] = []
    measurement = Measurement(limit, direction)
    sampler = LoopingCall(
        lambda: measurement.samples.append(
            (reactor.seconds(), [c.bytes_received for c in clients])
        )
    )
    sampler.clock = reactor
    try:
        peer = Peer("127.0.0.1", port.getHost().port)
        for _ in range(connections):
            client = BlobExchangeClient(
                peer, manager, reactor,
                rate_limiter=limiter if direction == "download" else None,
            )
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", peer.port)
            await connectProtocol(endpoint, client)
            clients.append(client)
        sampler.start(interval, now=True)
        await deferLater(reactor, seconds, lambda: None)
    finally:
        if sampler.running:
            sampler.stop()
        manager.running = False
        for client in clients:
            if client.state is not ClientState.CLOSED:
                gone: Deferred[None] = Deferred()
                manager.gone.append(gone)
                client.transport.abortConnection()  # type: ignore[attr-defined]
                await gone
        await factory.close_all()
        await port.stopListening()
        limiter.stopService()
    start = measurement.samples[0][0]
    measurement.samples = [(t - start, moved) for t, moved in measurement.samples]
    return measurement
