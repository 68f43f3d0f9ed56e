"""
The peer server as a service of the node: listens on an endpoint string once
the blob store is ready, and stops listening (closing connections) when the
node stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._fatal import give_up
from p2pblob.interfaces import IBlobStore, IQueryHandlerFactory, IRateLimiter
from p2pblob.peer.handlers import (
    BlobAvailabilityHandlerFactory,
    BlobRequestHandlerFactory,
    WalletInfoHandlerFactory,
)
from p2pblob.peer.server import BlobServerFactory

if TYPE_CHECKING:
    from p2pblob.wallet.rates import PaymentRateManager
    from p2pblob.wallet.wallet import Wallet

__all__ = ["PeerServerService", "make_server_factory"]

_log = Logger()


def make_server_factory(
    store: IBlobStore,
    clock: Any,
    payment_address: str,
    max_request_size: int,
    idle_timeout: float,
    max_connections_per_ip: int,
    rate_limiter: IRateLimiter | None = None,
    wallet: Wallet | None = None,
    rates: PaymentRateManager | None = None,
    host_debt_limit: int | None = None,
) -> BlobServerFactory:
    """
    A server that answers availability, blob, price and address queries
    from C{store}; its connections report to C{rate_limiter} and are
    throttled by it, if given.

    Offers are judged by C{rates} (free if not given).  When C{rates} asks
    for payment and a C{wallet} is given (paid mode), the server also tells
    peers that ask its payment key, takes their cheques, records what each
    blob sent costs and refuses blobs to peers over their debt limit.  In
    free mode it answers exactly as lbry-sdk's server does.

    @param host_debt_limit: micro-points the clients of one host may owe in
        all (L{None}: L{p2pblob.wallet.serving.HOST_DEBT_FACTOR} times the
        wallet's debt limit).
    """
    blob_requests = BlobRequestHandlerFactory(store, rates)
    payments: list[IQueryHandlerFactory] = []
    if wallet is not None and rates is not None and rates.paid:
        from p2pblob.wallet.serving import BlobCharges, ChequeHandlerFactory

        blob_requests.charges = BlobCharges(wallet, rates, host_debt_limit)
        # before the blob requests: a cheque is read before the debt check
        payments = [ChequeHandlerFactory(wallet), wallet.get_wallet_info_query_handler_factory()]
    return BlobServerFactory(
        [
            BlobAvailabilityHandlerFactory(store),
            *payments,
            blob_requests,
            WalletInfoHandlerFactory(payment_address),
        ],
        clock,
        max_request_size=max_request_size,
        idle_timeout=idle_timeout,
        max_connections_per_ip=max_connections_per_ip,
        rate_limiter=rate_limiter,
    )


class PeerServerService(Service):
    """
    @ivar listening: fires with the listening port once the server listens
        (fails if it cannot).
    """

    name = "peer-server"

    def __init__(
        self,
        reactor: Any,
        endpoint: str | IStreamServerEndpoint,
        factory: BlobServerFactory,
        ready: Deferred[Any],
    ) -> None:
        """
        @param endpoint: where to listen: an endpoint string, or an endpoint
            (the onion service of L{p2pblob.reach.tor.TorProvider}).
        """
        self._reactor = reactor
        self.endpoint = endpoint
        self.factory = factory
        self._ready = ready
        self._port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    @property
    def where(self) -> str:
        """
        The endpoint, in words for the log.
        """
        if isinstance(self.endpoint, str):
            return self.endpoint
        return str(getattr(self.endpoint, "description", "an onion service"))

    def address(self) -> str | None:
        """
        Where the server listens, C{host:port}, or L{None} while it does not.
        """
        if self._port is None:
            return None
        host: Any = self._port.getHost()
        name = getattr(host, "host", None)
        if name is None:
            return str(host)
        return f"[{name}]:{host.port}" if ":" in name else f"{name}:{host.port}"

    def startService(self) -> None:
        super().startService()

        async def listen(_: object) -> IListeningPort:
            endpoint = (
                serverFromString(self._reactor, self.endpoint)
                if isinstance(self.endpoint, str) else self.endpoint
            )
            port: IListeningPort = await endpoint.listen(self.factory)
            self._port = port
            address = port.getHost()
            _log.info(
                "Serving blobs to peers on {endpoint} ({address})",
                endpoint=self.where, address=address,
            )
            return port

        def failed(failure: Failure) -> None:
            if not self.running:
                # the node stopped before the server listened (an onion
                # service waiting for tor): nothing to give up
                self.listening.errback(failure)
                self.listening.addErrback(lambda _: None)
                return
            give_up(_log, self._reactor, self.listening, failure,
                    "Cannot serve peers on {endpoint}: {error}; stopping",
                    endpoint=self.where)

        def ready(result: object) -> object:
            Deferred.fromCoroutine(listen(result)).addCallbacks(self.listening.callback, failed)
            return result

        self._ready.addCallback(ready)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return None
        stopped: Deferred[None] = Deferred.fromCoroutine(self._stop(port))
        return stopped

    async def _stop(self, port: IListeningPort) -> None:
        await maybeDeferred(port.stopListening)
        await self.factory.close_all()
