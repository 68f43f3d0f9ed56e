"""
Download throughput from a seeder whose blobs are on its local disk, and
from one whose blobs are in an S3 bucket (moto's S3 server on 127.0.0.1).

    python benchmarks/storage_backends.py [--size 256MiB] [--runs 3]

For each kind of seeder, a C{twistd p2pblob} node on 127.0.0.1 publishes
a stream of C{--size} random bytes through its running node (into its
blob store), then C{p2pblob download} on a fresh data directory fetches it
from that seeder alone, C{--runs} times.  It prints each run's MB/s and the
median of each kind: what serving peers from an object store costs against
the local disk.  Moto keeps objects in its process's memory and speaks real
HTTP, so the S3 figure is that of the node's S3 path (boto3 in threads, one
GET per blob) with a fast service, not of a real data centre.  Benchmarks
print numbers; this one never fails on them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pblob.config import parse_size  # noqa: E402
from tests.integration._nodes import Seeder, publish, random_file, start_download  # noqa: E402
from tests.storage_conformance._moto import (  # noqa: E402
    moto_server,
    new_bucket,
    remove_bucket,
    s3_arguments,
)


def download_rate(work: Path, seeder: Seeder, sd_file: Path, size: int, n: int) -> float:
    """
    Download the stream once from C{seeder} alone; return MB/s.
    """
    downloader, output = work / f"downloader-{n}", work / f"out-{n}"
    try:
        started = time.perf_counter()
        process = start_download(downloader, sd_file, [seeder.address], output, "--no-dht",
                                 debug=False)
        _, errors = process.communicate(timeout=3600)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"the download failed:\n{errors.decode()[-2000:]}")
        return size / elapsed / 1e6
    finally:
        shutil.rmtree(downloader, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)


def measure(work: Path, kind: str, source: Path, size: int, runs: int,
            *options: str) -> list[float]:
    data = work / kind
    seeder = Seeder(data, "--no-dht", *options)
    try:
        seeder.wait_for(rb"HTTP API on ")
        started = time.perf_counter()
        _, sd_file = publish(data, source, work / f"sd-{kind}")
        print(f"{kind}: published in {time.perf_counter() - started:.1f} s", flush=True)
        rates = []
        for n in range(runs):
            rates.append(download_rate(work, seeder, sd_file, size, n))
            print(f"{kind}, run {n + 1}: {rates[-1]:7.1f} MB/s", flush=True)
        return rates
    finally:
        seeder.kill()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="size of the stream (default: 256MiB)")
    parser.add_argument("--runs", type=int, default=3, help="downloads of each kind (default: 3)")
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    size = parse_size(args.size, "size")
    assert size is not None
    work = Path(tempfile.mkdtemp(prefix="p2pblob-storage-"))
    endpoint = moto_server()
    bucket = new_bucket(endpoint)
    try:
        source = random_file(work / "film.bin", size)
        print(f"{size} bytes, one seeder on 127.0.0.1, {args.runs} downloads of each kind")
        medians = {
            "local disk": statistics.median(measure(work, "local", source, size, args.runs)),
            "S3 (moto)": statistics.median(measure(
                work, "s3", source, size, args.runs,
                "--blob-storage", "s3",
                *s3_arguments(endpoint, bucket, "--blob-storage-option"),
            )),
        }
        for kind, median in medians.items():
            print(f"median download rate, blobs in {kind}: {median:.1f} MB/s")
    finally:
        remove_bucket(endpoint, bucket)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
