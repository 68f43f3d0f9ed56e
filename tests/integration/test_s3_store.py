"""
A real C{twistd p2pblob} node whose blob store is an S3 bucket (moto's
server on 127.0.0.1) publishes a 30 MiB stream and serves it to another
node's C{p2pblob download}, with nothing in its local blob directory.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.stream.descriptor import parse_sd_blob
from tests.integration._nodes import Seeder, publish, random_file, start_download
from tests.storage_conformance._moto import (
    moto_server,
    new_bucket,
    remove_bucket,
    s3_arguments,
    s3_client,
)

SIZE = 30 * 1024 * 1024


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class S3BlobStoreNodeTests(SynchronousTestCase):
    def test_serves_from_s3(self) -> None:
        endpoint = moto_server()
        bucket = new_bucket(endpoint)
        self.addCleanup(remove_bucket, endpoint, bucket)
        top = Path(self.mktemp()).absolute()
        top.mkdir(parents=True)
        source = random_file(top / "film.bin", SIZE)

        seeder_dir = top / "in-s3"
        seeder = Seeder(
            seeder_dir, "--no-dht",
            "--blob-storage", "s3",
            *s3_arguments(endpoint, bucket, "--blob-storage-option", prefix="blobs/"),
        )
        self.addCleanup(seeder.kill)
        seeder.wait_for(rb"Blob store in the s3 storage backend: 0 blobs")
        seeder.wait_for(rb"HTTP API on ")
        # (the CLI publishes through the running node, into its bucket)
        sd_hash, sd_file = publish(seeder_dir, source, top / "sd")
        descriptor = parse_sd_blob(sd_file.read_bytes())

        listing = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix="blobs/")
        stored = {item["Key"].removeprefix("blobs/"): item["Size"]
                  for item in listing.get("Contents", [])}
        expected = {info.blob_hash: info.length for info in descriptor.data_blobs}
        self.assertEqual({h: stored.get(h) for h in expected}, expected)
        self.assertIn(sd_hash, stored)
        self.assertEqual(len(stored), len(expected) + 1)
        blob_dir = seeder_dir / "blobfiles"
        self.assertEqual(list(blob_dir.iterdir()) if blob_dir.exists() else [], [])

        output = top / "out"
        download = start_download(top / "downloader", sd_file, [seeder.address], output,
                                  "--no-dht")
        _, errors = download.communicate(timeout=300)
        self.assertEqual(download.returncode, 0, errors.decode(errors="replace")[-3000:])
        self.assertEqual(_sha256(output / "film.bin"), _sha256(source))
        # (twistd ends by the signal, after a clean stop)
        self.assertEqual(seeder.stop(), -signal.SIGTERM, seeder.output.decode()[-3000:])
        self.assertNotIn(b"Traceback", seeder.output)
        self.assertIn(b"Main loop terminated.", seeder.output)
