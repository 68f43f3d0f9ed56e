"""
What C{findNode} and C{findValue} answer, as p2pblob reads and writes it:
contact lists, and the C{findValue} result dictionary (LBRY's entries and
p2pblob's extension, L{p2pblob.dht.messages.P2PBLOB_KEY} and
L{p2pblob.dht.messages.ONIONS_KEY}).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2pblob.dht.constants import PROTOCOL_VERSION
from p2pblob.dht.messages import (
    CONTACTS_KEY,
    ONIONS_KEY,
    P2PBLOB_KEY,
    PAGE_KEY,
    PROTOCOL_VERSION_KEY,
    TOKEN_KEY,
    Contact,
)
from p2pblob.dht.peers import (
    check_hash,
    check_port,
    compact_ip,
    decode_compact_peer,
    decode_onion_endpoint,
)
from p2pblob.errors import DatagramError

__all__ = ["FindValueResult", "decode_contacts", "encode_contacts"]


def encode_contacts(contacts: Iterable[Contact]) -> list[list[object]]:
    """
    Contacts as C{findNode} and C{findValue} replies list them: C{[node_id,
    host as ASCII bytes, udp_port]} each.

    @raise DatagramError: if a node id is not 48 bytes, a host not an IPv4
        address or a port not a port.
    """
    encoded: list[list[object]] = []
    for node_id, host, udp_port in contacts:
        compact_ip(host)
        encoded.append(
            [check_hash(node_id, "contact node id"), host.encode("ascii"), check_port(udp_port)]
        )
    return encoded


def decode_contacts(value: object) -> list[Contact]:
    """
    Read the contacts of a C{findNode} result or of a C{findValue} result's
    C{contacts}.

    @raise DatagramError: unless C{value} is a list of C{[node_id, host,
        udp_port]} lists with a 48-byte node id, an IPv4 dotted quad and a
        port number.
    """
    if not isinstance(value, list):
        raise DatagramError(f"contacts are a {type(value).__name__}, not a list")
    contacts: list[Contact] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 3:
            raise DatagramError("a contact is not a [node_id, host, port] list")
        node_id, host, udp_port = item
        if not isinstance(host, bytes):
            raise DatagramError(f"a contact's host is a {type(host).__name__}, not bytes")
        try:
            text = host.decode("ascii")
        except UnicodeDecodeError:
            raise DatagramError("a contact's host is not ASCII") from None
        compact_ip(text)
        contacts.append((check_hash(node_id, "contact node id"), text, check_port(udp_port)))
    return contacts


@dataclass(frozen=True)
class FindValueResult:
    """
    What a C{findValue} call returns: a token, and the peers holding the
    blob or the contacts closest to it, or both.

    On the wire it is a dictionary with byte-string keys: C{token};
    C{contacts} (on page 0 only); C{protocolVersion}; C{p}, the number of
    pages of peers; and, if the node knows peers on the page asked for, the
    raw 48-byte key itself mapping to their compact addresses.  A p2pblob
    node adds L{P2PBLOB_KEY} and, when asked for them, the onion endpoints
    of the page under L{ONIONS_KEY} (C{p} then counts their pages too).

    @ivar token: the 48-byte token to echo in a C{store} to this node.
    @ivar contacts: the responder's contacts closest to the key, or L{None}
        when the reply has no C{contacts} entry (lbry-sdk sends it on page 0
        only, even when empty; readers treat L{None} as no contacts).
    @ivar peers: compact addresses (see L{p2pblob.dht.peers}) of peers
        holding the blob, on the page asked for.
    @ivar pages: how many pages of peers the node has.
    @ivar marked: whether the result carries the p2pblob marker: the
        responder is a p2pblob node.
    @ivar onions: onion endpoints (L{p2pblob.dht.peers.onion_endpoint}) of
        peers holding the blob, on the page asked for.
    """

    token: bytes
    contacts: Sequence[Contact] | None = None
    peers: Sequence[bytes] = ()
    pages: int = 0
    marked: bool = False
    onions: Sequence[bytes] = ()

    def encode(self, key: bytes) -> dict[bytes, object]:
        """
        The result dictionary, as the answer to a C{findValue} for C{key}.

        @raise DatagramError: if a field is malformed.
        """
        check_hash(key, "key")
        if not isinstance(self.pages, int) or isinstance(self.pages, bool) or self.pages < 0:
            raise DatagramError(f"page count {self.pages!r:.30} is not a non-negative integer")
        result: dict[bytes, object] = {
            TOKEN_KEY: check_hash(self.token, "token"),
            PROTOCOL_VERSION_KEY: PROTOCOL_VERSION,
            PAGE_KEY: self.pages,
        }
        if self.contacts is not None:
            result[CONTACTS_KEY] = encode_contacts(self.contacts)
        if self.peers:
            for peer in self.peers:
                decode_compact_peer(peer)
            result[key] = list(self.peers)
        if self.marked:
            result[P2PBLOB_KEY] = 1
        if self.onions:
            for onion in self.onions:
                decode_onion_endpoint(onion)
            result[ONIONS_KEY] = list(self.onions)
        return result

    @classmethod
    def decode(cls, result: object, key: bytes) -> FindValueResult:
        """
        Read the result of a C{findValue} for C{key} (the argument order
        suits C{Deferred.addCallback(FindValueResult.decode, key)}).
        Entries other than those LBRY nodes send and p2pblob's are
        ignored; a missing C{p} or C{contacts} reads, as lbry-sdk reads it,
        as 0 pages or L{None}.  Contacts and peers come back as lists,
        onions as a tuple.  p2pblob's entries never make a result unreadable: a marker
        other than 1 reads as none, and onion endpoints that are malformed
        (or not in a list) are left out.

        @raise DatagramError: if C{result} is not a dictionary with a
            48-byte token, or a field LBRY nodes send has the wrong shape.
        """
        check_hash(key, "key")
        if not isinstance(result, dict):
            raise DatagramError(
                f"a findValue result is a {type(result).__name__}, not a dictionary"
            )
        if TOKEN_KEY not in result:
            raise DatagramError("a findValue result has no token")
        token = check_hash(result[TOKEN_KEY], "token")
        contacts = None
        if CONTACTS_KEY in result:
            contacts = decode_contacts(result[CONTACTS_KEY])
        peers = result.get(key, [])
        if not isinstance(peers, list):
            raise DatagramError(f"peers are a {type(peers).__name__}, not a list")
        for peer in peers:
            decode_compact_peer(peer)
        pages = result.get(PAGE_KEY, 0)
        if not isinstance(pages, int) or pages < 0:
            raise DatagramError("the page count is not a non-negative integer")
        if not isinstance(result.get(PROTOCOL_VERSION_KEY, PROTOCOL_VERSION), int):
            raise DatagramError("the protocol version is not an integer")
        marked = result.get(P2PBLOB_KEY) == 1
        return cls(token, contacts, peers, pages, marked, _readable_onions(result.get(ONIONS_KEY)))

    def peer_addresses(self) -> list[tuple[str, int, bytes]]:
        """
        The peers decoded: C{(host, tcp_port, node_id)} each.

        @raise DatagramError: if an address is malformed.
        """
        return [decode_compact_peer(peer) for peer in self.peers]

    def onion_addresses(self) -> list[tuple[str, int]]:
        """
        The onion endpoints decoded: C{(host, port)} each, the host
        C{"<56 characters>.onion"}.

        @raise DatagramError: if an endpoint is malformed.
        """
        return [decode_onion_endpoint(onion) for onion in self.onions]


def _readable_onions(value: object) -> tuple[bytes, ...]:
    """
    The well-formed onion endpoints of C{value}, a result's L{ONIONS_KEY}
    entry (none unless it is a list).
    """
    if not isinstance(value, list):
        return ()
    readable = []
    for onion in value:
        try:
            decode_onion_endpoint(onion)
        except DatagramError:
            continue
        readable.append(onion)
    return tuple(readable)
