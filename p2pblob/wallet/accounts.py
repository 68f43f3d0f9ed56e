"""
Who is who in the ledger, and what is set aside for them.

The ledger names a peer by its payment key (64 lowercase hex characters)
once the key is known.  Before, a server we download from is named by its
address (C{host:port}), which stays its own; a client we serve is named by
its host (L{client_host}), since its port changes with every connection:
what clients of unknown key owe us adds up per host, across connections
and restarts, so a client that never pays cannot start afresh by
reconnecting.  L{PeerNames} holds the keys learnt for addresses during this
run: from the payment-key exchange for the peers we download from, and from
the first valid cheque on a connection for the peers we serve, which also
moves what the client's host owes to its key.  A peer's address may later
be another node's (a client's port is reused), so a connection's key is
forgotten when the connection ends.

The price of naming clients by host: honest nodes behind one NAT address
share one debt until each names itself with a cheque, and the first to do
so takes over what the host owed, its neighbours' blobs included.  A paid
client sends its latest cheque with the first request of every connection,
so this lasts from a node's first blob to its first payment; a node that
never paid anyone behind the same address is served as one client with
them until then.  An IPv6 client is named by its C{/64} network, the
block one site is usually given, lest it take a fresh address per
connection.  Since a client makes its own keys, what a host owes is also
limited in all, its keys' debts included (L{p2pblob.wallet.hosts}): nodes
behind one NAT address share that limit for good, not only until they pay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Any

from p2pblob.wallet.keys import KEY_SIZE
from p2pblob.wallet.units import from_micro

__all__ = ["PeerNames", "ReservedPoints", "client_host", "is_key_name", "peer_address"]

_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def is_key_name(name: str) -> bool:
    """
    Whether C{name} is a payment key in hex (rather than an address).
    """
    return len(name) == 64 and _HEX_KEY.fullmatch(name) is not None


def peer_address(peer: object) -> str:
    """
    The name of a peer whose key is not known: C{host:port} (C{[host]:port}
    for IPv6) for a C{Peer}, or the string itself.

    @raise TypeError: C{peer} is neither.
    """
    if isinstance(peer, str):
        return peer
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise TypeError(f"{peer!r} is not a peer")


def client_host(peer: object) -> str:
    """
    The name of a client we serve whose key is not known: its IP address
    for IPv4 (an IPv4 address mapped into IPv6 included), its C{/64}
    network for IPv6 (C{2001:db8::/64}), else its host as given.

    @param peer: a C{Peer}, or its address as a C{str} (C{host:port},
        C{[host]:port}, or a bare host).
    @raise TypeError: C{peer} is neither.
    """
    return _host_name(_host_of(peer))


@lru_cache(maxsize=1024)
def _host_name(host: str) -> str:
    # (a server names each client several times per blob it serves)
    try:
        ip = ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _host_of(peer: object) -> str:
    if isinstance(peer, str):
        if peer.startswith("["):
            return peer[1:].partition("]")[0]
        # host:port; a bare IPv6 address has more than one colon
        return peer.rpartition(":")[0] if peer.count(":") == 1 else peer
    host = getattr(peer, "host", None)
    if isinstance(host, str):
        return host
    raise TypeError(f"{peer!r} is not a peer")


class PeerNames:
    """
    The payment keys learnt for peers' addresses.
    """

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def account_of(self, peer: Any) -> str:
        """
        The name the ledger knows C{peer} by: its key in hex if known, else
        its address.  C{peer} may be a C{Peer}, an address or key as a
        C{str}, or a key as 32 raw bytes.
        """
        if isinstance(peer, bytes):
            if len(peer) != KEY_SIZE:
                raise ValueError("a peer's key is 32 bytes")
            return peer.hex()
        address = peer_address(peer)
        if is_key_name(address):
            return address
        key = self._keys.get(address)
        return address if key is None else key.hex()

    def key_of(self, peer: Any) -> bytes | None:
        """
        C{peer}'s payment key, if known.
        """
        account = self.account_of(peer)
        return bytes.fromhex(account) if is_key_name(account) else None

    def knows(self, address: str) -> bool:
        """
        Whether a key has been learnt for C{address}.
        """
        return address in self._keys

    def learn(self, peer: Any, key: bytes) -> str:
        """
        Remember that the peer at C{peer}'s address has the key C{key}.

        @return: the address.
        """
        if len(key) != KEY_SIZE:
            raise ValueError("a peer's key is 32 bytes")
        address = peer_address(peer)
        self._keys[address] = key
        return address

    def forget(self, peer: Any) -> None:
        """
        Forget the key learnt for C{peer}'s address.
        """
        self._keys.pop(peer_address(peer), None)


@dataclass(frozen=True, eq=False)
class ReservedPoints:
    """
    Points set aside to pay a peer (the seed's C{ReservedPoints}).

    @ivar identifier: the reservation's number in the ledger (never reused).
    @ivar account: the peer's name when the points were reserved: its key
        in hex, or its address.
    @ivar micro: the micro-points set aside.
    @ivar peer: the peer, as given to C{reserve_points}.
    """

    identifier: int
    account: str
    micro: int
    peer: Any = field(repr=False)

    @property
    def amount(self) -> float:
        """
        The points set aside, as a C{float}.
        """
        return from_micro(self.micro)
