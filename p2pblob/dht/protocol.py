"""
The DHT's UDP protocol: sending RPCs and matching their answers, and
answering the RPCs of other nodes (spec section 7.2 and 7.3).

L{KademliaProtocol} is a C{DatagramProtocol} that keeps no state of its own
beyond the requests in flight: the routing table, the peer datastore and the
token keeper are given to it.  A node that answers one of our requests is
admitted to the routing table; a node that only sends us requests is pinged
first (never more than one such ping a second) and admitted if it answers,
as LBRY does, so that a node cannot fill our table by talking to us.

Besides LBRY's protocol, it speaks p2pblob's extension of it (see
L{p2pblob.dht.messages}): its C{findValue} results carry the p2pblob
marker, it records the onion endpoints of C{store} requests (and, when
asked to, not the requester's IP address), and it lists them to the
requesters that ask for them.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.dht.addresses import is_valid_address
from p2pblob.dht.constants import (
    HASH_LENGTH,
    RPC_ID_LENGTH,
    RPC_TIMEOUT,
    K,
)
from p2pblob.dht.contact import Contact
from p2pblob.dht.datastore import OnionStore, PeerStore
from p2pblob.dht.messages import (
    ONION_KEY,
    ONION_ONLY_KEY,
    ONIONS_KEY,
    PAGE_KEY,
    ErrorResponse,
    Request,
    Response,
    decode_datagram,
    encode_datagram,
    find_node,
    find_value,
    ping,
    store,
)
from p2pblob.dht.onion_pages import onion_pages
from p2pblob.dht.peers import compact_peer, decode_onion_endpoint, onion_endpoint
from p2pblob.dht.results import FindValueResult, decode_contacts, encode_contacts
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from p2pblob.errors import DatagramError, DHTError, RemoteDHTError, RPCTimeoutError

__all__ = ["KademliaProtocol"]

_log = Logger()

# Nodes that sent us requests and are pinged before they may join the table:
# at most this many wait, one is pinged per MAYBE_PING_INTERVAL seconds, and
# none again within MAYBE_PING_AGAIN seconds (a node that answered but did
# not fit in its bucket keeps sending requests).
MAYBE_PING_QUEUE = 64
MAYBE_PING_INTERVAL = 1.0
MAYBE_PING_AGAIN = 300.0
# Peers on lower ports are refused (as by is_valid_address).
MIN_PEER_PORT = 1024

Address = tuple[str, int]


@dataclass
class _Pending:
    address: Address
    method: bytes
    result: Deferred[Any]
    timer: IDelayedCall | None = field(default=None, repr=False)


class KademliaProtocol(DatagramProtocol):
    """
    One node's DHT endpoint.

    @param node_id: our 48-byte node id.
    @param tcp_port: where our peer server listens (announced in C{store}),
        a callable because it may only be known once the server listens.
    @param allow_loopback: accept nodes and peers on 127.0.0.0/8 (local
        swarms and tests); LBRY's public DHT refuses them.
    @param own_address: gives, for a blob hash, where peers fetch that blob
        from this node (its external address and TCP port) if it holds the
        blob and peers can reach it, else L{None}: a C{findValue} answer
        with fewer than K peers then lists this node too, as lbry-sdk's do.
    @param onions: where the onion endpoints stored at this node are kept
        (a new L{OnionStore} by default).
    @param own_onion: gives, for a blob hash, this node's onion endpoint
        (C{"<address>.onion:<port>"}) if it holds the blob and has an onion
        service, else L{None}: a C{findValue} answer that lists onions and
        has fewer than K lists this node's too.
    @ivar dropped: datagrams ignored because they could not be decoded.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        node_id: bytes,
        routing: RoutingTable,
        peers: PeerStore,
        tokens: TokenKeeper,
        *,
        allow_loopback: bool = False,
        timeout: float = RPC_TIMEOUT,
        random_bytes: Callable[[int], bytes] = os.urandom,
        own_address: Callable[[bytes], Address | None] = lambda key: None,
        onions: OnionStore | None = None,
        own_onion: Callable[[bytes], str | None] = lambda key: None,
    ) -> None:
        self.clock = clock
        self.own_address = own_address
        self.own_onion = own_onion
        self.onions = onions if onions is not None else OnionStore(clock)
        self.node_id = node_id
        self.routing = routing
        self.peers = peers
        self.tokens = tokens
        self.allow_loopback = allow_loopback
        self.timeout = timeout
        self._random = random_bytes
        self._pending: dict[bytes, _Pending] = {}
        self._maybe: deque[Address] = deque()
        self._maybe_call: IDelayedCall | None = None
        self._maybe_pinged: dict[Address, float] = {}
        # contacts of full buckets being pinged to see if they are still up
        self._checking: set[bytes] = set()
        self.dropped = 0
        self.requests_sent = 0
        self.requests_answered = 0

    # sending

    def ping(self, address: Address) -> Deferred[bytes]:
        """
        Ping a node; fires with C{b"pong"}.
        """
        return self._send(address, ping(self._rpc_id(), self.node_id))

    def find_node(self, address: Address, key: bytes) -> Deferred[list[Contact]]:
        """
        Ask a node for the contacts it knows closest to C{key}; fires with
        those that have a valid address.
        """
        d = self._send(address, find_node(self._rpc_id(), self.node_id, key))
        return d.addCallback(self._contacts)

    def find_value(
        self, address: Address, key: bytes, page: int = 0, onions: bool = False
    ) -> Deferred[FindValueResult]:
        """
        Ask a node for the peers of blob C{key} (one page of them) and for a
        token to store at it; with C{onions}, for the onion endpoints of
        the blob too (a p2pblob node has them; an LBRY node ignores that).
        """
        d = self._send(address, find_value(self._rpc_id(), self.node_id, key, page, onions))
        return d.addCallback(FindValueResult.decode, key)

    def store(
        self,
        address: Address,
        blob_hash: bytes,
        token: bytes,
        tcp_port: int,
        onion: bytes | None = None,
        onion_only: bool = False,
    ) -> Deferred[bytes]:
        """
        Announce to a node that we hold blob C{blob_hash} and serve it on
        C{tcp_port} (and at onion endpoint C{onion}, for p2pblob nodes;
        only there, with C{onion_only}: for p2pblob nodes only); fires with
        C{b"OK"}.
        """
        request = store(
            self._rpc_id(), self.node_id, blob_hash, token, tcp_port, self.node_id,
            onion=onion, onion_only=onion_only,
        )
        return self._send(address, request)

    def _rpc_id(self) -> bytes:
        return self._random(RPC_ID_LENGTH)

    def _contacts(self, result: object) -> list[Contact]:
        triples = decode_contacts(result)
        return [
            Contact(host, port, node_id)
            for node_id, host, port in triples
            if node_id != self.node_id and self._valid(host, port)
        ]

    def _valid(self, host: str, port: int) -> bool:
        return is_valid_address(host, port, self.allow_loopback)

    def _send(self, address: Address, request: Request) -> Deferred[Any]:
        result: Deferred[Any] = Deferred()
        if self.transport is None:
            result.errback(DHTError("the DHT is not listening"))
            return result
        try:
            data = encode_datagram(request)
        except DatagramError as e:
            result.errback(e)
            return result
        pending = _Pending(address, request.method, result)
        pending.timer = self.clock.callLater(self.timeout, self._timed_out, request.rpc_id)
        self._pending[request.rpc_id] = pending
        self.requests_sent += 1
        try:
            self.transport.write(data, address)
        except OSError as e:
            # no route, network down, refused by a firewall rule ...
            del self._pending[request.rpc_id]
            pending.timer.cancel()
            host, port = address
            result.errback(DHTError(f"cannot send to {host}:{port}: {e.strerror or e}"))
        return result

    def _timed_out(self, rpc_id: bytes) -> None:
        pending = self._pending.pop(rpc_id, None)
        if pending is None:
            return
        pending.timer = None
        contact = self.routing.get_by_address(pending.address)
        if contact is not None:
            self.routing.contact_failed(contact.node_id)
        host, port = pending.address
        pending.result.errback(
            RPCTimeoutError(f"no answer from {host}:{port} to {pending.method.decode()} "
                            f"within {self.timeout:g} s")
        )

    # receiving

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        address: Address = (addr[0], addr[1])
        if ":" in address[0]:
            # LBRY's DHT is IPv4 only: tokens and peer addresses are too
            self.dropped += 1
            return
        try:
            message = decode_datagram(data)
        except DatagramError as e:
            self.dropped += 1
            _log.debug("Dropped a datagram from {address}: {error}", address=address, error=e)
            return
        if isinstance(message, Request):
            self._answer(message, address)
        else:
            self._answered(message, address)

    def _answered(self, message: Response | ErrorResponse, address: Address) -> None:
        pending = self._pending.get(message.rpc_id)
        if pending is None or pending.address[0] != address[0]:
            self.dropped += 1
            return  # late, unknown, or from another host than we asked
        del self._pending[message.rpc_id]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        self._admit(Contact(address[0], address[1], message.node_id))
        if isinstance(message, ErrorResponse):
            pending.result.errback(
                RemoteDHTError(message.exception_type.decode(errors="replace"),
                               message.message.decode(errors="replace"))
            )
        else:
            pending.result.callback(message.result)

    def _admit(self, contact: Contact) -> None:
        """
        A node answered us: into the routing table; if its bucket is full,
        ping the member the table names and replace it if it fails.
        """
        if contact.node_id == self.node_id or not self._valid(contact.host, contact.udp_port):
            return
        stale = self.routing.add_contact(contact)
        if stale is None or stale.node_id in self._checking:
            return
        self._checking.add(stale.node_id)

        def gone(failure: Failure) -> None:
            self.routing.remove_contact(stale.node_id)

        checked = self.ping(stale.address).addErrback(gone)
        checked.addBoth(lambda _: self._checking.discard(stale.node_id))

    # answering

    def _answer(self, request: Request, address: Address) -> None:
        self.requests_answered += 1
        handler = self._handlers.get(request.method)
        try:
            if handler is None:
                raise _Refusal("AttributeError", f"Invalid method: {request.method.decode(errors='replace')}")
            result = handler(self, request, address)
        except _Refusal as e:
            reply: Response | ErrorResponse = ErrorResponse(
                request.rpc_id, self.node_id, f"<class '{e.kind}'>".encode(), e.text.encode()
            )
        else:
            reply = Response(request.rpc_id, self.node_id, result)
        try:
            data = encode_datagram(reply)
        except DatagramError as e:
            _log.warn("Could not answer {address}: {error}", address=address, error=e)
            return
        assert self.transport is not None
        try:
            self.transport.write(data, address)
        except OSError as e:
            _log.debug("Could not answer {address}: {error}", address=address, error=e)
            return
        contact = self.routing.get(request.node_id)
        if contact is not None:
            contact.requested(self.clock.seconds())
        elif self._valid(*address):
            self._maybe_ping(address)

    def _ping_request(self, request: Request, address: Address) -> object:
        return b"pong"

    def _find_node_request(self, request: Request, address: Address) -> object:
        key = _key_arg(request)
        closest = self.routing.closest(key, K, exclude=request.node_id, include_bad=False)
        return encode_contacts([(c.node_id, c.host, c.udp_port) for c in closest])

    def _find_value_request(self, request: Request, address: Address) -> object:
        key = _key_arg(request)
        version = request.version if request.version is not None else {}
        asked = version.get(PAGE_KEY, 0)
        if type(asked) is not int or asked < 0:
            raise _Refusal("ValueError", "invalid page")
        page: int = asked
        found = self.peers.peers_for(key, exclude_host=address[0])
        if len(found) < K:
            found = self._with_ourselves(key, found, address[0])
        # (lbry-sdk counts len // (K + 1) + 1, one page short at 2K + 1
        # peers; readers only use the count to ask for more pages)
        pages = -(-len(found) // K)
        onions: list[bytes] = []
        if version.get(ONIONS_KEY) == 1:
            # (a p2pblob requester that asks: the page count covers the
            # onions' pages too)
            shared = onion_pages(key, found, self._onions_of(key, request.node_id), K)
            pages = max(pages, len(shared))
            onions = shared[page] if page < len(shared) else []
        contacts = None
        if page == 0:
            closest = self.routing.closest(key, K, exclude=request.node_id, include_bad=False)
            contacts = [(c.node_id, c.host, c.udp_port) for c in closest]
        return FindValueResult(
            token=self.tokens.token_for(address[0]),
            contacts=contacts,
            peers=found[page * K : (page + 1) * K],
            pages=pages,
            marked=True,
            onions=onions,
        ).encode(key)

    def _onions_of(self, key: bytes, requester: bytes) -> list[bytes]:
        """
        The onion endpoints stored for C{key} (not those the requester
        stored), the most recent first, and this node's own after them
        while there are fewer than K, if it holds the blob and has one.
        """
        onions = self.onions.onions_for(key, exclude_node=requester)
        own = self.own_onion(key) if len(onions) < K else None
        if own is None:
            return onions
        try:
            ours = onion_endpoint(own)
        except DatagramError:
            return onions
        return onions if ours in onions else [*onions, ours]

    def _with_ourselves(self, key: bytes, found: list[bytes], requester: str) -> list[bytes]:
        """
        C{found}, and this node's own compact address after them if it
        holds C{key}'s blob and peers can reach it (not to a requester at
        that address).
        """
        own = self.own_address(key)
        if own is None or own[0] == requester:
            return found
        try:
            ours = compact_peer(own[0], own[1], self.node_id)
        except DatagramError:
            return found  # (an IPv6 external address has no compact form)
        return found if ours in found else [*found, ours]

    def _store_request(self, request: Request, address: Address) -> object:
        if len(request.args) < 4:
            raise _Refusal("ValueError", "not enough values to unpack")
        blob_hash, token, port, publisher = request.args[:4]
        version = request.version if request.version is not None else {}
        onion, only = version.get(ONION_KEY), version.get(ONION_ONLY_KEY)
        # (an onion-only store names no peer at its IP address, which need
        # not be one peers are accepted at)
        onion_only = type(only) is int and only == 1
        if not (isinstance(blob_hash, bytes) and len(blob_hash) == HASH_LENGTH):
            raise _Refusal("ValueError", "Invalid blob hash")
        if not (isinstance(token, bytes) and self.tokens.verify(token, address[0])):
            raise _Refusal("ValueError", "Invalid token")
        if type(port) is not int or not MIN_PEER_PORT <= port <= 65535:
            raise _Refusal("ValueError", f"Invalid port {port!r}")
        if not onion_only and not self._valid(address[0], port):
            raise _Refusal("ValueError", f"Peers at {address[0]} are not accepted")
        if not (isinstance(publisher, bytes) and len(publisher) == HASH_LENGTH):
            raise _Refusal("ValueError", "Invalid publisher id")
        if only is not None and not onion_only:
            raise _Refusal("ValueError", f"Invalid onion-only flag {only!r:.30}")
        if onion is not None and not (isinstance(onion, bytes) and _is_onion(onion)):
            raise _Refusal("ValueError", f"Invalid onion endpoint {onion!r:.80}")
        if onion is None and onion_only:
            raise _Refusal("ValueError", "An onion-only store needs an onion endpoint")
        now = self.clock.seconds()
        if not onion_only:
            self.peers.add(blob_hash, compact_peer(address[0], port, request.node_id), publisher, now)
        if isinstance(onion, bytes):
            self.onions.add(blob_hash, onion, request.node_id, now)
        return b"OK"

    _handlers: dict[bytes, Callable[[KademliaProtocol, Request, Address], object]] = {
        b"ping": _ping_request,
        b"findNode": _find_node_request,
        b"findValue": _find_value_request,
        b"store": _store_request,
    }

    # nodes that only talked to us

    def _maybe_ping(self, address: Address) -> None:
        now = self.clock.seconds()
        if address in self._maybe or len(self._maybe) >= MAYBE_PING_QUEUE:
            return
        pinged = self._maybe_pinged
        # forget the oldest first: the dict is in the order they were pinged
        for oldest, when in list(itertools.islice(pinged.items(), 2)):
            if now - when < MAYBE_PING_AGAIN:
                break
            del pinged[oldest]
        last = pinged.get(address)
        if last is not None and now - last < MAYBE_PING_AGAIN:
            return
        pinged.pop(address, None)
        pinged[address] = now
        self._maybe.append(address)
        if self._maybe_call is None:
            self._maybe_call = self.clock.callLater(MAYBE_PING_INTERVAL, self._ping_maybe)

    def _ping_maybe(self) -> None:
        self._maybe_call = None
        if not self._maybe or self.transport is None:
            return
        address = self._maybe.popleft()
        self.ping(address).addErrback(lambda f: None)
        if self._maybe:
            self._maybe_call = self.clock.callLater(MAYBE_PING_INTERVAL, self._ping_maybe)

    def stopProtocol(self) -> None:
        if self._maybe_call is not None and self._maybe_call.active():
            self._maybe_call.cancel()
        self._maybe_call = None
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.result.errback(DHTError("the DHT stopped"))


class _Refusal(Exception):
    """
    An RPC we answer with an error response.
    """

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def _is_onion(data: bytes) -> bool:
    try:
        decode_onion_endpoint(data)
    except DatagramError:
        return False
    return True


def _key_arg(request: Request) -> bytes:
    if not request.args or not isinstance(request.args[0], bytes) or len(request.args[0]) != HASH_LENGTH:
        raise _Refusal("ValueError", "Invalid key")
    return request.args[0]

