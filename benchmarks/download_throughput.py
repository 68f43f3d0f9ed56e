"""
Download throughput of a stream from local seeders, against libtorrent.

    python benchmarks/download_throughput.py [--size 1GiB] [--runs 3] [--dir DIR]

Publishes a file of random bytes once, copies the node's data directory to
three seeders (C{twistd -n p2pblob}, each in its own process, on 127.0.0.1)
and times C{p2pblob download} of the stream from one and from three of them,
each run into an empty data directory.  For reference, the same file is
shared as a torrent (2 MiB pieces, the size of a data blob) by three
libtorrent seeders and downloaded by a libtorrent session in its own process.

For every download it prints the throughput (MB/s, from the downloader's
start to its exit), the downloader's CPU time (user + system) and its peak
RSS (both from C{wait4}), then a table of the medians (peak RSS: the highest
of the runs), the ratio p2pblob / libtorrent from three seeders (target
>= 0.7) and whether p2pblob's peak RSS stays under 150 MB.  Every output is
checked against the source's SHA-256; a failed or wrong download exits
non-zero.  Timings never do.

The page cache is not dropped (that needs root, and would only make the
seeders read from disk): the file and the seeders' copies stay cached, so
the seeders read from memory.  The
variants run in alternating order so that caching treats both sides alike,
after one untimed warm-up download of each (from three seeders): on a
freshly booted VM the first writes into guest memory the page cache has not
used yet run at ~450 MB/s instead of several GB/s, which would otherwise
penalise whichever download comes first.  Figures still vary by +-30% from
run to run on a small VM; hence the medians.

libtorrent is used with these non-default settings, on every session:

  - listen on 127.0.0.1 only; no DHT, local service discovery, UPnP or
    NAT-PMP: nothing leaves the machine, peers are connected explicitly;
  - allow_multiple_connections_per_ip: every seeder is 127.0.0.1 (on its
    own port); by default libtorrent keeps one connection per IP address;
  - TCP only (enable_outgoing_utp / enable_incoming_utp off): p2pblob
    speaks TCP; uTP (UDP with its own congestion control) would compare
    another transport;
  - no protocol encryption (in_enc_policy / out_enc_policy pe_disabled):
    p2pblob's peer protocol is plain TCP too (the stream is encrypted at
    rest, and the downloader decrypts it, which libtorrent does not have to);
  - disk_write_mode always_pwrite: libtorrent 2 writes through a memory
    map by default, whose file pages may count in its RSS; with pwrite it
    writes the way p2pblob does and its peak RSS is its own buffers (here
    both modes measured alike: ~2 s and 200-300 MB from three seeders).
  - tick_interval 50 ms (default 500): libtorrent connects the peers given
    to connect_peer on its timer ticks, which cost every download a fixed
    ~0.5 s before the first byte (p2pblob connects at once).
Rate limits are off by default (0) and loopback peers are not rate limited;
one downloader needs one of the 8 default unchoke slots.

The torrent is v1 only: libtorrent verifies every 2 MiB piece with SHA-1
(a v2 or hybrid torrent would use SHA-256 block trees).  p2pblob verifies
every blob with SHA-384 and decrypts it (AES-128-CBC), and stores each
verified blob in its data directory as well as writing the output file (it
seeds what it downloads), so it writes 2 bytes for every byte downloaded;
libtorrent writes 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIECE_SIZE = 2 * 1024 * 1024
LOCALHOST = "127.0.0.1"
SEEDERS = 3
READY_TIMEOUT = 120.0
RSS_TARGET_MB = 150
RATIO_TARGET = 0.7


class Failed(Exception):
    """
    A functional failure: a process did not start, a download failed or its
    output differs from the source.  The benchmark exits non-zero.
    """


# ----------------------------------------------------------------- libtorrent


def lt_settings(port: int) -> Any:
    """
    The settings of every libtorrent session here (see the module docstring).
    """
    import libtorrent as lt

    return {
        "listen_interfaces": f"{LOCALHOST}:{port}",
        "outgoing_interfaces": LOCALHOST,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "in_enc_policy": int(lt.enc_policy.pe_disabled),
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "disk_write_mode": int(lt.mmap_write_mode_t.always_pwrite),
        "tick_interval": 50,
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "alert_mask": int(lt.alert_category.status | lt.alert_category.error),
    }


def make_torrent(source: Path, torrent: Path) -> None:
    import libtorrent as lt

    files = lt.list_files(str(source)) if hasattr(lt, "list_files") else _file_storage(lt, source)
    creator = lt.create_torrent(files, piece_size=PIECE_SIZE, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(source.parent))
    torrent.write_bytes(lt.bencode(creator.generate()))


def _file_storage(lt: Any, source: Path) -> Any:
    # libtorrent < 2.1
    fs = lt.file_storage()
    lt.add_files(fs, str(source))
    return fs


def lt_seeder(torrent: str, save_path: str) -> None:
    """
    (In a subprocess.) Seed C{torrent} from C{save_path}: check the file,
    print the listening port once seeding, and run until killed.
    """
    import libtorrent as lt

    session = lt.session(lt_settings(0))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_path
    handle = session.add_torrent(params)
    deadline = time.monotonic() + READY_TIMEOUT
    while not handle.status().is_seeding:
        if handle.status().errc.value() or time.monotonic() > deadline:
            print(f"FAILED {handle.status().errc.message()} state {handle.status().state}", flush=True)
            sys.exit(1)
        time.sleep(0.05)
    print(f"READY {session.listen_port()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


def lt_downloader(torrent: str, save_path: str, ports: str, started: float) -> None:
    """
    (In a subprocess.) Download C{torrent} into C{save_path} from the
    seeders on C{ports} (comma-separated) and print, as JSON, the seconds
    from C{started} (C{time.monotonic} in the parent, the same clock) until
    every piece was verified.
    """
    import libtorrent as lt

    session = lt.session(lt_settings(0))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_path
    handle = session.add_torrent(params)
    for port in ports.split(","):
        handle.connect_peer((LOCALHOST, int(port)))
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        status = handle.status()
        if status.is_finished:
            break
        if status.errc.value():
            print(json.dumps({"error": status.errc.message()}), flush=True)
            sys.exit(1)
        if status.num_peers == 0 and time.monotonic() > deadline:
            print(json.dumps({"error": "no seeder connected"}), flush=True)
            sys.exit(1)
        session.wait_for_alert(100)
        session.pop_alerts()
    finished = time.monotonic() - started
    # pieces are verified; let the session write what it still holds and
    # close the file before exiting, as a user's client would
    handle.pause()
    del handle
    del session
    print(json.dumps({"finished_s": finished}), flush=True)


# ------------------------------------------------------------------ processes


@dataclass
class Run:
    """
    One timed download.
    """

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    note: str = ""


class Processes:
    """
    The long-running processes started here, terminated at the end.
    """

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[Any]] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(args, **kwargs)
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def environment(data_dir: Path) -> dict[str, str]:
    from tests._process import environment as base

    return base(data_dir)


def output_of(*paths: Path, lines: int = 40) -> str:
    """
    The end of what a process wrote (a failing one can log a lot).
    """
    text = "".join(path.read_text(errors="replace") for path in paths if path.exists())
    kept = text.splitlines()
    if len(kept) <= lines:
        return text
    return f"[... {len(kept) - lines} lines before ...]\n" + "\n".join(kept[-lines:]) + "\n"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def timed(args: list[str], limit: float, **kwargs: Any) -> tuple[int, Run]:
    """
    Run C{args} to completion: its exit status, wall time and resource use.
    A process still running after C{limit} seconds is killed (a hang, not a
    slow run: the limit is generous).
    """
    start = time.monotonic()
    process = subprocess.Popen(args, **kwargs)
    killer = threading.Timer(limit, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    wall = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def write_source(path: Path, size: int) -> None:
    # fresh random bytes for every 8 MiB would take longer than the
    # downloads; vary each piece cheaply so that no two pieces are the same
    piece = bytearray(os.urandom(8 * 1024 * 1024))
    with open(path, "wb") as f:
        left, number = size, 0
        while left > 0:
            piece[:8] = number.to_bytes(8, "big")
            f.write(piece[: min(left, len(piece))])
            left -= len(piece)
            number += 1


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen[Any], what: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if pattern in line:
                return line
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise Failed(f"{what} did not start (exit status {process.poll()}); its output:\n{output_of(log)}")


# -------------------------------------------------------------------- p2pblob


class P2PBlob:
    name = "p2pblob"

    def __init__(self, work: Path, source: Path, processes: Processes) -> None:
        self.work = work
        self.source = source
        self.processes = processes
        self.ports: list[int] = []
        self.sd_file = work / "sd" / f"{source.name}.sd"

    def prepare(self) -> None:
        from tests._process import TWISTD

        seed1 = self.work / "seed1"
        (self.work / "sd").mkdir()
        seed1.mkdir()
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "p2pblob", "--data-dir", str(seed1), "publish", str(self.source),
             "--sd-out", str(self.work / "sd")],
            env=environment(seed1), capture_output=True, text=True,
        )
        if result.returncode or not self.sd_file.is_file():
            raise Failed(f"p2pblob publish failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        print(f"p2pblob: published in {time.monotonic() - start:.1f} s, sd hash {result.stdout.strip()}")
        for number in range(2, SEEDERS + 1):
            shutil.copytree(seed1, self.work / f"seed{number}")
        for number in range(1, SEEDERS + 1):
            data_dir = self.work / f"seed{number}"
            log = self.work / f"seed{number}.log"
            with open(log, "wb") as out:
                process = self.processes.start(
                    [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pblob",
                     "--data-dir", str(data_dir), "--peer-listen", f"tcp:0:interface={LOCALHOST}"],
                    env=environment(data_dir), cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            line = wait_for_line(log, "Serving blobs to peers on", process, f"p2pblob seeder {number}")
            found = re.search(r"host='([^']*)', port=(\d+)", line)
            if found is None or found.group(1) != LOCALHOST:
                raise Failed(f"p2pblob seeder {number}: no 127.0.0.1 address in {line!r}")
            self.ports.append(int(found.group(2)))
        print(f"p2pblob: {SEEDERS} seeders on 127.0.0.1 ports {', '.join(map(str, self.ports))}")

    def download(self, seeders: int, limit: float, expected: str) -> Run:
        data_dir = self.work / "dl"
        output = self.work / "dl-out"
        data_dir.mkdir()
        output.mkdir()
        peers = [arg for port in self.ports[:seeders] for arg in ("--peer", f"{LOCALHOST}:{port}")]
        stdout, stderr = self.work / "dl.stdout", self.work / "dl.stderr"
        try:
            with open(stdout, "wb") as out, open(stderr, "wb") as err:
                status, run = timed(
                    [sys.executable, "-m", "p2pblob", "--data-dir", str(data_dir), "download",
                     str(self.sd_file), *peers, "--output", str(output)],
                    limit, env=environment(data_dir), cwd=self.work, stdout=out, stderr=err,
                    stdin=subprocess.DEVNULL,
                )
            if status:
                raise Failed(f"p2pblob download exited {status}:\n{output_of(stdout, stderr)}")
            files = list(output.iterdir())
            if len(files) != 1:
                raise Failed(f"p2pblob download left {[f.name for f in files]} in its output directory")
            if sha256_of(files[0]) != expected:
                raise Failed(f"p2pblob download: {files[0]} differs from the source")
            return run
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(output, ignore_errors=True)


# ----------------------------------------------------------------- libtorrent


class LibTorrent:
    name = "libtorrent"

    def __init__(self, work: Path, source: Path, processes: Processes) -> None:
        self.work = work / "lt"
        self.source = source
        self.processes = processes
        self.ports: list[int] = []
        self.torrent = self.work / f"{source.name}.torrent"

    def prepare(self) -> None:
        self.work.mkdir()
        start = time.monotonic()
        make_torrent(self.source, self.torrent)
        print(f"libtorrent: made the torrent (v1, SHA-1, 2 MiB pieces) in {time.monotonic() - start:.1f} s")
        for number in range(1, SEEDERS + 1):
            directory = self.work / f"seed{number}"
            directory.mkdir()
            os.link(self.source, directory / self.source.name)
            log = self.work / f"seed{number}.log"
            with open(log, "wb") as out:
                process = self.processes.start(
                    [sys.executable, __file__, "--lt-seeder", str(self.torrent), str(directory)],
                    cwd=self.work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            line = wait_for_line(log, "READY ", process, f"libtorrent seeder {number}")
            self.ports.append(int(line.split()[1]))
        print(f"libtorrent: {SEEDERS} seeders on 127.0.0.1 ports {', '.join(map(str, self.ports))}")

    def download(self, seeders: int, limit: float, expected: str) -> Run:
        directory = self.work / "dl"
        directory.mkdir()
        stdout, stderr = self.work / "dl.stdout", self.work / "dl.stderr"
        try:
            with open(stdout, "wb") as out, open(stderr, "wb") as err:
                status, run = timed(
                    [sys.executable, __file__, "--lt-downloader", str(self.torrent), str(directory),
                     ",".join(map(str, self.ports[:seeders])), repr(time.monotonic())],
                    limit, cwd=self.work, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                )
            text = stdout.read_text(errors="replace")
            if status:
                raise Failed(f"libtorrent download exited {status}:\n{output_of(stdout, stderr)}")
            path = directory / self.source.name
            if sha256_of(path) != expected:
                raise Failed(f"libtorrent download: {path} differs from the source")
            finished = json.loads(text.strip().splitlines()[-1])["finished_s"]
            run.note = f"(all pieces verified after {finished:.2f} s)"
            return run
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------- main


def show(label: str, name: str, seeders: int, run: Run, size: int) -> None:
    print(
        f"{label:7} {name:10} from {seeders} seeder(s): {run.wall_s:6.2f} s "
        f"{size / 1e6 / run.wall_s:7.1f} MB/s  CPU {run.cpu_s:6.2f} s  "
        f"peak RSS {run.peak_rss_mb:6.1f} MB  {run.note}",
        flush=True,
    )


def median_row(runs: list[Run], size: int) -> tuple[float, float, float]:
    mb = size / 1e6
    return (
        statistics.median(mb / run.wall_s for run in runs),
        statistics.median(run.cpu_s for run in runs),
        max(run.peak_rss_mb for run in runs),
    )


def benchmark(size: int, runs: int, work: Path) -> None:
    from p2pblob.config import format_size

    processes = Processes()
    libtorrent: Any
    try:
        import libtorrent
    except ImportError:
        libtorrent = None
        print("libtorrent is not installed: pip install libtorrent to get the reference figures")
    source = work / "stream.bin"
    start = time.monotonic()
    write_source(source, size)
    expected = sha256_of(source)
    print(f"source: {format_size(size)} of random bytes in {source} ({time.monotonic() - start:.1f} s)")
    sides: list[P2PBlob | LibTorrent] = [P2PBlob(work, source, processes)]
    if libtorrent is not None:
        print(f"libtorrent {libtorrent.__version__}")
        sides.append(LibTorrent(work, source, processes))
    # a hang guard, not a timing check: 2 minutes plus 1 MB/s
    limit = 120 + size / 1e6
    results: dict[tuple[str, int], list[Run]] = {}
    try:
        for side in sides:
            side.prepare()
        for side in sides:
            show("warm-up", side.name, SEEDERS, side.download(SEEDERS, limit, expected), size)
        for number in range(1, runs + 1):
            # alternate which side goes first, so that caches favour neither
            order = sides if number % 2 else sides[::-1]
            for seeders in (1, SEEDERS):
                for side in order:
                    run = side.download(seeders, limit, expected)
                    results.setdefault((side.name, seeders), []).append(run)
                    show(f"run {number}", side.name, seeders, run, size)
    finally:
        processes.stop_all()

    cpus = os.cpu_count()
    print()
    print(f"{format_size(size)} stream, {runs} run(s) each (median; peak RSS: the highest), {cpus} CPUs")
    print(f"{'':26}{'MB/s':>8}{'CPU s':>9}{'peak RSS MB':>13}")
    rows: dict[tuple[str, int], tuple[float, float, float]] = {}
    for side in sides:
        for seeders in (1, SEEDERS):
            rows[side.name, seeders] = row = median_row(results[side.name, seeders], size)
            label = f"{side.name}, {seeders} seeder{'s' if seeders > 1 else ''}"
            print(f"{label:26}{row[0]:8.1f}{row[1]:9.2f}{row[2]:13.1f}")
    if libtorrent is not None:
        ratio = rows["p2pblob", SEEDERS][0] / rows["libtorrent", SEEDERS][0]
        print(f"p2pblob/libtorrent ({SEEDERS} seeders): {ratio:.2f} (target >= {RATIO_TARGET})")
    else:
        print(f"p2pblob/libtorrent ({SEEDERS} seeders): - (pip install libtorrent to get the reference figures)")
    peak = max(rows["p2pblob", 1][2], rows["p2pblob", SEEDERS][2])
    print(f"p2pblob peak RSS < {RSS_TARGET_MB} MB: {'yes' if peak < RSS_TARGET_MB else 'no'} ({peak:.1f} MB)")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--lt-seeder":
        torrent, save_path = sys.argv[2:4]
        lt_seeder(torrent, save_path)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--lt-downloader":
        torrent, save_path, ports, started = sys.argv[2:6]
        lt_downloader(torrent, save_path, ports, float(started))
        return 0

    from p2pblob.config import format_size, parse_size

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="size of the stream (default: 1GiB)")
    parser.add_argument("--runs", type=int, default=3, help="downloads of each kind (default: 3)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new one in /tmp)")
    # scripts/run_benchmarks.py passes the same options to every benchmark
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    size = parse_size(args.size) or 0
    if size <= 0 or args.runs < 1:
        parser.error("--size and --runs must be positive")
    parent = args.dir or tempfile.gettempdir()
    # the source, the three seeders' stores and one download (its blobs and
    # its output file) at a time; libtorrent's seeders share the source by
    # hard links and its download is deleted before the next
    needed = 6 * size + 256 * 1024 * 1024
    free = shutil.disk_usage(parent).free
    if free < needed:
        print(
            f"not enough free space in {parent}: {format_size(free)} free, {format_size(needed)} needed "
            f"for a {format_size(size)} stream (try a smaller --size, or --dir elsewhere)"
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="p2pblob-download-bench-", dir=parent))
    try:
        benchmark(size, args.runs, work)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
