"""
Where the C{p2pblob} commands find peers and how they join the DHT: the
C{--peer} and C{--bootstrap} options, the configuration, and the contacts
the data directory's node saved.
"""

from __future__ import annotations

from typing import Any

import click
from twisted.application.service import Service
from twisted.internet.defer import succeed

from p2pblob.blob.store import BlobStore
from p2pblob.config import Config, is_loopback
from p2pblob.dht.service import CONTACTS_FILE, DHTService, visiting_node
from p2pblob.discovery.announcer import Announcer
from p2pblob.discovery.dht import DHTPeerFinder
from p2pblob.discovery.holdings import store_holdings
from p2pblob.discovery.static import parse_peer
from p2pblob.errors import DHTError
from p2pblob.peer.peer import PeerRegistry

__all__ = ["dht_services", "join_dht", "peers"]


def peers(given: tuple[str, ...], config: Config) -> list[tuple[str, int]]:
    peers = [parse_peer(text) for text in given]
    return list(dict.fromkeys([*peers, *config.peers]))


def _bootstrap(config: Config, given: tuple[str, ...]) -> tuple[list[tuple[str, int]], bool]:
    """
    The DHT nodes to join through (C{--bootstrap}, then the configured
    ones), and whether loopback contacts are acceptable.
    """
    bootstrap = list(dict.fromkeys([*(parse_peer(t, "bootstrap") for t in given), *config.bootstrap]))
    allow_loopback = config.dht_allow_loopback or any(is_loopback(host) for host, _ in bootstrap)
    return bootstrap, bool(allow_loopback)


async def join_dht(
    reactor: Any,
    config: Config,
    registry: PeerRegistry,
    given: tuple[str, ...],
    required: bool,
) -> DHTPeerFinder | None:
    """
    Join the DHT for one download, through the C{--bootstrap} nodes, those
    of the configuration and the contacts saved in the data directory; the
    node leaves when the reactor stops.

    @param required: whether the download has no other way to find peers
        (then failing to join is an error).
    @return: a finder of peers on the DHT, or L{None} if there is no DHT to
        join.
    """
    bootstrap, allow_loopback = _bootstrap(config, given)
    if not bootstrap and not (config.dht_dir / CONTACTS_FILE).exists():
        return None
    click.echo("joining the DHT…", err=True)
    node, listening = await visiting_node(reactor, config.dht_dir, bootstrap, allow_loopback)

    def leave() -> object:
        node.stop()
        return listening.stopListening()

    reactor.addSystemEventTrigger("before", "shutdown", leave)
    if not node.joined:
        tried = ", ".join(f"{h}:{p}" for h, p in bootstrap) or "the saved contacts"
        if required:
            raise DHTError(f"no DHT node answered ({tried}); cannot look for peers")
        click.echo(f"no DHT node answered ({tried}); using the given peers only", err=True)
        return None
    return DHTPeerFinder(reactor, node, registry, allow_loopback=node.protocol.allow_loopback)



def dht_services(
    reactor: Any, config: Config, store: BlobStore, port: Any, given: tuple[str, ...]
) -> list[Service]:
    """
    Join the DHT (as the node of the data directory: same node id, same
    saved contacts) and announce the store's blobs; return the services
    started, to be stopped in reverse order.
    """
    bootstrap, allow_loopback = _bootstrap(config, given)
    if not bootstrap and not (config.dht_dir / CONTACTS_FILE).exists():
        click.echo("not on the DHT: no --bootstrap node given (peers must be told "
                   "where this node is)", err=True)
        return []
    dht = DHTService(reactor, config.dht_dir, succeed(port), bootstrap=bootstrap,
                     allow_loopback=allow_loopback, fatal=False)
    dht.ready.addErrback(lambda failure: None)
    announcer = Announcer(
        clock=reactor,
        dht=dht,
        holdings=store_holdings(store),
        tcp_port=lambda: dht.tcp_port,
        policy=config.announce,
        rate=config.announce_rate,
        max_concurrent=config.announce_concurrency,
    )
    dht.startService()
    if dht.error is not None:
        dht.stopService()
        dht.error.raiseException()
    announcer.startService()
    if dht.udp_address is not None:
        host, udp_port = dht.udp_address
        click.echo(f"on the DHT at UDP {host or '*'}:{udp_port}; announcing", err=True)
    return [dht, announcer]
