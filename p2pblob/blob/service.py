"""
The blob store as a service of the node.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._fatal import give_up
from p2pblob._threads import ThreadWorker
from p2pblob.blob._files import ScanResult
from p2pblob.blob.backend import BackendBlobStore
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.storage.configured import blob_storage_host
from p2pblob.storage.host import StorageHost

__all__ = ["BlobStoreService"]

_log = Logger()


class _Reactor(IReactorTime, IReactorThreads, IReactorCore):
    pass


class BlobStoreService(Service):
    """
    Opens the blob store (reconciling it with its files) when the node starts
    and closes it when the node stops.  Disk work runs in a pool of its own.

    The configuration's C{blob_storage} chooses where blobs are kept: the
    built-in disk store (C{local}), or any other storage plugin's backend
    through a L{StorageHost} (L{BackendBlobStore}).

    @ivar store: the L{BlobStore} (or L{BackendBlobStore}).
    @ivar host: the L{StorageHost} of the blobs' backend, or L{None} for
        the disk store.
    @ivar ready: fires with the reconciliation result once the store serves.
    """

    name = "blob-store"

    def __init__(self, reactor: _Reactor, config: Config, max_threads: int = 4) -> None:
        self._reactor = reactor
        self._worker = ThreadWorker(reactor, "p2pblob-disk", max_threads)
        self.host: StorageHost | None = None
        if config.blob_storage == "local":
            self.store = BlobStore(
                reactor, self._worker, config.blob_dir, config.index_path, config.disk_limit
            )
        else:
            self.host = blob_storage_host(reactor, config)
            self.store = BackendBlobStore(
                reactor, self._worker, self.host, config.index_path, config.disk_limit
            )
        self.ready: Deferred[ScanResult] = Deferred()

    @property
    def worker(self) -> ThreadWorker:
        """
        The threads the store does its blocking work in (for others' work
        on blobs: publishing files).
        """
        return self._worker

    def startService(self) -> None:
        super().startService()
        self._worker.start()
        if self.host is not None:
            self.host.startService()
        started = Deferred.fromCoroutine(self.store.start())
        started.addCallbacks(self.ready.callback, self._failed)

    def _failed(self, failure: Failure) -> None:
        give_up(_log, self._reactor, self.ready, failure,
                "Could not open the blob store: {error}; stopping")

    def stopService(self) -> None:
        super().stopService()
        self.store.stop()
        if self.host is not None:
            self.host.stopService()
        self._worker.stop()
