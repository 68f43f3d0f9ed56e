"""
What paid mode costs in download throughput, against free mode.

    python benchmarks/payments_overhead.py [--size 256MiB] [--runs 3] [--rate 1]

One C{twistd p2pblob} seeder on 127.0.0.1 serves a stream of C{--size}
random bytes; C{p2pblob download} fetches it into a fresh data directory,
alternately free (seeder and downloader without a price) and paid (both at
C{--rate} points per MiB (a new wallet holds 100 points: size x rate must fit), every blob reserved, paid by cheque, expected and
checked against the debt limit).  It prints each run's wall time and
throughput, the medians, and the paid-mode overhead (target: under 5%).

Benchmarks print numbers; this one never fails on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pblob.config import parse_rate  # noqa: E402
from tests.integration._nodes import Seeder, publish, start_download  # noqa: E402


def run_once(work: Path, seed_dir: Path, sd_file: Path, paid: bool, rate: str, n: int) -> float:
    price = ["--price", rate] if paid else []
    seeder = Seeder(seed_dir, *price, "--debt-limit", "1e9")
    try:
        downloader = work / f"dl-{'paid' if paid else 'free'}-{n}"
        extra = [*price, "--no-dht"]
        if paid:
            downloader.mkdir(parents=True)
        started = time.monotonic()
        process = start_download(downloader, sd_file, [seeder.address], work / f"out-{n}",
                                 *extra)
        _, err = process.communicate(timeout=3600)
        elapsed = time.monotonic() - started
        if process.returncode != 0:
            raise SystemExit(f"download failed: {err.decode()[-2000:]}")
        return elapsed
    finally:
        seeder.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="size of the stream (default: 256MiB)")
    parser.add_argument("--runs", type=int, default=3, help="downloads of each kind (default: 3)")
    parser.add_argument("--rate", default="0.25",
                        help="points per MiB in paid mode (default: 0.25)")
    args = parser.parse_args()
    size = parse_rate(args.size, "size")
    assert size is not None
    work = Path(tempfile.mkdtemp(prefix="p2pblob-payments-"))
    source = work / "stream.bin"
    with open(source, "wb") as f:
        left = size
        while left:
            chunk = min(left, 1 << 24)
            f.write(os.urandom(chunk))
            left -= chunk
    seed_dir = work / "seed"
    _, sd_file = publish(seed_dir, source, work / "sd")
    cost = size / 2**20 * float(args.rate)
    if cost > 100:
        raise SystemExit(f"{cost:g} points per download is more than a new wallet's 100: "
                         "lower --rate or --size")
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(args.runs):
        for paid in (False, True):
            elapsed = run_once(work, seed_dir, sd_file, paid, args.rate, n)
            times[paid].append(elapsed)
            print(f"run {n + 1} {'paid' if paid else 'free'}: {elapsed:7.2f} s  "
                  f"{size / elapsed / 1e6:8.1f} MB/s", flush=True)
    free, paid = statistics.median(times[False]), statistics.median(times[True])
    print(f"median free: {free:.2f} s ({size / free / 1e6:.1f} MB/s)")
    print(f"median paid: {paid:.2f} s ({size / paid / 1e6:.1f} MB/s)")
    print(f"paid-mode overhead: {(paid - free) / free * 100:+.1f}% (target: under 5%)")
    print(f"scratch directory: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
