"""
Compact addresses: how DHT replies name the peers that hold a blob.

A compact peer address is 54 bytes: the peer's IPv4 address (4 bytes), its
B{TCP} (blob exchange) port, 2 bytes big-endian, and its 48-byte DHT node id
(C{spec/lbry-wire.md} section 7.3).  Only IPv4 exists in LBRY's DHT.

p2pblob nodes also name peers by their onion service (an extension LBRY
nodes never see, L{p2pblob.dht.messages}): an onion endpoint is the ASCII
text C{<56 base32 characters>.onion:<port>}, a Tor v3 onion address and a
port.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re

from p2pblob.dht.constants import COMPACT_PEER_SIZE, HASH_LENGTH
from p2pblob.errors import DatagramError

__all__ = [
    "check_hash",
    "check_port",
    "compact_ip",
    "compact_peer",
    "decode_compact_peer",
    "decode_onion_endpoint",
    "onion_endpoint",
]

_IP_LENGTH = 4
_PORT_END = _IP_LENGTH + 2


def compact_ip(host: str) -> bytes:
    """
    The 4 bytes of an IPv4 address written as a dotted quad (C{"1.2.3.4"}).

    @raise DatagramError: if C{host} is not an IPv4 address in canonical
        dotted-quad form (no leading zeros, no spaces).
    """
    if not isinstance(host, str):
        raise DatagramError(f"host {host!r:.60} is not a string")
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        raise DatagramError(f"{host!r:.60} is not an IPv4 address") from None


def check_port(port: object, what: str = "port") -> int:
    """
    Return C{port} if it is a port number (an L{int} from 1 to 65535).

    @param what: how to name the port in the error.
    @raise DatagramError: otherwise.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise DatagramError(f"{what} {port!r:.30} is not a port number (1 to 65535)")
    return port


def check_hash(value: object, what: str = "node id") -> bytes:
    """
    Return C{value} if it is 48 bytes, the size of a node id, a key (blob
    hash) and a token.

    @param what: how to name the value in the error.
    @raise DatagramError: otherwise.
    """
    if not isinstance(value, bytes):
        raise DatagramError(f"{what} is a {type(value).__name__}, not bytes")
    if len(value) != HASH_LENGTH:
        raise DatagramError(f"{what} is {len(value)} bytes, not {HASH_LENGTH}")
    return value


def compact_peer(host: str, tcp_port: int, node_id: bytes) -> bytes:
    """
    The compact address of the peer serving blobs at C{host}:C{tcp_port}
    whose DHT node id is C{node_id}.

    @raise DatagramError: if C{host} is not an IPv4 address, C{tcp_port} not
        a port or C{node_id} not 48 bytes.
    """
    return (
        compact_ip(host) + check_port(tcp_port, "TCP port").to_bytes(2, "big") + check_hash(node_id)
    )


def decode_compact_peer(data: bytes) -> tuple[str, int, bytes]:
    """
    Read a compact peer address.

    @return: C{(host, tcp_port, node_id)}.
    @raise DatagramError: if C{data} is not 54 bytes or holds port 0.
    """
    if not isinstance(data, bytes):
        raise DatagramError(f"a compact peer address is a {type(data).__name__}, not bytes")
    if len(data) != COMPACT_PEER_SIZE:
        raise DatagramError(f"a compact peer address is {len(data)} bytes, not {COMPACT_PEER_SIZE}")
    host = str(ipaddress.IPv4Address(data[:_IP_LENGTH]))
    port = check_port(int.from_bytes(data[_IP_LENGTH:_PORT_END], "big"), "TCP port")
    return host, port, data[_PORT_END:]


# <56 base32 characters>.onion:<port, no leading zero>
_ONION_ENDPOINT = re.compile(rb"([a-z2-7]{56})\.onion:([1-9][0-9]{0,4})")
_ONION_VERSION = 3
_ONION_KEY_LENGTH = 32
_ONION_CHECKSUM = b".onion checksum"
# the longest endpoint: 56 + len(".onion:") + 5 digits
_ONION_ENDPOINT_MAX = 68


def decode_onion_endpoint(data: object) -> tuple[str, int]:
    """
    Read an onion endpoint, C{b"<56 base32 characters>.onion:<port>"}.

    Only a Tor v3 onion address is accepted (lower-case base32 of a 32-byte
    public key, its 2-byte checksum and the version byte 3, as tor writes
    it), with a port from 1 to 65535 written without leading zeros.

    @return: C{(host, port)}, the host C{"<56 characters>.onion"}.
    @raise DatagramError: otherwise.
    """
    if not isinstance(data, bytes):
        raise DatagramError(f"an onion endpoint is a {type(data).__name__}, not bytes")
    match = _ONION_ENDPOINT.fullmatch(data) if len(data) <= _ONION_ENDPOINT_MAX else None
    if match is None:
        raise DatagramError(f"{data[:80]!r} is not <v3 onion address>.onion:<port>")
    name, digits = match.groups()
    port = int(digits)
    if port > 65535:
        raise DatagramError(f"onion endpoint port {port} is not a port number (1 to 65535)")
    decoded = base64.b32decode(name.upper())
    key, checksum, version = (
        decoded[:_ONION_KEY_LENGTH], decoded[_ONION_KEY_LENGTH:-1], decoded[-1]
    )
    expected = hashlib.sha3_256(_ONION_CHECKSUM + key + bytes([version])).digest()[:2]
    if version != _ONION_VERSION or checksum != expected:
        raise DatagramError(f"{name.decode()}.onion is not a valid v3 onion address")
    return f"{name.decode()}.onion", port


def onion_endpoint(text: str) -> bytes:
    """
    The onion endpoint written C{"<56 base32 characters>.onion:<port>"}, as
    bytes, once checked (see L{decode_onion_endpoint}).

    @raise DatagramError: if it is not one.
    """
    if not isinstance(text, str) or not text.isascii():
        raise DatagramError(f"{text!r:.80} is not <v3 onion address>.onion:<port>")
    data = text.encode("ascii")
    decode_onion_endpoint(data)
    return data
