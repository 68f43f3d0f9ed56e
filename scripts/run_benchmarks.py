"""
Run every benchmark in benchmarks/ one after the other and print their figures.

    python scripts/run_benchmarks.py [EXTRA ARGS PASSED TO EACH]

They are, in this order (every benchmarks/*.py, by name):

  download_throughput.py  download MB/s, CPU and peak RSS of a stream from 1
                          and 3 local seeders, against libtorrent
  stream_throughput.py    publish and assemble MB/s and peak RSS

The extra arguments go to every benchmark, so give the options they share:
C{--size} (e.g. 64MiB for a quick check) and C{--dir}.

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
