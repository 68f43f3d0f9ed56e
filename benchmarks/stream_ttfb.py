"""
Time to first byte of a stream the node has not downloaded yet.

    python benchmarks/stream_ttfb.py [--size 64MiB] [--runs 7]

One C{twistd p2pblob} seeder on 127.0.0.1 serves a stream of C{--size}
random bytes.  For each run a new node (C{twistd p2pblob --peer SEEDER}, a
fresh data directory: it holds nothing of the stream) is started, and once
its API listens the benchmark asks it for C{GET /stream/<sd hash>}: from
the start, and then (on another new node) a range in the middle, as a
player seeking would.  The node fetches the descriptor, then the first
blob of the range and the last blob (for the length) at once, and sends
the first bytes as soon as the first blob is decrypted.

It prints each run's time to first byte (request sent to the first body
byte received) and the median of each kind (target: under 300 ms on
loopback).  The node's start-up is not timed.  Benchmarks print numbers;
this one never fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pblob.config import parse_size  # noqa: E402
from tests.integration._nodes import Seeder, publish, random_file  # noqa: E402


def first_byte(url: str, path: str, headers: dict[str, str]) -> tuple[float, int]:
    """
    Seconds from sending C{GET path} to the first body byte, and the status.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read(1)
        elapsed = time.perf_counter() - started
        return elapsed, response.status
    finally:
        connection.close()


def one_run(work: Path, seeder: Seeder, sd_hash: str, n: int, headers: dict[str, str]) -> float:
    data = work / f"node-{n}"
    node = Seeder(data, "--no-dht", "--peer", seeder.address)
    try:
        node.wait_for(rb"HTTP API on ")
        url = json.loads((data / "api.json").read_text())["url"]
        elapsed, status = first_byte(url, f"/stream/{sd_hash}", headers)
        if status not in (200, 206):
            raise SystemExit(f"the node answered {status}:\n{node.output.decode()[-2000:]}")
        return elapsed
    finally:
        node.kill()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64MiB", help="size of the stream (default: 64MiB)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each kind (default: 7)")
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    size = parse_size(args.size, "size")
    assert size is not None
    work = Path(tempfile.mkdtemp(prefix="p2pblob-ttfb-"))
    try:
        source = random_file(work / "film.mp4", size)
        sd_hash, _ = publish(work / "seeder", source, work / "sd")
        seeder = Seeder(work / "seeder", "--no-dht")
        try:
            seeder.wait_for(rb"Serving blobs to peers on ")
            middle = size // 2
            kinds = {
                "from the start": {},
                f"range from byte {middle}": {"Range": f"bytes={middle}-"},
            }
            print(f"{size} bytes; a new node each run, holding nothing of the stream")
            medians = {}
            for kind, headers in kinds.items():
                times = []
                for n in range(args.runs):
                    elapsed = one_run(work, seeder, sd_hash, n, headers)
                    times.append(elapsed)
                    print(f"{kind}, run {n + 1}: {elapsed * 1e3:7.1f} ms", flush=True)
                medians[kind] = statistics.median(times)
            for kind, median in medians.items():
                print(f"median time to first byte, {kind}: {median * 1e3:.1f} ms "
                      "(target: under 300 ms)")
        finally:
            seeder.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
