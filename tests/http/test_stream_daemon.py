"""
Streaming from a real C{twistd p2pblob} node that holds nothing of the
stream: it fetches from a real seeder only the blobs a range needs.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.stream.descriptor import parse_sd_blob
from tests.integration._nodes import Seeder, publish


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read()


class StreamFromPeersTests(SynchronousTestCase):
    def test_range_fetches_only_its_blobs(self) -> None:
        top = Path(self.mktemp()).absolute()
        top.mkdir(parents=True)
        source = top / "film.mp4"
        content = os.urandom(5_000_000)
        source.write_bytes(content)
        sd_hash, sd_file = publish(top / "seeder", source, top / "sd")
        blobs = parse_sd_blob(sd_file.read_bytes()).blob_hashes
        self.assertEqual(len(blobs), 3)
        seeder = Seeder(top / "seeder", "--no-dht")
        self.addCleanup(seeder.kill)
        node = Seeder(top / "node", "--no-dht", "--peer", seeder.address)
        self.addCleanup(node.kill)
        node.wait_for(rb"HTTP API on ")
        url = json.loads((top / "node" / "api.json").read_text())["url"]

        status, body = get(url + f"stream/{sd_hash}", {"Range": "bytes=100-199"})
        self.assertEqual((status, body), (206, content[100:200]))
        _, listing = get(url + "api/v1/blobs")
        held = {blob["hash"] for blob in json.loads(listing)["blobs"]}
        # the descriptor, the first blob, and the last (for the length)
        self.assertEqual(held, {sd_hash, blobs[0], blobs[2]})

        status, body = get(url + f"stream/{sd_hash}")
        self.assertEqual((status, body), (200, content))
