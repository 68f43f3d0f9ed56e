"""
A one-line progress display on standard error, shown only on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressLine"]


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
