"""
The DHT as a service of the node: a UDP port, our node id (kept in the data
directory so that we stay where the network expects us), and the contacts
saved for the next start, so that a restarted node rejoins without its
bootstrap nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._fatal import give_up
from p2pblob.config import is_loopback
from p2pblob.dht.addresses import is_valid_address
from p2pblob.dht.constants import HASH_LENGTH
from p2pblob.dht.contacts_file import load_contacts, save_contacts
from p2pblob.dht.datastore import OnionStore, PeerStore
from p2pblob.dht.ids import random_id
from p2pblob.dht.node import DHTNode
from p2pblob.dht.protocol import Address, KademliaProtocol
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from p2pblob.errors import ConfigError

__all__ = ["DHTService", "guessed_udp_port", "load_node_id", "start_dht", "visiting_node"]

_log = Logger()

# Contacts are written out this often (and when the node stops), so that a
# node that crashed rejoins through the contacts it knew a while ago.
SAVE_INTERVAL = 60.0

NODE_ID_FILE = "node_id"
CONTACTS_FILE = "contacts.sqlite"


def guessed_udp_port(tcp_port: int) -> int:
    """
    The UDP port LBRY's downloaders expect the DHT node of a peer serving on
    C{tcp_port} to answer on (they ping it there before downloading): the
    same number, except that TCP ports 3333 to 3399 go with UDP 4444 to
    4510, LBRY's default pair (spec section 7.4).
    """
    if 3333 <= tcp_port <= 3399:
        return 4444 + tcp_port - 3333
    return tcp_port


def load_node_id(directory: Path) -> bytes:
    """
    The node id kept in C{directory}, made (and written) on first use.  An
    unreadable id file is replaced, with a warning.
    """
    path = directory / NODE_ID_FILE
    try:
        node_id = bytes.fromhex(path.read_text().strip())
        if len(node_id) == HASH_LENGTH:
            return node_id
        _log.warn("Replacing the malformed DHT node id in {path}", path=str(path))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        _log.warn("Replacing the unreadable DHT node id in {path}: {error}", path=str(path), error=e)
    node_id = random_id()
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{NODE_ID_FILE}.tmp")
    temporary.write_text(node_id.hex() + "\n")
    os.replace(temporary, path)
    return node_id


def _loopback_allowed(allowed: bool, saved: list[tuple[str, int, bytes]]) -> bool:
    """
    Whether to accept loopback contacts: if configured so, or if the
    contacts our node saved are all on loopback (it only ever admits them
    when configured to: it was a local swarm's node).
    """
    return allowed or bool(saved) and all(is_loopback(host) for host, _, _ in saved)


def start_dht(
    reactor: Any,
    node_id: bytes,
    port: int,
    interface: str,
    bootstrap: Iterable[Address],
    saved: Iterable[tuple[str, int, bytes]],
    allow_loopback: bool,
    own_address: Callable[[bytes], Address | None] = lambda key: None,
    own_onion: Callable[[bytes], str | None] = lambda key: None,
) -> tuple[DHTNode, IListeningPort]:
    """
    Listen on UDP C{interface}:C{port} and start joining the DHT.

    @param saved: C{(host, udp_port, node_id)} of contacts from an earlier
        run; those whose address is not acceptable are skipped.
    @param own_address: where peers fetch a blob from this node, if it
        holds it and is reachable (L{KademliaProtocol}).
    @param own_onion: this node's onion endpoint, for a blob it holds, if
        it has one (L{KademliaProtocol}).
    @raise ConfigError: if the port cannot be had.
    """
    routing = RoutingTable(node_id, reactor)
    protocol = KademliaProtocol(
        reactor, node_id, routing, PeerStore(reactor), TokenKeeper(reactor),
        allow_loopback=allow_loopback, own_address=own_address,
        onions=OnionStore(reactor), own_onion=own_onion,
    )
    try:
        listening: IListeningPort = reactor.listenUDP(port, protocol, interface=interface)
    except CannotListenError as e:
        where = f"{interface}:{port}" if interface else str(port)
        reason = getattr(e.socketError, "strerror", None) or e.socketError
        raise ConfigError(
            f"cannot listen for the DHT on UDP {where}: {reason}; "
            "choose another port with --dht-port"
        ) from None
    remembered = [
        (host, udp_port) for host, udp_port, _ in saved
        if is_valid_address(host, udp_port, allow_loopback)
    ]
    node = DHTNode(reactor, protocol, bootstrap, remembered, resolve=reactor.resolve)
    node.start()
    return node, listening


async def visiting_node(
    reactor: Any,
    directory: Path,
    bootstrap: Iterable[Address],
    allow_loopback: bool,
) -> tuple[DHTNode, IListeningPort]:
    """
    A DHT node for one command (C{p2pblob download}): a fresh node id, any
    free UDP port, and, besides C{bootstrap}, the contacts that the node of
    the same data directory saved (it knows the network best).  Fires once
    those nodes answered or timed out (C{node.joined} says which); the
    rest of the join goes on while the node is used.
    """
    saved = load_contacts(directory / CONTACTS_FILE)
    node, listening = start_dht(
        reactor, random_id(), 0, "", bootstrap, saved, _loopback_allowed(allow_loopback, saved)
    )
    await node.contacted()
    return node, listening


class DHTService(Service):
    """
    Joins the DHT once the peer server listens, on the UDP port LBRY's
    downloaders guess from the peer server's TCP port (L{guessed_udp_port})
    unless told otherwise, and leaves it when the node stops.

    @ivar node: the L{DHTNode}, once started.
    @param own_address: gives where peers fetch a blob from this node, if
        it holds the blob and is reachable (L{KademliaProtocol}: answers
        list the node itself).
    @param own_onion: gives this node's onion endpoint for a blob it
        holds, if it has an onion service (answers that list onions list
        it too).
    @param fatal: whether a DHT that cannot start stops the reactor (the
        node cannot do without it); otherwise C{ready} fails, for the
        caller to handle.
    @param interface: the address to listen on (C{""}: all); L{None} for
        the peer server's.
    @ivar ready: fires with the node once it listens; fails if it cannot.
    @ivar error: why the DHT could not start, if it could not.
    """

    name = "dht"

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        peer_listening: Deferred[IListeningPort],
        *,
        port: int | None = None,
        bootstrap: Iterable[Address] = (),
        allow_loopback: bool = False,
        fatal: bool = True,
        own_address: Callable[[bytes], Address | None] = lambda key: None,
        own_onion: Callable[[bytes], str | None] = lambda key: None,
        interface: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._interface = interface
        self._own_address = own_address
        self._own_onion = own_onion
        self._fatal = fatal
        self.error: Failure | None = None
        self.directory = directory
        self._peer_listening = peer_listening
        self._port_number = port
        self.bootstrap = list(bootstrap)
        self.allow_loopback = allow_loopback
        self.node: DHTNode | None = None
        self.tcp_port: int | None = None
        self._listening: IListeningPort | None = None
        self._saver = LoopingCall(self._save)
        self._saver.clock = reactor
        self.ready: Deferred[DHTNode] = Deferred()

    @property
    def contacts_path(self) -> Path:
        return self.directory / CONTACTS_FILE

    @property
    def joined(self) -> bool:
        """
        Whether the node is running and knows some of the DHT.
        """
        return self.node is not None and self.node.joined

    async def announce(
        self, blob_hash: bytes, tcp_port: int, onion: str | None = None, onion_only: bool = False
    ) -> int:
        """
        L{DHTNode.announce}, once the node runs (0 before).
        """
        if self.node is None:
            return 0
        return await self.node.announce(blob_hash, tcp_port, onion, onion_only)

    @property
    def udp_address(self) -> Address | None:
        """
        Where the DHT listens, once it does.
        """
        if self._listening is None:
            return None
        where = self._listening.getHost()
        assert isinstance(where, IPv4Address | IPv6Address)
        return where.host, where.port

    def startService(self) -> None:
        super().startService()

        def listening(peer_port: IListeningPort) -> IListeningPort:
            # (others wait for the peer server too: pass its port on)
            if self.running:
                try:
                    self._start(peer_port)
                except Exception:
                    self._failed(Failure())
            return peer_port

        self._peer_listening.addCallback(listening)

    def _start(self, peer_port: IListeningPort) -> None:
        address = peer_port.getHost()
        if not isinstance(address, IPv4Address | IPv6Address):
            raise ConfigError(
                f"the peer server listens on {address}, not a TCP port; give the DHT "
                "its UDP port with --dht-port"
            )
        self.tcp_port = address.port
        interface = self._interface
        if interface is None:
            interface = "" if address.host in ("0.0.0.0", "::") else address.host
        port = guessed_udp_port(self.tcp_port) if self._port_number is None else self._port_number
        saved = load_contacts(self.contacts_path)
        node, self._listening = start_dht(
            self._reactor,
            load_node_id(self.directory),
            port,
            interface,
            self.bootstrap,
            saved,
            _loopback_allowed(self.allow_loopback, saved),
            self._own_address,
            self._own_onion,
        )
        self.node = node
        host, udp_port = self._listening.getHost().host, self._listening.getHost().port  # type: ignore[attr-defined]
        _log.info(
            "DHT node {node_id}… on UDP {host}:{port}; joining through {count} node(s)",
            node_id=node.node_id.hex()[:12], host=host or "*", port=udp_port,
            count=len(node.saved) + len(node.bootstrap),
        )
        if not node.saved and not node.bootstrap:
            _log.warn(
                "No DHT bootstrap node configured and no contacts saved: this node "
                "waits for others to find it (give --bootstrap HOST:PORT)"
            )
        self._saver.start(SAVE_INTERVAL, now=False)
        self.ready.callback(node)

    def _failed(self, failure: Failure) -> None:
        if self.ready.called:
            return
        self.error = failure
        if not self._fatal:
            self.ready.errback(failure)
            return
        give_up(_log, self._reactor, self.ready, failure,
                "Cannot start the DHT: {error}; stopping")

    def _save(self) -> None:
        if self.node is not None:
            self._save_contacts(self.node)

    def _save_contacts(self, node: DHTNode) -> None:
        try:
            count = save_contacts(self.contacts_path, node.routing.contacts())
        except Exception as e:
            _log.warn("Could not save the DHT contacts: {error}", error=e)
        else:
            _log.debug("Saved {count} DHT contacts", count=count)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._saver.running:
            self._saver.stop()
        node, self.node = self.node, None
        if node is not None:
            node.stop()
            self._save_contacts(node)
        listening, self._listening = self._listening, None
        if listening is None:
            return None
        stopped: Deferred[None] = Deferred.fromCoroutine(self._stop(listening))
        return stopped

    async def _stop(self, listening: IListeningPort) -> None:
        await maybeDeferred(listening.stopListening)
