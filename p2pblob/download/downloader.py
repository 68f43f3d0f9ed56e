"""
Downloading a stream into a file: the stream downloader, its factory, and
the function the command line and the node call.

A download is resumable at blob level: blobs already verified in the store
are not fetched again, and the output continues from the last checkpoint of
its part file (see L{p2pblob.download.output}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._threads import BlockingRunner, one_at_a_time
from p2pblob.blob.hashing import blob_hash as hash_of
from p2pblob.blob.staged import HeldBlobs
from p2pblob.blob.store import ROLE_DOWNLOADED
from p2pblob.download.connections import Connector
from p2pblob.download.manager import (
    DescriptorMetadataHandler,
    DownloadManager,
    StreamDescriptorValidator,
    Swarm,
    fetch_blob,
)
from p2pblob.download.output import DecryptingBlobHandler, PartialOutput
from p2pblob.download.requester import MAX_BUFFERED_BLOBS
from p2pblob.errors import DescriptorError, P2PBlobError, PaymentError
from p2pblob.interfaces import (
    IConnectionManager,
    IRateLimiter,
    IStreamDescriptorValidator,
    IStreamDownloader,
    IStreamDownloaderFactory,
)
from p2pblob.peer.client import BlobExchangeClient
from p2pblob.peer.peer import Peer
from p2pblob.stream.names import safe_file_name

__all__ = [
    "DownloadStatus",
    "FileStreamDownloader",
    "FileStreamDownloaderFactory",
    "Dialer",
    "get_descriptor",
    "tcp_connector",
]

_log = Logger()

# Blobs kept in memory after they are stored, until the output takes them:
# as many as the requester lets arrive ahead of the store.
HELD_BLOBS = MAX_BUFFERED_BLOBS


Dialer = Callable[[str, int], IStreamClientEndpoint]


def tcp_connector(
    reactor: IReactorTCP,
    clock: IReactorTime,
    timeout: float = 30.0,
    connect_timeout: float = 3.0,
    rate_limiter: IRateLimiter | None = None,
    dial: Dialer | None = None,
) -> Connector:
    """
    Connect to peers over TCP (host names and IPv6 included).

    @param dial: gives the endpoint to reach a peer's C{host} and C{port}
        through (Tor's, for onion peers); L{None} to connect directly.
    """

    def connect(peer: Peer, manager: IConnectionManager) -> Deferred[Any]:
        endpoint: IStreamClientEndpoint
        if dial is None:
            endpoint = HostnameEndpoint(reactor, peer.host, peer.port, timeout=connect_timeout)
        else:
            endpoint = dial(peer.host, peer.port)
        protocol = BlobExchangeClient(peer, manager, clock, timeout, rate_limiter)
        connected: Deferred[Any] = connectProtocol(endpoint, protocol)
        return connected

    return connect


async def get_descriptor(swarm: Swarm, source: str | bytes) -> StreamDescriptorValidator:
    """
    The validated descriptor of a stream named by its sd blob's bytes (an
    .sd file's content) or its sd hash (fetched from the swarm if the store
    lacks it).  The sd blob is kept in the store, so that we serve it too.
    """
    if isinstance(source, bytes):
        sd_blob = source
        sd_hash = hash_of(sd_blob)
        validator = StreamDescriptorValidator(sd_blob, sd_hash)
        validator.validate()
        await swarm.store.put_blob(sd_blob)
        return validator
    blob = await fetch_blob(swarm, source)
    sd_blob = await blob.read()
    validator = StreamDescriptorValidator(sd_blob, source)
    try:
        validator.validate()
    except DescriptorError:
        # an sd hash that names something else: do not keep serving it
        await swarm.store.delete_blobs([source])
        raise
    return validator


@dataclass
class DownloadStatus:
    """
    How far a download has got, for progress displays.
    """

    total_bytes: int
    done_bytes: int
    peers: int
    blobs_total: int
    blobs_done: int


@implementer(IStreamDownloader)
class FileStreamDownloader:
    """
    Downloads one stream and writes it, decrypted, as a file in a directory.

    L{start}'s Deferred fires with the path of the finished file.

    @param run: runs blocking work.
    @param output_run: runs the output's blocking work; it must run its jobs
        one at a time, in order (a L{ThreadWorker} of one thread does).  By
        default, C{run} is given them one at a time.
    """

    def __init__(
        self,
        swarm: Swarm,
        run: BlockingRunner,
        validator: StreamDescriptorValidator,
        directory: Path,
        output_run: BlockingRunner | None = None,
    ) -> None:
        self._swarm = swarm
        # the output takes its blobs in order: the handler is given the next
        # before the last is written (see StreamProgressManager), so its
        # jobs must run one at a time, in order
        self._run = output_run or one_at_a_time(run)
        self.validator = validator
        self.descriptor = validator.descriptor
        self.directory = directory
        self.output = PartialOutput(
            directory, validator.sd_hash, safe_file_name(self.descriptor.suggested_file_name)
        )
        self.manager: DownloadManager | None = None
        self._result: Deferred[Path] | None = None
        self._saved = False
        self.resumed_blobs = 0

    def status(self) -> DownloadStatus:
        blobs = self.descriptor.data_blobs
        total = sum(info.length for info in blobs)
        manager = self.manager
        if manager is None:
            return DownloadStatus(total, 0, 0, len(blobs), 0)
        needed = {info.blob_num for info in manager.needed_blobs()}
        done = sum(info.length for info in blobs if info.blob_num not in needed)
        return DownloadStatus(
            total, done, manager.connections.connection_count, len(blobs), len(blobs) - len(needed)
        )

    def start(self) -> Deferred[Any]:
        if self._result is None:
            self._result = Deferred.fromCoroutine(self._download())
        return self._result

    async def _download(self) -> Path:
        store = self._swarm.store
        descriptor = self.descriptor
        await store.add_stream(self.validator.sd_hash, descriptor.blob_hashes, ROLE_DOWNLOADED)
        self.resumed_blobs = await self._run(self.output.open)
        if self._saved:
            # stopped while the file was being opened: stop() saved it,
            # and did not see a download manager to stop
            raise CancelledError()
        if self.resumed_blobs:
            _log.info(
                "Resuming {name} after {count} blob(s)",
                name=self.output.file_name, count=self.resumed_blobs,
            )
        # blobs verified in an earlier run are hashed again as they are read
        present: set[str] = set()
        # blobs just received are decrypted from memory, not read back
        places = {info.blob_hash: info.blob_num for info in descriptor.data_blobs}
        held = HeldBlobs(self._swarm.buffers, HELD_BLOBS, places.get)
        handler = DecryptingBlobHandler(self._run, descriptor.key, self.output, present, held)
        manager = self.manager = DownloadManager(
            self._swarm, DescriptorMetadataHandler(descriptor), handler, self.resumed_blobs,
            present, held,
        )
        manager.insufficient_funds = self.insufficient_funds
        try:
            await manager.start_downloading()
            await manager.finished
            path = await self._run(self.output.finish)
        except BaseException:
            await self._save()
            raise
        finally:
            held.clear()
        await store.set_stream_finished(self.validator.sd_hash)
        return path

    async def _save(self) -> None:
        if self._saved:
            return
        self._saved = True
        if self.manager is not None:
            await self.manager.pause_downloading()
        try:
            await self._run(self.output.checkpoint)
        except OSError as e:
            _log.warn("Could not save the download's progress: {error}", error=e)
        await self._run(self.output.discard_if_empty)

    def stop(self) -> Deferred[None]:
        """
        Stop the download, keeping what was verified and written so far;
        a later download of the same stream continues from there.
        """
        result = self._result
        if result is None or result.called:
            return succeed(None)

        async def stop() -> None:
            await self._save()
            result.cancel()
            try:
                await result
            except BaseException:
                pass

        return Deferred.fromCoroutine(stop())

    def insufficient_funds(self) -> None:
        """
        The wallet cannot pay for the next blob: the download stops, its
        progress saved (run it again once the wallet holds more points), and
        fails with the L{p2pblob.errors.InsufficientFundsError} that says how many points
        were needed.
        """
        manager = self.manager
        if manager is not None:
            error: P2PBlobError = manager.funds_error or PaymentError(
                "the wallet holds too few points to pay for the download"
            )
            manager.download_failed(Failure(error))


@implementer(IStreamDownloaderFactory)
class FileStreamDownloaderFactory:
    """
    Makes L{FileStreamDownloader}s that save streams into a directory.
    """

    def __init__(self, swarm: Swarm, run: BlockingRunner, directory: Path) -> None:
        self._swarm = swarm
        self._run = run
        self.directory = directory

    def get_downloader_options(
        self, sd_validator: IStreamDescriptorValidator, payment_rate_manager: Any
    ) -> list[tuple[str, str]]:
        return [("directory to save the file in", str(self.directory))]

    def make_downloader(
        self,
        sd_validator: IStreamDescriptorValidator,
        options: list[str],
        payment_rate_manager: Any,
    ) -> Deferred[IStreamDownloader]:
        directory = Path(options[0]) if options else self.directory
        assert isinstance(sd_validator, StreamDescriptorValidator)
        return succeed(FileStreamDownloader(self._swarm, self._run, sd_validator, directory))

    def get_description(self) -> str:
        return "Save the stream as a file"


ProgressCallback = Callable[[DownloadStatus], None]
