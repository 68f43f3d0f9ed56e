"""
Mirrors: the node's streams exported as plain files to storage backends.

A mirror is a storage plugin's backend (an S3 bucket, an SFTP server, a
folder) named in the node's configuration::

    twistd p2pblob --mirror backup=s3 \\
        --mirror-option backup:bucket=my-backups \\
        --mirror-option backup:prefix=p2pblob/ \\
        --mirror-rule backup=published

Exporting a stream to it (C{p2pblob mirror SD backup}, C{POST
/api/v1/mirrors}, or the mirror's rule) stores the stream's content there:
the file it decodes to, decrypted, under the stream's suggested file name
made safe (L{p2pblob.stream.names.safe_file_name}).  The files go at the top
of the backend: to put them in a folder, use the plugin's own option (the
C{prefix} of C{s3}, the C{root} of C{local} and C{sftp}).

What can be exported: a stream this node published, or one it downloaded to
the end.  A download still in progress is refused; so is a stream the node
does not know.

How a stream is read (L{StreamSource}): blob after blob from the local blob
store, each checked against its hash and decrypted in a thread, only one
blob's plaintext held at a time, so that memory stays flat whatever the
stream's size.  A blob that is missing fails the export, naming it; a blob
whose bytes do not match its hash is removed from the store, and the export
fails before any byte of it is sent: nothing damaged is ever stored on a
mirror.  The upload itself is a L{p2pblob.storage.transfer.Transfers}
upload, journaled in C{DATA_DIR/transfers.sqlite}: nothing of it is visible
on the mirror until all of it is there, and after a crash or a stop it goes
on from what the backend holds when the node starts again.

Names: a mirror is a backup, so an export never replaces a file that is not
the same stream's.

  - The first stream exported under a name keeps it.
  - Another stream with the same suggested name goes to
    C{NAME_<first 16 hex digits of its sd hash>.EXT} (the digits
    C{p2pblob ls} shows), e.g. C{holiday_3f1c2a9be0d4c771.mp4}; so does a
    stream whose name is taken on the backend by a file this node did not
    put there.  (If even that name is another stream's, the whole sd hash
    is used.)
  - A stream exported again goes to the name it was given the first time,
    and replaces that file (with the same content, or bringing back a file
    deleted from the mirror).

What the node exported is kept in C{DATA_DIR/mirrors.sqlite}; a node with
another data directory does not know it, and so exports to the suffixed
names when it finds the plain ones taken.

Rules (C{--mirror-rule NAME=RULE}): C{none} (the default: a mirror exports
only what it is asked to), C{published} (every stream this node
publishes), C{downloaded} (every download, once finished) or C{all} (both).
Every L{SCAN_INTERVAL} seconds the node looks for the streams a rule selects
that were never exported to that mirror, and that it holds whole, and
exports them, oldest first.  A rule exports a stream once: a file deleted
from the mirror is not exported again by the rule (export it by hand).  A
stream whose export failed is tried again later, less and less often (at
most an hour apart).

One export runs at a time on each mirror; the others wait their turn.  An
export waiting when the node stops is forgotten (a rule finds its stream
again); one under way goes on at the next start.

Failures (a missing or damaged blob, a bucket that refuses the node, a
service that keeps failing) are logged in words and shown in the export's
job (L{MirrorJob}, C{GET /api/v1/mirrors}); none of them stops the node.
"""

from __future__ import annotations

import posixpath
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import BlockingRunner, ThreadWorker, run_inline
from p2pblob.blob.hashing import check_blob_hash
from p2pblob.blob.store import ROLE_DOWNLOADED, BlobStore
from p2pblob.errors import (
    ConfigError,
    P2PBlobError,
    ServiceError,
    StorageError,
)
from p2pblob.interfaces import IStoragePlugin
from p2pblob.storage._mirrored import MirrorRecord, MirrorRecords
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.host import StorageHost
from p2pblob.storage.journal import TransferJournal
from p2pblob.storage.mirror_config import (
    RULES,
    MirrorError,
    MirrorTarget,
    MirrorUnavailableError,
    StreamNotHeldError,
    StreamUnfinishedError,
    UnknownMirrorError,
    check_mirrors,
    mirror_keys,
    mirror_targets,
    parse_mirror,
    parse_mirror_option,
    parse_mirror_rule,
)
from p2pblob.storage.stream_source import (
    STREAM_PREFIX,
    StreamSource,
    open_stream_source,
    stream_of,
)
from p2pblob.storage.transfer import (
    Outcome,
    TransferProgress,
    TransferResult,
    Transfers,
)

__all__ = [
    "MAX_RETRY_DELAY",
    "RULES",
    "SCAN_INTERVAL",
    "STREAM_PREFIX",
    "MirrorError",
    "MirrorJob",
    "MirrorService",
    "MirrorTarget",
    "MirrorUnavailableError",
    "StreamNotHeldError",
    "StreamSource",
    "StreamUnfinishedError",
    "UnknownMirrorError",
    "check_mirrors",
    "mirror_keys",
    "mirror_targets",
    "open_stream_source",
    "parse_mirror",
    "parse_mirror_option",
    "parse_mirror_rule",
]

_log = Logger()

SCAN_INTERVAL = 30.0
"""
Seconds between two looks at the streams the mirrors' rules select.
"""

MAX_RETRY_DELAY = 3600.0
"""
The longest wait, in seconds, before a failed export chosen by a rule, an
unfinished upload or a mirror that could not start is tried again.
"""

KEEP_JOBS = 100
"""
How many ended exports the node keeps showing.
"""

HISTORY = 50
"""
How many past exports C{GET /api/v1/mirrors} lists.
"""

_JOURNAL_PREFIX = "mirror:"

# the states of an export
WAITING = "waiting"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
_ENDED = frozenset({FINISHED, FAILED, INTERRUPTED})

# the states of a mirror
_STARTING = "starting"
_READY = "ready"
_UNAVAILABLE = "unavailable"





# -- exports -------------------------------------------------------------------


@dataclass(eq=False)
class MirrorJob:
    """
    One export of a stream to a mirror.

    @ivar id: its number, unique while the node runs.
    @ivar target: the mirror's name.
    @ivar sd_hash: the stream.
    @ivar origin: why it runs: C{"request"} (asked for), C{"rule"} (the
        mirror's rule chose it) or C{"resume"} (an upload the node had not
        finished when it stopped).
    @ivar state: C{waiting} (its turn has not come), C{running},
        C{finished}, C{failed} or C{interrupted} (the node stopped; an
        upload under way goes on at the next start).
    @ivar name: the stream's file name, once its descriptor is read.
    @ivar key: the file's name on the mirror, once chosen.
    @ivar done: bytes stored so far.
    @ivar size: bytes in all, once known.
    @ivar error: why it failed, in words.
    @ivar outcome: how it ended, if it did: C{stored}, C{resumed} or
        C{restarted} (see L{Outcome}), C{failed} or C{dropped}.
    """

    id: int
    target: str
    sd_hash: str
    origin: str
    queued_at: float
    state: str = WAITING
    name: str | None = None
    key: str | None = None
    done: int = 0
    size: int | None = None
    error: str | None = None
    outcome: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    _waiting: list[Deferred[MirrorJob]] = field(default_factory=list, repr=False)

    @property
    def ended(self) -> bool:
        return self.state in _ENDED

    def when_done(self) -> Deferred[MirrorJob]:
        """
        A Deferred that fires with this job once it has ended (whatever
        became of it).
        """
        if self.ended:
            return succeed(self)
        d: Deferred[MirrorJob] = Deferred()
        self._waiting.append(d)
        return d

    def end(self, state: str, now: float, error: str | None = None,
            outcome: str | None = None) -> None:
        self.state = state
        self.error = error
        self.outcome = outcome
        self.ended_at = now
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "sd_hash": self.sd_hash,
            "origin": self.origin,
            "state": self.state,
            "name": self.name,
            "key": self.key,
            "done_bytes": self.done,
            "total_bytes": self.size,
            "error": self.error,
            "outcome": self.outcome,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class _Mirror:
    """
    One mirror while the node runs: its host and uploads, its exports
    waiting their turn, and when to try again what failed.
    """

    def __init__(self, target: MirrorTarget, host: StorageHost) -> None:
        self.target = target
        self.host = host
        self.journal_target = _JOURNAL_PREFIX + target.name
        self.transfers: Transfers | None = None
        self.state = _STARTING
        self.error: str | None = None
        self.preparing = False
        self.prepare_due = 0.0
        self.prepare_delay = 0.0
        self.queue: deque[MirrorJob] = deque()
        self.busy = False
        # the exports running, by key
        self.active: dict[str, MirrorJob] = {}
        self.resume_due = 0.0
        self.resume_delay = 0.0
        # streams whose export by the rule failed: how often, and when to
        # try again
        self.failures: dict[str, tuple[int, float]] = {}
        # the streams the rule selected at its last look (and their role),
        # exported one after the other
        self.candidates: deque[tuple[str, str]] = deque()

    @property
    def name(self) -> str:
        return self.target.name

    def to_json(self, mirrored: int | None) -> dict[str, Any]:
        return {
            "name": self.target.name,
            "plugin": self.target.plugin,
            "rule": self.target.rule,
            "state": self.state,
            "error": self.error,
            "chunk_size": self.host.chunk_size,
            "waiting": len(self.queue),
            "mirrored": mirrored,
        }


def _reason(error: BaseException) -> str:
    """
    What went wrong, in words for a job and the log.
    """
    if isinstance(error, P2PBlobError):
        return str(error)
    if isinstance(error, CancelledError):
        return "the node stopped it"
    return f"an internal error ({type(error).__name__}: {error}); the node's log has the details"


def _next_delay(previous: float, first: float) -> float:
    return min(max(previous * 2, first), MAX_RETRY_DELAY)


class MirrorService(Service):
    """
    The node's mirrors: one L{StorageHost} and one L{Transfers} for each,
    one transfer journal for all.

    At start it starts the hosts, agrees on their chunk sizes and, once the
    blob store is open, resumes every upload the journal lists, then
    exports what it is asked to (L{export}) and what the rules select, one
    stream at a time on each mirror.  See the module's docstring for what
    it does, and how it names files.

    @ivar targets: the mirrors, as configured.
    """

    name = "mirrors"

    def __init__(
        self,
        clock: IReactorTime,
        store: BlobStore,
        targets: Sequence[MirrorTarget],
        journal_path: Path | str,
        records_path: Path | str,
        *,
        store_ready: Deferred[Any] | None = None,
        reactor_threads: IReactorThreads | None = None,
        scan_interval: float = SCAN_INTERVAL,
        plugins: Callable[[str], IStoragePlugin] = find_plugin,
    ) -> None:
        """
        @param clock: the node's clock.
        @param store: the blob store the streams are read from.
        @param targets: the mirrors.
        @param journal_path: the transfer journal (C{DATA_DIR/transfers.sqlite}).
        @param records_path: the list of streams mirrored
            (C{DATA_DIR/mirrors.sqlite}).
        @param store_ready: fires once C{store} is open (C{None}: it is).
        @param reactor_threads: the reactor that runs the hashing and
            decryption of blobs, and the calls of blocking plugins, in
            threads of their own; C{None} runs them in the calling thread
            (for tests).
        @param scan_interval: seconds between two looks at what the rules
            select.
        @param plugins: finds a storage plugin by name.

        @raise ConfigError: a mirror's plugin is not installed, or its
            options are wrong.
        """
        super().__init__()
        self.targets = tuple(targets)
        self._clock = clock
        self._store = store
        self._journal_path = journal_path
        self._records_path = records_path
        self._scan_interval = scan_interval
        self._mirrors: dict[str, _Mirror] = {}
        for target in self.targets:
            try:
                host = StorageHost(plugins(target.plugin), dict(target.options), clock,
                                   reactor_threads)
            except ConfigError as e:
                raise ConfigError(f"mirror {target.name!r}: {e}") from None
            self._mirrors[target.name] = _Mirror(target, host)
        self._worker: ThreadWorker | None = None
        self._run: BlockingRunner = run_inline
        if reactor_threads is not None:
            self._worker = ThreadWorker(reactor_threads, "p2pblob-mirrors", 2)
            self._run = self._worker
        self._store_open = store_ready is None
        self._store_waiters: list[Deferred[None]] = []
        if store_ready is not None:
            store_ready.addCallback(self._opened)
        self._journal: TransferJournal | None = None
        self._records: MirrorRecords | None = None
        self._unavailable: str | None = "the mirrors are not started"
        self._jobs: dict[int, MirrorJob] = {}
        self._next_id = 1
        self._sources: weakref.WeakSet[StreamSource] = weakref.WeakSet()
        self._work: set[Deferred[None]] = set()
        self._calls: set[Deferred[Any]] = set()
        self._scanner = LoopingCall(self._tick)
        self._scanner.clock = clock

    # -- the service -----------------------------------------------------------

    def _opened(self, result: object) -> object:
        self._store_open = True
        waiting, self._store_waiters = self._store_waiters, []
        for d in waiting:
            d.callback(None)
        return result

    def _when_store_open(self) -> Deferred[None]:
        if self._store_open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._store_waiters.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        try:
            self._journal = TransferJournal(self._journal_path)
            self._records = MirrorRecords(self._records_path)
        except StorageError as e:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._unavailable = f"the mirrors are off: {e}"
            _log.error("The mirrors are off: {error}", error=str(e))
            return
        self._unavailable = None
        if self._worker is not None:
            self._worker.start()
        for mirror in self._mirrors.values():
            mirror.host.startService()
            mirror.transfers = Transfers(
                mirror.host,
                self._journal,
                mirror.journal_target,
                self._clock,
                self._open_source,
                run=self._run,
                on_progress=partial(self._progressed, mirror),
            )
            mirror.transfers.startService()
        for mirror in self._mirrors.values():
            self._prepare(mirror)
        self._scanner.start(self._scan_interval, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Stop every upload before its next step (it goes on at the next
        start), then the hosts; forget the exports waiting their turn.

        @return: a Deferred that fires once everything has stopped.
        """
        super().stopService()
        if self._scanner.running:
            self._scanner.stop()
        waiting, self._store_waiters = self._store_waiters, []
        for d in waiting:
            d.cancel()
        for call in list(self._calls):
            call.cancel()
        for source in list(self._sources):
            source.close()
        stopping: list[Deferred[Any]] = [
            mirror.transfers.stopService()
            for mirror in self._mirrors.values()
            if mirror.transfers is not None
        ]
        stopping.extend(self._work)

        def stopped(_: object) -> None:
            now = self._clock.seconds()
            for mirror in self._mirrors.values():
                for job in mirror.queue:
                    job.end(INTERRUPTED, now, "the node stopped before its turn came; "
                            "export the stream again")
                mirror.queue.clear()
                if mirror.host.running:
                    mirror.host.stopService()
                mirror.transfers = None
            if self._worker is not None:
                self._worker.stop()
            for closing in (self._journal, self._records):
                if closing is not None:
                    closing.close()
            self._journal = self._records = None
            self._unavailable = "the mirrors are stopped"

        return gatherResults(stopping, consumeErrors=True).addBoth(stopped)

    def _track(self, work: Deferred[None]) -> None:
        """
        Count C{work} as going on until it ends (the stop waits for it); log
        its failure, which is a bug.
        """
        self._work.add(work)

        def over(result: object) -> None:
            self._work.discard(work)
            if isinstance(result, Failure):
                _log.failure("The mirrors failed", result)

        work.addBoth(over)

    def _host_call(self, call: Deferred[Any]) -> Deferred[Any]:
        """
        Cancel C{call}, a call of this service's own to a host, if the
        service stops meanwhile.
        """
        self._calls.add(call)

        def over(result: object) -> object:
            self._calls.discard(call)
            return result

        return call.addBoth(over)

    # -- what is going on --------------------------------------------------

    def jobs(self) -> list[MirrorJob]:
        """
        The exports waiting, running, and the last L{KEEP_JOBS} ended, in
        the order they were asked for.
        """
        return sorted(self._jobs.values(), key=lambda job: job.id)

    def job(self, job_id: int) -> MirrorJob | None:
        return self._jobs.get(job_id)

    def history(self, limit: int = HISTORY) -> list[MirrorRecord]:
        """
        The last exports that ended well, newest first.
        """
        if self._records is None:
            return []
        try:
            return self._records.recent(limit)
        except StorageError as e:
            _log.warn("{error}", error=str(e))
            return []

    def status(self) -> dict[str, Any]:
        """
        The mirrors, their exports and what they last exported, as the
        API shows them.
        """
        targets = []
        for mirror in self._mirrors.values():
            mirrored = None
            if self._records is not None:
                try:
                    mirrored = self._records.count(mirror.name)
                except StorageError:
                    pass
            targets.append(mirror.to_json(mirrored))
        return {
            "error": self._unavailable,
            "targets": targets,
            "jobs": [job.to_json() for job in self.jobs()],
            "history": [record.to_json() for record in self.history()],
        }

    # -- exporting ----------------------------------------------------------

    def export(self, sd_hash: str, target: str) -> MirrorJob:
        """
        Export a stream to a mirror, once the exports before it on that
        mirror are done.  Asking again while it waits or runs gives the
        same job.

        @param sd_hash: the stream: one this node published, or downloaded
            to the end.
        @param target: the mirror's name.

        @return: the export's job (which may have ended already).
        @raise UnknownMirrorError: there is no such mirror.
        @raise p2pblob.errors.InvalidBlobHashError: C{sd_hash} is not an sd
            hash.
        @raise StreamNotHeldError: the node does not hold the stream.
        @raise StreamUnfinishedError: its download has not finished.
        @raise MirrorUnavailableError: the mirrors are not running, the
            blob store is not open yet, or the mirror could not start.
        """
        mirror = self._mirrors.get(target)
        if mirror is None:
            raise UnknownMirrorError(target, self._mirrors)
        sd_hash = check_blob_hash(sd_hash)
        if not self.running or self._unavailable is not None:
            raise MirrorUnavailableError(self._unavailable or "the mirrors are stopped")
        if mirror.state == _UNAVAILABLE:
            raise MirrorUnavailableError(
                f"mirror {target!r} cannot be used now: {mirror.error} (it is tried again "
                "from time to time)"
            )
        if not self._store_open:
            raise MirrorUnavailableError("the blob store is not open yet: try again in a moment")
        self._check_stream(sd_hash)
        for job in self._jobs.values():
            if job.target == target and job.sd_hash == sd_hash and not job.ended:
                return job
        job = self._new_job(mirror, sd_hash, "request")
        mirror.queue.append(job)
        _log.info("Export of stream {sd_hash} to mirror {target} asked for",
                  sd_hash=sd_hash, target=target)
        self._pump(mirror)
        return job

    def _check_stream(self, sd_hash: str) -> None:
        for stream, role, finished, _pinned in self._store.index.streams():
            if stream == sd_hash:
                if role == ROLE_DOWNLOADED and not finished:
                    raise StreamUnfinishedError(sd_hash)
                return
        raise StreamNotHeldError(sd_hash)

    def _new_job(self, mirror: _Mirror, sd_hash: str, origin: str) -> MirrorJob:
        job = MirrorJob(self._next_id, mirror.name, sd_hash, origin, self._clock.seconds())
        self._next_id += 1
        self._jobs[job.id] = job
        ended = [old for old in self._jobs.values() if old.ended]
        for old in ended[: max(len(ended) - KEEP_JOBS, 0)]:
            del self._jobs[old.id]
        return job

    def _open_source(self, description: str) -> StreamSource | None:
        source = open_stream_source(description, self._store, self._run)
        if source is not None:
            self._sources.add(source)
        return source

    # -- running the exports ---------------------------------------------------

    def _prepare(self, mirror: _Mirror) -> None:
        mirror.preparing = True
        self._track(Deferred.fromCoroutine(self._preparing(mirror)))

    async def _preparing(self, mirror: _Mirror) -> None:
        """
        Agree on the mirror's chunk size, wait for the blob store, then let
        the mirror work.
        """
        try:
            chunk_size = await self._host_call(mirror.host.negotiate_chunk_size())
            await self._when_store_open()
        except CancelledError:
            return
        except Exception as e:
            if not self.running:
                return
            mirror.state = _UNAVAILABLE
            mirror.error = _reason(e)
            mirror.prepare_delay = _next_delay(mirror.prepare_delay, self._scan_interval)
            mirror.prepare_due = self._clock.seconds() + mirror.prepare_delay
            _log.warn(
                "Mirror {target} ({plugin}) cannot be used: {error}; trying again in "
                "{delay:.0f} s",
                target=mirror.name, plugin=mirror.target.plugin, error=mirror.error,
                delay=mirror.prepare_delay,
            )
            return
        finally:
            mirror.preparing = False
        if not self.running:
            return
        mirror.state = _READY
        mirror.error = None
        mirror.prepare_delay = 0.0
        _log.info(
            "Mirror {target} ({plugin}) is ready: chunks of {chunk_size} bytes, rule {rule}",
            target=mirror.name, plugin=mirror.target.plugin, chunk_size=chunk_size,
            rule=mirror.target.rule,
        )
        self._pump(mirror)

    def _tick(self) -> None:
        """
        Every L{SCAN_INTERVAL}: try again the mirrors that could not start,
        and let the others look for work.
        """
        now = self._clock.seconds()
        for mirror in self._mirrors.values():
            try:
                if mirror.state == _UNAVAILABLE:
                    if not mirror.preparing and now >= mirror.prepare_due:
                        self._prepare(mirror)
                else:
                    self._pump(mirror)
            except Exception:
                _log.failure("Mirror {target} failed looking for work", target=mirror.name)

    def _pump(self, mirror: _Mirror) -> None:
        """
        Have the mirror work, unless it is already or cannot.
        """
        if not self.running or mirror.busy or mirror.state != _READY:
            return
        mirror.busy = True
        work = Deferred.fromCoroutine(self._work_on(mirror))

        def idle(result: object) -> object:
            mirror.busy = False
            return result

        work.addBoth(idle)
        self._track(work)

    async def _work_on(self, mirror: _Mirror) -> None:
        """
        Do the mirror's work, one thing at a time, while there is some: the
        uploads the journal lists, then the exports asked for, then those
        the rule selects.
        """
        while self.running:
            if self._resume_due(mirror):
                await self._resume(mirror)
                continue
            if mirror.queue:
                await self._export(mirror, mirror.queue.popleft())
                continue
            job = self._by_rule(mirror)
            if job is None:
                return
            await self._export(mirror, job)

    def _open_rows(self, mirror: _Mirror) -> list[tuple[str, str]]:
        """
        The key and source of each upload to the mirror the journal lists.
        """
        if self._journal is None:
            return []
        try:
            return [(entry.key, entry.source)
                    for entry in self._journal.open_transfers(mirror.journal_target)]
        except StorageError as e:
            _log.warn("{error}", error=str(e))
            return []

    def _resume_due(self, mirror: _Mirror) -> bool:
        return self._clock.seconds() >= mirror.resume_due and bool(self._open_rows(mirror))

    def _defer_resume(self, mirror: _Mirror) -> None:
        mirror.resume_delay = _next_delay(mirror.resume_delay, self._scan_interval)
        mirror.resume_due = self._clock.seconds() + mirror.resume_delay

    async def _resume(self, mirror: _Mirror) -> None:
        """
        Take up every upload to the mirror the journal lists
        (L{Transfers.resume}), each shown as a job.
        """
        assert self._journal is not None and mirror.transfers is not None
        jobs: dict[str, MirrorJob] = {}
        for entry in self._journal.open_transfers(mirror.journal_target):
            job = self._new_job(mirror, stream_of(entry.source) or "", "resume")
            job.key = entry.key
            job.name = posixpath.basename(entry.key)
            job.size = entry.size
            job.done = entry.stored
            mirror.active[entry.key] = job
            jobs[entry.key] = job
        try:
            results = await mirror.transfers.resume()
        except Exception as e:
            results = [TransferResult(key, Outcome.FAILED, reason=_reason(e)) for key in jobs]
        for result in results:
            resumed = jobs.pop(result.key, None)
            if resumed is None:
                continue
            mirror.active.pop(result.key, None)
            if result.outcome in (Outcome.RESUMED, Outcome.RESTARTED):
                self._stored(mirror, resumed, result)
            else:
                self._ended_badly(mirror, resumed, result.reason or "it was given up",
                                  result.outcome.value)
        for key, left in jobs.items():
            mirror.active.pop(key, None)
            self._ended_badly(mirror, left, "the node stopped", Outcome.FAILED.value)
        if self._open_rows(mirror):
            self._defer_resume(mirror)
        else:
            mirror.resume_delay = 0.0

    def _by_rule(self, mirror: _Mirror) -> MirrorJob | None:
        """
        The next stream the mirror's rule selects, as a new job: the oldest
        one never exported to it, held whole, not being uploaded and not
        waiting to be tried again.

        The index is read once for a batch of them (one look per export
        would cost the square of their number), and each is looked at again
        when its turn comes.
        """
        if mirror.target.rule == "none" or self._records is None:
            return None
        if not mirror.candidates:
            mirror.candidates.extend(self._selected(mirror))
        uploading = self._uploading(mirror)
        while mirror.candidates:
            sd_hash, role = mirror.candidates.popleft()
            try:
                if self._records.get(mirror.name, sd_hash) is not None:
                    continue
            except StorageError as e:
                _log.warn("{error}", error=str(e))
                return None
            if not self._exportable(mirror, sd_hash, uploading):
                continue
            _log.info("Mirror {target} exports stream {sd_hash} ({role}) by its rule",
                      target=mirror.name, sd_hash=sd_hash, role=role)
            return self._new_job(mirror, sd_hash, "rule")
        return None

    def _selected(self, mirror: _Mirror) -> list[tuple[str, str]]:
        """
        The streams the mirror's rule selects that were never exported to
        it and may be now (see L{_exportable}), oldest first, with their
        role.
        """
        assert self._records is not None
        try:
            mirrored = self._records.mirrored(mirror.name)
        except StorageError as e:
            _log.warn("{error}", error=str(e))
            return []
        uploading = self._uploading(mirror)
        return [
            (sd_hash, role)
            for sd_hash, role, finished, _pinned in self._store.index.streams()
            if sd_hash not in mirrored and mirror.target.selects(role, finished)
            and self._exportable(mirror, sd_hash, uploading)
        ]

    def _uploading(self, mirror: _Mirror) -> set[str | None]:
        """
        The streams whose uploads to the mirror wait in the journal.
        """
        return {stream_of(source) for _key, source in self._open_rows(mirror)}

    def _exportable(self, mirror: _Mirror, sd_hash: str, uploading: set[str | None]) -> bool:
        """
        Whether the rule may export a stream now: the store holds all its
        blobs, no upload of it waits in the journal (C{uploading}), and it
        is not waiting to be tried again after a failure.
        """
        failed = mirror.failures.get(sd_hash)
        if failed is not None and self._clock.seconds() < failed[1]:
            return False
        if sd_hash in uploading:
            return False
        index = self._store.index
        return all(self._store.has_blob(blob) for blob in index.stream_blobs(sd_hash))

    async def _export(self, mirror: _Mirror, job: MirrorJob) -> None:
        assert mirror.transfers is not None
        job.state = RUNNING
        job.started_at = self._clock.seconds()
        source = StreamSource(self._store, job.sd_hash, self._run)
        self._sources.add(source)
        try:
            self._check_stream(job.sd_hash)
            await source.version()
            job.name = source.file_name
            job.size = source.size
            key = await self._choose_key(mirror, job.sd_hash, job.name)
            job.key = key
            mirror.active[key] = job
            try:
                result = await mirror.transfers.upload(source, key)
            finally:
                mirror.active.pop(key, None)
        except Exception as e:
            self._failed(mirror, job, e)
        else:
            self._stored(mirror, job, result)

    async def _choose_key(self, mirror: _Mirror, sd_hash: str, name: str) -> str:
        """
        The name of the stream's file on the mirror (see the module's
        docstring).
        """
        assert self._records is not None
        earlier = self._records.get(mirror.name, sd_hash)
        if earlier is not None:
            return earlier.key
        plain, short, whole = mirror_keys(name, sd_hash)
        others = {key for key, source in self._open_rows(mirror) if stream_of(source) != sd_hash}
        if (self._records.holder(mirror.name, plain) is None and plain not in others
                and not await self._host_call(mirror.host.exists(plain))):
            return plain
        if self._records.holder(mirror.name, short) is None and short not in others:
            return short
        return whole

    def _progressed(self, mirror: _Mirror, progress: TransferProgress) -> None:
        job = mirror.active.get(progress.key)
        if job is None:
            return
        job.done = progress.done
        job.size = progress.size
        if job.state == WAITING:
            job.state = RUNNING
            job.started_at = self._clock.seconds()

    def _stored(self, mirror: _Mirror, job: MirrorJob, result: TransferResult) -> None:
        now = self._clock.seconds()
        size = result.size if result.size is not None else job.size or 0
        job.key = result.key
        job.done = job.size = size
        mirror.failures.pop(job.sd_hash, None)
        if self._records is not None and job.sd_hash:
            try:
                self._records.add(MirrorRecord(mirror.name, job.sd_hash, result.key, size,
                                               result.sha384, now))
            except StorageError as e:
                # (not exported again by the rule before long)
                mirror.failures[job.sd_hash] = (1, now + MAX_RETRY_DELAY)
                _log.warn("Stream {sd_hash} is on mirror {target} as {key}, but {error}; "
                          "its rule may export it again", sd_hash=job.sd_hash,
                          target=mirror.name, key=result.key, error=str(e))
        job.end(FINISHED, now, outcome=result.outcome.value)
        _log.info(
            "Mirrored stream {sd_hash} to {target} as {key} ({size} bytes, {outcome})",
            sd_hash=job.sd_hash, target=mirror.name, key=result.key, size=size,
            outcome=result.outcome.value,
        )

    def _failed(self, mirror: _Mirror, job: MirrorJob, error: Exception) -> None:
        if isinstance(error, (ServiceError, CancelledError)):
            # the journal keeps the upload: it is resumed later
            self._defer_resume(mirror)
        if not isinstance(error, (P2PBlobError, CancelledError)):
            _log.failure("Exporting stream {sd_hash} to mirror {target} failed",
                         Failure(error), sd_hash=job.sd_hash, target=mirror.name)
        self._ended_badly(mirror, job, _reason(error), Outcome.FAILED.value)

    def _ended_badly(self, mirror: _Mirror, job: MirrorJob, reason: str, outcome: str) -> None:
        now = self._clock.seconds()
        if not self.running:
            job.end(INTERRUPTED, now, f"the node stopped ({reason}); an upload under way "
                    "goes on when it starts again", outcome)
            return
        if job.origin == "rule" and job.sd_hash:
            count = mirror.failures.get(job.sd_hash, (0, 0.0))[0] + 1
            delay = min(self._scan_interval * 2 ** min(count - 1, 20), MAX_RETRY_DELAY)
            mirror.failures[job.sd_hash] = (count, now + delay)
        job.end(FAILED, now, reason, outcome)
        _log.warn("Could not mirror stream {sd_hash} to {target}: {error}",
                  sd_hash=job.sd_hash or "?", target=mirror.name, error=reason)
