"""
The composition root: L{make_node} builds the node's whole service tree from
a L{Config}.  Nothing else constructs services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.web.resource import IResource

from p2pblob.blob._files import ScanResult
from p2pblob.blob.service import BlobStoreService
from p2pblob.config import Config
from p2pblob.dht.service import DHTService, guessed_udp_port
from p2pblob.discovery.announcer import Announcer
from p2pblob.discovery.holdings import store_holdings
from p2pblob.discovery.node_finder import node_peer_finder
from p2pblob.download.fetching import BlobFetcher
from p2pblob.download.service import DownloadService
from p2pblob.gateway.service import GatewayService
from p2pblob.http.api import NodeAPI, NodeParts
from p2pblob.http.auth import RequestGuard, listens_on_loopback, load_or_create_token
from p2pblob.http.metrics import DownloadStats, MetricsResource, metrics_registry
from p2pblob.http.publishing import APIRoot, PublishResource
from p2pblob.http.service import APIService
from p2pblob.interfaces import IBlobStore
from p2pblob.node_reach import onion_of, peer_servers, port_mapper_of, tor_dialer, tor_provider
from p2pblob.peer.handlers import BlobRequestHandlerFactory
from p2pblob.peer.peer import PeerRegistry
from p2pblob.peer.server import BlobServerFactory
from p2pblob.peer.service import PeerServerService, make_server_factory
from p2pblob.publish.manifest import ManifestPublisher, store_room
from p2pblob.publish.watch import FolderWatcher, store_publisher
from p2pblob.ratelimit import RateLimiter, TrafficCounters
from p2pblob.reach.reachability import MappingWhenListening, Reachability
from p2pblob.storage.mirror import MirrorService
from p2pblob.wallet.paying import DownloadPayments
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.units import to_micro
from p2pblob.wallet.wallet import Wallet, open_wallet

__all__ = ["Node", "make_node"]


class Node(MultiService):
    """
    A running p2pblob node.

    @ivar config: what it was built from.
    @ivar blob_store: the L{BlobStoreService}.
    @ivar peer_server: the L{PeerServerService}.
    @ivar dht: the L{DHTService}, unless the node stays off the DHT.
    @ivar announcer: the L{Announcer} of the DHT's blobs, with the DHT.
    @ivar rate_limiter: the L{RateLimiter} of the peer connections, and
        their traffic counters.
    @ivar wallet: the L{Wallet} (its ledger is open while the node runs),
        which takes the payments for the blobs served in paid mode.
    @ivar rates: the node's prices, L{PaymentRateManager}.
    @ivar downloads: the L{DownloadService} of the streams the node
        downloads itself (steered through the API).
    @ivar api: the L{APIService}, unless the node has no HTTP API.
    @ivar watcher: the L{FolderWatcher} of the watched folder, if any.
    @ivar mirrors: the L{MirrorService} that exports streams to the
        configured mirrors, if there are any.
    @ivar gateway: the S3-compatible L{GatewayService}, if it is
        configured.
    @ivar publisher: the L{ManifestPublisher} of the files published over
        HTTP (C{/publish/} on the API), if the node has an API.
    @ivar reach: the node's L{Reachability}: whether and where peers reach
        it.
    @ivar port_mapper: the UPnP port mapper (L{MappingWhenListening}), with
        C{--upnp}.
    @ivar tor: the L{p2pblob.reach.tor.TorProvider}, when the node uses Tor.
    @ivar onion_server: the peer server's onion service (a second
        L{PeerServerService} on the same factory), with C{--tor} unless the
        peer server itself listens only as an onion service.
    """

    def __init__(
        self,
        config: Config,
        blob_store: BlobStoreService,
        peer_server: PeerServerService,
        dht: DHTService | None = None,
        announcer: Announcer | None = None,
        rate_limiter: RateLimiter | None = None,
        wallet: Wallet | None = None,
        rates: PaymentRateManager | None = None,
        api: APIService | None = None,
        downloads: DownloadService | None = None,
        watcher: FolderWatcher | None = None,
        mirrors: MirrorService | None = None,
        gateway: GatewayService | None = None,
        publisher: ManifestPublisher | None = None,
        reach: Reachability | None = None,
        port_mapper: MappingWhenListening | None = None,
        tor: Any = None,
        onion_server: PeerServerService | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reach = reach if reach is not None else Reachability(config.reachable)
        self.tor = tor
        if tor is not None:
            # (first: the peer server's onion service and the downloads'
            # connections wait for it)
            tor.setServiceParent(self)
        self.wallet = wallet
        self.rates = rates
        self.blob_store = blob_store
        self.peer_server = peer_server
        self.dht = dht
        self.announcer = announcer
        self.rate_limiter = rate_limiter
        blob_store.setServiceParent(self)
        if wallet is not None:
            wallet.setServiceParent(self)
        if rate_limiter is not None:
            rate_limiter.setServiceParent(self)
        if dht is not None:
            dht.setServiceParent(self)
        if announcer is not None:
            announcer.setServiceParent(self)
        peer_server.setServiceParent(self)
        self.onion_server = onion_server
        if onion_server is not None:
            onion_server.setServiceParent(self)
        self.port_mapper = port_mapper
        if port_mapper is not None:
            # (after the DHT: both wait for the peer server to listen, and
            # the mapper maps the DHT's port once it has one)
            port_mapper.setServiceParent(self)
        self.watcher = watcher
        if watcher is not None:
            watcher.setServiceParent(self)
        self.downloads = downloads
        if downloads is not None:
            # (after the store and the peer server: stopped before them)
            downloads.setServiceParent(self)
        self.mirrors = mirrors
        if mirrors is not None:
            # (after the store: stopped before it, so that no upload reads a
            # closed store)
            mirrors.setServiceParent(self)
        self.gateway = gateway
        if gateway is not None:
            # (after the store and the downloads: stopped before them)
            gateway.setServiceParent(self)
        self.publisher = publisher
        if publisher is not None:
            # (after the store: stopped before it, its uploads saved first)
            publisher.setServiceParent(self)
        self.api = api
        if api is not None:
            api.setServiceParent(self)


def make_node(reactor: Any, config: Config) -> Node:
    """
    Build a node (not yet started) on C{reactor}.
    """
    blob_store = BlobStoreService(reactor, config)
    served: IBlobStore = blob_store.store
    if config.corrupt_uploads:
        from p2pblob.testing import CorruptingBlobStore

        served = CorruptingBlobStore(served)
    rate_limiter = RateLimiter(
        reactor,
        max_upload=config.max_upload,
        max_download=config.max_download,
        max_upload_per_connection=config.max_upload_per_connection,
        max_download_per_connection=config.max_download_per_connection,
        counters=TrafficCounters(lambda blob_hash: blob_store.store.index.stream_of(blob_hash)),
    )
    # the wallet is opened even in free mode (its ledger shows nothing
    # then), so that `p2pblob wallet` has a key to show; only in paid mode
    # does the server take payments (make_server_factory)
    wallet = open_wallet(reactor, config)
    rates = PaymentRateManager(config.price, config.min_price)
    factory = make_server_factory(
        served,
        reactor,
        config.payment_address,
        config.max_request_size,
        config.idle_timeout,
        config.max_connections_per_ip,
        rate_limiter=rate_limiter,
        wallet=wallet,
        rates=rates,
        host_debt_limit=(
            None if config.host_debt_limit is None else to_micro(config.host_debt_limit)
        ),
    )
    tor = tor_provider(reactor, config)
    peer_server, onion_server = peer_servers(reactor, config, factory, blob_store, tor)
    dht, announcer, port_mapper = None, None, None
    # (a peer server listening as an onion service only has no address
    # peers could connect to directly)
    reach = Reachability(config.reachable and config.onion_port is None,
                         config.external_address, tor=tor)
    if config.dht and not config.tor_only:
        dht, announcer = _dht(reactor, config, blob_store, peer_server, reach, onion_of(tor))
    if config.upnp:
        port_mapper = reach.mapper = port_mapper_of(reactor, config, peer_server, dht)
    registry = PeerRegistry(reactor)
    downloads, fetcher = _downloads(reactor, config, blob_store, rate_limiter, wallet, rates, dht,
                                    registry, reach, tor)
    watcher = _watcher(reactor, config, blob_store, announcer)
    mirrors = _mirrors(reactor, config, blob_store)
    gateway = _gateway(reactor, config, blob_store, fetcher, announcer)
    publisher = _publisher(reactor, config, blob_store, announcer)
    api = _api(reactor, config, NodeParts(config, blob_store.store, rate_limiter, wallet, rates,
                                          dht, peer_server.address, fetch_blob=fetcher,
                                          downloads=downloads, peer_registry=registry,
                                          run=blob_store.worker, announcer=announcer,
                                          watcher=watcher, mirrors=mirrors,
                                          publisher=publisher, reach=reach),
               factory, announcer)
    return Node(config, blob_store, peer_server, dht, announcer, rate_limiter=rate_limiter,
                wallet=wallet, rates=rates, api=api, downloads=downloads, watcher=watcher,
                mirrors=mirrors, gateway=gateway, publisher=publisher, reach=reach,
                port_mapper=port_mapper, tor=tor, onion_server=onion_server)


def _gateway(
    reactor: Any,
    config: Config,
    blob_store: BlobStoreService,
    fetcher: BlobFetcher,
    announcer: Announcer | None,
) -> GatewayService | None:
    """
    The S3-compatible gateway, if it has an endpoint: its objects are
    streams of the blob store, and the blobs it lacks come from peers
    through the same fetcher as the stream gateway's.
    """
    if config.s3_listen is None:
        return None

    def announce() -> None:
        if announcer is not None and announcer.running:
            announcer.scan()

    return GatewayService(
        reactor,
        config.s3_listen,
        blob_store.store,
        blob_store.worker,
        config.gateway_path,
        store_ready=blob_store.ready,
        fetcher=fetcher,
        has_stream=lambda sd_hash: blob_store.store.index.has_stream(sd_hash),
        announce=announce,
        keys=dict(config.s3_keys),
        anonymous=config.s3_anonymous,
        quota=config.s3_quota,
        max_objects=config.s3_max_objects,
    )


def _publisher(
    reactor: Any, config: Config, blob_store: BlobStoreService, announcer: Announcer | None
) -> ManifestPublisher | None:
    """
    The publisher of files uploaded over HTTP (C{/publish/} on the API), if
    the node has an API: into its prefixes, with its quota, keeping 5 % of
    the disk (and of the disk-use limit) free; announced at once.
    """
    if config.api_listen is None:
        return None

    def announce() -> None:
        if announcer is not None and announcer.running:
            announcer.scan()

    local = config.blob_storage == "local"
    return ManifestPublisher(
        reactor,
        blob_store.store,
        blob_store.worker,
        config.publish_state_path,
        prefixes=config.publish_prefixes,
        ttl=config.publish_ttl,
        quota=config.publish_quota,
        room=store_room(blob_store.store, config.blob_dir if local else None),
        announce=announce,
        store_ready=blob_store.ready,
    )


def _mirrors(reactor: Any, config: Config, blob_store: BlobStoreService) -> MirrorService | None:
    """
    The exporter of streams to the configured mirrors, if there are any:
    it reads the blob store once it is open, and journals its uploads in
    C{DATA_DIR/transfers.sqlite}.
    """
    if not config.mirrors:
        return None
    return MirrorService(
        reactor,
        blob_store.store,
        config.mirrors,
        config.transfer_journal_path,
        config.mirrors_state_path,
        store_ready=blob_store.ready,
        reactor_threads=reactor,
    )


def _watcher(
    reactor: Any, config: Config, blob_store: BlobStoreService, announcer: Announcer | None
) -> FolderWatcher | None:
    """
    The publisher of the watched folder's files, if there is one.
    """
    if config.watch is None:
        return None

    def announce() -> None:
        if announcer is not None and announcer.running:
            announcer.scan()

    return FolderWatcher(
        reactor,
        blob_store.worker,
        config.watch,
        store_publisher(blob_store.store, blob_store.worker, blob_store.ready),
        config.watch_state_path,
        announce=announce,
    )


def _dht(
    reactor: Any,
    config: Config,
    blob_store: BlobStoreService,
    peer_server: PeerServerService,
    reach: Reachability,
    onion: Callable[[], str | None],
) -> tuple[DHTService, Announcer]:
    """
    The node's DHT service, and the announcer of the blobs its store holds;
    both use what the node knows of its C{reach} and its C{onion} endpoint:
    the announcer announces the node's address while peers can reach it,
    and its onion endpoint if it has one (to p2pblob nodes only, when that
    is all peers can reach); the DHT lists the node itself at its external
    address and its onion endpoint among the peers of the blobs it holds.
    """
    def own_address(key: bytes) -> tuple[str, int] | None:
        # (where peers fetch the blob from us, as findValue answers say)
        address, port = reach.external_address, dht.tcp_port
        if address is None or port is None or not reach.reachable:
            return None
        return (address, port) if blob_store.store.has_blob(key.hex()) else None

    def own_onion(key: bytes) -> str | None:
        endpoint = onion()
        return endpoint if endpoint and blob_store.store.has_blob(key.hex()) else None

    dht = DHTService(
        reactor,
        config.dht_dir,
        peer_server.listening,
        port=(config.dht_port if config.dht_port is not None or config.onion_port is None
              else guessed_udp_port(config.onion_port)),
        bootstrap=config.bootstrap,
        allow_loopback=config.allow_loopback,
        own_address=own_address,
        # with the peer server an onion service only (its local port on
        # loopback, for tor), the DHT still listens on every interface, on
        # the UDP port that goes with the onion service's
        interface="" if config.onion_port is not None else None,
        own_onion=own_onion,
    )
    announcer = Announcer(
        clock=reactor,
        dht=dht,
        holdings=store_holdings(blob_store.store),
        tcp_port=lambda: dht.tcp_port,
        reachable=lambda: reach.reachable,
        onion=onion,
        policy=config.announce,
        rate=config.announce_rate,
        max_concurrent=config.announce_concurrency,
    )

    def opened(result: ScanResult) -> ScanResult:
        # the first reading of what the store holds, as soon as it is open
        if announcer.running:
            announcer.scan()
        return result

    blob_store.ready.addCallback(opened)
    return dht, announcer


def _downloads(
    reactor: Any,
    config: Config,
    blob_store: BlobStoreService,
    rate_limiter: RateLimiter,
    wallet: Wallet,
    rates: PaymentRateManager,
    dht: DHTService | None,
    registry: PeerRegistry,
    reach: Reachability,
    tor: Any,
) -> tuple[DownloadService, BlobFetcher]:
    """
    The node's own downloads, and the fetcher of single blobs for streams:
    from the configured peers and those the DHT names (downloads into
    C{DATA_DIR/downloads} unless told otherwise), paying at the node's
    price in paid mode.  With Tor, onion peers (with C{--tor-only}, all
    peers) are reached through it, and the DHT is asked for onion peers.
    """

    def payments() -> DownloadPayments | None:
        # (at the price of the moment: the API may change it)
        return DownloadPayments(wallet, rates.price) if rates.price > 0 else None

    finder = node_peer_finder(reactor, config.peers, dht, registry,
                              external_address=lambda: reach.external_address,
                              onions=tor is not None, own_onion=onion_of(tor))
    dial = None if tor is None else tor_dialer(reactor, tor, config.tor_only)
    downloads = DownloadService(
        reactor,
        config,
        blob_store.store,
        peer_finder=finder,
        rate_limiter=rate_limiter,
        state_path=config.downloads_state_path,
        default_output=config.download_dir,
        payments_factory=payments,
        store_ready=blob_store.ready,
        dial=dial,
    )
    # the stream gateway fetches the blobs it lacks from the same peers
    fetcher = BlobFetcher(reactor, blob_store.store, finder, rate_limiter, payments, dial=dial)
    return downloads, fetcher


def _api(
    reactor: Any,
    config: Config,
    parts: NodeParts,
    server: BlobServerFactory,
    announcer: Announcer | None = None,
) -> APIService | None:
    """
    The HTTP API service of a node made of C{parts} (with the metrics of
    its peer C{server} and its C{announcer}), if it has one.
    """
    endpoint = config.api_listen
    if endpoint is None:
        return None
    loopback = listens_on_loopback(endpoint)
    blob_requests = next((f for f in server.query_handler_factories
                          if isinstance(f, BlobRequestHandlerFactory)), None)
    stats = None
    if parts.downloads is not None:
        stats = DownloadStats(parts.peer_registry, parts.downloads.failures)
    metrics = MetricsResource(metrics_registry(parts, announcer=announcer,
                                               blob_requests=blob_requests, downloads=stats))

    def resource() -> IResource:
        # made when the service starts, so that the token is made in a data
        # directory that exists by then (it is made even on loopback, where
        # it is not needed, so that it is there when the API is moved)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        token = load_or_create_token(config.api_token_path)
        api = NodeAPI(parts, RequestGuard(token, loopback), metrics=metrics).resource()
        if parts.publisher is None:
            return api
        # /publish/ beside the API, behind a guard of its own (the token
        # always; uploads streamed, not JSON)
        return APIRoot(api, PublishResource(parts.publisher, parts.blob_store, parts.fetch_blob,
                                            token, loopback))

    return APIService(reactor, endpoint, resource, config.api_address_path)
