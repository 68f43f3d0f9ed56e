"""
Publish and assemble throughput of a large file, and the peak memory use.

    python benchmarks/stream_throughput.py [--size 1GiB] [--dir DIR]

Prints MB/s for publish (read, encrypt, hash, fsync each blob) and assemble
(read, re-hash, decrypt, write), and the process's peak RSS.  Targets from
issue 2: publish >= 300 MB/s, assemble >= 500 MB/s, peak RSS < 100 MB.
The input is written beforehand (random data, in 8 MiB pieces, so writing it
does not raise the peak) and dropped afterwards.

Each round publishes into an empty store and assembles into a new file.  The
first round on a freshly booted VM pays for the first touch of guest memory
by the page cache (buffered writes there ran at ~440 MB/s instead of ~4 GB/s
in a warm machine), so later rounds show the steady state.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from p2pblob._threads import ThreadWorker
from p2pblob.blob.store import BlobStore
from p2pblob.config import parse_size
from p2pblob.stream.assembler import assemble_stream
from p2pblob.stream.creator import publish_file


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_input(path: Path, size: int) -> None:
    piece = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(piece[: min(left, len(piece))])
            left -= len(piece)


async def one_round(reactor, number: int, source: Path, size: int, directory: Path, threads: int) -> None:  # type: ignore[no-untyped-def]
    worker = ThreadWorker(reactor, "bench", threads)
    worker.start()
    store_dir = directory / f"store{number}"
    store = BlobStore(reactor, worker, store_dir / "blobfiles", store_dir / "index.sqlite", None)
    await store.start()
    out = directory / "output.bin"
    try:
        start = time.perf_counter()
        descriptor, sd_hash = await publish_file(store, worker, source)
        publish_s = time.perf_counter() - start
        start = time.perf_counter()
        await assemble_stream(store, worker, descriptor, out)
        assemble_s = time.perf_counter() - start
    finally:
        store.stop()
        worker.stop()
    same = os.path.getsize(out) == size
    out.unlink()
    shutil.rmtree(store_dir)
    mb = size / 1e6
    print(f"round {number}: {mb:,.0f} MB in {len(descriptor.data_blobs)} blobs")
    print(f"  publish   {publish_s:6.2f} s  {mb / publish_s:7.0f} MB/s   (target >= 300)")
    print(f"  assemble  {assemble_s:6.2f} s  {mb / assemble_s:7.0f} MB/s   (target >= 500)")
    print(f"  output size ok: {same}")


async def run(reactor, size: int, directory: Path, threads: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    source = directory / "input.bin"
    write_input(source, size)
    os.sync()
    rss_before = peak_rss_mb()
    for number in range(1, rounds + 1):
        await one_round(reactor, number, source, size, directory, threads)
    print(f"peak RSS {peak_rss_mb():.1f} MB (after imports and input: {rss_before:.1f} MB; target < 100)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = parse_size(args.size) or 0
    directory = Path(tempfile.mkdtemp(prefix="p2pblob-bench-", dir=args.dir))
    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor, size, directory, args.threads, args.rounds)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
