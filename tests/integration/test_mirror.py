"""
A real C{twistd p2pblob} node with an S3 mirror (moto's server on
127.0.0.1): a file published through the node is exported to the bucket by
C{p2pblob mirror}, as the file itself, under its name.
"""

from __future__ import annotations

import signal
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests._process import p2pblob
from tests.integration._nodes import Seeder, publish, random_file
from tests.storage_conformance._moto import (
    moto_server,
    new_bucket,
    remove_bucket,
    s3_arguments,
    s3_client,
)

MiB = 1024 * 1024


class MirrorCommandTests(SynchronousTestCase):
    def test_mirror_to_s3(self) -> None:
        endpoint = moto_server()
        bucket = new_bucket(endpoint)
        self.addCleanup(remove_bucket, endpoint, bucket)
        s3 = s3_client(endpoint)
        top = Path(self.mktemp()).absolute()
        top.mkdir(parents=True)
        source = random_file(top / "holiday photos.tar", 7 * MiB)

        node_dir = top / "node"
        node = Seeder(
            node_dir, "--no-dht",
            "--mirror", "backup=s3",
            *s3_arguments(endpoint, bucket, "--mirror-option backup:", prefix="mirror/"),
        )
        self.addCleanup(node.kill)
        node.wait_for(rb"HTTP API on ")
        node.wait_for(rb"Mirror backup \(s3\) is ready: chunks of 5242880 bytes")
        # (the CLI publishes through the running node)
        sd_hash, sd_file = publish(node_dir, source, top / "sd")
        self.assertIn(b"Published holiday photos.tar through the API", node.output)

        result = p2pblob(node_dir, "mirror", sd_hash, "backup")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "holiday photos.tar\n")
        body = s3.get_object(Bucket=bucket, Key="mirror/holiday photos.tar")["Body"].read()
        self.assertEqual(body, source.read_bytes())
        self.assertEqual(s3.head_object(Bucket=bucket, Key="mirror/holiday photos.tar",
                                        PartNumber=1)["PartsCount"], 2)

        # the .sd file names the stream as well; exported again, it keeps its name
        again = p2pblob(node_dir, "mirror", str(sd_file), "backup")
        self.assertEqual((again.returncode, again.stdout), (0, "holiday photos.tar\n"),
                         again.stderr)
        listing = s3.list_objects_v2(Bucket=bucket)
        self.assertEqual([item["Key"] for item in listing["Contents"]],
                         ["mirror/holiday photos.tar"])

        shown = p2pblob(node_dir, "mirror", "--list")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("mirror backup (s3, rule none): ready, 1 stream(s) mirrored", shown.stdout)

        refused = p2pblob(node_dir, "mirror", sd_hash, "elsewhere")
        self.assertEqual(refused.returncode, 1)
        self.assertEqual(refused.stderr.splitlines(), [
            "p2pblob: error: this node has no mirror named 'elsewhere' (its mirrors: backup)"])

        self.assertEqual(node.stop(), -signal.SIGTERM, node.output.decode()[-3000:])
        self.assertNotIn(b"Traceback", node.output)

        stopped = p2pblob(node_dir, "mirror", sd_hash, "backup")
        self.assertEqual(stopped.returncode, 1)
        self.assertIn("p2pblob: error: no node is running", stopped.stderr)
