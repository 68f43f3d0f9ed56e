"""
Run every benchmark in benchmarks/ one after the other and print their figures.

    python scripts/run_benchmarks.py [EXTRA ARGS PASSED TO EACH]

They are, in this order (every benchmarks/*.py, by name):

  dht_simulation.py       lookup success, RPCs and hops per lookup, table sizes
                          and memory per node of a simulated 10,000-node DHT
                          (about 12 minutes)
  download_throughput.py  download MB/s, CPU and peak RSS of a stream from 1
                          and 3 local seeders, against libtorrent
  payments_overhead.py    paid against free download throughput from a local
                          seeder, 25 pairs of runs (about 3 minutes at 1 GiB)
  rate_limit_accuracy.py  how closely the rate limiter holds loopback traffic
                          to 1, 10 and 50 MB/s, per 10-s window, and each
                          connection's share (about 2 minutes)
  storage_backends.py     download MB/s from a seeder whose blobs are on its
                          disk, and from one whose blobs are in S3 (moto)
  stream_throughput.py    publish and assemble MB/s and peak RSS
  stream_ttfb.py          time to the first byte of a stream a new node holds
                          nothing of, streamed over HTTP from a local seeder
  wallet_per_blob.py      the wallet's own work per paid blob, timed alone on
                          the downloader's side and the seeder's

The extra arguments go to every benchmark, so give the options they share:
C{--size} (e.g. 64MiB for a quick check) and C{--dir} (the DHT simulation,
the rate-limit and the per-blob wallet benchmarks ignore both, the payments
benchmark C{--dir}; run the simulation alone with C{--nodes 1000} for a
quick check).

Benchmarks print numbers; they never fail on timing.  This exits non-zero
only if a benchmark crashed (or found a download wrong).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def main() -> int:
    crashed = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script), *sys.argv[1:]]).returncode:
            crashed.append(script.name)
    if crashed:
        print("crashed: " + ", ".join(crashed), file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
