"""
The parts of L{p2pblob.node.make_node} that decide how peers reach the node
and how it reaches them: the Tor provider, the peer server and its onion
service, the UPnP port mapper, the dialer of peer connections, and the
onion endpoint the DHT announces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint

from p2pblob._threads import ThreadWorker
from p2pblob.blob.service import BlobStoreService
from p2pblob.config import Config
from p2pblob.dht.service import DHTService
from p2pblob.download.downloader import Dialer
from p2pblob.peer.server import BlobServerFactory
from p2pblob.peer.service import PeerServerService
from p2pblob.reach.reachability import MappingWhenListening

__all__ = ["onion_of", "peer_servers", "port_mapper_of", "tor_dialer", "tor_provider"]


def tor_provider(reactor: Any, config: Config) -> Any:
    """
    The node's Tor provider, if it uses Tor: a tor of its own (state in
    C{DATA_DIR/tor}) or the one whose control port is configured.
    """
    if not config.uses_tor:
        return None
    from p2pblob.reach.tor import TorProvider

    return TorProvider(reactor, config.tor_dir, control=config.tor_control,
                       tor_options=config.tor_options)


def peer_servers(
    reactor: Any,
    config: Config,
    factory: BlobServerFactory,
    blob_store: BlobStoreService,
    tor: Any,
) -> tuple[PeerServerService, PeerServerService | None]:
    """
    The peer server, and its onion service if it has one besides: with
    C{--peer-listen onion:PORT} or C{--tor-only} the peer server listens as
    an onion service only (on loopback, for tor); with C{--tor} it listens
    on its endpoint and as an onion service on the same port number.
    """
    if tor is None:
        return PeerServerService(reactor, config.peer_listen, factory, blob_store.ready), None
    port = config.onion_port or _port_of(config.peer_listen)
    onion = tor.onion_endpoint(port)
    if config.onion_port is not None or config.tor_only:
        return PeerServerService(reactor, onion, factory, blob_store.ready), None
    onion_server = PeerServerService(reactor, onion, factory, blob_store.ready)
    onion_server.name = "onion-peer-server"
    return (PeerServerService(reactor, config.peer_listen, factory, blob_store.ready),
            onion_server)


def _port_of(endpoint: str) -> int:
    """
    The port number of a C{tcp:PORT...} endpoint string, for the onion
    service's port; 3333 (LBRY's) when it names none.
    """
    fields = endpoint.split(":")
    if len(fields) > 1 and fields[0].strip().lower() in ("tcp", "tcp6"):
        number = fields[1].strip()
        if number.isascii() and number.isdigit() and 0 < int(number) < 65536:
            return int(number)
    return 3333


def port_mapper_of(
    reactor: Any, config: Config, peer_server: PeerServerService, dht: DHTService | None
) -> MappingWhenListening:
    """
    The UPnP mapper of the peer server's TCP port and the DHT's UDP port,
    made once the peer server listens (the DHT starts then too).
    """
    from p2pblob.reach.upnp import UPnPPortMapper

    worker = ThreadWorker(reactor, "p2pblob-upnp", max_threads=1)

    def ports() -> Deferred[tuple[int, int | None]]:
        known: Deferred[tuple[int, int | None]] = Deferred()

        def listening(port: IListeningPort) -> IListeningPort:
            # (the DHT, started in an earlier callback of the same Deferred,
            # listens by now, unless it could not)
            udp = dht.udp_address if dht is not None else None
            tcp_port: int = port.getHost().port  # type: ignore[attr-defined]
            known.callback((tcp_port, None if udp is None else udp[1]))
            return port

        peer_server.listening.addCallback(listening)
        return known

    def make(tcp_port: int, udp_port: int | None) -> UPnPPortMapper:
        return UPnPPortMapper(reactor, worker, tcp_port, udp_port, lease=config.upnp_lease,
                              external_address=config.external_address,
                              gateway_url=config.upnp_gateway)

    return MappingWhenListening(ports, make, external_address=config.external_address,
                                worker=worker)


def tor_dialer(reactor: Any, tor: Any, only: bool) -> Dialer:
    """
    Reach C{.onion} peers (or, with C{only}, every peer) through C{tor}, the
    others directly.
    """

    def dial(host: str, port: int) -> IStreamClientEndpoint:
        if only or host.lower().rstrip(".").endswith(".onion"):
            endpoint: IStreamClientEndpoint = tor.client_endpoint(host, port)
            return endpoint
        return HostnameEndpoint(reactor, host, port, timeout=3.0)

    return dial


def onion_of(tor: Any) -> Callable[[], str | None]:
    """
    What gives the node's onion endpoint, C{"<address>.onion:<port>"},
    while C{tor} (the Tor provider, or L{None}) publishes its onion
    service, and L{None} otherwise: the DHT announces it, and lists it
    among the peers of the blobs the node holds.
    """

    def onion() -> str | None:
        if tor is None or tor.onion_address is None or tor.onion_port is None:
            return None
        return f"{tor.onion_address}:{tor.onion_port}"

    return onion
