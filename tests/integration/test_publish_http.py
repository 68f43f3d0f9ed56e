"""
Manifest publishing against real processes on 127.0.0.1: C{p2pblob
publish-http} publishes files into a C{twistd p2pblob} node, a second node
(C{--peer} the first) serves one of them by its sd hash, and an upload cut
off halfway (its connection dropped, the node stopped with SIGTERM or killed
with SIGKILL) goes on after a restart of the node.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.stream.descriptor import parse_sd_blob
from tests._process import environment
from tests.integration._nodes import Seeder
from tests.publish.test_manifest import one_shot_sd_hash

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
              token: bool = True, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def admit(self, *files: tuple[str, bytes]) -> str:
        """
        Admit C{files} (names and contents) into the prefix C{files} of the
        node; return the transfer key.
        """
        manifest = json.dumps({"files": [{"name": name, "size": len(data), "md5": md5(data)}
                                         for name, data in files]}).encode()
        status, _, body = self.fetch(f"{self.url(self.node_dir)}publish/files/manifest", "POST",
                                     {"Content-Type": "application/json"}, data=manifest)
        self.assertEqual(status, 201, body)
        key: str = json.loads(body)["transfer_key"]
        return key

    def begin_upload(self, key: str, number: int, data: bytes,
                     sent: int) -> http.client.HTTPConnection:
        """
        Start a PUT of file C{number} of transfer C{key}, C{data}, but send
        only its first C{sent} bytes: the upload stays in progress, its
        connection open.
        """
        parts = urlsplit(self.url(self.node_dir))
        assert parts.hostname is not None
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.addCleanup(connection.close)
        connection.putrequest("PUT", f"/publish/files/{key}/{number}")
        connection.putheader("Authorization", f"Bearer {self.token()}")
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders()
        connection.send(data[:sent])
        return connection

    def wait_for_offset(self, key: str, number: int, offset: int) -> None:
        """
        Wait until the node holds file C{number} of transfer C{key} up to
        C{offset} (its blobs being made land a little after their bytes).
        """
        url = f"{self.url(self.node_dir)}publish/files/{key}/{number}"
        deadline = time.monotonic() + 30
        while True:
            status, headers, _ = self.fetch(url, "HEAD")
            if (status, headers.get("Upload-Offset")) == (200, str(offset)):
                return
            if time.monotonic() > deadline:
                self.fail(f"file {number} never reached byte {offset}: {status} {headers}")
            time.sleep(0.05)

    def checkpoint(self, key: str, number: int) -> int:
        """
        The bytes the checkpoint of file C{number} of transfer C{key} holds,
        as the node's state file (C{publish.sqlite}) says right now.
        """
        uri = (self.node_dir / "publish.sqlite").as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            row = db.execute("SELECT stored FROM upload WHERE transfer_key = ? AND number = ?",
                             (key, number)).fetchone()
        return int(row[0])

    def stream_blobs(self, sd_hash: str) -> set[str]:
        """
        The blobs of the stream C{sd_hash} published by the node: its sd
        blob and its data blobs.
        """
        descriptor = parse_sd_blob((self.node_dir / "blobfiles" / sd_hash).read_bytes())
        return {sd_hash, *(b.blob_hash for b in descriptor.blobs if b.blob_hash)}

    def held_blobs(self) -> set[str]:
        return {name for name in os.listdir(self.node_dir / "blobfiles")
                if not name.startswith(".")}

    def assertOneShot(self, sd_hash: str, name: str, data: bytes) -> None:
        """
        C{sd_hash} is the stream a one-shot publish of C{data} as C{name}
        makes with the stream's key (and the IVs derived from it).
        """
        descriptor = parse_sd_blob((self.node_dir / "blobfiles" / sd_hash).read_bytes())
        key = bytes.fromhex(descriptor.key_hex)
        self.assertEqual(sd_hash, one_shot_sd_hash(self, name, data, key))

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

    def test_stopped_mid_upload(self) -> None:
        """
        A node stopped with SIGTERM while a file is being uploaded saves how
        far the upload got, and cuts its request off unanswered; started
        again on the same data directory, it tells that offset, and
        C{publish-http --resume} sends the rest: the file is published, as
        the stream a one-shot publish makes.
        """
        data = os.urandom(3 * CHUNK + 999)
        path = self.top / "big.bin"
        path.write_bytes(data)
        key = self.admit(("big.bin", data))
        upload = self.begin_upload(key, 0, data, 2 * CHUNK + CHUNK // 2)
        self.wait_for_offset(key, 0, 2 * CHUNK)

        self.assertEqual(self.node.stop(), -signal.SIGTERM, self.node.output.decode()[-3000:])
        self.assertIn(f"Upload of big.bin stopped (the node stops) after {2 * CHUNK + CHUNK // 2} "
                      f"of {len(data)} bytes; it can go on from byte {2 * CHUNK}".encode(),
                      self.node.output)
        with self.assertRaises((http.client.HTTPException, OSError)):
            upload.getresponse()

        self.node = self.start(self.node_dir)
        self.assertEqual(self.checkpoint(key, 0), 2 * CHUNK)
        base = self.url(self.node_dir)
        status, headers, _ = self.fetch(f"{base}publish/files/{key}/0", "HEAD")
        self.assertEqual((status, headers["Upload-Offset"]), (200, str(2 * CHUNK)))
        result = self.cli("publish-http", base, "--resume", key, str(path))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"uploading big.bin ({len(data)} bytes, from byte {2 * CHUNK})",
                      result.stderr)
        sd_hash = result.stdout.split()[0]
        self.assertOneShot(sd_hash, "big.bin", data)
        status, _, body = self.fetch(f"{base}publish/files/big.bin")
        self.assertEqual((status, md5(body)), (200, md5(data)))

    def test_killed_mid_upload(self) -> None:
        """
        A node killed with SIGKILL while two files are being uploaded goes
        on, once started again, from the last checkpoint each upload saved
        (blobs may have landed after it): one upload resumed with
        Content-Range is published as the stream a one-shot publish makes,
        and cancelling the other leaves no blob of it behind, not even one
        that landed after its checkpoint.
        """
        kept, dropped = os.urandom(3 * CHUNK + 999), os.urandom(3 * CHUNK + 5)
        key = self.admit(("kept.bin", kept), ("dropped.bin", dropped))
        uploads = [self.begin_upload(key, number, data, CHUNK + CHUNK // 2)
                   for number, data in enumerate([kept, dropped])]
        for number, (upload, data) in enumerate(zip(uploads, [kept, dropped], strict=True)):
            self.wait_for_offset(key, number, CHUNK)
            # (a checkpoint is saved as the bytes after a blob stored come)
            upload.send(data[CHUNK + CHUNK // 2:CHUNK + CHUNK // 2 + 1000])
            deadline = time.monotonic() + 30
            while self.checkpoint(key, number) != CHUNK:
                self.assertLess(time.monotonic(), deadline, "the checkpoint was never saved")
                time.sleep(0.05)
            # the second blob, ending the bytes sent
            upload.send(data[CHUNK + CHUNK // 2 + 1000:2 * CHUNK])
            self.wait_for_offset(key, number, 2 * CHUNK)
        checkpoints = [self.checkpoint(key, 0), self.checkpoint(key, 1)]
        self.assertTrue(set(checkpoints) <= {CHUNK, 2 * CHUNK}, checkpoints)

        self.node.kill()
        self.assertEqual(self.node.process.returncode, -signal.SIGKILL)
        self.node = self.start(self.node_dir)
        base = self.url(self.node_dir)
        for number, offset in enumerate(checkpoints):
            status, headers, _ = self.fetch(f"{base}publish/files/{key}/{number}", "HEAD")
            self.assertEqual((status, headers["Upload-Offset"]), (200, str(offset)))
        offset = checkpoints[0]
        status, _, body = self.fetch(
            f"{base}publish/files/{key}/0", "PUT", data=kept[offset:],
            headers={"Content-Range": f"bytes {offset}-{len(kept) - 1}/{len(kept)}"})
        self.assertEqual(status, 200, body)
        sd_hash = json.loads(body)["sd_hash"]
        self.assertOneShot(sd_hash, "kept.bin", kept)

        result = self.cli("publish-http", base, "--cancel", key)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"cancelled transfer {key}: dropped.bin", result.stderr)
        self.assertEqual(self.held_blobs(), self.stream_blobs(sd_hash))
        status, _, body = self.fetch(f"{base}publish/files/kept.bin")
        self.assertEqual((status, md5(body)), (200, md5(kept)))

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
