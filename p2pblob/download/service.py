"""
The node's downloads: L{DownloadService} downloads streams into files,
several at once, and keeps a list of them in a small SQLite file, so that a
node stopped, or killed, in the middle of a download resumes it at its next
start.

The life of a download (the only moves L{Download.move
<p2pblob.download._streams.Download.move>} allows)::

    waiting   -> running    its descriptor is known, its blobs are coming
              -> failed     no peers, no descriptor, a bad descriptor
    running   -> finished   the file is written under its final name
              -> failed     stalled, disk full, ... (the error says why)
    waiting,
    running   -> paused     pause(): progress kept (part file checkpoint)
              -> cancelled  cancel(): part file removed, blobs kept
    paused,
    failed    -> cancelled
    paused,
    failed,
    cancelled -> waiting    resume(), or start_download() again
    any but
    finished  -> finished   a download that was being stopped completed

At most C{max_running} downloads (L{MAX_RUNNING} by default) hold a slot at
once, from fetching their descriptor to their end; the others stay
C{"waiting"}, and take a slot, oldest first, as one frees up.  Each running
download has its own L{Swarm} and L{FileStreamDownloader}; they share the
node's blob store, peer finder and rate limiter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import ThreadWorker
from p2pblob.blob.store import ROLE_PUBLISHED, BlobStore
from p2pblob.config import Config
from p2pblob.download._records import DownloadRecords, StreamRecord
from p2pblob.download._streams import (
    CANCELLED,
    FAILED,
    FINISHED,
    PAUSED,
    RUNNING,
    WAITING,
    Attempt,
    Download,
    StreamInfo,
    describe_failure,
    failure_kind,
    file_size,
    read_source,
    remove_partial,
)
from p2pblob.download.downloader import (
    Dialer,
    FileStreamDownloader,
    get_descriptor,
    tcp_connector,
)
from p2pblob.download.manager import DEFAULT_STALL_TIMEOUT, Swarm
from p2pblob.errors import ConfigError, StreamError, UnknownStreamError
from p2pblob.interfaces import IPeerFinder, IRateLimiter
from p2pblob.wallet.paying import DownloadPayments

__all__ = [
    "CANCELLED", "FAILED", "FINISHED", "MAX_RUNNING", "PAUSED", "RUNNING", "WAITING",
    "DownloadService", "StreamInfo",
]

_log = Logger()

MAX_RUNNING = 3
"""
How many downloads run at once by default.
"""


PEER_TIMEOUT = 30.0
"""
The seconds a peer may stay silent in the middle of an exchange.
"""


class DownloadService(Service):
    """
    Downloads streams into files, on demand, and resumes the unfinished
    ones at start.

    @param config: the node's configuration (kept for those who show the
        service's settings).
    @param store: where the blobs go; streams are recorded in it as
        downloads.
    @param peer_finder: called as each download starts: the node's peer
        finder, or L{None} when it has none (the download then fails).
    @param rate_limiter: what limits and counts the downloads' traffic.
    @param state_path: the SQLite file of the list of downloads.
    @param default_output: the directory files go to when none is named.
    @param payments_factory: called as each download starts: how it pays
        for blobs (paid mode), or L{None} (free).
    @param store_ready: fires once C{store} is open; no download starts
        before.
    @param max_running: how many downloads run at once.
    @param stall_timeout: a download that receives nothing for this long
        fails.
    @param peer_timeout: seconds a peer may stay silent in an exchange.
    @param dial: the endpoint to reach a peer through (Tor's), or L{None}
        to connect directly (L{tcp_connector}).
    @ivar failures: downloads that failed, by kind (L{failure_kind}).
    """

    name = "downloads"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: BlobStore,
        *,
        peer_finder: Callable[[], IPeerFinder | None],
        rate_limiter: IRateLimiter | None = None,
        state_path: Path,
        default_output: Path,
        payments_factory: Callable[[], DownloadPayments | None] = lambda: None,
        store_ready: Deferred[Any] | None = None,
        max_running: int = MAX_RUNNING,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        peer_timeout: float = PEER_TIMEOUT,
        dial: Dialer | None = None,
    ) -> None:
        self._reactor = reactor
        self._dial = dial
        self.failures: Counter[str] = Counter()
        self.config = config
        self._store = store
        self._peer_finder = peer_finder
        self._rate_limiter = rate_limiter
        self.state_path = state_path
        self.default_output = default_output
        self._payments_factory = payments_factory
        self.max_running = max_running
        self.stall_timeout = stall_timeout
        self.peer_timeout = peer_timeout
        self._downloads: dict[str, Download] = {}
        self._records: DownloadRecords | None = None
        self._scheduling = False
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = reactor
        self._store_open = store_ready is None
        if store_ready is not None:
            store_ready.addCallback(self._opened)

    # life cycle

    def startService(self) -> None:
        records = DownloadRecords(self.state_path)
        early, self._downloads = self._downloads, {}
        for record in records.load():
            if record.state == RUNNING:
                record.state = WAITING
            self._downloads[record.sd_hash] = Download(record)
        self._records = records
        for sd_hash, download in early.items():
            # asked for before the start
            if sd_hash not in self._downloads:
                self._downloads[sd_hash] = download
                self._save(download)
        super().startService()
        self._sampler.start(1.0, now=False)
        waiting = sum(1 for d in self._downloads.values() if d.state == WAITING)
        _log.info(
            "{count} download(s) known, {waiting} to run; files go to {directory}",
            count=len(self._downloads), waiting=waiting, directory=str(self.default_output),
        )
        self._schedule()

    def _opened(self, result: object) -> object:
        self._store_open = True
        self._schedule()
        return result

    def stopService(self) -> Deferred[None]:
        """
        Stop every download (each saves its progress, and resumes at the
        next start) and close the list of downloads.
        """
        super().stopService()
        if self._sampler.running:
            self._sampler.stop()
        halting = [
            Deferred.fromCoroutine(self._halt(download, None))
            for download in self._downloads.values() if download.attempt is not None
        ]
        if halting:
            _log.info(
                "Stopping {count} download(s); they resume at the next start",
                count=len(halting),
            )

        def close(result: object) -> None:
            if isinstance(result, Failure):
                _log.failure("Could not stop every download", result)
            if self._records is not None:
                self._records.close()
                self._records = None

        return gatherResults(halting, consumeErrors=True).addBoth(close)

    # what the API calls

    def start_download(self, source: str | bytes, output_dir: Path | None = None) -> StreamInfo:
        """
        Download the stream named by C{source} (its sd hash, or its sd
        blob's bytes) into C{output_dir} (by default C{default_output}),
        under the name it suggests.  A stream already known is not added
        twice: a paused, failed or cancelled one is resumed (in its own
        directory), a finished one is left as it is (delete it to download
        it again).

        @raise DescriptorError: if C{source} names no stream.
        @raise ConfigError: if C{output_dir} is not a directory.
        """
        sd_hash, sd_blob, descriptor = read_source(source)
        directory = (self.default_output if output_dir is None else Path(output_dir))
        directory = directory.expanduser().absolute()
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory: no file can be saved there")
        download = self._downloads.get(sd_hash)
        if download is None:
            record = StreamRecord(sd_hash, str(directory), WAITING, added=self._reactor.seconds())
            download = self._downloads[sd_hash] = Download(record)
            _log.info("Added the download of stream {sd_hash}", sd_hash=sd_hash)
        elif download.state in (PAUSED, FAILED, CANCELLED):
            self._resume(download)
        if sd_blob is not None and descriptor is not None and download.record.sd_blob is None:
            download.record.sd_blob = sd_blob
            download.learned(descriptor)
        self._save(download)
        self._schedule()
        return download.info()

    def streams(self) -> list[StreamInfo]:
        """
        Every download known, oldest first.
        """
        known = sorted(self._downloads.values(), key=lambda d: d.record.added)
        return [download.info() for download in known]

    def stream(self, sd_hash: str) -> StreamInfo:
        """
        @raise UnknownStreamError: if no download of C{sd_hash} is known.
        """
        return self._find(sd_hash).info()

    def pause(self, sd_hash: str) -> Deferred[StreamInfo]:
        """
        Stop a waiting or running download, keeping its progress.  Fires
        once it is stopped; fails with L{UnknownStreamError}.
        """
        return Deferred.fromCoroutine(self._pause(sd_hash))

    async def _pause(self, sd_hash: str) -> StreamInfo:
        download = self._find(sd_hash)
        if download.state in (WAITING, RUNNING):
            await self._halt(download, PAUSED)
            _log.info("Paused the download of {name}", name=download.label)
        return download.info()

    def resume(self, sd_hash: str) -> StreamInfo:
        """
        Run a paused, failed or cancelled download again, from where its
        part file got to.

        @raise UnknownStreamError: if no download of C{sd_hash} is known.
        """
        download = self._find(sd_hash)
        if download.state in (PAUSED, FAILED, CANCELLED):
            self._resume(download)
            self._save(download)
            self._schedule()
        return download.info()

    def cancel(self, sd_hash: str) -> Deferred[StreamInfo]:
        """
        Stop a download and remove its part file; its blobs stay in the
        store.  Fires once it is stopped; fails with L{UnknownStreamError}.
        """
        return Deferred.fromCoroutine(self._cancel(sd_hash))

    async def _cancel(self, sd_hash: str) -> StreamInfo:
        download = self._find(sd_hash)
        if download.state not in (FINISHED, CANCELLED):
            await self._halt(download, CANCELLED)
            if download.state == CANCELLED:
                remove_partial(download.record)
                download.record.done_bytes = 0
                self._save(download)
                _log.info("Cancelled the download of {name}", name=download.label)
        return download.info()

    def delete(self, sd_hash: str, delete_blobs: bool = False) -> Deferred[None]:
        """
        Stop a download and forget it, removing its part file (never a
        finished file); with C{delete_blobs}, remove its blobs from the
        store too, unless this node published the stream.  Fails with
        L{UnknownStreamError}.
        """
        return Deferred.fromCoroutine(self._delete(sd_hash, delete_blobs))

    async def _delete(self, sd_hash: str, delete_blobs: bool) -> None:
        download = self._find(sd_hash)
        record = download.record
        del self._downloads[record.sd_hash]
        if self._records is not None:
            self._records.remove(record.sd_hash)
        await self._halt(download, None)
        if download.state != FINISHED:
            remove_partial(record)
        if delete_blobs:
            await self._delete_blobs(record.sd_hash)
        _log.info(
            "Deleted the download of {name}{blobs}", name=download.label,
            blobs=" and its blobs" if delete_blobs else "",
        )

    async def _delete_blobs(self, sd_hash: str) -> None:
        index = self._store.index
        roles = {sd: role for sd, role, _, _ in index.streams()}
        if roles.get(sd_hash) == ROLE_PUBLISHED:
            _log.info("Kept the blobs of stream {sd_hash}: this node published it", sd_hash=sd_hash)
            return
        if sd_hash in roles:
            await self._store.remove_stream(sd_hash, True)
        if index.stream_of(sd_hash) is None:
            await self._store.delete_blobs([sd_hash])

    # the queue

    def _find(self, sd_hash: str) -> Download:
        download = self._downloads.get(sd_hash.strip().lower()) if isinstance(sd_hash, str) else None
        if download is None:
            raise UnknownStreamError(str(sd_hash))
        return download

    def _resume(self, download: Download) -> None:
        download.move(WAITING)
        download.record.error = None
        _log.info("Resuming the download of {name}", name=download.label)

    def _schedule(self) -> None:
        """
        Start the oldest waiting downloads while slots are free.
        """
        if self._scheduling:
            return  # the loop below looks again
        self._scheduling = True
        try:
            while self.running and self._store_open:
                active = sum(1 for d in self._downloads.values() if d.attempt is not None)
                waiting = [
                    d for d in self._downloads.values() if d.state == WAITING and d.attempt is None
                ]
                if active >= self.max_running or not waiting:
                    break
                self._begin(min(waiting, key=lambda d: d.record.added))
        finally:
            self._scheduling = False

    def _begin(self, download: Download) -> None:
        run = download.attempt = Attempt(self._reactor.seconds())
        task: Deferred[Any] = Deferred.fromCoroutine(self._download(download, run))
        run.task = task.addBoth(self._ended, download, run)
        task.addErrback(lambda f: _log.failure("Could not record how a download ended", f))

    async def _halt(self, download: Download, state: str | None) -> None:
        """
        Move C{download} to C{state} (unless L{None}) and stop its attempt,
        if one runs; return once it is over.
        """
        # (how far it got, kept for the paused download's listing)
        download.refresh()
        if state is not None:
            download.move(state)
            self._save(download)
        run = download.attempt
        if run is None:
            return
        run.halted = True
        over = run.over()
        if run.downloader is not None:
            await run.downloader.stop()
        else:
            assert run.task is not None
            run.task.cancel()
        await over

    # one attempt

    async def _download(self, download: Download, run: Attempt) -> Path:
        """
        One attempt at C{download}: its descriptor (from the store, or from
        peers), then its blobs; return the finished file.
        """
        record = download.record
        finder = self._peer_finder()
        if finder is None:
            raise ConfigError(
                "no peers to download from: this node is not on the DHT and has no "
                "peers configured (--peer HOST:PORT)"
            )
        run.payments = self._payments_factory()
        swarm = Swarm(
            self._reactor,
            self._store,
            finder,
            tcp_connector(
                self._reactor, self._reactor, self.peer_timeout, rate_limiter=self._rate_limiter,
                dial=self._dial,
            ),
            stall_timeout=self.stall_timeout,
            payments=run.payments,
        )
        source = record.sd_hash if record.sd_blob is None else record.sd_blob
        validator = await get_descriptor(swarm, source)
        download.learned(validator.descriptor)
        directory = Path(record.output_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StreamError(f"cannot save files in {directory}: {e.strerror}") from None
        # the output is decrypted and written in order, by a thread of its own
        worker = ThreadWorker(self._reactor, "p2pblob-output", max_threads=1)
        worker.start()
        try:
            downloader = FileStreamDownloader(swarm, worker, validator, directory, worker)
            run.downloader = downloader
            download.move(RUNNING)
            self._save(download)
            _log.info(
                "Downloading {name} ({size} bytes, stream {sd_hash}) into {directory}",
                name=download.label, size=record.total_bytes, sd_hash=record.sd_hash,
                directory=str(directory),
            )
            path: Path = await downloader.start()
        finally:
            worker.stop()
        return path

    def _ended(self, result: object, download: Download, run: Attempt) -> None:
        """
        Record how an attempt ended (unless it was told to stop: then whoever
        stopped it moved the download), and start the next one waiting.
        """
        if download.attempt is run:
            download.attempt = None
        download.refresh()
        if run.payments is not None:
            try:
                run.payments.settle()
            except Exception:
                _log.failure("Could not pay for the blobs of {name}", name=download.label)
        record = download.record
        if isinstance(result, Path):
            download.move(FINISHED)
            record.output, record.error = str(result), None
            record.done_bytes = record.total_bytes or 0
            _log.info(
                "Downloaded {name} to {path}: {size} bytes in {seconds:.1f} s",
                name=download.label, path=str(result), size=file_size(result),
                seconds=self._reactor.seconds() - run.started,
            )
        elif isinstance(result, Failure) and not run.halted:
            download.move(FAILED)
            record.error = describe_failure(result)
            self.failures[failure_kind(result)] += 1
            _log.warn(
                "The download of {name} failed: {error}", name=download.label, error=record.error
            )
        self._save(download)
        self._schedule()

    # progress

    def _sample(self) -> None:
        now = self._reactor.seconds()
        for download in self._downloads.values():
            run = download.attempt
            if run is not None and run.downloader is not None:
                manager = run.downloader.manager
                if manager is not None:
                    run.meter.add(now, manager.requester.bytes_received)

    def _save(self, download: Download) -> None:
        record = download.record
        if self._records is not None and self._downloads.get(record.sd_hash) is download:
            self._records.save(record)
