"""
Tests for L{p2pblob.http.metrics}: what C{GET /metrics} answers, scraped
from a node's real parts and parsed as Prometheus would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.discovery.announcer import Announcer
from p2pblob.http.api import NodeParts
from p2pblob.http.metrics import DownloadStats, MetricsResource, metrics_registry
from p2pblob.peer.handlers import BlobRequestHandlerFactory
from p2pblob.peer.peer import PeerRegistry
from p2pblob.ratelimit import RateLimiter
from tests.http._helpers import APITestCase
from tests.test_ratelimit import FakeConnection

METRICS = "http://127.0.0.1:5279/metrics"

# what every scrape has, whatever the node lacks
ALWAYS = {
    "p2pblob_uploaded_bytes": "counter",
    "p2pblob_downloaded_bytes": "counter",
    "p2pblob_peer_connections": "gauge",
    "p2pblob_disk_used_bytes": "gauge",
    "p2pblob_blobs_held": "gauge",
}

# and what a node with every part has besides
OPTIONAL = {
    "p2pblob_blobs_served": "counter",
    "p2pblob_blobs_downloaded": "counter",
    "p2pblob_download_errors": "counter",
    "p2pblob_dht_contacts": "gauge",
    "p2pblob_dht_lookups": "counter",
    "p2pblob_announce_queue_length": "gauge",
    "p2pblob_disk_limit_bytes": "gauge",
    "p2pblob_wallet_balance_points": "gauge",
}


class _FakeDHTNode:
    """
    What the metrics read of a L{p2pblob.dht.node.DHTNode}.
    """

    def __init__(self, contacts: int, lookups: int) -> None:
        self.routing = [object()] * contacts
        self.lookups = lookups


class _FakeDHT:
    """
    What the metrics read of a L{p2pblob.dht.service.DHTService}.
    """

    def __init__(self, node: _FakeDHTNode | None) -> None:
        self.node = node


class _BrokenDHT:
    """
    A DHT service that fails when its node is read.
    """

    @property
    def node(self) -> Any:
        raise RuntimeError("broken")


class _IdleDHT:
    """
    A DHT the announcer waits for: it never joins.
    """

    joined = False

    async def announce(self, blob_hash: bytes, tcp_port: int) -> int:
        raise AssertionError("nothing is announced before the DHT is joined")


def _sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inside = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inside}}}"


class MetricsTestCase(APITestCase):
    """
    The metrics of a node's real parts (those of the API's tests), with a
    blob request handler factory and download statistics.
    """

    def setUp(self) -> None:
        super().setUp()
        self.blob_requests = BlobRequestHandlerFactory(self.store)
        self.downloads = DownloadStats()
        self.registry = metrics_registry(
            self.parts, blob_requests=self.blob_requests, downloads=self.downloads,
        )

    def get(self, registry: CollectorRegistry | None = None, method: str = "GET") -> Any:
        """
        Send a request to the metrics resource of C{registry} (by default
        the test's); return the response and its body.
        """
        client = StubTreq(MetricsResource(registry or self.registry))
        d = client.request(method, METRICS)
        client.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def scrape(self, registry: CollectorRegistry | None = None) -> dict[str, Metric]:
        """
        The metric families of a successful scrape, by name.
        """
        response, body = self.get(registry)
        self.assertEqual(response.code, 200)
        families = text_string_to_metric_families(body.decode("utf-8"))
        return {family.name: family for family in families}

    def values(self, registry: CollectorRegistry | None = None) -> dict[str, float]:
        """
        The value of every sample of a scrape, by name and labels (as in
        C{name{label="value"}}).
        """
        return {
            _sample_key(sample.name, sample.labels): sample.value
            for family in self.scrape(registry).values()
            for sample in family.samples
        }


class ResourceTests(MetricsTestCase):
    def test_content_type(self) -> None:
        """
        The metrics come in Prometheus's text format, with its content type,
        not to be cached.
        """
        response, body = self.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), [CONTENT_TYPE_LATEST])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertIn(b"# HELP p2pblob_uploaded_bytes_total ", body)

    def test_other_methods(self) -> None:
        """
        Only C{GET} and C{HEAD} are answered.
        """
        response, body = self.get(method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        response, _ = self.get(method="POST")
        self.assertEqual(response.code, 405)

    def test_failure(self) -> None:
        """
        A metric that cannot be read makes a 500, without a traceback, and
        the failure is logged.
        """
        self.parts.dht = _BrokenDHT()
        response, body = self.get()
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricTests(MetricsTestCase):
    def test_names_types_and_help(self) -> None:
        """
        A node with every part has every metric, each of its type and with
        its help text.
        """
        self.store.disk_limit = 10**9
        self.parts.dht = _FakeDHT(_FakeDHTNode(0, 0))
        self.registry = metrics_registry(
            self.parts, blob_requests=self.blob_requests, downloads=self.downloads,
            announcer=Announcer(clock=self.clock, dht=_IdleDHT(), holdings=list,
                                tcp_port=lambda: 3333),
        )
        families = self.scrape()
        self.assertEqual({name: family.type for name, family in families.items()},
                         {**ALWAYS, **OPTIONAL})
        for family in families.values():
            self.assertTrue(family.documentation, family.name)

    def test_bytes_moved(self) -> None:
        """
        The bytes uploaded and downloaded are the rate limiter's totals,
        whichever peer moved them.
        """
        counters = self.limiter.counters
        counters.add("192.0.2.1", None, up=100, down=2000)
        counters.add("192.0.2.2", None, up=5)
        counters.add(None, None, down=30)
        values = self.values()
        self.assertEqual(values["p2pblob_uploaded_bytes_total"], 105)
        self.assertEqual(values["p2pblob_downloaded_bytes_total"], 2030)

    def test_peer_connections(self) -> None:
        """
        The connections open are those registered with the rate limiter.
        """
        connections = [FakeConnection() for _ in range(3)]
        for n, connection in enumerate(connections):
            self.limiter.register_connection(connection, f"192.0.2.{n}")
        self.limiter.unregister_protocol(connections[0])
        self.assertEqual(self.values()["p2pblob_peer_connections"], 2)

    def test_blobs_served(self) -> None:
        """
        A blob uploaded in full by a handler of the blob request handler
        factory counts as served.
        """
        self.assertEqual(self.values()["p2pblob_blobs_served_total"], 0)
        blob = self.successResultOf(self.store.put_blob(b"served"))
        handler = self.blob_requests.build_query_handler()
        answer = self.successResultOf(handler.handle_queries({"requested_blob": blob.blob_hash}))
        self.assertIn("blob_hash", answer["incoming_blob"])
        self.successResultOf(handler.send_blob_if_requested(StringTransport()))
        self.assertEqual(self.values()["p2pblob_blobs_served_total"], 1)

    def test_downloads(self) -> None:
        """
        The blobs downloaded and the download errors, by kind, are those
        counted in L{DownloadStats}.
        """
        values = self.values()
        self.assertEqual(values["p2pblob_blobs_downloaded_total"], 0)
        self.assertNotIn('p2pblob_download_errors_total{kind="timeout"}', values)
        for _ in range(3):
            self.downloads.blob_downloaded()
        for kind in ("timeout", "refused", "timeout"):
            self.downloads.error(kind)
        values = self.values()
        self.assertEqual(values["p2pblob_blobs_downloaded_total"], 3)
        self.assertEqual(values['p2pblob_download_errors_total{kind="timeout"}'], 2)
        self.assertEqual(values['p2pblob_download_errors_total{kind="refused"}'], 1)

    def test_dht(self) -> None:
        """
        The DHT contacts are those of the node's routing table, the lookups
        those the node counted; both are 0 before the node starts.
        """
        self.parts.dht = _FakeDHT(None)
        values = self.values()
        self.assertEqual(
            (values["p2pblob_dht_contacts"], values["p2pblob_dht_lookups_total"]), (0, 0)
        )
        self.parts.dht = _FakeDHT(_FakeDHTNode(contacts=7, lookups=12))
        values = self.values()
        self.assertEqual(
            (values["p2pblob_dht_contacts"], values["p2pblob_dht_lookups_total"]), (7, 12)
        )

    def test_announce_queue(self) -> None:
        """
        The announce queue is the blobs due and not announced yet: here, all
        the blobs held, while the DHT is not joined.
        """
        sd, first, second = ("a" * 96, "b" * 96, "c" * 96)
        announcer = Announcer(clock=self.clock, dht=_IdleDHT(),
                              holdings=lambda: [(sd, [sd, first, second])],
                              tcp_port=lambda: 3333)
        registry = metrics_registry(self.parts, announcer=announcer)
        self.assertEqual(self.values(registry)["p2pblob_announce_queue_length"], 0)
        announcer.startService()
        self.addCleanup(announcer.stopService)
        self.assertEqual(self.values(registry)["p2pblob_announce_queue_length"], 3)

    def test_disk(self) -> None:
        """
        The disk use and the blobs held are the store's; the limit is left
        out while there is none.
        """
        values = self.values()
        self.assertEqual((values["p2pblob_disk_used_bytes"], values["p2pblob_blobs_held"]),
                         (0, 0))
        self.assertNotIn("p2pblob_disk_limit_bytes", values)
        for data in (b"one blob", b"another blob"):
            self.successResultOf(self.store.put_blob(data))
        self.store.disk_limit = 10**6
        values = self.values()
        self.assertEqual((values["p2pblob_disk_used_bytes"], values["p2pblob_blobs_held"]),
                         (20, 2))
        self.assertEqual(values["p2pblob_disk_limit_bytes"], 10**6)

    def test_store_closed(self) -> None:
        """
        While the store is closed, the blobs held are left out; the rest
        is scraped.
        """
        self.store.stop()
        values = self.values()
        self.assertNotIn("p2pblob_blobs_held", values)
        self.assertEqual(values["p2pblob_disk_used_bytes"], 0)

    def test_wallet(self) -> None:
        """
        The wallet's balance is in points; it is left out while the wallet
        is stopped.
        """
        self.assertEqual(self.values()["p2pblob_wallet_balance_points"], 100.0)
        self.wallet.stopService()
        self.assertNotIn("p2pblob_wallet_balance_points", self.values())


class PartialNodeTests(MetricsTestCase):
    def test_bare_node(self) -> None:
        """
        A node without DHT, announcer, wallet, blob request factory or
        download statistics is scraped all the same, without their metrics.
        """
        self.parts.wallet = None
        families = self.scrape(metrics_registry(self.parts))
        self.assertEqual({name: family.type for name, family in families.items()}, ALWAYS)


class IsolationTests(MetricsTestCase):
    def test_two_nodes(self) -> None:
        """
        Two nodes in one process each have a registry of their own, and
        leave the library's global registry alone.
        """
        other_limiter = RateLimiter(self.clock)
        other = NodeParts(config=self.parts.config, blob_store=self.store,
                          rate_limiter=other_limiter)
        other_registry = metrics_registry(other)
        self.limiter.counters.add(None, None, up=10)
        other_limiter.counters.add(None, None, up=99)
        self.assertEqual(self.values()["p2pblob_uploaded_bytes_total"], 10)
        self.assertEqual(self.values(other_registry)["p2pblob_uploaded_bytes_total"], 99)
        self.assertEqual(
            [family.name for family in REGISTRY.collect() if family.name.startswith("p2pblob")],
            [],
        )


class DownloadStatsTests(SynchronousTestCase):
    def test_read_through(self) -> None:
        """
        Blobs downloaded are those the node's peers served it, failures
        those the download service counted.
        """
        registry = PeerRegistry(Clock())
        failures: Counter[str] = Counter(no_peers=2)
        stats = DownloadStats(registry, failures)
        self.assertEqual(stats.blobs_downloaded, 0)
        registry.get("127.0.0.1", 3333).report_success(100, 0.1)
        registry.get("127.0.0.2", 3333).report_success(100, 0.1)
        stats.blob_downloaded()
        self.assertEqual(stats.blobs_downloaded, 3)
        failures["disk"] += 1
        self.assertEqual(stats.errors, {"no_peers": 2, "disk": 1})
