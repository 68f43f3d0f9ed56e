"""
The rate limiter on real TCP connections over 127.0.0.1.

L{LoopbackRateLimitTests}: four clients download a blob again and again
from a peer server in this process, through a limit on the clients'
downloads (or the server's uploads); every 10-second window after the first
second moves the limit's bytes within 5%, and every connection gets at
least 15% of the limit in each window.  Each test runs for 12 s (windows
start between 1 and 2 s, every 50 ms).

L{LimitOptionsTests}: C{twistd p2pblob --max-upload} and C{p2pblob download
--max-download} hold a real download back to their limit (it takes at
least as long as the limit allows; nothing is asserted about how much
longer it may take).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob.ratelimit import BURST
from tests.integration._nodes import Seeder, publish, start_download
from tests.integration._ratelimit import Measurement, measure

_log = Logger()

MB = 1_000_000


class LoopbackRateLimitTests(TestCase):
    timeout = 60

    async def measured(self, limit: float, direction: str = "download") -> None:
        measurement = await measure(reactor, limit, direction, connections=4, seconds=12.0)
        self.check(measurement)

    def check(self, measurement: Measurement) -> None:
        windows = measurement.windows()
        _log.info(
            "{direction} limit {limit} B/s: {count} windows, worst deviation {worst:+.2%}, "
            "smallest share {share:.1%}",
            direction=measurement.direction, limit=measurement.limit, count=len(windows),
            worst=measurement.worst_deviation(), share=measurement.min_share(),
        )
        self.assertGreaterEqual(len(windows), 15)
        for window in windows:
            deviation = window.rate / measurement.limit - 1
            self.assertLessEqual(
                abs(deviation), 0.05,
                f"window from {window.start:.2f} s: {window.rate:.0f} B/s ({deviation:+.2%})",
            )
            for share in (rate / measurement.limit for rate in window.rates):
                self.assertGreaterEqual(
                    share, 0.15, f"window from {window.start:.2f} s: a connection got {share:.1%}"
                )

    def test_download_1_MB(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.measured(1 * MB))

    def test_download_10_MB(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.measured(10 * MB))

    def test_download_50_MB(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.measured(50 * MB))

    def test_upload_10_MB(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.measured(10 * MB, "upload"))


class LimitOptionsTests(SynchronousTestCase):
    """
    A 12 MiB stream from a real seeder, limited to 4 MB/s at either end.
    """

    SIZE = 12 * 1024 * 1024
    LIMIT = 4 * MB

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        source = self.base / "video.bin"
        source.write_bytes(os.urandom(self.SIZE))
        self.sd_hash, self.sd_file = publish(self.base / "seed", source, self.base / "sd")

    def download(self, seeder_options: list[str], download_options: list[str]) -> float:
        """
        Download the stream from a seeder; return how long it took.
        """
        seeder = Seeder(self.base / "seed", "--no-dht", *seeder_options)
        self.addCleanup(seeder.kill)
        started = time.monotonic()
        process = start_download(
            self.base / "downloader", self.sd_file, [seeder.address], self.base / "out",
            "--no-dht", *download_options,
        )
        _, err = process.communicate(timeout=120)
        took = time.monotonic() - started
        self.assertEqual(process.returncode, 0, err.decode())
        self.assertEqual((self.base / "out" / "video.bin").stat().st_size, self.SIZE)
        return took

    def shortest(self) -> float:
        """
        The least time the blobs' bytes can take at the limit: the
        bucket's burst may go at once.
        """
        return self.SIZE / self.LIMIT - BURST

    def test_seeder_max_upload(self) -> None:
        took = self.download(["--max-upload", "4MB"], [])
        self.assertGreaterEqual(took, self.shortest())

    def test_download_max_download(self) -> None:
        took = self.download([], ["--max-download", "4MB"])
        self.assertGreaterEqual(took, self.shortest())
