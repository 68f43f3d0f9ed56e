"""
C{p2pblob download} and C{p2pblob ls} against a running C{twistd p2pblob}:
the node downloads, the command shows its progress and the result.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import blob_hash
from p2pblob.cli._daemon import describe_streams
from tests._process import p2pblob
from tests.integration._nodes import Seeder, publish


class DaemonDownloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = Path(self.mktemp()).absolute()
        self.top.mkdir(parents=True)
        self.source = self.top / "clip.mp4"
        self.content = os.urandom(5_000_000)
        self.source.write_bytes(self.content)
        self.sd_hash, self.sd_file = publish(self.top / "seeder", self.source, self.top / "sd")
        seeder = Seeder(self.top / "seeder", "--no-dht")
        self.addCleanup(seeder.kill)
        self.node_dir = self.top / "node"
        self.node = Seeder(self.node_dir, "--no-dht", "--peer", seeder.address)
        self.addCleanup(self.node.kill)
        self.node.wait_for(rb"HTTP API on ")

    def test_download_through_the_node(self) -> None:
        """
        With a node running, C{p2pblob download} has the node download the
        stream and prints where the file is; C{ls} lists it as finished.
        """
        output = self.top / "out"
        result = p2pblob(self.node_dir, "download", str(self.sd_file), "--output", str(output))
        self.assertEqual(result.returncode, 0, result.stderr)
        final = Path(result.stdout.strip())
        self.assertEqual(final, output / "clip.mp4")
        self.assertEqual(final.read_bytes(), self.content)
        self.assertIn("the node at http://127.0.0.1:", result.stderr)
        result = p2pblob(self.node_dir, "ls")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"{self.sd_hash[:16]}  finished   100.0%  clip.mp4  -> {final}",
                      result.stdout)
        listed = json.loads(p2pblob(self.node_dir, "ls", "--json").stdout)
        self.assertEqual([s["sd_hash"] for s in listed], [self.sd_hash])
        url = json.loads((self.node_dir / "api.json").read_text())["url"]
        with urllib.request.urlopen(url + "metrics", timeout=30) as response:
            self.assertIn("p2pblob_blobs_downloaded_total 3.0", response.read().decode())
        # by hash, the node already has it: finished at once
        result = p2pblob(self.node_dir, "download", self.sd_hash, "--output", str(output))
        self.assertEqual((result.returncode, result.stdout.strip()), (0, str(final)))

    def test_publish_through_the_node(self) -> None:
        """
        With a node running, C{p2pblob publish} has the node publish the
        file, prints the sd hash and writes the descriptor here.
        """
        other = self.top / "notes.txt"
        other.write_bytes(b"some notes" * 1000)
        result = p2pblob(self.node_dir, "publish", str(other), "--sd-out", str(self.top))
        self.assertEqual(result.returncode, 0, result.stderr)
        sd_hash = result.stdout.strip()
        self.assertIn("published notes.txt in the node at http://127.0.0.1:", result.stderr)
        self.assertEqual(blob_hash((self.top / "notes.txt.sd").read_bytes()), sd_hash)
        result = p2pblob(self.node_dir, "status", "--json")
        self.assertGreaterEqual(json.loads(result.stdout)["disk"]["blobs"], 2)

    def test_standalone_options_refused(self) -> None:
        """
        Options only a download of its own takes are refused, saying why.
        """
        result = p2pblob(self.node_dir, "download", self.sd_hash, "--peer", "127.0.0.1:1",
                         "--price", "1")
        self.assertEqual(result.returncode, 1, result.stdout)
        [line] = result.stderr.strip().splitlines()
        self.assertIn("--peer, --price cannot be used here", line)

    def test_bad_source(self) -> None:
        result = p2pblob(self.node_dir, "download", "no-such-thing")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no such file, and not an sd hash", result.stderr)
        bad = self.top / "bad.sd"
        bad.write_text('{"blobs": 3}')
        result = p2pblob(self.node_dir, "download", str(bad))
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith("p2pblob: error: "), result.stderr)
        self.assertNotIn("Traceback", result.stderr)


class DescribeStreamsTests(SynchronousTestCase):
    def test_lines(self) -> None:
        self.assertEqual(describe_streams([]), ["no streams: start one with p2pblob download SD"])
        self.assertEqual(describe_streams([
            {"sd_hash": "a" * 96, "state": "running", "done_bytes": 50, "total_bytes": 200,
             "name": "x.mp4", "output": None, "error": None},
            {"sd_hash": "b" * 96, "state": "failed", "done_bytes": 0, "total_bytes": None,
             "name": None, "output": None, "error": "no peers"},
        ]), [
            f"{'a' * 16}  running     25.0%  x.mp4",
            f"{'b' * 16}  failed          -  (descriptor not fetched yet)  (no peers)",
        ])
