"""
The node's metrics for Prometheus: L{MetricsResource} answers C{GET} with
them in Prometheus's text format.

The figures are not kept twice: a L{NodeCollector} reads them from the
node's parts (L{p2pblob.http.api.NodeParts}) and a few extra objects each
time it is scraped.  It is registered in a private
L{prometheus_client.registry.CollectorRegistry} (L{metrics_registry}),
never in the library's global one, so that several nodes can run in one
process.

The metrics, all named C{p2pblob_…}::

    uploaded_bytes_total, downloaded_bytes_total   bytes moved with peers
    blobs_served_total                             blobs uploaded in full
    blobs_downloaded_total                         blobs downloaded from peers
    download_errors_total{kind="…"}                downloads failed, by kind
    peer_connections                               peer connections open now
    dht_contacts, dht_lookups_total                the routing table, lookups
    announce_queue_length                          blobs due to be announced
    disk_used_bytes, disk_limit_bytes              disk use and its limit
    blobs_held                                     blobs in the store
    wallet_balance_points                          the wallet's balance

A metric whose source the node lacks is left out rather than given a made-up
value: the DHT's without a DHT, the announce queue without an announcer,
the wallet's without a wallet (or while its ledger is closed), the blob
count while the store is closed, the counts of L{DownloadStats} and of
blobs served unless those objects are given.  So is C{disk_limit_bytes}
when there is no limit: then C{disk_used_bytes / disk_limit_bytes} gives
no value at all, rather than a comparison with NaN that is always false.
Counters start from zero when the node starts (the DHT's when the DHT
does), which Prometheus takes as a reset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from p2pblob.errors import P2PBlobError
from p2pblob.interfaces import IHashAnnouncer
from p2pblob.wallet.units import from_micro

if TYPE_CHECKING:
    from p2pblob.http.api import NodeParts
    from p2pblob.peer.handlers import BlobRequestHandlerFactory
    from p2pblob.peer.peer import Peer

__all__ = ["DownloadStats", "MetricsResource", "NodeCollector", "metrics_registry"]

_log = Logger()

PREFIX = "p2pblob_"
"""
What the name of every metric of the node starts with.
"""


class DownloadStats:
    """
    What the node's downloads from peers did, for the metrics: counted
    here, and read from the node's peers and download service.

    @param registry: the peers the node's downloads and stream fetches
        use; the blobs each served us are counted as downloaded.
    @param failures: the download service's failed downloads, by kind.
    @ivar errors: downloads that failed, by kind of failure.
    """

    def __init__(self, registry: Iterable[Peer] | None = None,
                 failures: Counter[str] | None = None) -> None:
        self._registry = registry
        self._counted = 0
        self.errors: Counter[str] = failures if failures is not None else Counter()

    @property
    def blobs_downloaded(self) -> int:
        """
        Blobs downloaded from peers in full.
        """
        served = 0 if self._registry is None else sum(p.blobs_served for p in self._registry)
        return self._counted + served

    def blob_downloaded(self) -> None:
        """
        A blob was downloaded from a peer in full (besides those the
        registry's peers count).
        """
        self._counted += 1

    def error(self, kind: str) -> None:
        """
        A download from a peer failed.

        @param kind: a short word for the failure, such as C{"no_peers"},
            from a small fixed set: each kind is a time series of its own.
        """
        self.errors[kind] += 1


class NodeCollector(Collector):
    """
    Reads the metrics of a node (see the module docstring) whenever its
    registry is scraped.

    @param parts: the node's parts.
    @param announcer: what announces its blobs, for the announce queue.
    @param blob_requests: the peer server's blob request handler factory,
        for the blobs served.
    @param downloads: what the download service counts.
    """

    def __init__(
        self,
        parts: NodeParts,
        *,
        announcer: IHashAnnouncer | None = None,
        blob_requests: BlobRequestHandlerFactory | None = None,
        downloads: DownloadStats | None = None,
    ) -> None:
        self.parts = parts
        self.announcer = announcer
        self.blob_requests = blob_requests
        self.downloads = downloads

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic()
        yield from self._transfers()
        yield from self._dht()
        yield from self._announcing()
        yield from self._storage()
        yield from self._wallet()

    def _traffic(self) -> Iterator[Metric]:
        limiter = self.parts.rate_limiter
        yield _counter(
            "uploaded_bytes", "Bytes sent to peers on peer connections "
            "(blob data and messages).", limiter.uploaded,
        )
        yield _counter(
            "downloaded_bytes", "Bytes received from peers on peer connections "
            "(blob data and messages).", limiter.downloaded,
        )
        yield _gauge("peer_connections", "Peer connections open: the peer server's "
                     "and the downloads'.", limiter.connections)

    def _transfers(self) -> Iterator[Metric]:
        if self.blob_requests is not None:
            yield _counter("blobs_served", "Blobs uploaded to peers in full.",
                           self.blob_requests.blobs_served)
        downloads = self.downloads
        if downloads is None:
            return
        yield _counter("blobs_downloaded", "Blobs downloaded from peers in full.",
                       downloads.blobs_downloaded)
        errors = CounterMetricFamily(
            PREFIX + "download_errors", "Downloads from peers that failed, by kind of failure.",
            labels=["kind"],
        )
        for kind, count in sorted(downloads.errors.items()):
            errors.add_metric([kind], count)
        yield errors

    def _dht(self) -> Iterator[Metric]:
        dht = self.parts.dht
        if dht is None:
            return
        node = dht.node
        yield _gauge("dht_contacts", "Contacts in the DHT routing table.",
                     0 if node is None else len(node.routing))
        yield _counter("dht_lookups", "Iterative DHT lookups started.",
                       0 if node is None else node.lookups)

    def _announcing(self) -> Iterator[Metric]:
        if self.announcer is not None:
            yield _gauge("announce_queue_length", "Blobs due to be announced on the DHT "
                         "and not sent yet.", self.announcer.hash_queue_size())

    def _storage(self) -> Iterator[Metric]:
        store = self.parts.blob_store
        yield _gauge("disk_used_bytes", "Bytes of blobs on disk and set aside for "
                     "blobs being written.", store.used_bytes())
        if store.disk_limit is not None:
            yield _gauge("disk_limit_bytes", "Bytes of blobs allowed on disk (absent "
                         "when unlimited).", store.disk_limit)
        held = _if_open(lambda: len(store.held_blobs()))
        if held is not None:
            yield _gauge("blobs_held", "Verified blobs in the store.", held)

    def _wallet(self) -> Iterator[Metric]:
        wallet = self.parts.wallet
        if wallet is None:
            return
        balance = _if_open(lambda: wallet.ledger.balance())
        if balance is not None:
            yield _gauge("wallet_balance_points", "Points the wallet holds, those "
                         "reserved included.", from_micro(balance))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _if_open(read: Callable[[], int]) -> int | None:
    """
    What C{read} reads from a part of the node, or L{None} if the part is
    not open (a store or a wallet not started, or stopped).
    """
    try:
        return read()
    except P2PBlobError:
        return None


def metrics_registry(
    parts: NodeParts,
    *,
    announcer: IHashAnnouncer | None = None,
    blob_requests: BlobRequestHandlerFactory | None = None,
    downloads: DownloadStats | None = None,
) -> CollectorRegistry:
    """
    A new registry of its own holding the L{NodeCollector} of C{parts} (the
    other arguments are the collector's).
    """
    registry = CollectorRegistry()
    registry.register(NodeCollector(
        parts, announcer=announcer, blob_requests=blob_requests, downloads=downloads,
    ))
    return registry


class MetricsResource(Resource):
    """
    Answers C{GET} (and C{HEAD}) with the metrics of C{registry} in
    Prometheus's text format; other methods with 405.  If a metric cannot
    be read, the failure is logged and the answer is a 500.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        try:
            body = generate_latest(self._registry)
        except Exception:
            _log.failure("Could not collect the metrics")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"The metrics could not be collected; the node's log has the details.\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return body
