"""
A one-line progress display on standard error, shown only on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["DownloadLine", "ProgressLine"]


class ProgressLine:
    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < self._interval and done < total:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-6)
        percent = 100.0 * done / total if total else 100.0
        self._stream.write(
            f"\r{self._label}: {percent:5.1f}%  {done / 1e6:,.1f} of {total / 1e6:,.1f} MB"
            f"  {done / elapsed / 1e6:,.0f} MB/s "
        )
        self._stream.flush()
        self._shown = True

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def finish(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class DownloadLine:
    """
    A one-line download display: percentage, bytes, rate, time left and
    connected peers.  The rate is measured over the last few seconds.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._samples: list[tuple[float, int]] = []
        self._shown = False

    def __call__(self, done: int, total: int, peers: int) -> None:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5.0:
            self._samples.pop(0)
        if not self._enabled:
            return
        first_time, first_done = self._samples[0]
        rate = (done - first_done) / (now - first_time) if now > first_time else 0.0
        eta = _duration((total - done) / rate) if rate > 0 else "--:--"
        percent = 100.0 * done / total if total else 100.0
        self._stream.write(
            f"\r{self._label}: {percent:5.1f}%  {done / 1e6:,.1f} of {total / 1e6:,.1f} MB"
            f"  {rate / 1e6:,.1f} MB/s  ETA {eta}  peers {peers} "
        )
        self._stream.flush()
        self._shown = True

    def __enter__(self) -> DownloadLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
