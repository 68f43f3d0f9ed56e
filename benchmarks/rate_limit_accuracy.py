"""
How closely the rate limiter holds real TCP traffic to its limit.

    python benchmarks/rate_limit_accuracy.py [--limits 1MB,10MB,50MB]
        [--seconds 21] [--connections 4] [--direction download|upload|both]

For each limit, a peer server and C{--connections} clients run in this
process on 127.0.0.1 (C{tests/integration/_ratelimit.py}): the clients
download a 2 MiB blob again and again for C{--seconds}, through a
L{RateLimiter} on the clients' downloads (or on the server's uploads).  The
bytes each client reads are sampled every 50 ms.

For every 10-second window starting at least 1 s into the run (one per
sample), it computes the bytes per second of all connections together and
of each one.  It prints the windows starting on whole seconds, then for
each limit: how many windows, the mean rate, the smallest and largest
deviation from the limit (target: within +-5%), the smallest share of the
limit one connection got in any window (target: at least 15% with four
connections; 25% is a fair share) and the CPU time the process used per
second of run.

Benchmarks print numbers; this one never fails on them.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from p2pblob.config import parse_rate  # noqa: E402
from tests.integration._ratelimit import Measurement, measure  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _report(measurement: Measurement, cpu: float, seconds: float) -> str:
    windows = measurement.windows()
    limit = measurement.limit
    print(f"\n{measurement.direction} limit {limit / 1e6:g} MB/s")
    print("  start    MB/s   deviation   per connection (share of the limit)")
    for window in windows:
        if abs(window.start - round(window.start)) < 0.026:
            shares = " ".join(f"{rate / limit:5.1%}" for rate in window.rates)
            print(
                f"  {window.start:5.2f}  {window.rate / 1e6:6.3f}   "
                f"{window.rate / limit - 1:+8.2%}   {shares}"
            )
    deviations = measurement.deviations()
    mean = sum(w.rate for w in windows) / len(windows)
    return (
        f"{measurement.direction:8} {limit / 1e6:7g} {len(windows):8d} "
        f"{mean / 1e6:10.3f} {min(deviations):+9.2%} {max(deviations):+9.2%} "
        f"{measurement.min_share():10.1%} {cpu / seconds:9.1%}"
    )


async def main(reactor: Any, options: argparse.Namespace) -> None:
    limits = []
    for text in options.limits.split(","):
        limit = parse_rate(text, "limits")
        if limit is None:
            raise SystemExit("--limits: every limit must be a rate (0 means no limit)")
        limits.append(limit)
    directions = ["download", "upload"] if options.direction == "both" else [options.direction]
    rows = []
    for direction in directions:
        for limit in limits:
            before = _cpu()
            measurement = await measure(
                reactor, limit, direction, options.connections, options.seconds
            )
            rows.append(_report(measurement, _cpu() - before, options.seconds))
    print(
        f"\n{options.connections} connections, {options.seconds:g} s per limit, "
        "10-s windows from 1 s on, sampled every 50 ms"
    )
    print("direction  MB/s  windows  mean MB/s   min dev   max dev  min share  CPU/run s")
    for row in rows:
        print(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", default="1MB,10MB,50MB")
    parser.add_argument("--seconds", type=float, default=21.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--direction", choices=["download", "upload", "both"], default="both")
    # options scripts/run_benchmarks.py gives every benchmark (--size, --dir)
    known, _ = parser.parse_known_args()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, known)))
