"""
The stream routes of the API (C{/api/v1/streams}) over a real
L{DownloadService} that has no peers: every route, state change and error
(downloads that do move bytes are tested through the daemon, in
L{tests.http.test_browser} and L{tests.cli.test_daemon_commands}).
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.defer import Deferred

from p2pblob._threads import run_inline
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download.service import DownloadService
from p2pblob.peer.peer import PeerRegistry
from p2pblob.stream.creator import publish_file
from tests.http._helpers import APITestCase

HASH = "ab" * 48


class StreamRoutesTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        directory = Path(self.mktemp())
        # no peers to ask at all, unless a test gives a finder
        self.finder: StaticPeerFinder | None = None
        self.downloads = DownloadService(
            self.clock, self.parts.config, self.store, peer_finder=lambda: self.finder,
            state_path=directory / "downloads.sqlite", default_output=directory / "out",
        )
        self.downloads.startService()
        self.addCleanup(self.downloads.stopService)
        self.parts.downloads = self.downloads

    def test_start_by_hash(self) -> None:
        """
        A download started by sd hash is listed; with no peers it fails,
        saying why.
        """
        status, body = self.request("POST", "/streams", {"sd_hash": HASH.upper()})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["stream"]["sd_hash"], HASH)
        self.clock.advance(1)
        status, body = self.request("GET", "/streams")
        self.assertEqual(status, 200)
        [stream] = body["streams"]
        self.assertEqual(stream["state"], "failed")
        self.assertIn("no peers", stream["error"])
        self.assertEqual(self.downloads.failures, {"config": 1})
        self.assertEqual(self.request("GET", f"/streams/{HASH}")[1]["stream"]["state"], "failed")

    def test_start_by_descriptor(self) -> None:
        """
        A download may be started with the text of an .sd file.
        """
        source = Path(self.mktemp())
        source.write_bytes(os.urandom(1000))
        descriptor, sd_hash = self.successResultOf(Deferred.fromCoroutine(
            publish_file(self.store, run_inline, source)))
        status, body = self.request("POST", "/streams",
                                    {"sd_blob": descriptor.to_sd_blob().decode("utf-8")})
        self.assertEqual((status, body["stream"]["sd_hash"]), (200, sd_hash))

    def test_actions(self) -> None:
        """
        A download (here one whose peers are not found yet) can be paused,
        resumed, cancelled and deleted.
        """
        self.finder = StaticPeerFinder(PeerRegistry(self.clock), [])
        self.request("POST", "/streams", {"sd_hash": HASH})
        self.assertEqual(self.request("GET", f"/streams/{HASH}")[1]["stream"]["state"], "waiting")
        status, body = self.request("POST", f"/streams/{HASH}/pause", {})
        self.assertEqual((status, body["stream"]["state"]), (200, "paused"))
        status, body = self.request("POST", f"/streams/{HASH}/cancel", {})
        self.assertEqual((status, body["stream"]["state"]), (200, "cancelled"))
        status, body = self.request("POST", f"/streams/{HASH}/resume", {})
        self.assertEqual(status, 200)
        self.assertIn(body["stream"]["state"], ("waiting", "running", "failed"))
        self.assertEqual(self.request("DELETE", f"/streams/{HASH}?blobs=true"),
                         (200, {"deleted": HASH, "blobs_deleted": True}))
        self.assertEqual(self.request("GET", "/streams"), (200, {"streams": []}))

    def test_unknown_stream(self) -> None:
        for method, path in [("GET", f"/streams/{HASH}"), ("POST", f"/streams/{HASH}/pause"),
                             ("POST", f"/streams/{HASH}/resume"), ("DELETE", f"/streams/{HASH}")]:
            body = {} if method == "POST" else None
            self.assertError(self.request(method, path, body), 404, "unknown_stream")

    def test_bad_requests(self) -> None:
        """
        Malformed hashes, descriptors, bodies and actions are 4xx with a
        reason, never 500.
        """
        self.assertError(self.request("GET", "/streams/nothex"), 400, "bad_sd_hash")
        self.assertError(self.request("POST", "/streams", {"sd_hash": "xyz"}), 400,
                         "bad_descriptor")
        self.assertError(self.request("POST", "/streams", {"sd_blob": "{not json"}), 400,
                         "bad_descriptor")
        self.assertError(self.request("POST", "/streams", {"sd_blob": '{"blobs": 5}'}), 400,
                         "bad_descriptor")
        self.assertError(self.request("POST", "/streams", {}), 400, "bad_argument")
        self.assertError(self.request("POST", "/streams", {"sd_hash": 5}), 400, "bad_argument")
        self.assertError(self.request("POST", "/streams", {"sd_hash": HASH, "x": 1}), 400,
                         "bad_argument")
        self.assertError(self.request("POST", "/streams", {"sd_hash": HASH, "output_dir": 3}),
                         400, "bad_argument")
        self.request("POST", "/streams", {"sd_hash": HASH})
        self.assertError(self.request("POST", f"/streams/{HASH}/explode", {}), 404, "not_found")
        self.assertError(self.request("DELETE", f"/streams/{HASH}?blobs=maybe"), 400,
                         "bad_argument")

    def test_no_download_service(self) -> None:
        self.parts.downloads = None
        self.assertError(self.request("GET", "/streams"), 404, "no_downloads")
