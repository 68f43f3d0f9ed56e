"""
Running one download: the pieces of the 2015 design wired together.

    DownloadManager ── metadata handler   (which blobs make up the stream)
          │          ── progress manager   (which are still needed; output order)
          │          ── blob handler       (what to do with each blob, in order)
          └───────── connection manager ── blob requester ── client connections

L{Swarm} bundles what every download on a node shares (clock, store, peer
finder, how to connect to a peer).  L{fetch_blob} uses the same machinery for
a single blob of unknown length (an sd blob).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._buffers import BufferPool
from p2pblob.blob.staged import HeldBlobs, blob_buffers
from p2pblob.download.connections import ConnectionManager, Connector
from p2pblob.download.progress import StreamProgressManager
from p2pblob.download.requester import BlobRequester
from p2pblob.errors import InsufficientFundsError, NoPeersError
from p2pblob.interfaces import (
    IBlob,
    IBlobHandler,
    IBlobStore,
    IDownloadManager,
    IMetadataHandler,
    IPeerFinder,
    IStreamDescriptorValidator,
)
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor, parse_sd_blob

if TYPE_CHECKING:
    from p2pblob.wallet.paying import DownloadPayments

__all__ = [
    "DescriptorMetadataHandler",
    "DownloadManager",
    "StreamDescriptorValidator",
    "Swarm",
    "fetch_blob",
]

_log = Logger()

DEFAULT_STALL_TIMEOUT = 120.0


@dataclass
class Swarm:
    """
    What the downloads of one node share.

    @ivar stall_timeout: a download that gets no blob for this long fails
        with L{NoPeersError} (every peer lacks what is missing, or keeps
        failing).
    @ivar payments: how blobs are paid for (paid mode), or L{None} (free).
    """

    clock: IReactorTime
    store: IBlobStore
    peer_finder: IPeerFinder
    connect: Connector
    max_connections: int = 8
    per_peer: int = 2
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    buffers: BufferPool = field(default_factory=lambda: blob_buffers(keep=12))
    payments: DownloadPayments | None = None


@implementer(IStreamDescriptorValidator)
class StreamDescriptorValidator:
    """
    The descriptor of a stream about to be downloaded, from its sd blob.
    """

    def __init__(self, sd_blob: bytes, sd_hash: str) -> None:
        self.sd_blob = sd_blob
        self.sd_hash = sd_hash
        self._descriptor: StreamDescriptor | None = None

    @property
    def descriptor(self) -> StreamDescriptor:
        if self._descriptor is None:
            self.validate()
        assert self._descriptor is not None
        return self._descriptor

    def validate(self) -> bool:
        self._descriptor = parse_sd_blob(self.sd_blob)
        return True

    def info_to_show(self) -> list[tuple[str, str]]:
        descriptor = self.descriptor
        low, high = descriptor.plaintext_length_bounds
        return [
            ("file name", descriptor.suggested_file_name),
            ("size", f"{low} bytes" if low == high else f"{low} to {high} bytes"),
            ("blobs", str(len(descriptor.data_blobs))),
            ("sd hash", self.sd_hash),
        ]


@implementer(IMetadataHandler)
class DescriptorMetadataHandler:
    """
    A stream's blobs, all known from its descriptor.
    """

    def __init__(self, descriptor: StreamDescriptor) -> None:
        self._descriptor = descriptor

    def get_initial_blobs(self) -> Deferred[list[Any]]:
        return succeed(list(self._descriptor.data_blobs))

    def final_blob_num(self) -> int | None:
        blobs = self._descriptor.data_blobs
        return blobs[-1].blob_num if blobs else None


class _Watchdog:
    """
    Fails a download that makes no progress for C{timeout} seconds.
    """

    def __init__(self, clock: IReactorTime, timeout: float, expired: Any) -> None:
        self._clock = clock
        self._timeout = timeout
        self._expired = expired
        self._last = clock.seconds()
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        self._last = self._clock.seconds()
        self._call = self._clock.callLater(self._timeout, self._check)

    def progressed(self) -> None:
        self._last = self._clock.seconds()

    def _check(self) -> None:
        idle = self._clock.seconds() - self._last
        if idle >= self._timeout:
            self._call = None
            self._expired()
        else:
            self._call = self._clock.callLater(self._timeout - idle, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IDownloadManager)
class DownloadManager:
    """
    Downloads the data blobs of one stream and hands them, in order, to a
    blob handler.

    @param held: where the blobs received are kept in memory for the blob
        handler, if anywhere.
    @ivar finished: fires once every blob has been handled; fails with
        L{NoPeersError} if the download stalls, or with the handler's or
        the store's error.
    """

    def __init__(
        self,
        swarm: Swarm,
        metadata_handler: IMetadataHandler,
        blob_handler: IBlobHandler,
        position: int = 0,
        present_at_start: set[str] | None = None,
        held: HeldBlobs | None = None,
    ) -> None:
        self._swarm = swarm
        self._metadata = metadata_handler
        self._handler = blob_handler
        self._position = position
        self._infos: dict[int, BlobInfo] = {}
        self.progress: StreamProgressManager | None = None
        self.requester = BlobRequester(
            self, swarm.store, swarm.peer_finder, swarm.clock, swarm.buffers, held,
            swarm.payments,
        )
        self.connections = ConnectionManager(
            swarm.clock, swarm.connect, [self.requester], swarm.max_connections, swarm.per_peer
        )
        # paid mode: called when the wallet cannot pay for the next blob
        # (the stream downloader's insufficient_funds); by default the
        # download fails with the error
        self.insufficient_funds: Any = None
        self.funds_error: InsufficientFundsError | None = None
        self._watchdog = _Watchdog(swarm.clock, swarm.stall_timeout, self._stalled)
        self.finished: Deferred[None] = Deferred()
        # blobs already in the store when the download started
        self.present_at_start = present_at_start if present_at_start is not None else set()
        self.bytes_handled = 0

    # IDownloadManager

    def start_downloading(self) -> Deferred[bool]:
        async def start() -> bool:
            infos = await self._metadata.get_initial_blobs()
            self._infos = {info.blob_num: info for info in infos}
            self.progress = StreamProgressManager(self, infos, self._position)
            self.progress.finished.addCallbacks(self._complete, self.download_failed)
            store = self._swarm.store
            for info in self.progress.needed_blobs():
                if info.blob_hash and store.has_blob(info.blob_hash):
                    self.present_at_start.add(info.blob_hash)
            self.progress.start()
            for info in self.progress.needed_blobs():
                if info.blob_hash in self.present_at_start:
                    self.progress.blob_downloaded(store.get_blob(info.blob_hash), info)
            return self.resume_now()

        return Deferred.fromCoroutine(start())

    def resume_now(self) -> bool:
        if self.finished.called:
            return True
        assert self.progress is not None
        self.progress.start()
        if self.progress.needed_blobs():
            self.connections.start()
            self._watchdog.start()
        return True

    def resume_downloading(self) -> Deferred[bool]:
        return succeed(self.resume_now())

    def pause_downloading(self) -> Deferred[bool]:
        async def pause() -> bool:
            self._watchdog.stop()
            self.requester.cancel_all()
            await self.connections.stop()
            if self.progress is not None:
                await self.progress.stop()
            return True

        return Deferred.fromCoroutine(pause())

    def add_blobs_to_download(self, blobs: list[Any]) -> Deferred[list[tuple[bool, Any]]]:
        # every blob of a descriptor-described stream is known at the start
        return succeed([])

    def stream_position(self) -> int:
        return self.progress.stream_position() if self.progress else self._position

    def needed_blobs(self) -> list[Any]:
        return self.progress.needed_blobs() if self.progress else []

    def final_blob_num(self) -> int | None:
        return self._metadata.final_blob_num()

    def handle_blob(self, blob_num: int) -> Deferred[Any]:
        info = self._infos[blob_num]
        assert info.blob_hash is not None
        self._watchdog.progressed()
        handled = self._handler.blob_downloaded(self._swarm.store.get_blob(info.blob_hash), info)

        def counted(result: object) -> object:
            self.bytes_handled += info.length
            return result

        return handled.addCallback(counted)

    # what the requester reports

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> None:
        self._watchdog.progressed()
        if self.progress is not None:
            self.progress.blob_downloaded(blob, blob_info)

    def download_failed(self, failure: Failure) -> None:
        if not self.finished.called:
            self._shutdown()
            self.finished.errback(failure)

    def out_of_funds(self, error: InsufficientFundsError) -> None:
        self.funds_error = error
        if self.insufficient_funds is not None:
            self.insufficient_funds()
        else:
            self.download_failed(Failure(error))

    # endings

    def _complete(self, _: object) -> None:
        if self.finished.called:
            return
        # paid mode: the cheques for the last blobs go out now; the
        # connections stay open until they are acknowledged
        self.requester.cancel_all()
        flushing = self.requester.flushing()

        def finish(result: object) -> None:
            if not self.finished.called:
                self._shutdown()
                self.finished.callback(None)

        if flushing is None:
            finish(None)
        else:
            flushing.addBoth(finish)

    def _stalled(self) -> None:
        missing = len(self.needed_blobs())
        detail = self.requester.last_error or "no peer had the missing blobs"
        self.download_failed(Failure(NoPeersError(missing, detail)))

    def _shutdown(self) -> None:
        self._watchdog.stop()
        if self.progress is not None:
            self.progress.stop()
        self.requester.cancel_all()
        self.connections.stop().addErrback(lambda f: None)


class _OneBlob:
    """
    The "stream" of L{fetch_blob}: one blob, of unknown length.
    """

    def __init__(self, swarm: Swarm, blob_hash: str) -> None:
        self._info = BlobInfo(0, 0, "", blob_hash)
        # cancelling the fetch hangs up and stops the watchdog
        self.result: Deferred[IBlob] = Deferred(lambda d: self._shutdown())
        self.requester = BlobRequester(
            self, swarm.store, swarm.peer_finder, swarm.clock, swarm.buffers,
            payments=swarm.payments,
        )
        self.connections = ConnectionManager(
            swarm.clock, swarm.connect, [self.requester], swarm.max_connections, 1
        )
        self.watchdog = _Watchdog(swarm.clock, swarm.stall_timeout, self._stalled)

    def needed_blobs(self) -> list[BlobInfo]:
        return [] if self.result.called else [self._info]

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> None:
        self.download_finished(blob)

    def _shutdown(self) -> None:
        self.watchdog.stop()
        self.requester.cancel_all()
        self.connections.stop().addErrback(lambda f: None)

    def download_finished(self, result: IBlob | Failure) -> None:
        if not self.result.called:
            self._shutdown()
            if isinstance(result, Failure):
                self.result.errback(result)
            else:
                self.result.callback(result)

    def download_failed(self, failure: Failure) -> None:
        self.download_finished(failure)

    def out_of_funds(self, error: InsufficientFundsError) -> None:
        self.download_finished(Failure(error))

    def _stalled(self) -> None:
        detail = self.requester.last_error or "no peer has it"
        self.download_failed(Failure(NoPeersError(1, detail)))


def fetch_blob(swarm: Swarm, blob_hash: str) -> Deferred[IBlob]:
    """
    Download one blob whose length is not known (an sd blob) from the
    swarm's peers into the store; fires with the stored blob.  Cancelling
    the Deferred gives the blob up: the connections are closed.
    """
    if swarm.store.has_blob(blob_hash):
        return succeed(swarm.store.get_blob(blob_hash))
    one = _OneBlob(swarm, blob_hash)
    one.connections.start()
    one.watchdog.start()
    return one.result

