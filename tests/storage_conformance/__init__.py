"""
The behaviour L{p2pblob.interfaces.IStorageBackend} promises, written once
in L{StorageConformanceMixin} and run, through a
L{p2pblob.storage.host.StorageHost}, against every storage backend.

A backend's test case supplies C{make_host}: a new host over the same
stored files each time it is called (so that dropping a host and making
another is what a node that crashed and started again would see), whose
calls run in the calling thread and whose clock is C{self.clock}.  A
backend that can be made to fail on purpose also supplies
C{inject_failure} (by default, the method is wrapped on the backend object).

The journaled transfers of L{p2pblob.storage.transfer} are run against
every backend too.  For them a test case also supplies:

  - C{staged_uploads}: the keys with an upload staged on the service, read
    from the service itself (hidden files, open multipart uploads), not
    from the host or the backend object's memory;
  - C{crash_mid_transfer}, only if the backend's state lives in the test's
    process: by default a child process (L{tests.storage_conformance._transfer_child})
    uploads a file through the same plugin and options and kills itself
    with SIGKILL once a number of chunks are stored and journaled; a
    backend whose service lives in the test's process overrides it with
    L{StorageConformanceMixin.crash_in_process} (and drops whatever
    connection a dead process would lose).

Tests that may wait for the host's pauses between retries pass their
Deferred through C{settled}, which advances C{self.clock}; C{result} and
C{failure} may be overridden (to pump an in-memory connection), and
C{settled} pumps through them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import twisted.plugins
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.errors import (
    BlobHashMismatchError,
    ConfigError,
    DriverError,
    ServiceError,
    StorageKeyNotFoundError,
    TransferSupersededError,
)
from p2pblob.interfaces import IStorageBackend, IStoragePlugin
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.host import StorageHost
from p2pblob.storage.journal import JournalEntry, TransferJournal
from p2pblob.storage.transfer import (
    FileSource,
    ITransferSource,
    Outcome,
    TransferProgress,
    Transfers,
    open_file_source,
)
from tests._process import PLUGINS, ROOT

if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object

__all__ = [
    "TARGET",
    "StorageConformanceMixin",
    "builtin_plugin",
    "chunk_offsets",
    "data",
    "use_checkout_plugins",
]

_T = TypeVar("_T")

MiB = 1024 * 1024

BAD_KEYS = ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a/", "./a", "a/./b", "a\0b"]


def use_checkout_plugins(case: SynchronousTestCase) -> None:
    """
    Let L{twisted.plugin.getPlugins} find the dropins of this checkout's
    C{plugins/}, as an installed copy finds them in C{twisted/plugins/},
    for the duration of a test.
    """
    if str(PLUGINS) not in twisted.plugins.__path__:
        twisted.plugins.__path__.insert(0, str(PLUGINS))
        case.addCleanup(twisted.plugins.__path__.remove, str(PLUGINS))


def builtin_plugin(case: SynchronousTestCase, name: str) -> IStoragePlugin:
    """
    A storage plugin registered by this checkout's dropin, found as the
    node finds it.
    """
    use_checkout_plugins(case)
    return find_plugin(name)


def data(size: int, seed: int = 0) -> bytes:
    """
    C{size} bytes that look random, the same for the same seed.
    """
    return random.Random(seed).randbytes(size)


def sha384(content: bytes) -> str:
    return hashlib.sha384(content).hexdigest()


TARGET = "conformance"
"""
The name of the backend under test in the transfer journals of the kit.
"""


def chunk_offsets(start: int, size: int, chunk: int) -> list[int]:
    """
    The offsets of the chunks of a file of C{size} bytes uploaded from
    C{start}: C{start}, then every multiple of C{chunk} after it.
    """
    if start >= size:
        return []
    return [start, *range((start // chunk + 1) * chunk, size, chunk)]


class StorageConformanceMixin(_TestCase):
    """
    Tests every storage backend must pass.

    @ivar clock: the clock of the hosts made by C{make_host}.
    @ivar host: a started host, made in C{setUp}.
    """

    clock: Clock

    def make_host(self) -> StorageHost:
        """
        Make a host over this test's stored files, with C{self.clock}.
        """
        raise NotImplementedError()

    def inject_failure(self, call: str, times: int, error: Exception | None = None) -> None:
        """
        Make the next C{times} calls of the backend's method C{call} raise
        C{error} (by default a L{p2pblob.errors.ServiceError}).

        By default the method is replaced, on the host's backend object, by
        one that fails first; a backend with a way of its own overrides this.
        """
        backend = self.host.backend
        real = getattr(backend, call)
        left = [times]

        def failing(*arguments: object) -> object:
            if left[0] > 0:
                left[0] -= 1
                raise error or ServiceError(f"{call} failed on purpose")
            return real(*arguments)

        setattr(backend, call, failing)
        self.addCleanup(delattr, backend, call)

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.host = self.open_host()

    def open_host(self) -> StorageHost:
        host = self.make_host()
        host.startService()
        self.addCleanup(host.stopService)
        self.result(host.negotiate_chunk_size())
        return host

    def result(self, d: Deferred[_T]) -> _T:
        return self.successResultOf(d)

    def failure(self, d: Deferred[Any], *errors: type[BaseException]) -> BaseException:
        return self.failureResultOf(d, *errors).value

    def settled(self, d: Deferred[_T]) -> Deferred[_T]:
        """
        Let C{d} fire, advancing C{self.clock} over the host's pauses
        between retries while it waits for one; then give it back, for
        C{result} or C{failure}.

        Whatever C{result} does to let the service's side go on (pump a
        connection) is done, without touching C{d}'s result, through a
        probe: a Deferred that fires once C{d} has.
        """
        fired: list[bool] = []

        def note(result: object) -> object:
            fired.append(True)
            return result

        d.addBoth(note)
        for _ in range(1000):
            probe: Deferred[None] = Deferred()

            def done(result: object, probe: Deferred[None] = probe) -> object:
                probe.callback(None)
                return result

            d.addBoth(done)
            try:
                self.result(probe)
            except self.failureException:
                pass
            if fired:
                break
            pending = self.clock.getDelayedCalls()
            if not pending:
                break
            self.clock.advance(max(0.0, min(c.getTime() for c in pending) - self.clock.seconds()))
        return d

    # -- hooks for the journaled transfers -----------------------------------

    def staged_uploads(self) -> set[str]:
        """
        The keys with an upload staged on the service (begun, neither
        ended nor aborted), read from the service itself.
        """
        raise NotImplementedError()

    def crash_mid_transfer(self, journal: Path, source: Path, key: str, chunks: int) -> None:
        """
        Upload C{source} as C{key} through L{Transfers}, journaled in
        C{journal} under L{TARGET}, and crash, leaving everything as it is,
        once C{chunks} chunks are stored and journaled.

        By default a child process does it with the plugin and the options
        of C{self.host} and kills itself with SIGKILL; it runs in this
        test's working directory, so relative paths in the options mean
        the same to it.
        """
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")])
        command = [
            sys.executable,
            "-m",
            "tests.storage_conformance._transfer_child",
            "--plugin", self.host.plugin.name,
            "--options", json.dumps(dict(self.host.options)),
            "--journal", str(journal.absolute()),
            "--target", TARGET,
            "--source", str(source.absolute()),
            "--key", key,
            "--crash-after", str(chunks),
        ]  # fmt: skip
        child = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stdout + child.stderr)

    def crash_in_process(
        self, journal: Path, source: Path, key: str, chunks: int
    ) -> StorageHost:
        """
        Crash in this process (for C{crash_mid_transfer}): a host of its
        own uploads C{source} until C{chunks} chunks are stored and
        journaled; the next chunk never arrives, and the host, its
        transfers and its journal are dropped as they are.

        @return: the dropped host, for a subclass to drop what else a dead
            process would lose (a connection).
        """
        host = self.make_host()
        self.result(host.negotiate_chunk_size())
        crashed: Deferred[None] = Deferred()
        backend = host.backend

        def progress(now: TransferProgress) -> None:
            if now.done >= chunks * host.chunk_size and not crashed.called:
                # the chunk after this one is on its way when the node dies
                setattr(backend, "upload_chunk", lambda *arguments: Deferred())  # noqa: B010
                crashed.callback(None)

        records = TransferJournal(journal)
        transfers = Transfers(
            host, records, TARGET, self.clock, self.open_source, on_progress=progress
        )
        transfers.upload(FileSource(source, run_inline), key)
        self.result(self.settled(crashed))
        records.close()
        delattr(backend, "upload_chunk")
        return host

    # -- helpers for the journaled transfers ---------------------------------

    def open_source(self, description: str) -> ITransferSource | None:
        return open_file_source(description, run_inline)

    def source_file(self, content: bytes) -> Path:
        """
        A local file holding C{content}.
        """
        path = Path(self.mktemp()).absolute()
        path.write_bytes(content)
        return path

    def open_journal(self, path: Path | None = None) -> TransferJournal:
        journal = TransferJournal(path or Path(self.mktemp()))
        self.addCleanup(journal.close)
        return journal

    def make_transfers(self, journal: TransferJournal | None = None, **kwargs: Any) -> Transfers:
        """
        Transfers to C{self.host}, journaled in C{journal} (a new one by
        default) under L{TARGET}.
        """
        return Transfers(
            self.host,
            journal or self.open_journal(),
            TARGET,
            self.clock,
            self.open_source,
            **kwargs,
        )

    def record_chunks(self) -> list[int]:
        """
        The offsets of the chunks C{self.host} uploads from now on, as its
        backend is called.
        """
        backend = self.host.backend
        real = backend.upload_chunk
        offsets: list[int] = []

        def recording(key: str, offset: int, data: bytes) -> object:
            offsets.append(offset)
            return real(key, offset, data)

        setattr(backend, "upload_chunk", recording)  # noqa: B010
        self.addCleanup(delattr, backend, "upload_chunk")
        return offsets

    def stage_crashed(
        self, journal: TransferJournal, source: Path, key: str, chunks: int
    ) -> JournalEntry:
        """
        Leave what a node that crashed in the middle of an upload leaves: a
        journal row, and an upload of C{chunks} chunks staged; then open a
        new host, as the node does when it starts again.
        """
        chunk = self.host.chunk_size
        content = source.read_bytes()
        file = FileSource(source, run_inline)
        version = self.result(file.version())
        entry = journal.begin(
            TARGET, self.host.plugin.name, key, file.description, version, len(content),
            chunk, None, 0.0,
        )  # fmt: skip
        upload_id = self.result(self.host.start_upload(key, len(content)))
        journal.set_upload_id(entry.id, upload_id)
        for offset in range(0, chunks * chunk, chunk):
            self.result(self.host.upload_chunk(key, offset, content[offset : offset + chunk]))
            journal.advance(entry.id, offset + chunk)
        self.host.stopService()
        self.host = self.open_host()
        return entry

    def assertNothingLeft(self, journal: TransferJournal) -> None:
        """
        No transfer is open in C{journal}, and nothing is staged.
        """
        self.assertEqual(journal.open_transfers(TARGET), [])
        self.assertEqual(self.staged_uploads(), set())

    def upload(self, key: str, content: bytes, host: StorageHost | None = None) -> None:
        """
        Upload a file chunk by chunk, and commit it.
        """
        host = host or self.host
        size = host.chunk_size
        self.result(host.start_upload(key, len(content)))
        for offset in range(0, len(content), size):
            self.result(host.upload_chunk(key, offset, content[offset : offset + size]))
        self.result(host.end_upload(key))

    def read_in_chunks(self, key: str) -> bytes:
        parts = []
        offset = 0
        while True:
            chunk = self.result(self.host.get_chunk(key, offset, self.host.chunk_size))
            parts.append(chunk)
            offset += len(chunk)
            if len(chunk) < self.host.chunk_size:
                return b"".join(parts)

    def assertStored(self, key: str, content: bytes) -> None:
        self.assertTrue(self.result(self.host.exists(key)))
        self.assertEqual(self.result(self.host.size(key)), len(content))
        self.assertEqual(sha384(self.result(self.host.get_file(key))), sha384(content))
        self.assertEqual(sha384(self.read_in_chunks(key)), sha384(content))

    def assertAbsent(self, key: str) -> None:
        self.assertFalse(self.result(self.host.exists(key)))
        self.assertIsNone(self.result(self.host.size(key)))
        self.failure(self.host.get_file(key), StorageKeyNotFoundError)
        self.failure(self.host.get_chunk(key, 0, 10), StorageKeyNotFoundError)

    # -- the contract ---------------------------------------------------------

    def test_provides(self) -> None:
        """
        The backend provides L{IStorageBackend}.
        """
        self.assertTrue(verifyObject(IStorageBackend, self.host.backend))

    def test_chunk_size(self) -> None:
        """
        The backend takes the default chunk size of 1 MiB.
        """
        self.assertEqual(self.host.chunk_size, MiB)

    def test_round_trips(self) -> None:
        """
        Files of 0 and 1 bytes, of exactly one chunk and of one chunk and a
        byte read back as they were uploaded, whole or chunk by chunk.
        """
        chunk = self.host.chunk_size
        for size in [0, 1, chunk, chunk + 1]:
            content = data(size, seed=size)
            self.upload(f"file-{size}", content)
            self.assertStored(f"file-{size}", content)

    def test_ten_mib(self) -> None:
        """
        A 10 MiB file reads back with the same sha384.
        """
        content = data(10 * MiB)
        self.upload("big", content)
        self.assertStored("big", content)

    def test_upload_file(self) -> None:
        """
        A file stored at once reads back the same.
        """
        self.result(self.host.upload_file("whole", b"all of it"))
        self.assertStored("whole", b"all of it")

    def test_read_past_end(self) -> None:
        """
        A read at or past the end of a file gives what is left: nothing.
        """
        self.result(self.host.upload_file("short", b"12345"))
        self.assertEqual(self.result(self.host.get_chunk("short", 3, 10)), b"45")
        self.assertEqual(self.result(self.host.get_chunk("short", 5, 10)), b"")
        self.assertEqual(self.result(self.host.get_chunk("short", 50, 10)), b"")

    def test_nested_and_unicode_keys(self) -> None:
        """
        Keys may be nested, and contain spaces and non-ASCII letters.
        """
        keys = ["sub/dir/deep/file", "ùñï©∅ð€ 1", "dossier à moi/mºˇ€Ð 1.txt"]
        for number, key in enumerate(keys):
            self.upload(key, data(100, seed=number))
        for number, key in enumerate(keys):
            self.assertStored(key, data(100, seed=number))

    def test_overwrite_shorter(self) -> None:
        """
        A file uploaded over a longer one leaves no stale tail, whether it
        is uploaded in chunks or at once.
        """
        self.upload("shrinks", data(10 * 1024, seed=1))
        self.upload("shrinks", data(1024, seed=2))
        self.assertStored("shrinks", data(1024, seed=2))
        self.result(self.host.upload_file("shrinks", b"tiny"))
        self.assertStored("shrinks", b"tiny")

    def test_delete(self) -> None:
        """
        A deleted file is gone; deleting it again does nothing.
        """
        self.upload("doomed", b"content")
        self.result(self.host.delete_file("doomed"))
        self.assertAbsent("doomed")
        self.result(self.host.delete_file("doomed"))

    def test_move(self) -> None:
        """
        A renamed file is found under its new name only, with the same
        content, replacing a file of that name; renaming to the same name
        does nothing.
        """
        content = data(3 * 1024)
        self.upload("sub/old name", content)
        self.upload("élsewhere/new name", b"replaced")
        self.result(self.host.move_file("sub/old name", "élsewhere/new name"))
        self.assertAbsent("sub/old name")
        self.assertStored("élsewhere/new name", content)
        self.result(self.host.move_file("élsewhere/new name", "élsewhere/new name"))
        self.assertStored("élsewhere/new name", content)

    def test_move_missing(self) -> None:
        """
        Renaming a file that does not exist fails.
        """
        self.failure(self.host.move_file("nothing", "something"), StorageKeyNotFoundError)
        self.assertAbsent("something")

    def test_invisible_until_end(self) -> None:
        """
        Nothing of an upload is visible before it ends: the file stored
        earlier under its key stays as it was.
        """
        self.upload("key", b"before")
        self.result(self.host.start_upload("key", 5))
        self.result(self.host.upload_chunk("key", 0, b"after"))
        self.assertStored("key", b"before")
        self.result(self.host.start_upload("fresh", None))
        self.result(self.host.upload_chunk("fresh", 0, b"new"))
        self.assertAbsent("fresh")

    def test_abort(self) -> None:
        """
        An aborted upload leaves nothing visible, and the file stored
        earlier under its key untouched; aborting again does nothing.
        """
        self.upload("kept", b"earlier")
        for key in ["kept", "never"]:
            self.result(self.host.start_upload(key, None))
            self.result(self.host.upload_chunk(key, 0, b"partial"))
            self.result(self.host.abort_upload(key))
            self.result(self.host.abort_upload(key))
        self.assertStored("kept", b"earlier")
        self.assertAbsent("never")
        self.failure(self.host.end_upload("never"), DriverError)
        self.assertAbsent("never")
        self.assertEqual(self.staged_uploads(), set())

    def test_chunk_rewritten(self) -> None:
        """
        Writing a chunk again at the same offset (as a retry does) leaves
        the file right.
        """
        self.result(self.host.start_upload("again", 6))
        self.result(self.host.upload_chunk("again", 0, b"abc"))
        self.result(self.host.upload_chunk("again", 0, b"abc"))
        self.result(self.host.upload_chunk("again", 3, b"def"))
        self.result(self.host.end_upload("again"))
        self.assertStored("again", b"abcdef")

    def test_misused_uploads(self) -> None:
        """
        A chunk with no upload in progress, a chunk that would leave a
        hole, and an upload that ends with another size than announced fail
        with L{DriverError}, and nothing becomes visible.
        """
        self.failure(self.host.upload_chunk("none", 0, b"x"), DriverError)
        self.failure(self.host.end_upload("none"), DriverError)
        self.result(self.host.start_upload("holes", None))
        self.failure(self.host.upload_chunk("holes", 5, b"x"), DriverError)
        self.result(self.host.start_upload("sized", 10))
        self.result(self.host.upload_chunk("sized", 0, b"12345"))
        self.failure(self.host.end_upload("sized"), DriverError)
        self.result(self.host.abort_upload("sized"))
        for key in ["none", "holes", "sized"]:
            self.assertAbsent(key)

    def test_bad_keys(self) -> None:
        """
        Keys that are empty, absolute, or that climb out of the root fail
        with L{DriverError}, and are not tried again.
        """
        for key in BAD_KEYS:
            self.failure(self.host.upload_file(key, b"x"), DriverError)
            self.failure(self.host.get_file(key), DriverError)
            self.failure(self.host.start_upload(key, None), DriverError)
            self.failure(self.host.exists(key), DriverError)
            self.failure(self.host.delete_file(key), DriverError)
            self.failure(self.host.move_file("a", key), DriverError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart_after_crash(self) -> None:
        """
        After a crash in the middle of an upload, a new host resumes it
        from what the backend really holds, not from the journal's offset,
        and the file is complete.
        """
        content = data(4 * self.host.chunk_size + 100, seed=7)
        chunk = self.host.chunk_size
        self.result(self.host.start_upload("resumed", None))
        for offset in range(0, 3 * chunk, chunk):
            self.result(self.host.upload_chunk("resumed", offset, content[offset : offset + chunk]))
        self.host.stopService()

        self.host = self.open_host()
        # The journal lags one chunk behind what was written.
        offset = self.result(self.host.restart_upload("resumed", 2 * chunk))
        self.assertEqual(offset, 3 * chunk)
        self.assertAbsent("resumed")
        for at in range(offset, len(content), chunk):
            self.result(self.host.upload_chunk("resumed", at, content[at : at + chunk]))
        self.result(self.host.end_upload("resumed"))
        self.assertStored("resumed", content)

    def test_restart_with_nothing_left(self) -> None:
        """
        Resuming an upload of which nothing is left starts it afresh at 0.
        """
        self.assertEqual(self.result(self.host.restart_upload("lost", 1000)), 0)
        self.result(self.host.upload_chunk("lost", 0, b"from the start"))
        self.result(self.host.end_upload("lost"))
        self.assertStored("lost", b"from the start")

    def test_service_error_retried(self) -> None:
        """
        A call the service fails is tried again after a pause, and the
        operation succeeds.
        """
        self.upload("flaky", b"content")
        self.inject_failure("get_file", 2)
        d = self.host.get_file("flaky")
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.result(d), b"content")

    def test_driver_error_not_retried(self) -> None:
        """
        A call that fails with L{DriverError} fails at once.
        """
        self.upload("broken", b"content")
        self.inject_failure("get_file", 1, DriverError("broken on purpose"))
        error = self.failure(self.host.get_file("broken"), DriverError)
        self.assertIn("broken on purpose", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.result(self.host.get_file("broken")), b"content")

    def test_wrong_options(self) -> None:
        """
        An unknown option or one of the wrong type stops the host from
        being made, with a message naming the plugin and the option.
        """
        plugin = self.host.plugin
        for wrong in [{"colour": "blue"}, {"chunk_size": "big"}, {"retries": "-1"}]:
            error = self.assertRaises(ConfigError, self.make_host_with, wrong)
            self.assertIn(repr(plugin.name), str(error))
            self.assertIn(repr(next(iter(wrong))), str(error))

    def make_host_with(self, options: dict[str, object]) -> StorageHost:
        """
        Make a host as C{make_host} does, with some options changed.
        """
        host = self.make_host()
        return StorageHost(host.plugin, {**host.options, **options}, self.clock)

    # -- journaled transfers ----------------------------------------------------

    def test_transfer_stores(self) -> None:
        """
        A journaled upload of two chunks and a bit stores the file,
        reports its progress after each chunk, and leaves no journal row
        and nothing staged.
        """
        chunk = self.host.chunk_size
        content = data(2 * chunk + 100, seed=20)
        seen: list[TransferProgress] = []
        journal = self.open_journal()
        transfers = self.make_transfers(journal, on_progress=seen.append)
        source = FileSource(self.source_file(content), run_inline)
        result = self.result(transfers.upload(source, "t/stored", sha384(content)))
        self.assertEqual(
            (result.outcome, result.size, result.sha384, result.restarts),
            (Outcome.STORED, len(content), sha384(content), 0),
        )
        self.assertEqual([p.done for p in seen], [0, chunk, 2 * chunk, len(content)])
        self.assertStored("t/stored", content)
        self.assertNothingLeft(journal)

    def test_transfer_hash_mismatch(self) -> None:
        """
        Content that does not hash to the hash it must have is not
        committed: the upload fails with L{BlobHashMismatchError} and
        leaves nothing, visible or staged.
        """
        content = data(self.host.chunk_size + 10, seed=21)
        wanted = sha384(b"what the blob should have been")
        journal = self.open_journal()
        transfers = self.make_transfers(journal)
        source = FileSource(self.source_file(content), run_inline)
        error = self.failure(transfers.upload(source, wanted, wanted), BlobHashMismatchError)
        assert isinstance(error, BlobHashMismatchError)
        self.assertEqual(error.actual, sha384(content))
        self.assertAbsent(wanted)
        self.assertNothingLeft(journal)

    def test_transfer_crash_resumes(self) -> None:
        """
        Killed once two of four chunks are stored and journaled, the
        transfer is taken up by a new host from the offset the backend
        answers (no earlier than the journal's): the chunks before it are
        not sent again, each after it is sent once, and the file is whole.
        """
        chunk = self.host.chunk_size
        content = data(3 * chunk + 1000, seed=22)
        source = self.source_file(content)
        path = Path(self.mktemp()).absolute()
        self.crash_mid_transfer(path, source, "crashed/file", 2)
        journal = self.open_journal(path)
        [entry] = journal.open_transfers(TARGET)
        self.assertEqual(
            (entry.key, entry.stored, entry.size), ("crashed/file", 2 * chunk, len(content))
        )
        self.host = self.open_host()
        self.assertAbsent("crashed/file")
        offsets = self.record_chunks()
        [result] = self.result(self.make_transfers(journal).resume())
        self.assertEqual(result.outcome, Outcome.RESUMED, result.reason)
        assert result.resumed_from is not None
        self.assertGreaterEqual(result.resumed_from, entry.stored)
        self.assertEqual(offsets, chunk_offsets(result.resumed_from, len(content), chunk))
        self.assertEqual(result.sha384, sha384(content))
        self.assertStored("crashed/file", content)
        self.assertNothingLeft(journal)

    def test_transfer_source_changes(self) -> None:
        """
        A source written to during its upload: the upload starts over, and
        the newer version is what is stored.
        """
        chunk = self.host.chunk_size
        first = data(2 * chunk + 10, seed=23)
        newer = data(2 * chunk + 77, seed=24)
        path = self.source_file(first)

        def change(progress: TransferProgress) -> None:
            if progress.done == chunk and path.stat().st_size == len(first):
                path.write_bytes(newer)

        journal = self.open_journal()
        transfers = self.make_transfers(journal, on_progress=change)
        result = self.result(transfers.upload(FileSource(path, run_inline), "changing"))
        self.assertEqual((result.restarts, result.sha384), (1, sha384(newer)))
        self.assertStored("changing", newer)
        self.assertNothingLeft(journal)

    def test_transfer_service_error_retried(self) -> None:
        """
        A L{ServiceError} of the service in the middle of a journaled
        upload (when it begins, for a chunk, when it ends) is tried again,
        and the upload completes.
        """
        content = data(self.host.chunk_size + 3, seed=25)
        journal = self.open_journal()
        transfers = self.make_transfers(journal)
        source = FileSource(self.source_file(content), run_inline)
        for call in ["start_upload", "upload_chunk", "end_upload"]:
            self.inject_failure(call, 1)
            result = self.result(self.settled(transfers.upload(source, f"retried/{call}")))
            self.assertEqual(result.outcome, Outcome.STORED)
            self.assertStored(f"retried/{call}", content)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNothingLeft(journal)

    def test_transfer_driver_error(self) -> None:
        """
        A L{DriverError} in the middle of a journaled upload is permanent:
        the upload fails with it, is aborted and forgotten; the host and
        the transfers go on working.
        """
        content = data(2 * self.host.chunk_size + 5, seed=26)
        journal = self.open_journal()
        transfers = self.make_transfers(journal)
        source = FileSource(self.source_file(content), run_inline)
        self.inject_failure("upload_chunk", 1, DriverError("refused on purpose"))
        error = self.failure(transfers.upload(source, "refused"), DriverError)
        self.assertIn("refused on purpose", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertAbsent("refused")
        self.assertNothingLeft(journal)
        self.result(transfers.upload(source, "refused"))
        self.assertStored("refused", content)
        self.assertNothingLeft(journal)

    def test_transfer_superseded(self) -> None:
        """
        A newer upload of a key begun while one runs wins: the older one
        fails with L{TransferSupersededError} and leaves nothing behind.
        """
        chunk = self.host.chunk_size
        older = data(2 * chunk + 5, seed=27)
        newer = data(chunk + 9, seed=28)
        newer_source = FileSource(self.source_file(newer), run_inline)
        started: list[Deferred[Any]] = []

        def supersede(progress: TransferProgress) -> None:
            if progress.done == chunk and not started:
                started.append(transfers.upload(newer_source, "same"))

        journal = self.open_journal()
        transfers = self.make_transfers(journal, on_progress=supersede)
        first = transfers.upload(FileSource(self.source_file(older), run_inline), "same")
        self.failure(first, TransferSupersededError)
        self.assertEqual(self.result(started[0]).sha384, sha384(newer))
        self.assertStored("same", newer)
        self.assertNothingLeft(journal)

    def test_transfer_resume_source_gone(self) -> None:
        """
        An upload left by a crash whose source is gone since is aborted
        and forgotten when resumed: nothing is left of it.
        """
        chunk = self.host.chunk_size
        source = self.source_file(data(2 * chunk + 1, seed=29))
        journal = self.open_journal()
        self.stage_crashed(journal, source, "orphan", 1)
        source.unlink()
        [result] = self.result(self.make_transfers(journal).resume())
        self.assertEqual(result.outcome, Outcome.DROPPED)
        assert result.reason is not None
        self.assertIn("gone", result.reason)
        self.assertAbsent("orphan")
        self.assertNothingLeft(journal)

    def test_transfer_resume_source_changed(self) -> None:
        """
        An upload left by a crash whose source changed since starts over
        when resumed, and the newer version is stored.
        """
        chunk = self.host.chunk_size
        source = self.source_file(data(2 * chunk + 1, seed=30))
        journal = self.open_journal()
        self.stage_crashed(journal, source, "changed", 1)
        newer = data(chunk + 2, seed=31)
        source.write_bytes(newer)
        [result] = self.result(self.make_transfers(journal).resume())
        self.assertEqual(result.outcome, Outcome.RESTARTED)
        self.assertStored("changed", newer)
        self.assertNothingLeft(journal)
