"""
Reusable blob-sized buffers.

On this kind of machine a fresh 2 MiB allocation costs more than encrypting
it (each new page is faulted in), so the stream pipelines take their buffers
from a pool.  Acquire and release on the reactor thread only.
"""

from __future__ import annotations

__all__ = ["BufferPool"]


class BufferPool:
    """
    Buffers of one size, handed out and taken back.  The pool never holds more
    than C{keep} idle buffers, so its memory is bounded by what is in flight.
    """

    def __init__(self, size: int, keep: int = 8) -> None:
        self.size = size
        self._keep = keep
        self._free: list[bytearray] = []

    def acquire(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def release(self, buffer: bytearray) -> None:
        if len(self._free) < self._keep:
            self._free.append(buffer)
