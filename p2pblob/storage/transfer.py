"""
Uploads to a storage backend that survive a crash of the node.

L{Transfers} uploads the content of a source (an L{ITransferSource}: a
local file, a stream) to one backend, through its
L{p2pblob.storage.host.StorageHost}, chunk by chunk at the host's chunk
size, and keeps a row for each upload in a
L{p2pblob.storage.journal.TransferJournal} until it ends.  When the node
starts again after a crash or a stop, L{Transfers.resume} takes up every
upload the journal still lists from what the backend says it really holds
(L{p2pblob.interfaces.IStorageBackend.restart_upload}), never from the
journal's own count.

What happens when things go wrong:

  - the source changes during an upload (a file is written to): the upload
    is aborted and starts over with the newer version, which wins; after
    C{max_restarts} changes it is given up (L{SourceChangedError}).  The
    version is checked before each chunk and before the upload ends;
  - the content does not hash to the sha384 it must have: the upload is
    aborted (nothing of it is visible, nothing stays staged) and fails with
    L{BlobHashMismatchError};
  - the service fails (L{ServiceError}): the host tries again; once it has
    tried enough, the upload fails, but its row and what the service holds
    of it are kept, so that the next L{Transfers.resume} goes on from there;
  - anything else (a L{DriverError}: the backend refuses, which trying
    again would not change; the source is gone; a bug) is permanent: the
    upload is aborted and its row dropped, and it fails with that error.
    If the service fails the abort too (L{ServiceError}), the row is kept,
    so that a later resume deals with the upload again;
  - a newer upload of the same key begins while one runs: the newer one
    wins.  The older one stops before its next step, aborts what it
    staged, drops its row, and its Deferred fails with
    L{TransferSupersededError}; only then does the newer one begin (a
    backend holds one upload per key);
  - the node stops (L{Transfers.stopService}): running uploads stop before
    their next step and fail with L{TransferCancelledError}; their rows and
    what the service holds are kept for L{Transfers.resume}.

Failures are reported in words, in the log and in the failures and results
the Deferreds carry; none of them stops the node.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer
from zope.interface.verify import verifyClass

from p2pblob._threads import BlockingRunner, run_inline
from p2pblob.errors import (
    BlobHashMismatchError,
    DriverError,
    P2PBlobError,
    ServiceError,
    SourceChangedError,
    SourceGoneError,
    StorageError,
    TransferCancelledError,
    TransferSupersededError,
)
from p2pblob.storage.host import StorageHost
from p2pblob.storage.journal import JournalEntry, TransferJournal

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "MAX_RESTARTS",
    "FileSource",
    "ITransferSource",
    "Outcome",
    "TransferProgress",
    "TransferResult",
    "Transfers",
    "open_file_source",
]

_log = Logger()

_T = TypeVar("_T")

MAX_RESTARTS = 3
"""
How many times an upload starts over because its source changed, before it
is given up.
"""

_FILE_PREFIX = "file:"


class ITransferSource(Interface):
    """
    What a file is uploaded from: a local file, a stream.  Its content may
    change while it is uploaded; each version is named by L{version}.
    """

    description = Attribute(
        "A C{str} that says where the content comes from, which the transfer"
        " journal keeps and the node's C{open_source} turns back into the"
        " source when it resumes the upload (C{'file:/abs/path'},"
        " C{'stream:<sd hash>'})."
    )

    size = Attribute(
        "An C{int}: the size in bytes of the version L{version} last named."
    )

    def version() -> Deferred[str]:
        """
        Name the content's version as it is now, and update L{size} to its
        size.

        @return: a Deferred that fires with a C{str} that differs whenever
            the content does (for a file: its size, times and inode).  It
            fails with L{SourceGoneError} if the source can no longer be
            read.
        """

    def read(offset: int, size: int) -> Deferred[bytes]:
        """
        Read part of the content.

        @param offset: where to start, in bytes from the beginning.
        @param size: how many bytes to read.

        @return: a Deferred that fires with up to C{size} bytes (fewer only
            at the end).  It fails with L{SourceGoneError} if the source can
            no longer be read.
        """


@implementer(ITransferSource)
class FileSource:
    """
    A local file, read in a blocking runner (a thread).

    Its version is its size, modification and change times and inode: a
    file written to, or replaced by another, has another version (the
    change time catches content written with the old modification time put
    back, as C{rsync --inplace} does).

    @ivar path: the file, absolute.
    """

    def __init__(self, path: Path | str, run: BlockingRunner) -> None:
        self.path = Path(path).absolute()
        self.description = f"{_FILE_PREFIX}{self.path}"
        self.size = 0
        self._run = run

    def __repr__(self) -> str:
        return f"<FileSource {str(self.path)!r}>"

    def _gone(self, error: OSError) -> SourceGoneError:
        return SourceGoneError(self.description, error.strerror or str(error))

    def _stat(self) -> tuple[str, int]:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise self._gone(e) from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceGoneError(self.description, "it is not a regular file")
        version = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_dev}:{st.st_ino}"
        return version, st.st_size

    def version(self) -> Deferred[str]:
        def found(answer: tuple[str, int]) -> str:
            version, self.size = answer
            return version

        return self._run(self._stat).addCallback(found)

    def _read(self, offset: int, size: int) -> bytes:
        parts = []
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                while size > 0:
                    part = f.read(size)
                    if not part:
                        break
                    parts.append(part)
                    size -= len(part)
        except OSError as e:
            raise self._gone(e) from None
        return b"".join(parts)

    def read(self, offset: int, size: int) -> Deferred[bytes]:
        return self._run(self._read, offset, size)


verifyClass(ITransferSource, FileSource)


def open_file_source(description: str, run: BlockingRunner) -> FileSource | None:
    """
    Open again a file source from its description (for
    L{Transfers}' C{open_source}).

    @param description: what L{FileSource.description} was.
    @param run: the blocking runner the source reads in.

    @return: the source, or C{None} if C{description} does not name a file
        (whether the file still exists is found when it is read).
    """
    if not description.startswith(_FILE_PREFIX) or len(description) == len(_FILE_PREFIX):
        return None
    return FileSource(description[len(_FILE_PREFIX) :], run)


class Outcome(Enum):
    """
    What became of an upload.
    """

    STORED = "stored"
    """It was uploaded and committed."""

    RESUMED = "resumed"
    """Taken up again where the backend said it got to, then committed."""

    RESTARTED = "restarted"
    """Started again from the beginning (its source changed, or what the
    backend held could not be used), then committed."""

    DROPPED = "dropped"
    """Given up without an error of the service: its source is gone, or its
    backend is now another; nothing of it is left."""

    FAILED = "failed"
    """It failed (see the reason)."""


@dataclass(frozen=True)
class TransferResult:
    """
    What became of one upload.

    @ivar key: the file's name on the backend.
    @ivar outcome: what became of it.
    @ivar size: its size in bytes (of the version uploaded), if known.
    @ivar sha384: the sha384 of what was committed (hex), if it was.
    @ivar resumed_from: for an upload resumed, the offset the backend said
        it held (every byte before it was not sent again).
    @ivar restarts: how many times it started over because its source
        changed.
    @ivar reason: for an upload restarted, dropped or failed, why, in words.
    """

    key: str
    outcome: Outcome
    size: int | None = None
    sha384: str | None = None
    resumed_from: int | None = None
    restarts: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class TransferProgress:
    """
    How far an upload has got.

    @ivar key: the file's name on the backend.
    @ivar done: bytes stored so far (of the version being uploaded).
    @ivar size: bytes in all, once known.
    """

    key: str
    done: int
    size: int | None


class _Stop(Enum):
    """
    Why a transfer was asked to stop.
    """

    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    STOPPING = "stopping"


class _Stopped(Exception):
    def __init__(self, why: _Stop) -> None:
        super().__init__(why.value)
        self.why = why


class _SourceChanged(Exception):
    """
    The source's version is no longer the one being uploaded.
    """


class _Transfer:
    """
    One upload in progress.

    @ivar entry: its row in the journal, while it has one and something of
        it may be staged on the service (C{None} before it begins and once
        it is committed or given up).
    @ivar stop: why it was asked to stop, if it was; it stops before its
        next step.
    """

    def __init__(
        self, key: str, source: ITransferSource | None, expected: str | None
    ) -> None:
        self.key = key
        self.source = source
        self.expected = expected
        self.entry: JournalEntry | None = None
        self.done = 0
        self.size: int | None = None
        self.stop: _Stop | None = None
        self._ended = False
        self._waiting: list[Deferred[None]] = []

    def request(self, why: _Stop) -> None:
        if self.stop is None:
            self.stop = why

    def checkpoint(self) -> None:
        """
        Stop here if asked to.
        """
        if self.stop is not None:
            raise _Stopped(self.stop)

    def when_ended(self) -> Deferred[None]:
        """
        A Deferred that fires once the transfer has ended (and cleaned up),
        whatever its outcome.
        """
        if self._ended:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def end(self) -> None:
        self._ended = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


@dataclass
class _Sending:
    """
    Where an upload stands: bytes before C{offset} are stored, those
    before C{hashed} are in C{hasher}.
    """

    entry: JournalEntry
    offset: int
    hasher: _Hash
    hashed: int = 0


class Transfers(Service):
    """
    The uploads to one backend, journaled so that they survive a crash.

    The host's chunk size must be agreed on
    (L{StorageHost.negotiate_chunk_size}) before any upload.  Everything
    runs on the reactor thread, except the reading of sources (in their own
    runner) and the hashing (in C{run}).

    @ivar target: the backend's name in the journal.
    """

    def __init__(
        self,
        host: StorageHost,
        journal: TransferJournal,
        target: str,
        clock: IReactorTime,
        open_source: Callable[[str], ITransferSource | None],
        *,
        run: BlockingRunner = run_inline,
        on_progress: Callable[[TransferProgress], object] | None = None,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        """
        @param host: the backend's host.
        @param journal: the journal of the node's transfers.
        @param target: the backend's name in the journal (C{"blobs"}, a
            mirror's name); the journal may hold the transfers of several.
        @param clock: the node's clock (for the time transfers begin).
        @param open_source: turns a source's description, as the journal
            kept it, back into the source, or answers C{None} if it cannot.
        @param run: where the hashing of the content runs.
        @param on_progress: called with a L{TransferProgress} each time an
            upload gets further (after each chunk is stored and journaled)
            or starts over.
        @param max_restarts: how many times an upload starts over because
            its source changed, before it is given up.
        """
        self.target = target
        self._host = host
        self._journal = journal
        self._clock = clock
        self._open_source = open_source
        self._run = run
        self._on_progress = on_progress
        self._max_restarts = max_restarts
        self._running: dict[str, _Transfer] = {}
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Transfers to {self.target!r} ({self._host.plugin.name})>"

    # -- the service ---------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """
        Stop every upload before its next step, keeping its row and what
        the service holds of it for L{resume}; refuse new uploads.

        @return: a Deferred that fires once they have stopped.
        """
        super().stopService()
        self._stopped = True
        waiting = []
        for transfer in list(self._running.values()):
            transfer.request(_Stop.STOPPING)
            waiting.append(transfer.when_ended())
        return gatherResults(waiting).addCallback(lambda _: None)

    # -- what is going on ----------------------------------------------------

    def in_progress(self) -> list[TransferProgress]:
        """
        How far each upload in progress has got.
        """
        return [
            TransferProgress(t.key, t.done, t.size) for t in self._running.values()
        ]

    def _progress(self, transfer: _Transfer, done: int, size: int | None) -> None:
        transfer.done = done
        transfer.size = size
        if self._on_progress is None:
            return
        try:
            self._on_progress(TransferProgress(transfer.key, done, size))
        except Exception:
            _log.failure("the progress of the upload of {key} could not be reported",
                         key=transfer.key)

    # -- uploading -----------------------------------------------------------

    def upload(
        self, source: ITransferSource, key: str, expected_hash: str | None = None
    ) -> Deferred[TransferResult]:
        """
        Upload the content of C{source} as C{key}, replacing any file of
        that name once it is all stored; an upload of C{key} already
        running is given up for this one.

        @param source: what to upload.
        @param key: the file's name on the backend.
        @param expected_hash: the sha384 (hex) the content must have, if
            known (a blob's name).

        @return: a Deferred that fires with a L{TransferResult} (outcome
            L{Outcome.STORED}) once the file is committed.  It fails with
            L{BlobHashMismatchError} (the content does not hash to
            C{expected_hash}), L{SourceGoneError}, L{SourceChangedError},
            L{TransferSupersededError}, L{TransferCancelledError} (cancelled
            with C{Deferred.cancel}, which takes effect before the next
            step: the Deferred fails at once with
            L{twisted.internet.defer.CancelledError}, or the node is
            stopping), L{ServiceError} (kept for L{resume}),
            L{DriverError}, or L{StorageError} (the journal cannot be
            written).  An upload cancelled while it was being committed
            may still be committed.
        """
        if self._stopped:
            return _failed(TransferCancelledError(key, "the node is stopping"))
        transfer = _Transfer(key, source, expected_hash)
        older = self._running.get(key)
        self._running[key] = transfer
        before: Deferred[None] | None = None
        if older is not None:
            older.request(_Stop.SUPERSEDED)
            before = older.when_ended()
        running = Deferred.fromCoroutine(
            self._guarded(transfer, self._upload(transfer, before))
        )
        return _cancellable(running, lambda: transfer.request(_Stop.CANCELLED))

    async def _upload(self, transfer: _Transfer, before: Deferred[None] | None) -> TransferResult:
        if before is not None:
            await before
        restarts, digest = await self._transfer(transfer, None)
        return TransferResult(
            transfer.key, Outcome.STORED, transfer.size, digest, restarts=restarts
        )

    async def _guarded(self, transfer: _Transfer, body: Coroutine[Any, Any, _T]) -> _T:
        """
        Run the body of a transfer, clean up after it as its failure
        requires, and report that failure in words.
        """
        key = transfer.key
        try:
            return await body
        except _Stopped as stopped:
            if stopped.why is _Stop.STOPPING:
                _log.info(
                    "the upload of {key} to {target} stopped with the node; it goes on "
                    "from where it got to when the node starts again",
                    key=key,
                    target=self.target,
                )
                raise TransferCancelledError(
                    key,
                    "the node is stopping; it goes on from where it got to when the node "
                    "starts again",
                ) from None
            await self._give_up(transfer)
            if stopped.why is _Stop.SUPERSEDED:
                _log.info(
                    "the upload of {key} to {target} was given up for a newer one",
                    key=key,
                    target=self.target,
                )
                raise TransferSupersededError(key) from None
            _log.info("the upload of {key} to {target} was cancelled", key=key, target=self.target)
            raise TransferCancelledError(key, "it was cancelled") from None
        except (ServiceError, CancelledError) as e:
            _log.warn(
                "the upload of {key} to {target} failed: {error}; it is kept and goes on "
                "from where it got to when resumed",
                key=key,
                target=self.target,
                error=e if isinstance(e, ServiceError) else "the storage host stopped",
            )
            raise
        except Exception as e:
            await self._give_up(transfer)
            if isinstance(e, P2PBlobError):
                _log.warn(
                    "the upload of {key} to {target} failed: {error}",
                    key=key,
                    target=self.target,
                    error=e,
                )
            else:
                _log.failure(
                    "the upload of {key} to {target} failed", key=key, target=self.target
                )
            raise
        finally:
            if self._running.get(key) is transfer:
                del self._running[key]
            transfer.end()

    async def _give_up(self, transfer: _Transfer) -> None:
        """
        Abort what was staged of an upload and drop its row.  If the
        service fails the abort, keep the row, so that a later resume deals
        with the upload again; if the backend refuses it (a L{DriverError}:
        trying again would not help), drop the row all the same.
        """
        entry = transfer.entry
        if entry is None:
            return
        try:
            await self._host.abort_upload(transfer.key)
        except (ServiceError, CancelledError) as e:
            _log.warn(
                "could not abort the upload of {key} to {target}: {error}; it is kept "
                "in the journal and dealt with when resumed",
                key=transfer.key,
                target=self.target,
                error=e if isinstance(e, ServiceError) else "the storage host stopped",
            )
            return
        except Exception as e:
            _log.warn(
                "could not abort the upload of {key} to {target}: {error}; it is "
                "forgotten all the same",
                key=transfer.key,
                target=self.target,
                error=e,
            )
        transfer.entry = None
        self._forget(entry)

    def _forget(self, entry: JournalEntry) -> None:
        """
        Drop a row once its upload is committed or aborted; if that fails,
        log it (the row then makes the next resume upload the file again).
        """
        try:
            self._journal.finish(entry.id)
        except StorageError as e:
            _log.warn("{error}", error=e)

    async def _transfer(
        self, transfer: _Transfer, sending: _Sending | None
    ) -> tuple[int, str]:
        """
        Upload the source (from where C{sending} stands, or from the
        beginning), starting over while it changes.

        @return: how many times it started over, and the sha384 committed.
        """
        restarts = 0
        while True:
            if sending is None:
                sending = await self._begin(transfer)
            try:
                return restarts, await self._send(transfer, sending)
            except _SourceChanged as e:
                restarts += 1
                source = _source(transfer)
                if restarts > self._max_restarts:
                    raise SourceChangedError(source.description, transfer.key, restarts) from None
                _log.info(
                    "{source} changed ({why}) while it was uploaded as {key} to {target}; "
                    "the upload starts over with its newer version",
                    source=source.description,
                    why=str(e),
                    key=transfer.key,
                    target=self.target,
                )
                await self._host.abort_upload(transfer.key)
                sending = None

    async def _begin(self, transfer: _Transfer) -> _Sending:
        """
        Journal a new upload of the source's current version, then begin it.
        """
        transfer.checkpoint()
        source = _source(transfer)
        version = await source.version()
        transfer.checkpoint()
        size: int = source.size
        entry = self._journal.begin(
            self.target,
            self._host.plugin.name,
            transfer.key,
            source.description,
            version,
            size,
            self._host.chunk_size,
            transfer.expected,
            self._clock.seconds(),
        )
        transfer.entry = entry
        self._progress(transfer, 0, size)
        upload_id = await self._host.start_upload(transfer.key, size)
        if upload_id is not None:
            self._journal.set_upload_id(entry.id, upload_id)
        return _Sending(entry, 0, hashlib.sha384())

    async def _check_version(self, transfer: _Transfer, entry: JournalEntry) -> None:
        source = _source(transfer)
        version = await source.version()
        if source.size != entry.size:
            raise _SourceChanged(f"it was {entry.size} bytes long, it is {source.size}")
        if version != entry.version:
            raise _SourceChanged("it was modified")

    async def _read(self, transfer: _Transfer, offset: int, size: int) -> bytes:
        data = await _source(transfer).read(offset, size)
        if len(data) != size:
            raise _SourceChanged(f"{len(data)} bytes were read at {offset}, not {size}")
        return bytes(data)

    async def _send(self, transfer: _Transfer, sending: _Sending) -> str:
        """
        Upload the rest, check the hash, commit.

        @return: the sha384 committed.
        """
        entry = sending.entry
        key = transfer.key
        chunk = entry.chunk_size
        # Bytes stored before a resumption go into the hash again.
        while sending.hashed < sending.offset:
            transfer.checkpoint()
            await self._check_version(transfer, entry)
            size = min(chunk, sending.offset - sending.hashed)
            data = await self._read(transfer, sending.hashed, size)
            await self._run(sending.hasher.update, data)
            sending.hashed += size
        while sending.offset < entry.size:
            transfer.checkpoint()
            await self._check_version(transfer, entry)
            # Chunks keep to the grid of the chunk size, even after resuming
            # from an offset off it (S3 parts are numbered by it).
            end = min(entry.size, (sending.offset // chunk + 1) * chunk)
            data = await self._read(transfer, sending.offset, end - sending.offset)
            await self._run(sending.hasher.update, data)
            sending.hashed = end
            await self._host.upload_chunk(key, sending.offset, data)
            sending.offset = end
            self._journal.advance(entry.id, end)
            self._progress(transfer, end, entry.size)
        transfer.checkpoint()
        await self._check_version(transfer, entry)
        digest = sending.hasher.hexdigest()
        if transfer.expected is not None and digest != transfer.expected:
            raise BlobHashMismatchError(transfer.expected, digest)
        transfer.checkpoint()
        await self._host.end_upload(key)
        transfer.entry = None
        self._forget(entry)
        return digest

    # -- resuming ------------------------------------------------------------

    def resume(self) -> Deferred[list[TransferResult]]:
        """
        Take up every upload to this target the journal lists, one after
        the other, oldest first:

          - begun through another storage plugin than the host's: dropped
            (what it staged is on a service this host cannot reach);
          - its source cannot be opened or read any more: aborted and
            dropped;
          - its source changed since, or it was begun with another chunk
            size: aborted, and started over from the beginning;
          - else resumed from the offset the backend answers
            (L{StorageHost.restart_upload}); the bytes before it are read
            again from the source only to be hashed.

        @return: a Deferred that fires, once every one has ended, with a
            L{TransferResult} for each: L{Outcome.RESUMED},
            L{Outcome.RESTARTED}, L{Outcome.DROPPED}, or L{Outcome.FAILED}
            with the reason in words (a transfer failing never fails the
            Deferred).  It fails with L{StorageError} if the journal cannot
            be read.
        """
        return Deferred.fromCoroutine(self._resume())

    async def _resume(self) -> list[TransferResult]:
        results = []
        for listed in self._journal.open_transfers(self.target):
            if self._stopped:
                break
            entry = self._journal.get(listed.id)
            if entry is None or entry.key in self._running:
                # a newer upload of the same key took its place meanwhile
                continue
            try:
                results.append(await self._resume_entry(entry))
            except Exception as e:
                results.append(
                    TransferResult(entry.key, Outcome.FAILED, entry.size, reason=str(e))
                )
        return results

    async def _resume_entry(self, entry: JournalEntry) -> TransferResult:
        plugin = self._host.plugin.name
        if entry.plugin != plugin:
            reason = (
                f"it was begun through the {entry.plugin!r} storage plugin, and "
                f"{self.target!r} now uses {plugin!r}; what it staged there is left as it is"
            )
            _log.warn(
                "the unfinished upload of {key} to {target} is dropped: {reason}",
                key=entry.key,
                target=self.target,
                reason=reason,
            )
            self._journal.finish(entry.id)
            return TransferResult(entry.key, Outcome.DROPPED, entry.size, reason=reason)
        try:
            source = self._open_source(entry.source)
        except Exception:
            _log.failure("cannot open {source} again", source=entry.source)
            source = None
        transfer = _Transfer(entry.key, source, entry.sha384)
        transfer.entry = entry
        transfer.size = entry.size
        transfer.done = entry.stored
        self._running[entry.key] = transfer
        return await self._guarded(transfer, self._resume_transfer(transfer, entry))

    async def _resume_transfer(self, transfer: _Transfer, entry: JournalEntry) -> TransferResult:
        key = transfer.key
        gone = None
        version = ""
        if transfer.source is None:
            gone = "it cannot be opened any more"
        else:
            try:
                version = await transfer.source.version()
            except SourceGoneError as e:
                gone = e.reason
        if transfer.source is None or gone is not None:
            reason = f"its source {entry.source!r:.300} is gone ({gone}); what was uploaded was thrown away"
            await self._discard(entry)
            transfer.entry = None
            self._journal.finish(entry.id)
            _log.warn(
                "the unfinished upload of {key} to {target} is dropped: {reason}",
                key=key,
                target=self.target,
                reason=reason,
            )
            return TransferResult(key, Outcome.DROPPED, entry.size, reason=reason)
        transfer.checkpoint()
        source = transfer.source
        why = None
        offset = 0
        if version != entry.version or source.size != entry.size:
            why = "its source changed since it began"
        elif entry.chunk_size != self._host.chunk_size:
            why = (
                f"it was begun with chunks of {entry.chunk_size} bytes, and the backend now "
                f"takes chunks of {self._host.chunk_size}"
            )
        else:
            offset = await self._host.restart_upload(key, entry.stored, entry.upload_id)
            if offset > entry.size:
                why = (
                    f"the service holds {offset} bytes of it, more than the {entry.size} of "
                    "its source"
                )
        if why is not None:
            _log.info(
                "the unfinished upload of {key} to {target} starts over: {why}",
                key=key,
                target=self.target,
                why=why,
            )
            await self._discard(entry)
            restarts, digest = await self._transfer(transfer, None)
            return TransferResult(
                key, Outcome.RESTARTED, transfer.size, digest, restarts=restarts, reason=why
            )
        if offset == 0 and entry.upload_id is not None:
            # The backend began a new upload, whose name it did not say:
            # next time it must look for it by its key.
            self._journal.set_upload_id(entry.id, None)
        if offset != entry.stored:
            self._journal.advance(entry.id, offset)
        _log.info(
            "the unfinished upload of {key} to {target} goes on from byte {offset} of "
            "{size} (the journal said {stored})",
            key=key,
            target=self.target,
            offset=offset,
            size=entry.size,
            stored=entry.stored,
        )
        self._progress(transfer, offset, entry.size)
        restarts, digest = await self._transfer(
            transfer, _Sending(entry, offset, hashlib.sha384())
        )
        return TransferResult(
            key,
            Outcome.RESUMED if restarts == 0 else Outcome.RESTARTED,
            transfer.size,
            digest,
            resumed_from=offset,
            restarts=restarts,
            reason=None if restarts == 0 else "its source changed while it was uploaded",
        )

    async def _discard(self, entry: JournalEntry) -> None:
        """
        Abort an upload a crashed node left: first let the backend find it
        again by its journaled name (so that it aborts that one), then
        abort it.
        """
        try:
            await self._host.restart_upload(entry.key, entry.stored, entry.upload_id)
        except DriverError as e:
            _log.info(
                "the backend could not find the unfinished upload of {key}: {error}",
                key=entry.key,
                error=e,
            )
        await self._host.abort_upload(entry.key)


def _source(transfer: _Transfer) -> ITransferSource:
    source = transfer.source
    assert source is not None
    return source


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


def _cancellable(running: Deferred[_T], cancel: Callable[[], None]) -> Deferred[_T]:
    """
    A Deferred with the result of C{running}, whose cancellation asks the
    transfer to stop (before its next step, so that no call to the backend
    is left running behind it) rather than cancelling what it awaits.
    """
    outer: Deferred[_T] = Deferred(lambda _: cancel())

    def pass_on(result: _T | Failure) -> None:
        if outer.called:
            # cancelled: the transfer's own failure is not wanted any more
            return None
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)
        return None

    running.addBoth(pass_on)
    return outer
