"""
Reusable blob-sized buffers.

On this kind of machine a fresh 2 MiB allocation costs more than encrypting
it (each new page is faulted in), so the stream pipelines take their buffers
from a pool.  The buffers are anonymous memory maps: page-aligned, so that a
blob can be written from one straight to disk with C{O_DIRECT} (see
L{p2pblob.blob._files.write_file}).  Acquire and release on the reactor
thread only.
"""

from __future__ import annotations

import mmap

__all__ = ["Buffer", "BufferPool"]

Buffer = mmap.mmap
"""
A writable, page-aligned buffer from a L{BufferPool}.  Slice it through a
C{memoryview}: slicing the buffer itself copies.
"""


class BufferPool:
    """
    Buffers of one size, handed out and taken back.  The pool never holds more
    than C{keep} idle buffers, so its memory is bounded by what is in flight.
    """

    def __init__(self, size: int, keep: int = 8) -> None:
        self.size = size
        self._keep = keep
        self._free: list[Buffer] = []

    def acquire(self) -> Buffer:
        return self._free.pop() if self._free else mmap.mmap(-1, self.size)

    def release(self, buffer: Buffer) -> None:
        if len(self._free) < self._keep:
            self._free.append(buffer)
