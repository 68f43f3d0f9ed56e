"""
Tests for L{p2pblob.stream._output.SequentialWriter}.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.stream._output import SequentialWriter

_MIB = 1024 * 1024


class SequentialWriterTests(SynchronousTestCase):
    def write(self, chunks: list[bytes], direct: bool) -> tuple[Path, SequentialWriter]:
        path = Path(self.mktemp())
        path.touch()
        writer = SequentialWriter(path, direct=direct)
        for chunk in chunks:
            self.assertEqual(writer.write(memoryview(chunk)), len(chunk))
        writer.finish()
        return path, writer

    def test_large_unaligned(self) -> None:
        """
        Blob-sized, unaligned pieces across several staging buffers come out
        exactly, in both modes.
        """
        chunks = [os.urandom(2_097_151) for _ in range(9)] + [os.urandom(1_234)]
        for direct in (True, False):
            path, writer = self.write(chunks, direct)
            self.assertEqual(path.read_bytes(), b"".join(chunks))
            if not direct:
                self.assertFalse(writer.direct)

    def test_direct_used_where_supported(self) -> None:
        path, writer = self.write([b"x" * 5000], direct=True)
        if hasattr(os, "O_DIRECT") and os.uname().sysname == "Linux":
            # The trial temporary directory is on an ordinary disk file system.
            self.assertTrue(writer.direct)
        self.assertEqual(path.read_bytes(), b"x" * 5000)

    def test_empty(self) -> None:
        for direct in (True, False):
            path, _ = self.write([], direct)
            self.assertEqual(path.read_bytes(), b"")

    @settings(max_examples=30, deadline=None)
    @given(
        sizes=st.lists(st.sampled_from([0, 1, 15, 4095, 4096, 4097, 65536, _MIB + 7, 3 * _MIB]), max_size=6),
        direct=st.booleans(),
    )
    def test_any_chunking(self, sizes: list[int], direct: bool) -> None:
        chunks = [os.urandom(size) for size in sizes]
        path, _ = self.write(chunks, direct)
        self.assertEqual(path.read_bytes(), b"".join(chunks))


class SyncAndContinueTests(SynchronousTestCase):
    """
    C{sync} makes what was written durable mid-way (the file is then exactly
    that long) and writing goes on; a new writer continues a file from a
    given length, in both modes.
    """

    def test_sync_then_continue(self) -> None:
        for direct in (True, False):
            path = Path(self.mktemp())
            path.touch()
            writer = SequentialWriter(path, direct=direct)
            first = [os.urandom(5000), os.urandom(2_097_151)]
            for chunk in first:
                writer.write(chunk)
            self.assertEqual(writer.sync(), sum(map(len, first)))
            self.assertEqual(path.read_bytes(), b"".join(first))
            rest = os.urandom(9_000_001)
            writer.write(rest)
            writer.finish()
            self.assertEqual(path.read_bytes(), b"".join(first) + rest)

    @settings(max_examples=25, deadline=None)
    @given(
        kept=st.integers(min_value=0, max_value=3 * 4096 + 17),
        more=st.binary(min_size=0, max_size=20_000),
        direct=st.booleans(),
    )
    def test_continue_from(self, kept: int, more: bytes, direct: bool) -> None:
        path = Path(self.mktemp())
        original = os.urandom(kept + 100)
        path.write_bytes(original)
        os.truncate(path, kept)
        writer = SequentialWriter(path, direct=direct, start=kept)
        writer.write(more)
        writer.finish()
        self.assertEqual(path.read_bytes(), original[:kept] + more)
