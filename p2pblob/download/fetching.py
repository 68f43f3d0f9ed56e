"""
Single blobs fetched from peers on demand: L{BlobFetcher}, which the
stream gateway (L{p2pblob.http.streaming}) calls for each blob a request
needs that the store lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.download.downloader import Dialer, tcp_connector
from p2pblob.download.manager import Swarm, fetch_blob
from p2pblob.errors import ConfigError
from p2pblob.interfaces import IBlobStore, IPeerFinder, IRateLimiter
from p2pblob.wallet.paying import DownloadPayments

__all__ = ["BlobFetcher"]

_log = Logger()

# seconds a fetch may go without any blob arriving before it fails (a
# player waiting for a blob should hear so well before a download would)
FETCH_STALL_TIMEOUT = 30.0


class BlobFetcher:
    """
    Call with a blob hash to have the blob brought into C{store} from the
    peers C{peer_finder()} finds; the Deferred fires once it is there.  Two
    requests for the same blob share one fetch.

    @param peer_finder: the node's peer finder (L{None}: no peers).
    @param payments_factory: how a fetch pays, in paid mode.
    @param dial: the endpoint to reach a peer through (Tor's), or L{None}
        to connect directly.
    """

    def __init__(
        self,
        reactor: Any,
        store: IBlobStore,
        peer_finder: Callable[[], IPeerFinder | None],
        rate_limiter: IRateLimiter | None = None,
        payments_factory: Callable[[], DownloadPayments | None] = lambda: None,
        peer_timeout: float = 30.0,
        stall_timeout: float = FETCH_STALL_TIMEOUT,
        dial: Dialer | None = None,
    ) -> None:
        self._reactor = reactor
        self._dial = dial
        self._store = store
        self._peer_finder = peer_finder
        self._rate_limiter = rate_limiter
        self._payments_factory = payments_factory
        self._peer_timeout = peer_timeout
        self._stall_timeout = stall_timeout
        self._fetching: dict[str, list[Deferred[None]]] = {}

    def __call__(self, blob_hash: str) -> Deferred[None]:
        if self._store.has_blob(blob_hash):
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        waiters = self._fetching.get(blob_hash)
        if waiters is not None:
            waiters.append(waiting)
            return waiting
        self._fetching[blob_hash] = [waiting]
        Deferred.fromCoroutine(self._fetch(blob_hash)).addBoth(self._done, blob_hash)
        return waiting

    async def _fetch(self, blob_hash: str) -> None:
        finder = self._peer_finder()
        if finder is None:
            raise ConfigError("no peers to fetch the blob from: this node is not on the DHT "
                              "and has no peers configured (--peer HOST:PORT)")
        swarm = Swarm(
            self._reactor,
            self._store,
            finder,
            tcp_connector(self._reactor, self._reactor, self._peer_timeout,
                          rate_limiter=self._rate_limiter, dial=self._dial),
            stall_timeout=self._stall_timeout,
            payments=self._payments_factory(),
        )
        await fetch_blob(swarm, blob_hash)

    def _done(self, result: None | Failure, blob_hash: str) -> None:
        waiters = self._fetching.pop(blob_hash, [])
        if isinstance(result, Failure):
            _log.info("Could not fetch blob {blob}: {error}", blob=blob_hash[:16],
                      error=result.value)
        for waiting in waiters:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(None)
