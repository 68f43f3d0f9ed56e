"""
What paid mode costs in download throughput, against free mode.

    python benchmarks/payments_overhead.py [--size 1GiB] [--runs 25] [--rate 0.0625]

One C{twistd p2pblob} seeder on 127.0.0.1 serves a stream of C{--size}
random bytes; C{p2pblob download} fetches it into a fresh data directory,
in pairs of one free download (seeder and downloader without a price) and
one paid download, in turn free or paid first (paid: both at
C{--rate} points per MiB: every blob reserved, paid by cheque, expected and
checked against the debt limit).  A new wallet holds 100 points, so size x
rate must fit in them.

The downloads' blobs and files go to a tmpfs (C{--scratch}, /dev/shm by
default): the disk's writeback of one run's gigabyte would otherwise slow
whichever run comes next, by more than the difference measured.  Each
downloader's wallet stays on the disk (its directory is a symbolic link),
so paid mode pays its real fsyncs.

Each download is a new process in a new data directory, so a paid one also
pays the one-time costs of a new wallet (its key pair and its ledger file,
created and synced).  These are timed apart, in this process, and the
overhead is printed both with them and per blob without them.  It prints
each run's wall time and throughput, then for each mode the median and the
spread (fastest to slowest), and the paid-mode overhead of the medians
(target: under 5%).  On a shared machine one run differs from the next by
several percent, so it also prints the median of each pair's overhead (the
two runs of a pair are adjacent in time, so a slow spell of the machine
touches both) with a 90% bootstrap interval: how far the figure can be
trusted.

Benchmarks print numbers; this one never fails on them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pblob.config import parse_rate  # noqa: E402
from p2pblob.wallet.keys import load_or_create_key  # noqa: E402
from p2pblob.wallet.ledger import Ledger  # noqa: E402
from tests.integration._nodes import Seeder, publish, random_file, start_download  # noqa: E402


def run_once(work: Path, scratch: Path, seed_dir: Path, sd_file: Path, paid: bool, rate: str,
             n: int) -> float:
    price = ["--price", rate] if paid else []
    seeder = Seeder(seed_dir, *price, "--debt-limit", "1e9")
    name = f"dl-{'paid' if paid else 'free'}-{n}"
    downloader = scratch / name
    try:
        downloader.mkdir(parents=True)
        if scratch != work:
            # the wallet stays on the disk, its fsyncs with it
            (work / name).mkdir()
            (downloader / "wallet").symlink_to(work / name)
        started = time.monotonic()
        process = start_download(downloader, sd_file, [seeder.address], scratch / f"out-{n}",
                                 *price, "--no-dht", debug=False)
        _, err = process.communicate(timeout=3600)
        elapsed = time.monotonic() - started
        if process.returncode != 0:
            raise SystemExit(f"download failed: {err.decode()[-2000:]}")
        return elapsed
    finally:
        seeder.kill()
        # (each run's copy would fill the disk over many runs)
        shutil.rmtree(downloader, ignore_errors=True)
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.rmtree(scratch / f"out-{n}", ignore_errors=True)


def new_wallet_time(work: Path, runs: int = 5) -> float:
    """
    The median time to create a wallet as a first paid download does: a
    key pair written to its file, and a new ledger (created, synced, closed).
    """
    times = []
    for n in range(runs):
        directory = work / f"wallet-{n}"
        started = time.perf_counter()
        key = load_or_create_key(directory / "key")
        Ledger(directory / "ledger.sqlite", key, 100_000_000, time.time()).close()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bootstrap_median(values: list[float], rounds: int = 5000) -> tuple[float, float]:
    """
    A 90% interval for the median of C{values}: the 5th and 95th percentiles
    of the medians of C{rounds} resamples (with a fixed seed, so that the
    same runs print the same interval).
    """
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(rounds))
    return medians[int(rounds * 0.05)], medians[int(rounds * 0.95) - 1]


def describe(name: str, times: list[float], size: int) -> str:
    median = statistics.median(times)
    spread = (max(times) - min(times)) / median * 100
    return (f"median {name}: {median:6.2f} s ({size / median / 1e6:6.1f} MB/s); "
            f"spread {min(times):.2f}-{max(times):.2f} s ({spread:.0f}% of the median)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="size of the stream (default: 1GiB)")
    parser.add_argument("--runs", type=int, default=25,
                        help="downloads of each kind (default: 25)")
    parser.add_argument("--scratch", type=Path, default=_default_scratch(),
                        help="where downloads put their blobs and files (default: /dev/shm "
                        "if it is a tmpfs, else a temporary directory)")
    parser.add_argument("--rate", default="0.0625",
                        help="points per MiB in paid mode (default: 0.0625)")
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    size = parse_rate(args.size, "size")
    assert size is not None
    cost = size / 2**20 * float(args.rate)
    if cost > 100:
        raise SystemExit(f"{cost:g} points per download is more than a new wallet's 100: "
                         "lower --rate or --size")
    work = Path(tempfile.mkdtemp(prefix="p2pblob-payments-"))
    scratch = work
    if args.scratch is not None:
        scratch = Path(tempfile.mkdtemp(prefix="p2pblob-payments-", dir=args.scratch))
    try:
        return measure(args, size, work, scratch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _default_scratch() -> Path | None:
    shm = Path("/dev/shm")
    try:
        with open("/proc/mounts") as mounts:
            if any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts):
                return shm
    except OSError:
        pass
    return None


def measure(args: argparse.Namespace, size: int, work: Path, scratch: Path) -> int:
    source = random_file(work / "stream.bin", size)
    seed_dir = work / "seed"
    _, sd_file = publish(seed_dir, source, work / "sd")
    blobs = sum(1 for blob in json.loads(sd_file.read_text())["blobs"] if blob["length"])
    print(f"{size} bytes in {blobs} blobs, {args.runs} runs of each mode, "
          f"paid at {args.rate} points per MiB; downloads in {scratch}, wallets on the disk",
          flush=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(args.runs):
        # free first in one pair, paid first in the next: neither mode
        # always runs after the other
        for paid in (False, True) if n % 2 == 0 else (True, False):
            elapsed = run_once(work, scratch, seed_dir, sd_file, paid, args.rate, n)
            times[paid].append(elapsed)
            print(f"run {n + 1} {'paid' if paid else 'free'}: {elapsed:7.2f} s  "
                  f"{size / elapsed / 1e6:8.1f} MB/s", flush=True)
    once = new_wallet_time(work)
    free, paid = statistics.median(times[False]), statistics.median(times[True])
    print(describe("free", times[False], size))
    print(describe("paid", times[True], size))
    print(f"one-time cost of a new wallet (key pair + ledger): {once * 1e3:.1f} ms")
    print(f"paid-mode overhead: {(paid - free) / free * 100:+.1f}% "
          f"({(paid - free - once) / free * 100:+.1f}% without the new wallet; "
          "target: under 5%)")
    pairs = [(p - f) / f * 100 for f, p in zip(times[False], times[True], strict=True)]
    low, high = bootstrap_median(pairs)
    print(f"paired: the median of each pair's overhead is {statistics.median(pairs):+.1f}% "
          f"(90% bootstrap interval {low:+.1f}% to {high:+.1f}%; pairs: "
          f"{' '.join(f'{x:+.1f}' for x in pairs)})")
    print(f"per blob, without the new wallet: {(paid - free - once) / blobs * 1e3:+.2f} ms "
          f"(a free blob takes {free / blobs * 1e3:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
