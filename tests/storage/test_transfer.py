"""
Tests for L{p2pblob.storage.transfer}: journaled uploads to the memory
backend, on a L{Clock}, with chunks of 4 bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.errors import (
    BlobHashMismatchError,
    DriverError,
    ServiceError,
    SourceChangedError,
    SourceGoneError,
    TransferCancelledError,
    TransferSupersededError,
)
from p2pblob.storage.host import StorageHost
from p2pblob.storage.journal import JournalEntry, TransferJournal
from p2pblob.storage.transfer import (
    FileSource,
    ITransferSource,
    Outcome,
    TransferProgress,
    TransferResult,
    Transfers,
    open_file_source,
)
from p2pblob.testing import MemorySource, MemoryStorageBackend, MemoryStoragePlugin

CONTENT = b"0123456789"


def sha384(content: bytes) -> str:
    return hashlib.sha384(content).hexdigest()


def result_of(
    key: str, outcome: Outcome, content: bytes, resumed_from: int | None = None
) -> TransferResult:
    """
    The result of an upload of C{content} that never started over.
    """
    return TransferResult(key, outcome, len(content), sha384(content), resumed_from)


class TransfersTestCase(SynchronousTestCase):
    """
    Transfers to a memory backend; each source is found again by its
    description among C{self.sources}.
    """

    def setUp(self) -> None:
        self.memory = MemoryStorageBackend()
        self.clock = Clock()
        self.host = self.make_host()
        self.journal = TransferJournal(Path(self.mktemp()))
        self.addCleanup(self.journal.close)
        self.sources: dict[str, MemorySource] = {}
        self.seen: list[TransferProgress] = []
        self.transfers = self.make_transfers()

    def make_host(self, **options: object) -> StorageHost:
        host = StorageHost(
            MemoryStoragePlugin(self.memory), {"chunk_size": 4, **options}, self.clock
        )
        self.successResultOf(host.negotiate_chunk_size())
        self.memory.calls.clear()
        return host

    def make_transfers(self, target: str = "blobs", **kwargs: Any) -> Transfers:
        kwargs.setdefault("on_progress", self.seen.append)
        return Transfers(self.host, self.journal, target, self.clock, self.sources.get, **kwargs)

    def source(self, content: bytes = CONTENT, name: str = "a") -> MemorySource:
        source = MemorySource(content, f"memory:{name}")
        self.sources[source.description] = source
        return source

    def when(self, done: int, action: Callable[[], object]) -> Callable[[TransferProgress], None]:
        """
        A progress callback that does C{action} the first time C{done}
        bytes are done.
        """
        did: list[bool] = []

        def progress(now: TransferProgress) -> None:
            self.seen.append(now)
            if now.done == done and not did:
                did.append(True)
                action()

        return progress

    def hold(self, call: str) -> list[Deferred[None]]:
        """
        Make each call of the backend's method C{call} wait until the test
        fires the Deferred it adds to the list returned.
        """
        held: list[Deferred[None]] = []
        real = getattr(self.memory, call)

        def holding(*arguments: object) -> Deferred[object]:
            d: Deferred[None] = Deferred()
            held.append(d)
            return d.addCallback(lambda _: real(*arguments))

        setattr(self.memory, call, holding)
        return held

    def hang(self, call: str) -> None:
        """
        Make the next calls of the backend's method C{call} never answer
        (the node dies meanwhile); L{unhang} puts it back.
        """
        setattr(self.memory, call, lambda *arguments: Deferred())

    def unhang(self, call: str) -> None:
        delattr(self.memory, call)

    def record_chunks(self) -> list[int]:
        offsets: list[int] = []
        real = self.memory.upload_chunk

        def recording(key: str, offset: int, data: bytes) -> None:
            offsets.append(offset)
            real(key, offset, data)

        self.memory.upload_chunk = recording  # type: ignore[method-assign]
        self.addCleanup(delattr, self.memory, "upload_chunk")
        return offsets

    def leave(
        self,
        source: MemorySource,
        staged: bytes | None,
        stored: int,
        key: str = "k",
        **changes: Any,
    ) -> JournalEntry:
        """
        Leave what a node that crashed in the middle of uploading C{source}
        leaves: a journal row saying C{stored} bytes were stored, and an
        upload holding C{staged} (none at all for C{None}).
        """
        row: dict[str, Any] = {
            "target": "blobs", "plugin": "memory", "key": key,
            "source": source.description, "version": "1", "size": len(CONTENT),
            "chunk_size": 4, "sha384": None, "started": 0.0,
        }  # fmt: skip
        upload_id = changes.pop("upload_id", None)
        row.update(changes)
        entry = self.journal.begin(**row)
        self.journal.set_upload_id(entry.id, upload_id)
        if stored:
            self.journal.advance(entry.id, stored)
        if staged is not None:
            self.memory.start_upload(key, None)
            self.memory.upload_chunk(key, 0, staged)
        self.memory.calls.clear()
        return entry

    def assertNothingLeft(self, target: str = "blobs") -> None:
        self.assertEqual(self.journal.open_transfers(target), [])
        self.assertEqual(self.memory.uploading(), [])


class UploadTests(TransfersTestCase):
    def test_upload(self) -> None:
        """
        The source is uploaded chunk by chunk and committed; its progress
        is reported as each chunk is stored; nothing is left.
        """
        result = self.successResultOf(self.transfers.upload(self.source(), "k"))
        self.assertEqual(result, result_of("k", Outcome.STORED, CONTENT))
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertEqual(
            self.memory.calls,
            ["start_upload", "upload_chunk", "upload_chunk", "upload_chunk", "end_upload"],
        )
        self.assertEqual([p.done for p in self.seen], [0, 4, 8, 10])
        self.assertEqual({p.size for p in self.seen}, {10})
        self.assertNothingLeft()

    def test_empty(self) -> None:
        """
        An empty source makes an empty file.
        """
        result = self.successResultOf(self.transfers.upload(self.source(b""), "k", sha384(b"")))
        self.assertEqual(result.sha384, sha384(b""))
        self.assertEqual(self.memory.files, {"k": b""})
        self.assertNothingLeft()

    def test_journaled_as_it_goes(self) -> None:
        """
        While it runs, the journal holds the upload as far as it got, and
        L{Transfers.in_progress} shows it.
        """
        held = self.hold("upload_chunk")
        self.clock.advance(42)
        d = self.transfers.upload(self.source(), "k", sha384(CONTENT))
        held[0].callback(None)
        [entry] = self.journal.open_transfers("blobs")
        self.assertEqual(
            entry,
            JournalEntry(
                entry.id, "blobs", "memory", "k", "memory:a", "1", 10, 4, None, 4,
                sha384(CONTENT), 42.0,
            ),
        )
        self.assertEqual(self.transfers.in_progress(), [TransferProgress("k", 4, 10)])
        held[1].callback(None)
        held[2].callback(None)
        self.successResultOf(d)
        self.assertEqual(self.transfers.in_progress(), [])
        self.assertNothingLeft()

    def test_upload_id_journaled(self) -> None:
        """
        The service's name for the upload is journaled, and given back to
        the backend when the upload is resumed.
        """
        real = self.memory.start_upload

        def named(key: str, size: int | None) -> str:
            real(key, size)
            return "upload-1"

        self.memory.start_upload = named  # type: ignore[method-assign,assignment]
        self.hang("end_upload")
        self.transfers.upload(self.source(), "k")
        [entry] = self.journal.open_transfers("blobs")
        self.assertEqual((entry.upload_id, entry.stored), ("upload-1", 10))
        self.unhang("end_upload")
        restarts: list[tuple[object, ...]] = []
        restart = self.memory.restart_upload

        def restarting(*arguments: Any) -> int:
            restarts.append(arguments)
            return restart(*arguments)

        setattr(self.memory, "restart_upload", restarting)  # noqa: B010
        self.host = self.make_host()
        [result] = self.successResultOf(self.make_transfers().resume())
        self.assertEqual((result.outcome, result.resumed_from), (Outcome.RESUMED, 10))
        self.assertEqual(restarts, [("k", 10, "upload-1")])
        self.assertEqual(self.memory.files, {"k": CONTENT})

    def test_hash_mismatch(self) -> None:
        """
        Content that does not hash as it must is aborted, not committed.
        """
        wanted = sha384(b"else")
        error = self.failureResultOf(
            self.transfers.upload(self.source(), "k", wanted), BlobHashMismatchError
        ).value
        self.assertEqual((error.blob_hash, error.actual), (wanted, sha384(CONTENT)))
        self.assertNotIn("end_upload", self.memory.calls)
        self.assertEqual(self.memory.calls[-1], "abort_upload")
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()

    def test_hashing_runs_in_runner(self) -> None:
        """
        The content is hashed in the runner given.
        """
        ran: list[str] = []

        def run(f: Callable[..., Any], *arguments: Any) -> Deferred[Any]:
            ran.append(getattr(f, "__name__", repr(f)))
            return run_inline(f, *arguments)

        transfers = self.make_transfers(run=run)
        self.successResultOf(transfers.upload(self.source(), "k"))
        self.assertEqual(ran, ["update"] * 3)

    def test_source_changes(self) -> None:
        """
        A source that changes in the middle: the upload is aborted and
        starts over, and the newer version is stored.
        """
        source = self.source()
        transfers = self.make_transfers(on_progress=self.when(4, lambda: source.replace(b"abcdef")))
        result = self.successResultOf(transfers.upload(source, "k"))
        self.assertEqual((result.restarts, result.sha384, result.size), (1, sha384(b"abcdef"), 6))
        self.assertEqual(self.memory.files, {"k": b"abcdef"})
        self.assertEqual(self.memory.calls.count("abort_upload"), 1)
        self.assertEqual([p.done for p in self.seen], [0, 4, 0, 4, 6])
        self.assertNothingLeft()

    def test_source_keeps_changing(self) -> None:
        """
        A source that changes again and again is given up after
        C{max_restarts} restarts, with nothing left.
        """
        source = self.source()

        def change(now: TransferProgress) -> None:
            if now.done == 4:
                source.replace(CONTENT)

        transfers = self.make_transfers(on_progress=change, max_restarts=2)
        error = self.failureResultOf(transfers.upload(source, "k"), SourceChangedError).value
        self.assertEqual((error.restarts, error.key, error.source), (3, "k", "memory:a"))
        self.assertIn("changed 3 times", str(error))
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()

    def test_source_gone(self) -> None:
        """
        A source that can no longer be read in the middle is given up,
        with nothing left.
        """
        source = self.source()
        transfers = self.make_transfers(on_progress=self.when(4, source.remove))
        self.failureResultOf(transfers.upload(source, "k"), SourceGoneError)
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()

    def test_superseded(self) -> None:
        """
        A newer upload of a key wins: the older one stops before its next
        step, aborts and fails with L{TransferSupersededError}; only then
        does the newer one begin.
        """
        held = self.hold("upload_chunk")
        older = self.transfers.upload(self.source(CONTENT, "old"), "k")
        newer = self.transfers.upload(self.source(b"new", "new"), "k")
        self.assertNoResult(older)
        self.assertNoResult(newer)
        self.memory.calls.clear()
        held[0].callback(None)
        self.failureResultOf(older, TransferSupersededError)
        held[1].callback(None)
        self.successResultOf(newer)
        self.assertEqual(
            self.memory.calls,
            ["upload_chunk", "abort_upload", "start_upload", "upload_chunk", "end_upload"],
        )
        self.assertEqual(self.memory.files, {"k": b"new"})
        self.assertNothingLeft()

    def test_superseded_while_waiting(self) -> None:
        """
        An upload superseded while it waits for the one before it to stop
        never begins.
        """
        held = self.hold("upload_chunk")
        first = self.transfers.upload(self.source(CONTENT, "1"), "k")
        second = self.transfers.upload(self.source(b"22", "2"), "k")
        third = self.transfers.upload(self.source(b"333", "3"), "k")
        held[0].callback(None)
        self.failureResultOf(first, TransferSupersededError)
        self.failureResultOf(second, TransferSupersededError)
        held[1].callback(None)
        self.successResultOf(third)
        self.assertEqual(self.memory.calls.count("start_upload"), 2)
        self.assertEqual(self.memory.files, {"k": b"333"})
        self.assertNothingLeft()

    def test_cancel(self) -> None:
        """
        A cancelled upload fails at once; it stops before its next step,
        and nothing is left of it.
        """
        held = self.hold("upload_chunk")
        d = self.transfers.upload(self.source(), "k")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        held[0].callback(None)
        self.assertEqual(self.memory.calls[-1], "abort_upload")
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()

    def test_stop(self) -> None:
        """
        Stopping stops the uploads before their next step, keeping them for
        a later resume, and refuses new ones.
        """
        held = self.hold("upload_chunk")
        d = self.transfers.upload(self.source(), "k")
        stopped = self.transfers.stopService()
        self.assertNoResult(stopped)
        held[0].callback(None)
        self.successResultOf(stopped)
        error = self.failureResultOf(d, TransferCancelledError).value
        self.assertIn("starts again", str(error))
        self.assertNotIn("abort_upload", self.memory.calls)
        [entry] = self.journal.open_transfers("blobs")
        self.assertEqual(entry.stored, 4)
        self.assertEqual(self.memory.uploading(), ["k"])
        self.failureResultOf(self.transfers.upload(self.source(), "other"), TransferCancelledError)

        self.unhang("upload_chunk")
        self.host = self.make_host()
        [result] = self.successResultOf(self.make_transfers().resume())
        self.assertEqual((result.outcome, result.resumed_from), (Outcome.RESUMED, 4))
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertNothingLeft()

    def test_service_down_kept(self) -> None:
        """
        When the service fails more than the host tries, the upload fails
        and is kept, journal row and staged bytes, for a later resume.
        """
        self.host = self.make_host(retries=1)
        transfers = self.make_transfers(
            on_progress=self.when(4, lambda: self.memory.fail("upload_chunk", 2))
        )
        d = transfers.upload(self.source(), "k")
        self.clock.advance(0.5)
        self.failureResultOf(d, ServiceError)
        self.assertNotIn("abort_upload", self.memory.calls)
        [entry] = self.journal.open_transfers("blobs")
        self.assertEqual(entry.stored, 4)
        self.assertEqual(self.memory.uploading(), ["k"])
        [result] = self.successResultOf(self.make_transfers().resume())
        self.assertEqual((result.outcome, result.resumed_from), (Outcome.RESUMED, 4))
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertNothingLeft()

    def test_driver_error(self) -> None:
        """
        A L{DriverError} gives the upload up: aborted and forgotten.
        """
        self.memory.fail("end_upload", 1, DriverError("no"))
        self.failureResultOf(self.transfers.upload(self.source(), "k"), DriverError)
        self.assertEqual(self.memory.calls[-1], "abort_upload")
        self.assertNothingLeft()

    def test_abort_fails(self) -> None:
        """
        If the service fails the abort of an upload given up, the upload is
        kept in the journal, so that a later resume deals with it; that is
        logged.
        """
        self.host = self.make_host(retries=0)
        self.memory.fail("end_upload", 1, DriverError("no"))
        self.memory.fail("abort_upload", 1)
        with capturedLogs() as events:
            self.failureResultOf(self.make_transfers().upload(self.source(), "k"), DriverError)
        self.assertEqual(len(self.journal.open_transfers("blobs")), 1)
        self.assertTrue(
            any("it is kept" in e.get("log_format", "") for e in events), events
        )

    def test_abort_refused(self) -> None:
        """
        If the backend refuses the abort of an upload given up (a
        L{DriverError}), the upload is forgotten all the same: trying again
        would not help.
        """
        self.memory.fail("end_upload", 1, DriverError("no"))
        self.memory.fail("abort_upload", 1, DriverError("neither"))
        with capturedLogs() as events:
            self.failureResultOf(self.transfers.upload(self.source(), "k"), DriverError)
        self.assertEqual(self.journal.open_transfers("blobs"), [])
        self.assertTrue(
            any("forgotten all the same" in e.get("log_format", "") for e in events), events
        )

    def test_bad_key(self) -> None:
        """
        A key the backend refuses fails the upload and leaves no row.
        """
        self.failureResultOf(self.transfers.upload(self.source(), "../up"), DriverError)
        self.assertEqual(self.journal.open_transfers("blobs"), [])

    def test_progress_failure_logged(self) -> None:
        """
        A progress callback that fails is logged, and the upload goes on.
        """

        def broken(now: TransferProgress) -> None:
            raise ZeroDivisionError()

        transfers = self.make_transfers(on_progress=broken)
        self.successResultOf(transfers.upload(self.source(), "k"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 4)
        self.assertEqual(self.memory.files, {"k": CONTENT})

    def test_failure_logged_in_words(self) -> None:
        """
        A failed upload is logged with its key, its target and the error.
        """
        with capturedLogs() as events:
            self.failureResultOf(
                self.transfers.upload(self.source(), "k", sha384(b"x")), BlobHashMismatchError
            )
        [event] = [e for e in events if "failed" in e.get("log_format", "")]
        self.assertEqual((event["key"], event["target"]), ("k", "blobs"))
        self.assertIsInstance(event["error"], BlobHashMismatchError)


class ResumeTests(TransfersTestCase):
    def resume(self) -> list[Any]:
        self.host = self.make_host()
        return self.successResultOf(self.make_transfers().resume())

    def test_backend_ahead(self) -> None:
        """
        The backend holds more than the journal says: the upload goes on
        from what it holds; the bytes before are read again only to be
        hashed.
        """
        source = self.source()
        self.leave(source, CONTENT[:8], 4)
        offsets = self.record_chunks()
        [result] = self.resume()
        self.assertEqual(
            result, result_of("k", Outcome.RESUMED, CONTENT, resumed_from=8)
        )
        self.assertEqual(offsets, [8])
        self.assertEqual(source.reads, [(0, 4), (4, 4), (8, 2)])
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertNothingLeft()

    def test_backend_behind(self) -> None:
        """
        The backend holds less than the journal says: the upload goes on
        from what it holds.
        """
        self.leave(self.source(), CONTENT[:4], 8)
        offsets = self.record_chunks()
        [result] = self.resume()
        self.assertEqual(result.resumed_from, 4)
        self.assertEqual(offsets, [4, 8])
        self.assertEqual(self.memory.files, {"k": CONTENT})

    def test_off_the_grid(self) -> None:
        """
        From an offset between chunks, the next chunk ends where the chunk
        after it begins.
        """
        self.leave(self.source(), CONTENT[:5], 4)
        offsets = self.record_chunks()
        [result] = self.resume()
        self.assertEqual(result.resumed_from, 5)
        self.assertEqual(offsets, [5, 8])
        self.assertEqual(self.memory.files, {"k": CONTENT})

    def test_nothing_left(self) -> None:
        """
        If the backend holds nothing of the upload any more, it begins
        again at 0, and the journal forgets the old upload's name.
        """
        self.leave(self.source(), None, 8, upload_id="gone")
        names: list[str | None] = []

        def progress(now: TransferProgress) -> None:
            [entry] = self.journal.open_transfers("blobs")
            names.append(entry.upload_id)

        self.host = self.make_host()
        [result] = self.successResultOf(self.make_transfers(on_progress=progress).resume())
        self.assertEqual((result.outcome, result.resumed_from), (Outcome.RESUMED, 0))
        self.assertEqual(set(names), {None})
        self.assertEqual(self.memory.files, {"k": CONTENT})

    def test_source_cannot_be_opened(self) -> None:
        """
        An upload whose source cannot be opened again is aborted (after
        the backend found it again) and dropped, and that is logged.
        """
        source = self.source()
        self.leave(source, CONTENT[:4], 4)
        del self.sources[source.description]
        with capturedLogs() as events:
            [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.DROPPED)
        self.assertIn("gone", str(result.reason))
        self.assertEqual(self.memory.calls, ["restart_upload", "abort_upload"])
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()
        self.assertTrue(any("dropped" in e.get("log_format", "") for e in events))

    def test_source_removed(self) -> None:
        """
        An upload whose source can no longer be read is dropped.
        """
        source = self.source()
        self.leave(source, CONTENT[:4], 4)
        source.remove()
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.DROPPED)
        self.assertIn("it was removed", str(result.reason))
        self.assertNothingLeft()

    def test_source_changed(self) -> None:
        """
        An upload whose source changed since is started over with the
        newer version.
        """
        source = self.source()
        self.leave(source, CONTENT[:4], 4)
        source.replace(b"newer!")
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.RESTARTED)
        self.assertIn("changed", str(result.reason))
        self.assertEqual(self.memory.files, {"k": b"newer!"})
        self.assertNothingLeft()

    def test_chunk_size_changed(self) -> None:
        """
        An upload begun with another chunk size is started over.
        """
        self.leave(self.source(), CONTENT[:3], 3, chunk_size=3)
        offsets = self.record_chunks()
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.RESTARTED)
        self.assertIn("chunks of 3 bytes", str(result.reason))
        self.assertEqual(offsets, [0, 4, 8])
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertNothingLeft()

    def test_backend_holds_too_much(self) -> None:
        """
        If the backend holds more than the source has, the upload starts
        over.
        """
        self.leave(self.source(), CONTENT + b"xx", 8)
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.RESTARTED)
        self.assertEqual(self.memory.files, {"k": CONTENT})
        self.assertNothingLeft()

    def test_other_plugin(self) -> None:
        """
        An upload begun through another plugin is dropped without a call
        to this backend.
        """
        self.leave(self.source(), None, 4, plugin="s3")
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.DROPPED)
        self.assertIn("'s3'", str(result.reason))
        self.assertEqual(self.memory.calls, [])
        self.assertEqual(self.journal.open_transfers("blobs"), [])

    def test_hash_mismatch(self) -> None:
        """
        A resumed upload whose content does not hash as it must fails and
        is given up; the failure is in the result, in words.
        """
        self.leave(self.source(), CONTENT[:4], 4, sha384=sha384(b"else"))
        [result] = self.resume()
        self.assertEqual(result.outcome, Outcome.FAILED)
        self.assertIn("hashes to", str(result.reason))
        self.assertEqual(self.memory.files, {})
        self.assertNothingLeft()

    def test_goes_on_after_a_failure(self) -> None:
        """
        One upload failing does not stop the others from being resumed.
        """
        self.leave(self.source(CONTENT, "a"), CONTENT[:4], 4, key="a")
        self.leave(self.source(CONTENT, "b"), CONTENT[:4], 4, key="b", started=1.0)
        self.memory.fail("restart_upload", 1, DriverError("lost"))
        results = self.resume()
        self.assertEqual(
            [(r.key, r.outcome) for r in results],
            [("a", Outcome.FAILED), ("b", Outcome.RESUMED)],
        )
        self.assertIn("lost", str(results[0].reason))
        self.assertEqual(self.memory.files, {"b": CONTENT})
        self.assertNothingLeft()

    def test_service_down(self) -> None:
        """
        When the service is down, a resumed upload fails and stays in the
        journal for the next resume.
        """
        self.leave(self.source(), CONTENT[:4], 4)
        self.memory.fail("restart_upload", 10)
        self.host = self.make_host(retries=0)
        [result] = self.successResultOf(self.make_transfers().resume())
        self.assertEqual(result.outcome, Outcome.FAILED)
        self.assertIn("the storage service failed", str(result.reason))
        self.assertEqual(len(self.journal.open_transfers("blobs")), 1)

    def test_other_targets_left(self) -> None:
        """
        Only the uploads to the transfers' own target are resumed.
        """
        self.leave(self.source(), CONTENT[:4], 4, target="mirror")
        self.assertEqual(self.resume(), [])
        self.assertEqual(len(self.journal.open_transfers("mirror")), 1)

    def test_logged(self) -> None:
        """
        Resuming says where from, against what the journal said.
        """
        self.leave(self.source(), CONTENT[:8], 4)
        with capturedLogs() as events:
            self.resume()
        [event] = [e for e in events if "goes on from byte" in e.get("log_format", "")]
        self.assertEqual((event["offset"], event["stored"], event["size"]), (8, 4, 10))

    def test_new_upload_wins_over_resumed(self) -> None:
        """
        A new upload of a key being resumed supersedes the resumed one.
        """
        self.leave(self.source(), CONTENT[:4], 4)
        self.host = self.make_host()
        held = self.hold("upload_chunk")
        transfers = self.make_transfers()
        resumed = transfers.resume()
        newer = transfers.upload(self.source(b"fresh", "fresh"), "k")
        held[0].callback(None)
        [result] = self.successResultOf(resumed)
        self.assertEqual(result.outcome, Outcome.FAILED)
        self.assertIn("newer upload", str(result.reason))
        held[1].callback(None)
        held[2].callback(None)
        self.successResultOf(newer)
        self.assertEqual(self.memory.files, {"k": b"fresh"})
        self.assertNothingLeft()


class FileSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()).absolute()
        self.path.write_bytes(CONTENT)
        self.source = FileSource(self.path, run_inline)

    def test_provides(self) -> None:
        self.assertTrue(verifyObject(ITransferSource, self.source))
        self.assertTrue(verifyObject(ITransferSource, MemorySource(b"")))

    def test_description(self) -> None:
        """
        A file source is described by its absolute path, and opened again
        from that description.
        """
        self.assertEqual(self.source.description, f"file:{self.path}")
        again = open_file_source(self.source.description, run_inline)
        assert again is not None
        self.assertEqual(again.path, self.path)
        self.assertIsNone(open_file_source("stream:abc", run_inline))
        self.assertIsNone(open_file_source("file:", run_inline))

    def test_read(self) -> None:
        """
        Reads give the bytes asked for, fewer at the end.
        """
        self.assertEqual(self.successResultOf(self.source.read(2, 3)), b"234")
        self.assertEqual(self.successResultOf(self.source.read(8, 5)), b"89")
        self.assertEqual(self.successResultOf(self.source.read(20, 5)), b"")

    def test_version(self) -> None:
        """
        The version gives the size, and changes when the file is written
        to (even with the same size, and the same modification time put
        back) or replaced.
        """
        first = self.successResultOf(self.source.version())
        self.assertEqual(self.source.size, 10)
        self.assertEqual(self.successResultOf(self.source.version()), first)
        st = self.path.stat()
        with self.path.open("r+b") as f:
            f.write(b"X")
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        second = self.successResultOf(self.source.version())
        self.assertNotEqual(second, first)
        replacement = self.path.with_name("replacement")
        replacement.write_bytes(b"short")
        replacement.replace(self.path)
        self.assertNotEqual(self.successResultOf(self.source.version()), second)
        self.assertEqual(self.source.size, 5)

    def test_gone(self) -> None:
        """
        A deleted file, or a directory, cannot be read.
        """
        self.path.unlink()
        error = self.failureResultOf(self.source.version(), SourceGoneError).value
        self.assertIn(str(self.path), str(error))
        self.failureResultOf(self.source.read(0, 1), SourceGoneError)
        self.path.mkdir()
        error = self.failureResultOf(self.source.version(), SourceGoneError).value
        self.assertIn("not a regular file", str(error))

