"""
Real processes on 127.0.0.1: C{twistd p2pblob} seeders serve a 64 MiB stream
to C{p2pblob download}, which survives a seeder dying, avoids a seeder that
corrupts blobs, and resumes after being killed with SIGKILL or interrupted
with Ctrl-C.
"""

from __future__ import annotations

import hashlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests._process import environment
from tests.integration._nodes import (
    Seeder,
    blob_count,
    clone_data_dir,
    publish,
    start_download,
    wait_for_blobs,
)

SIZE = 64 * 1024 * 1024
DATA_BLOBS = -(-SIZE // (2 * 1024 * 1024 - 1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadFromProcessesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        self.source = self.base / "video.bin"
        with open(self.source, "wb") as f:
            f.write(os.urandom(SIZE))
        self.expected = _sha256(self.source)
        self.sd_hash, self.sd_file = publish(self.base / "seed0", self.source, self.base / "sd")
        self.seeders: list[Seeder] = []
        self.downloader_dir = self.base / "downloader"
        self.output = self.base / "out"

    def tearDown(self) -> None:
        for seeder in self.seeders:
            seeder.kill()

    def start_seeders(self, count: int, *extra: str) -> list[Seeder]:
        for n in range(count):
            directory = self.base / f"seed{n}"
            if not directory.exists():
                clone_data_dir(self.base / "seed0", directory)
            self.seeders.append(Seeder(directory, *extra))
        return self.seeders[-count:]

    def finish(self, process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        out, err = process.communicate(timeout=300)
        self.assertEqual(process.returncode, 0, err.decode())
        return out, err

    def assertDownloaded(self, out: bytes) -> Path:
        path = Path(out.decode().strip())
        self.assertEqual(path, self.output / "video.bin")
        self.assertEqual(_sha256(path), self.expected)
        self.assertEqual([p.name for p in self.output.iterdir()], ["video.bin"])
        self.assertEqual(
            [n for n in os.listdir(self.downloader_dir / "blobfiles") if n.startswith(".")], []
        )
        return path

    def test_seeder_killed_mid_download(self) -> None:
        """
        Three seeders; one is killed (SIGKILL) while the download runs; the
        download completes from the other two and the file is identical.
        """
        seeders = self.start_seeders(3)
        process = start_download(
            self.downloader_dir, self.sd_file, [s.address for s in seeders], self.output
        )
        wait_for_blobs(self.downloader_dir, 2, process)
        process.send_signal(signal.SIGSTOP)  # hold it still while the seeder dies
        try:
            self.assertLess(blob_count(self.downloader_dir), DATA_BLOBS + 1)
            seeders[0].kill()
        finally:
            process.send_signal(signal.SIGCONT)
        out, _ = self.finish(process)
        self.assertDownloaded(out)
        for seeder in seeders[1:]:
            self.assertEqual(seeder.stop(), -signal.SIGTERM, seeder.output.decode())
            self.assertIn(b"Server Shut Down", seeder.output)
            self.assertEqual(
                [n for n in os.listdir(seeder.data_dir / "blobfiles") if n.startswith(".")], []
            )

    def test_corrupting_seeder_is_detected_and_avoided(self) -> None:
        """
        A seeder that damages every blob it serves: each bad blob is caught
        by its hash, never stored, and the download completes from the
        honest seeder.
        """
        good = self.start_seeders(1)[0]
        clone_data_dir(self.base / "seed0", self.base / "bad")
        bad = Seeder(self.base / "bad", "--corrupt-uploads")
        self.seeders.append(bad)
        process = start_download(
            self.downloader_dir, self.sd_file, [bad.address, good.address], self.output
        )
        out, err = self.finish(process)
        self.assertDownloaded(out)
        self.assertIn(b"sent bad data", err)
        self.assertIn(bad.address.encode(), err)

    def test_resume_after_sigkill(self) -> None:
        """
        A downloader killed with SIGKILL part-way: run again, it fetches
        only the blobs it did not have and produces an identical file; the
        final name never held a partial file.
        """
        seeders = self.start_seeders(1)
        peers = [seeders[0].address]
        process = start_download(self.downloader_dir, self.sd_file, peers, self.output)
        wait_for_blobs(self.downloader_dir, 12, process)
        process.kill()
        process.wait(30)
        self.assertFalse((self.output / "video.bin").exists())
        present = blob_count(self.downloader_dir) - 1  # minus the sd blob
        self.assertLess(present, DATA_BLOBS)
        process = start_download(self.downloader_dir, self.sd_file, peers, self.output)
        out, err = self.finish(process)
        self.assertDownloaded(out)
        received = err.count(b"Received blob")
        self.assertEqual(received, DATA_BLOBS - present, err.decode()[-3000:])

    def test_resume_after_interrupt(self) -> None:
        """
        Ctrl-C (SIGINT) saves the download's progress and exits 130; the
        next run continues the output file from its checkpoint.
        """
        seeders = self.start_seeders(1)
        peers = [seeders[0].address]
        process = start_download(self.downloader_dir, self.sd_file, peers, self.output)
        wait_for_blobs(self.downloader_dir, 4, process)
        process.send_signal(signal.SIGSTOP)
        self.assertLess(blob_count(self.downloader_dir), DATA_BLOBS + 1)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 130, err.decode())
        self.assertIn(b"interrupted", err)
        self.assertIn(b"run the same command again to resume", err)
        self.assertFalse((self.output / "video.bin").exists())
        process = start_download(self.downloader_dir, self.sd_file, peers, self.output)
        out, err = self.finish(process)
        self.assertDownloaded(out)
        self.assertIn(b"resumed after", err)

    def test_download_by_sd_hash(self) -> None:
        """
        Given only the sd hash, the downloader fetches the descriptor from
        the peers first.
        """
        seeders = self.start_seeders(2)
        process = start_download(
            self.downloader_dir, self.sd_hash, [s.address for s in seeders], self.output
        )
        out, _ = self.finish(process)
        self.assertDownloaded(out)

    def test_no_peer_reachable(self) -> None:
        """
        With no peer listening the download fails with one clear line and
        exit status 1, and leaves no file behind.
        """
        seeder = self.start_seeders(1)[0]
        address = seeder.address
        seeder.kill()
        process = start_download(
            self.downloader_dir, self.sd_file, [address], self.output, "--stall-timeout", "3"
        )
        _, err = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 1, err.decode())
        self.assertIn(b"p2pblob: error: download stalled", err)
        self.assertEqual(list(self.output.iterdir()), [])


class ServeCommandTests(SynchronousTestCase):
    def test_serve_publishes_and_serves(self) -> None:
        """
        C{p2pblob serve FILE} publishes FILE, writes FILE.sd, serves its
        blobs until interrupted, and exits 0 on Ctrl-C.
        """
        base = Path(self.mktemp()).absolute()
        base.mkdir(parents=True)
        source = base / "clip.bin"
        source.write_bytes(os.urandom(5 * 1024 * 1024 + 7))
        serving = subprocess.Popen(
            [sys.executable, "-m", "p2pblob", "serve", str(source),
             "--listen", "tcp:0:interface=127.0.0.1"],
            env=environment(base / "server"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: serving.poll() is None and serving.kill())
        assert serving.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(serving.stderr, selectors.EVENT_READ)
        said = b""
        deadline = time.monotonic() + 60
        while (match := re.search(rb"serving (\d+) blob\(s\) on .*port=(\d+)", said)) is None:
            self.assertIsNone(serving.poll(), said.decode())
            self.assertLess(time.monotonic(), deadline, said.decode())
            if selector.select(1):
                said += serving.stderr.read1(65536)  # type: ignore[attr-defined]
        self.assertEqual(int(match.group(1)), 4)  # sd blob + 3 data blobs
        sd_file = base / "clip.bin.sd"
        self.assertTrue(sd_file.is_file())
        output = base / "out"
        process = start_download(base / "client", sd_file, [f"127.0.0.1:{match.group(2).decode()}"],
                                 output)
        out, err = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 0, err.decode())
        self.assertEqual(Path(out.decode().strip()).read_bytes(), source.read_bytes())
        serving.send_signal(signal.SIGINT)
        stdout, _ = serving.communicate(timeout=60)
        self.assertEqual(serving.returncode, 0)
        self.assertIn(b"clip.bin", stdout)
