"""
Tests for L{p2pblob.http.api.NodeAPI}, through treq's in-memory client
(no sockets): every route, and how each kind of bad request is answered.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from p2pblob._threads import run_inline
from p2pblob._version import __version__
from p2pblob.blob.hashing import blob_hash
from p2pblob.http.api import MAX_PAGE
from p2pblob.peer.peer import PeerRegistry
from p2pblob.stream.creator import publish_file
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.units import MICRO
from tests.http._helpers import API, APITestCase


class ReadingTests(APITestCase):
    def test_status(self) -> None:
        """
        The status names the version, where peers reach the node, the DHT,
        bandwidth and its limits, disk use, prices and the wallet balance.
        """
        self.successResultOf(self.store.put_blob(b"x" * 1000))
        self.limiter.counters.add("127.0.0.9:3333", None, up=10, down=20)
        self.limiter.max_upload = 1_000_000
        status, body = self.request("GET", "/status")
        self.assertEqual(status, 200)
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["peer"], {"listening": "127.0.0.1:3333", "connections": 0})
        self.assertEqual(body["dht"], {"enabled": False, "joined": False, "contacts": 0})
        self.assertEqual((body["bandwidth"]["uploaded"], body["bandwidth"]["downloaded"]),
                         (10, 20))
        self.assertEqual(body["bandwidth"]["limits"]["max_upload"], 1_000_000)
        self.assertIsNone(body["bandwidth"]["limits"]["max_download"])
        self.assertEqual(body["disk"], {"used": 1000, "limit": None, "blobs": 1})
        self.assertEqual(body["prices"], {"price": 1.5, "min_price": 1.0})
        self.assertEqual(body["wallet"], {"balance": "100", "reserved": "0"})

    def test_blobs_paged(self) -> None:
        """
        The blobs held are listed by hash, a page at a time.
        """
        hashes = sorted(self.successResultOf(self.store.put_blob(bytes([n]) * 10)).blob_hash
                        for n in range(5))
        status, body = self.request("GET", "/blobs?offset=1&limit=2")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"total": 5, "offset": 1,
                                "blobs": [{"hash": h, "length": 10} for h in hashes[1:3]]})

    def test_bad_page(self) -> None:
        """
        A page asked for with arguments that are not whole numbers, or
        too long, is refused with 400.
        """
        self.assertError(self.request("GET", "/blobs?limit=ten"), 400, "bad_argument")
        self.assertError(self.request("GET", "/blobs?offset=-1"), 400, "bad_argument")
        self.assertError(self.request("GET", f"/blobs?limit={MAX_PAGE + 1}"), 400,
                         "bad_argument")

    def test_one_blob(self) -> None:
        """
        One blob is found by its hash; an unknown one is 404, a malformed
        hash 400.
        """
        blob = self.successResultOf(self.store.put_blob(b"y" * 33))
        self.assertEqual(self.request("GET", f"/blobs/{blob.blob_hash}"),
                         (200, {"hash": blob.blob_hash, "length": 33}))
        self.assertError(self.request("GET", f"/blobs/{blob_hash(b'z')}"), 404,
                         "unknown_blob")
        self.assertError(self.request("GET", "/blobs/xyz"), 400, "bad_blob_hash")

    def test_peers(self) -> None:
        """
        Each peer is listed with the bytes moved with it.
        """
        self.limiter.counters.add("127.0.0.9:3333", None, up=5)
        self.limiter.counters.add("127.0.0.8:3333", None, down=7)
        self.assertEqual(self.request("GET", "/peers"), (200, {"peers": [
            {"peer": "127.0.0.8:3333", "uploaded": 0, "downloaded": 7},
            {"peer": "127.0.0.9:3333", "uploaded": 5, "downloaded": 0},
        ], "sources": []}))

    def test_peer_scores(self) -> None:
        """
        The peers downloads fetch from are listed best first, with their
        scores and whether they may be asked now.
        """
        registry = PeerRegistry(self.clock)
        self.parts.peer_registry = registry
        good, bad = registry.get("127.0.0.5", 3333), registry.get("127.0.0.6", 3333)
        good.report_success(2_000_000, 0.1)
        bad.report_failure(now=1000.0)
        status, body = self.request("GET", "/peers")
        self.assertEqual(status, 200)
        self.assertEqual([(p["address"], p["blobs_served"], p["available"])
                          for p in body["sources"]],
                         [("127.0.0.5:3333", 1, True), ("127.0.0.6:3333", 0, False)])
        self.assertGreater(body["sources"][0]["score"], body["sources"][1]["score"])

    def test_wallet(self) -> None:
        """
        The wallet summary gives the key, balance and reservations.
        """
        self.wallet.reserve_micro("127.0.0.9:3333", 2 * MICRO)
        status, body = self.request("GET", "/wallet")
        self.assertEqual(status, 200)
        self.assertEqual(body["key"], self.wallet.public_hex)
        self.assertEqual((body["balance"], body["reserved"], body["reservations"]),
                         ("100", "2", 1))

    def test_no_wallet(self) -> None:
        """
        A node without a wallet answers its wallet route with 404.
        """
        self.parts.wallet = None
        self.assertError(self.request("GET", "/wallet"), 404, "no_wallet")
        self.assertIsNone(self.request("GET", "/status")[1]["wallet"])


class SettingsTests(APITestCase):
    def test_read(self) -> None:
        self.store.disk_limit = 10**9
        self.assertEqual(self.request("GET", "/settings"), (200, {
            "max_upload": None, "max_download": None, "max_upload_per_connection": None,
            "max_download_per_connection": None, "disk_limit": 10**9,
            "price": 1.5, "min_price": 1.0,
        }))

    def test_change_prices(self) -> None:
        """
        A paid node's prices change at once (the server judges the next
        offers by them); one price may change alone.
        """
        status, body = self.request("PATCH", "/settings", {"price": 2, "min_price": 0.5})
        self.assertEqual((status, body["price"], body["min_price"]), (200, 2.0, 0.5))
        self.assertEqual((self.parts.rates.price, self.parts.rates.min_price), (2.0, 0.5))
        self.assertEqual(self.parts.rates.judge_offer(0.4), "RATE_TOO_LOW")
        self.request("PATCH", "/settings", {"price": 3})
        self.assertEqual((self.parts.rates.price, self.parts.rates.min_price), (3.0, 0.5))

    def test_mode_needs_restart(self) -> None:
        """
        Switching between free and paid serving needs a restart: refused
        with 409, nothing changed.
        """
        message = self.assertError(
            self.request("PATCH", "/settings", {"min_price": 0, "max_upload": 5}), 409,
            "restart_needed")
        self.assertIn("paid mode", message)
        self.assertEqual(self.parts.rates.min_price, 1.0)
        self.assertIsNone(self.limiter.max_upload)
        self.parts.rates = PaymentRateManager(0.0)
        self.assertError(self.request("PATCH", "/settings", {"min_price": 1}), 409,
                         "restart_needed")
        # (a free server may pay when it downloads)
        self.assertEqual(self.request("PATCH", "/settings", {"price": 1})[0], 200)
        self.assertEqual((self.parts.rates.price, self.parts.rates.paid), (1.0, False))

    def test_bad_prices(self) -> None:
        for change in ({"price": "2"}, {"price": -1}, {"min_price": True}, {"price": 1e9}):
            self.assertError(self.request("PATCH", "/settings", change), 400, "bad_setting")
        self.assertEqual(self.parts.rates.price, 1.5)

    def test_change(self) -> None:
        """
        Rate limits and the disk limit change at once, given as numbers of
        bytes, as strings with units, or null for no limit.
        """
        self.limiter.max_download = 5000
        status, body = self.request("PATCH", "/settings", {
            "max_upload": "2MB", "max_download": None, "max_upload_per_connection": 1000,
            "disk_limit": "1GiB",
        })
        self.assertEqual(status, 200)
        self.assertEqual((self.limiter.max_upload, self.limiter.max_download,
                          self.limiter.max_upload_per_connection, self.store.disk_limit),
                         (2_000_000, None, 1000, 2**30))
        self.assertEqual(body["max_upload"], 2_000_000)
        self.assertEqual(body["disk_limit"], 2**30)

    def test_all_or_nothing(self) -> None:
        """
        A change with one bad setting changes nothing, and says which.
        """
        message = self.assertError(
            self.request("PATCH", "/settings", {"max_upload": 1000, "max_download": "fast"}),
            400, "bad_setting")
        self.assertIn("max_download", message)
        self.assertIsNone(self.limiter.max_upload)

    def test_bad_values(self) -> None:
        """
        Settings of the wrong type, negative, or unknown are refused.
        """
        for change in ({"max_upload": True}, {"max_upload": [1]}, {"disk_limit": -1},
                       {"max_upload": 1.5}):
            self.assertError(self.request("PATCH", "/settings", change), 400, "bad_setting")
        message = self.assertError(self.request("PATCH", "/settings", {"colour": 2}), 400,
                                   "unknown_setting")
        self.assertIn("max_upload", message)

    def test_bad_json(self) -> None:
        """
        A body that is not a JSON object is refused with 400.
        """
        self.assertError(self.request("PATCH", "/settings", b"{nope"), 400, "bad_json")
        self.assertError(self.request("PATCH", "/settings", [1, 2]), 400, "bad_json")
        self.assertError(self.request("PATCH", "/settings", b"[" * 100000), 400, "bad_json")


class ErrorTests(APITestCase):
    def test_unknown_route(self) -> None:
        self.assertError(self.request("GET", "/nothing/here"), 404, "not_found")

    def test_wrong_method(self) -> None:
        """
        A method a route does not take gets 405 and the methods it does.
        """
        self.assertError(self.request("DELETE", "/status"), 405, "method_not_allowed")
        d = self.client.request("DELETE", API + "/status")
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])

    def test_bug(self) -> None:
        """
        A bug in the node is 500 with no traceback in the answer, and
        logged with one.
        """
        def broken() -> str:
            raise ZeroDivisionError("oops")

        self.parts.peer_address = broken  # type: ignore[assignment]
        with capturedLogs() as events:
            message = self.assertError(self.request("GET", "/status"), 500, "internal_error")
        self.assertNotIn("oops", message)
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.flushLoggedErrors(ZeroDivisionError)


class StreamRouteTests(APITestCase):
    def test_stream_mounted(self) -> None:
        """
        C{/stream/<sd hash>} reaches the stream gateway, behind the same
        guard as the API.
        """
        content = os.urandom(3000)
        source = Path(self.mktemp())
        source.write_bytes(content)
        sd_hash = self.successResultOf(Deferred.fromCoroutine(
            publish_file(self.store, run_inline, source)))[1]
        d = self.client.get(f"http://127.0.0.1:5279/stream/{sd_hash}",
                            headers={"Range": "bytes=10-19"})
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 206)
        self.assertEqual(self.successResultOf(response.content()), content[10:20])
        d = self.client.get(f"http://127.0.0.1:5279/stream/{sd_hash}",
                            headers={"Host": "evil.example"})
        self.client.flush()
        self.assertEqual(self.successResultOf(d).code, 403)

    def test_no_metrics(self) -> None:
        """
        An API built without metrics answers C{/metrics} with a JSON 404.
        """
        d = self.client.get("http://127.0.0.1:5279/metrics")
        self.client.flush()
        self.assertEqual(self.successResultOf(d).code, 404)


class PublishTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.parts.run = run_inline
        self.file = Path(self.mktemp()).absolute()
        self.content = os.urandom(5000)
        self.file.write_bytes(self.content)

    def test_publish(self) -> None:
        """
        A file of the machine is published into the node's store; the
        answer carries the sd hash and the descriptor.
        """
        status, body = self.request("POST", "/publish", {"path": str(self.file)})
        self.assertEqual(status, 200, body)
        self.assertEqual(blob_hash(body["sd_blob"].encode()), body["sd_hash"])
        self.assertEqual((body["name"], body["blobs"]), (self.file.name, 1))
        self.assertTrue(self.store.has_blob(body["sd_hash"]))

    def test_bad_paths(self) -> None:
        self.assertError(self.request("POST", "/publish", {"path": self.file.name}), 400,
                         "bad_argument")
        self.assertError(self.request("POST", "/publish", {"path": str(self.file) + "-no"}),
                         400, "bad_path")
        self.assertError(self.request("POST", "/publish", {"path": 3}), 400, "bad_argument")
        self.assertError(self.request("POST", "/publish", {}), 400, "bad_argument")

    def test_not_publishing(self) -> None:
        self.parts.run = None
        self.assertError(self.request("POST", "/publish", {"path": str(self.file)}), 404,
                         "not_found")
