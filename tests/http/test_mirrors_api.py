"""
The mirror routes of the control API: C{GET} and C{POST /api/v1/mirrors},
C{GET /api/v1/mirrors/jobs/<id>}, over a real blob store and a mirror
service exporting to the memory backend.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred

from p2pblob._threads import run_inline
from p2pblob.interfaces import IStoragePlugin
from p2pblob.storage.mirror import MirrorService, MirrorTarget
from p2pblob.stream.creator import publish_file
from p2pblob.testing import MemoryStorageBackend, MemoryStoragePlugin
from tests.http._helpers import APITestCase


class MirrorsAPITests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.memory = MemoryStorageBackend()
        plugin = MemoryStoragePlugin(self.memory)

        def plugins(name: str) -> IStoragePlugin:
            return plugin

        self.service = MirrorService(
            self.clock, self.store, [MirrorTarget("backup", "memory", rule="none")],
            self.directory / "transfers.sqlite", self.directory / "mirrors.sqlite",
            plugins=plugins)
        self.service.startService()
        self.addCleanup(lambda: self.successResultOf(self.service.stopService()))
        self.parts.mirrors = self.service

    def publish(self, data: bytes, name: str) -> str:
        path = self.directory / name
        path.write_bytes(data)
        _, sd_hash = self.successResultOf(
            Deferred.fromCoroutine(publish_file(self.store, run_inline, path)))
        return sd_hash

    def test_export(self) -> None:
        """
        A POST exports the stream (202, with its job); the job and the
        mirrors' list show it.
        """
        sd_hash = self.publish(b"hello mirror", "hello.txt")
        status, answer = self.request("POST", "/mirrors", {"sd_hash": sd_hash, "target": "backup"})
        self.assertEqual(status, 202)
        job = answer["job"]
        self.assertEqual(
            {key: job[key] for key in ("target", "sd_hash", "state", "key", "done_bytes",
                                       "total_bytes", "error", "origin")},
            {"target": "backup", "sd_hash": sd_hash, "state": "finished", "key": "hello.txt",
             "done_bytes": 12, "total_bytes": 12, "error": None, "origin": "request"})
        self.assertEqual(self.memory.files, {"hello.txt": b"hello mirror"})
        self.assertEqual(self.request("GET", f"/mirrors/jobs/{job['id']}"),
                         (200, {"job": job}))
        status, listing = self.request("GET", "/mirrors")
        self.assertEqual(status, 200)
        self.assertEqual(listing["targets"], [{
            "name": "backup", "plugin": "memory", "rule": "none", "state": "ready",
            "error": None, "chunk_size": 1024 * 1024, "waiting": 0, "mirrored": 1}])
        self.assertEqual(listing["jobs"], [job])
        [record] = listing["history"]
        self.assertEqual((record["target"], record["sd_hash"], record["key"], record["size"]),
                         ("backup", sd_hash, "hello.txt", 12))
        self.assertIsNone(listing["error"])

    def test_refusals(self) -> None:
        sd_hash = self.publish(b"x", "x.txt")
        for body, status, code in [
            (b"[", 400, "bad_json"),
            ({"sd_hash": sd_hash}, 400, "bad_argument"),
            ({"sd_hash": sd_hash, "target": "backup", "more": 1}, 400, "bad_argument"),
            ({"sd_hash": 5, "target": "backup"}, 400, "bad_argument"),
            ({"sd_hash": "nothex", "target": "backup"}, 400, "bad_sd_hash"),
            ({"sd_hash": sd_hash, "target": "elsewhere"}, 404, "unknown_mirror"),
            ({"sd_hash": "ab" * 48, "target": "backup"}, 404, "unknown_stream"),
        ]:
            self.assertError(self.request("POST", "/mirrors", body), status, code)
        self.assertError(self.request("GET", "/mirrors/jobs/7"), 404, "unknown_job")
        self.assertError(self.request("GET", "/mirrors/jobs/x"), 404, "unknown_job")
        self.assertEqual(self.memory.files, {})

    def test_unfinished_download(self) -> None:
        sd_hash = self.publish(b"x", "x.txt")
        self.successResultOf(self.store.remove_stream(sd_hash, delete_blobs=False))
        self.successResultOf(self.store.add_stream(sd_hash, [sd_hash], "downloaded"))
        message = self.assertError(
            self.request("POST", "/mirrors", {"sd_hash": sd_hash, "target": "backup"}),
            409, "stream_unfinished")
        self.assertIn("has not finished", message)

    def test_unavailable(self) -> None:
        self.successResultOf(self.service.stopService())
        sd_hash = self.publish(b"x", "x.txt")
        self.assertError(
            self.request("POST", "/mirrors", {"sd_hash": sd_hash, "target": "backup"}),
            409, "mirror_unavailable")
        self.service.startService()

    def test_no_mirrors(self) -> None:
        self.parts.mirrors = None
        self.assertError(self.request("GET", "/mirrors"), 404, "no_mirrors")
        self.assertError(self.request("POST", "/mirrors", {"sd_hash": "ab" * 48,
                                                           "target": "backup"}),
                         404, "no_mirrors")
