"""
Real p2pblob processes on 127.0.0.1 for integration tests: C{twistd p2pblob}
seeders and C{p2pblob download} downloaders.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests._process import TWISTD, environment

__all__ = ["Seeder", "blob_count", "publish", "random_file", "start_download"]

_PORT = re.compile(rb"Serving blobs to peers on .*port=(\d+)")


def random_file(path: Path, size: int) -> Path:
    """
    Write C{size} random bytes to C{path} (16 MiB at a time); return it.
    """
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = min(left, 1 << 24)
            f.write(os.urandom(chunk))
            left -= chunk
    return path


def publish(data_dir: Path, source: Path, sd_dir: Path) -> tuple[str, Path]:
    """
    Publish C{source} into C{data_dir}; return the sd hash and .sd file.
    """
    sd_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "p2pblob", "publish", str(source), "--sd-out", str(sd_dir)],
        env=environment(data_dir), capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"publish failed: {result.stderr}")
    return result.stdout.strip(), sd_dir / f"{source.name}.sd"


class Seeder:
    """
    A C{twistd -n p2pblob} process serving a data directory on an
    ephemeral port of 127.0.0.1.

    A thread reads its log as it comes into L{output}: a node whose log
    nobody reads would block once the pipe is full, and a long transfer
    logs more than a pipe holds.
    """

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pblob",
             "--data-dir", str(data_dir), "--peer-listen", "tcp:0:interface=127.0.0.1",
             "--api-listen", "tcp:0:interface=127.0.0.1", *extra],
            env={**environment(data_dir), **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.output = b""
        self._grown = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self._read_until(_PORT).group(1))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_for(self, pattern: bytes, timeout: float = 60) -> re.Match[bytes]:
        """
        Wait until the node logs a line matching C{pattern}.
        """
        return self._read_until(re.compile(pattern), timeout)

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(65536):  # type: ignore[attr-defined]
            with self._grown:
                self.output += chunk
                self._grown.notify_all()
        with self._grown:
            self._grown.notify_all()

    def _read_until(self, pattern: re.Pattern[bytes], timeout: float = 60) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        with self._grown:
            while (match := pattern.search(self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"twistd p2pblob never logged {pattern.pattern!r}:\n"
                        f"{self.output.decode()}"
                    )
                self._grown.wait(min(left, 1.0))
        return match

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._reader.join(30)

    def stop(self) -> int:
        """
        SIGTERM, wait; return the exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self._reader.join(30)
        return self.process.returncode


def clone_data_dir(source: Path, destination: Path) -> None:
    """
    Another node holding the same blobs (the source node is not running).
    """
    shutil.copytree(source, destination)


def start_download(data_dir: Path, sd: str | Path, peers: list[str], output: Path,
                   *extra: str, debug: bool = True) -> subprocess.Popen[bytes]:
    """
    Start C{p2pblob download} (logging at debug level, unless not
    C{debug}: a benchmark measures what users run).
    """
    output.mkdir(parents=True, exist_ok=True)
    arguments = [sys.executable, "-m", "p2pblob", *(["--debug"] if debug else []), "download",
                 str(sd), "--output", str(output), *extra]
    for peer in peers:
        arguments += ["--peer", peer]
    return subprocess.Popen(arguments, env=environment(data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def blob_count(data_dir: Path) -> int:
    """
    How many verified blob files the node has (temporary files excluded).
    """
    try:
        return sum(1 for name in os.listdir(data_dir / "blobfiles") if not name.startswith("."))
    except FileNotFoundError:
        return 0


def wait_for_blobs(data_dir: Path, count: int, process: subprocess.Popen[bytes],
                   timeout: float = 120) -> None:
    """
    Poll until the node has at least C{count} blobs (the download still
    running).
    """
    deadline = time.monotonic() + timeout
    while blob_count(data_dir) < count:
        if process.poll() is not None:
            raise AssertionError(
                f"the download ended before {count} blobs arrived: {process.returncode}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} blobs after {timeout} s")
        time.sleep(0.002)
