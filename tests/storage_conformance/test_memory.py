"""
The conformance kit run against the C{memory} backend
(L{p2pblob.testing.MemoryStorageBackend}), and the host's own behaviour:
retries, fallbacks for missing methods, chunk-size negotiation.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.storage.host import StorageHost, retry_delay
from p2pblob.testing import MemoryStorageBackend, MemoryStoragePlugin
from tests.storage_conformance import MiB, StorageConformanceMixin


class MemoryConformanceTests(StorageConformanceMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.memory = MemoryStorageBackend()
        super().setUp()

    def make_host(self) -> StorageHost:
        return StorageHost(MemoryStoragePlugin(self.memory), {}, self.clock)

    def inject_failure(self, call: str, times: int, error: Exception | None = None) -> None:
        self.memory.fail(call, times, error)

    def staged_uploads(self) -> set[str]:
        return set(self.memory.uploading())

    def crash_mid_transfer(self, journal: Path, source: Path, key: str, chunks: int) -> None:
        # The files live in this process: a child could not reach them.
        self.crash_in_process(journal, source, key, chunks)


class RetryTests(SynchronousTestCase):
    """
    L{StorageHost} tries again what the service failed, with growing
    pauses, a limited number of times.
    """

    def setUp(self) -> None:
        self.memory = MemoryStorageBackend()
        self.memory.files["key"] = b"content"
        self.clock = Clock()
        self.host = StorageHost(MemoryStoragePlugin(self.memory), {"retries": "3"}, self.clock)

    def test_delays(self) -> None:
        """
        The pauses double from half a second, up to 30 seconds.
        """
        self.assertEqual(
            [retry_delay(n) for n in range(1, 10)],
            [0.5, 1, 2, 4, 8, 16, 30, 30, 30],
        )

    def test_retried_and_logged(self) -> None:
        """
        Each retry is logged with the plugin, the call and the error, and
        the call succeeds once the service does.
        """
        self.memory.fail("get_chunk", 2, ServiceError("503 Slow Down"))
        with capturedLogs() as events:
            d = self.host.get_chunk("key", 1, 3)
            self.clock.advance(0.5)
            self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), b"ont")
        self.assertEqual(self.memory.calls, ["get_chunk"] * 3)
        self.assertEqual([e["attempt"] for e in events], [1, 2])
        for event in events:
            self.assertEqual(event["plugin"], "memory")
            self.assertEqual(event["call"], "get_chunk")
            self.assertIn("503 Slow Down", str(event["error"]))

    def test_data_not_logged(self) -> None:
        """
        The log of a retried upload shows the size of the data, not the data.
        """
        self.memory.start_upload("key", None)
        self.memory.fail("upload_chunk", 1)
        with capturedLogs() as events:
            d = self.host.upload_chunk("key", 0, b"secret")
            self.clock.advance(0.5)
        self.successResultOf(d)
        self.assertEqual(events[0]["arguments"], "'key', 0, <6 bytes>")

    def test_gives_up(self) -> None:
        """
        After C{retries} retries the last L{ServiceError} is passed on.
        """
        self.memory.fail("exists", 4)
        d = self.host.exists("key")
        for delay in [0.5, 1, 2]:
            self.assertNoResult(d)
            self.clock.advance(delay)
        self.failureResultOf(d, ServiceError)
        self.assertEqual(len(self.memory.calls), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_other_errors_not_retried(self) -> None:
        """
        Errors other than L{ServiceError} are passed on at once.
        """
        self.memory.fail("size", 1, RuntimeError("bug"))
        self.failureResultOf(self.host.size("key"), RuntimeError)
        self.assertEqual(self.memory.calls, ["size"])

    def test_stop_cancels_pauses(self) -> None:
        """
        Stopping the host cancels the pauses between tries: the call fails.
        """
        self.host.startService()
        self.memory.fail("get_file", 1)
        d = self.host.get_file("key")
        self.host.stopService()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_closes_backend(self) -> None:
        """
        Stopping the host lets the backend close its connections; a backend
        that fails to close is logged, and the stop still completes.
        """
        self.host.startService()
        self.successResultOf(self.host.stopService())
        self.assertEqual(self.memory.calls[-1:], ["close"])
        self.host.startService()
        self.memory.fail("close", 1, DriverError("cannot close"))
        self.successResultOf(self.host.stopService())
        self.assertEqual(len(self.flushLoggedErrors(DriverError)), 1)


class FallbackTests(SynchronousTestCase):
    """
    L{StorageHost} makes up for the optional methods a backend lacks.
    """

    def host(self, *without: str, **options: object) -> tuple[StorageHost, MemoryStorageBackend]:
        memory = MemoryStorageBackend(without=without)
        return StorageHost(MemoryStoragePlugin(memory), options, Clock()), memory

    def test_get_file_by_chunks(self) -> None:
        """
        Without C{get_file}, a file is read chunk by chunk, however its size
        falls on the chunks.
        """
        host, memory = self.host("get_file", chunk_size=4)
        for content in [b"", b"abc", b"abcd", b"abcdefghij"]:
            memory.files["f"] = content
            self.assertEqual(self.successResultOf(host.get_file("f")), content)
        self.failureResultOf(host.get_file("missing"), StorageKeyNotFoundError)

    def test_get_chunk_from_file(self) -> None:
        """
        Without C{get_chunk}, a chunk is cut from the whole file.
        """
        host, memory = self.host("get_chunk")
        memory.files["f"] = b"0123456789"
        self.assertEqual(self.successResultOf(host.get_chunk("f", 2, 3)), b"234")

    def test_cannot_read(self) -> None:
        """
        A backend with neither method cannot be read: L{DriverError}.
        """
        host, memory = self.host("get_chunk", "get_file")
        memory.files["f"] = b"x"
        self.failureResultOf(host.get_file("f"), DriverError)
        self.failureResultOf(host.get_chunk("f", 0, 1), DriverError)

    def test_upload_file_by_chunks(self) -> None:
        """
        Without C{upload_file}, a file is uploaded chunk by chunk.
        """
        host, memory = self.host("upload_file", chunk_size=3)
        self.successResultOf(host.upload_file("f", b"abcdefg"))
        self.assertEqual(memory.files["f"], b"abcdefg")
        self.assertEqual(memory.calls.count("upload_chunk"), 3)

    def test_upload_file_by_chunks_aborted(self) -> None:
        """
        If the chunked upload fails, it is aborted and nothing is visible.
        """
        host, memory = self.host("upload_file", chunk_size=3, retries=0)
        memory.fail("upload_chunk", 1, DriverError("full"))
        self.failureResultOf(host.upload_file("f", b"abcdefg"), DriverError)
        self.assertNotIn("f", memory.files)
        self.assertEqual(memory.uploading(), [])

    def test_move_by_copy(self) -> None:
        """
        Without C{move_file}, a file is copied chunk by chunk, then the old
        one deleted.
        """
        host, memory = self.host("move_file", chunk_size=4)
        memory.files["old"] = b"0123456789"
        self.successResultOf(host.move_file("old", "new"))
        self.assertEqual(memory.files, {"new": b"0123456789"})
        self.failureResultOf(host.move_file("old", "newer"), StorageKeyNotFoundError)

    def test_move_by_copy_fails(self) -> None:
        """
        If the copy fails, the old file stays and nothing of the new one is
        visible.
        """
        host, memory = self.host("move_file", chunk_size=4)
        memory.files["old"] = b"0123456789"
        memory.fail("end_upload", 1, DriverError("no"))
        self.failureResultOf(host.move_file("old", "new"), DriverError)
        self.assertEqual(memory.files, {"old": b"0123456789"})
        self.assertEqual(memory.uploading(), [])

    def test_move_to_itself_by_copy(self) -> None:
        """
        Renaming a file to its own name does not lose it.
        """
        host, memory = self.host("move_file")
        memory.files["same"] = b"kept"
        self.successResultOf(host.move_file("same", "same"))
        self.assertEqual(memory.files, {"same": b"kept"})


class ChunkSizeTests(SynchronousTestCase):
    """
    L{StorageHost.negotiate_chunk_size} asks the backend for the
    C{chunk_size} option's size and keeps its answer.
    """

    def negotiate(self, memory: MemoryStorageBackend, **options: object) -> StorageHost:
        host = StorageHost(MemoryStoragePlugin(memory), options, Clock())
        self.successResultOf(host.negotiate_chunk_size())
        return host

    def test_raised(self) -> None:
        """
        A backend may raise the chunk size (an S3 part is at least 5 MiB).
        """
        host = self.negotiate(MemoryStorageBackend(minimum_chunk_size=5 * MiB))
        self.assertEqual(host.chunk_size, 5 * MiB)

    def test_option(self) -> None:
        """
        Otherwise the option's size is kept (from a configuration string).
        """
        host = self.negotiate(MemoryStorageBackend(), chunk_size="65536")
        self.assertEqual(host.chunk_size, 65536)

    def test_not_supported(self) -> None:
        """
        A backend without C{set_chunk_size} takes the option's size.
        """
        host = self.negotiate(MemoryStorageBackend(without=["set_chunk_size"]), chunk_size=10)
        self.assertEqual(host.chunk_size, 10)

    def test_smaller_refused(self) -> None:
        """
        A backend answering a smaller size, or no size, is at fault.
        """
        for answer in [10, None, "big"]:
            memory = MemoryStorageBackend()
            memory.set_chunk_size = lambda size, answer=answer: answer  # type: ignore[method-assign]
            host = StorageHost(MemoryStoragePlugin(memory), {}, Clock())
            self.failureResultOf(host.negotiate_chunk_size(), DriverError)
