"""
Manifest publishing against real processes on 127.0.0.1: C{p2pblob
publish-http} publishes files into a C{twistd p2pblob} node, a second node
(C{--peer} the first) serves one of them by its sd hash, and an upload whose
connection drops halfway goes on after a restart of the node.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from tests._process import environment
from tests.integration._nodes import Seeder

CHUNK = 2 * 1024 * 1024 - 1


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class PublishHTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = Path(self.mktemp()).absolute()
        self.top.mkdir(parents=True)
        self.node_dir = self.top / "node"
        self.node = self.start(self.node_dir)

    def start(self, data_dir: Path, *extra: str) -> Seeder:
        node = Seeder(data_dir, "--no-dht", *extra)
        self.addCleanup(node.kill)
        node.wait_for(rb"Manifest publishing into")
        node.wait_for(rb"HTTP API on ")
        return node

    def url(self, data_dir: Path) -> str:
        url: str = json.loads((data_dir / "api.json").read_text())["url"]
        return url

    def token(self) -> str:
        return (self.node_dir / "api-token").read_text().strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2pblob", *args],
                              env=environment(self.node_dir), capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)

    def fetch(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
              token: bool = True) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def test_publish_and_download_elsewhere(self) -> None:
        """
        C{publish-http} publishes two files (a name with spaces and accents
        among them), showing progress lines; the names download from the
        node, with ranges; a second node downloads one by its sd hash from
        the first.
        """
        video = self.top / "vid\u00e9o de vacances.bin"
        video.write_bytes(os.urandom(2 * CHUNK + 4321))
        notes = self.top / "notes.txt"
        notes.write_bytes(b"some notes\n" * 100)
        base = self.url(self.node_dir)
        result = self.cli("publish-http", f"{base}publish/files/", str(video), str(notes))
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual([line.split("  ", 1)[1] for line in lines], [video.name, notes.name])
        sd_hash = lines[0].split("  ")[0]
        self.assertIn("2 file(s) admitted into 'files'", result.stderr)
        self.assertIn(f"  {video.name}: 50% (", result.stderr)
        self.assertIn(f"  {video.name}: 100% ({video.stat().st_size} bytes)", result.stderr)
        self.assertIn(f"published {notes.name}: {base}publish/files/notes.txt", result.stderr)

        status, headers, body = self.fetch(f"{base}publish/files/{quote(video.name)}",
                                           headers={"Range": "bytes=100-199"})
        self.assertEqual((status, body), (206, video.read_bytes()[100:200]))
        self.assertEqual(self.fetch(f"{base}publish/files/notes.txt", token=False)[0], 401)
        listing = self.cli("publish-http", base, "--list")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn(f"published  {sd_hash[:16]}", listing.stdout)

        # the same names again: refused, each with its reason
        again = self.cli("publish-http", base, str(video), str(notes))
        self.assertEqual(again.returncode, 1)
        self.assertIn("HTTP 409", again.stderr)
        self.assertIn(f"{video.name!r}: the name is already published", again.stderr)

        other_dir = self.top / "other"
        other = self.start(other_dir, "--peer", self.node.address)
        status, headers, body = self.fetch(f"{self.url(other_dir)}stream/{sd_hash}", token=False)
        self.assertEqual((status, md5(body)), (200, md5(video.read_bytes())))
        self.assertEqual(headers["ETag"], f'"{sd_hash}"')
        other.stop()

    def test_dropped_upload_resumed_after_restart(self) -> None:
        """
        An upload whose connection drops halfway keeps its full blobs; HEAD
        tells the offset, which survives a restart of the node; the command
        then goes on from there, and the file is published whole.
        """
        data = os.urandom(3 * CHUNK + 999)
        path = self.top / "big.bin"
        path.write_bytes(data)
        base = self.url(self.node_dir)
        manifest = json.dumps({"files": [{"name": "big.bin", "size": len(data),
                                          "md5": md5(data)}]}).encode()
        request = urllib.request.Request(
            f"{base}publish/files/manifest", data=manifest, method="POST",
            headers={"Authorization": f"Bearer {self.token()}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            self.assertEqual(response.status, 201)
            admitted: dict[str, Any] = json.loads(response.read())
        key = admitted["transfer_key"]
        upload = f"{base}publish/files/{key}/0"
        host, port = base[len("http://"):].rstrip("/").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                f"PUT /publish/files/{key}/0 HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {self.token()}\r\nContent-Length: {len(data)}\r\n\r\n"
                .encode() + data[:2 * CHUNK + CHUNK // 2])
        self.node.wait_for(rb"Upload of big.bin stopped \(the connection was lost")
        # (the blobs being made when it dropped count once they land)
        deadline = time.monotonic() + 30
        while True:
            status, headers, _ = self.fetch(upload, "HEAD")
            if headers.get("Upload-Offset") == str(2 * CHUNK) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual((status, headers["Upload-Offset"]), (200, str(2 * CHUNK)))

        self.node.stop()
        self.node = self.start(self.node_dir)
        base = self.url(self.node_dir)
        status, headers, _ = self.fetch(f"{base}publish/files/{key}/0", "HEAD")
        self.assertEqual((status, headers["Upload-Offset"]), (200, str(2 * CHUNK)))
        result = self.cli("publish-http", base, "--resume", key, str(path))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"uploading big.bin ({len(data)} bytes, from byte {2 * CHUNK})",
                      result.stderr)
        status, _, body = self.fetch(f"{base}publish/files/big.bin")
        self.assertEqual((status, md5(body)), (200, md5(data)))

    def test_cancel(self) -> None:
        """
        C{--cancel KEY} drops the files of a transfer not yet published.
        """
        base = self.url(self.node_dir)
        manifest = json.dumps([{"name": "never.bin", "size": 10, "md5": "0" * 32}]).encode()
        request = urllib.request.Request(
            f"{base}publish/files/manifest", data=manifest, method="POST",
            headers={"Authorization": f"Bearer {self.token()}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            key = json.loads(response.read())["transfer_key"]
        self.assertIn("pending", self.cli("publish-http", base, "--list").stdout)
        result = self.cli("publish-http", base, "--cancel", key)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"cancelled transfer {key}: never.bin", result.stderr)
        self.assertIn("nothing is published", self.cli("publish-http", base, "--list").stdout)
        self.assertEqual(self.cli("publish-http", base, "--cancel", key).returncode, 1)
