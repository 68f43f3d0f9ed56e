"""
The numbers of LBRY's Kademlia DHT (C{spec/lbry-wire.md} section 7.1).

Values are those of modern lbry-sdk (0.113.0) where the two eras differ,
since modern nodes are the ones still running.
"""

from __future__ import annotations

__all__ = [
    "ALPHA",
    "CHECK_REFRESH_INTERVAL",
    "COMPACT_PEER_SIZE",
    "DATA_EXPIRATION",
    "HASH_LENGTH",
    "K",
    "MAX_DATAGRAM_SIZE",
    "PROTOCOL_VERSION",
    "REFRESH_INTERVAL",
    "RPC_ID_LENGTH",
    "RPC_TIMEOUT",
    "TOKEN_SECRET_REFRESH",
]

HASH_LENGTH = 48
"""
Bytes in a node id, a key (blob hash), a token and a token secret: a sha384
digest (spec 7.1, C{HASH_LENGTH}).
"""

RPC_ID_LENGTH = 20
"""
Bytes in an RPC id; modern nodes drop datagrams with any other length
(spec 7.2, C{RPC_ID_LENGTH}).
"""

K = 8
"""
Bucket size, and how many contacts or peers one reply lists (spec 7.1, C{K}).
"""

ALPHA = 5
"""
How many probes an iterative lookup keeps in flight (spec 7.1, modern
C{ALPHA}; 2015 used 3).
"""

RPC_TIMEOUT = 5.0
"""
Seconds to wait for the reply to one RPC (spec 7.1, C{RPC_TIMEOUT}).
"""

MAX_DATAGRAM_SIZE = 1400
"""
The largest datagram we send, in bytes; modern lbry refuses to send anything
larger and has no fragmentation (spec 7.1, C{MSG_SIZE_LIMIT}).
"""

DATA_EXPIRATION = 86400
"""
Seconds a stored peer announcement stays valid without being refreshed
(spec 7.1, C{DATA_EXPIRATION}).
"""

TOKEN_SECRET_REFRESH = 300
"""
Seconds between rotations of the secret tokens are made from; a token made
with the current or the previous secret is accepted (spec 7.5,
C{TOKEN_SECRET_REFRESH_INTERVAL}).
"""

REFRESH_INTERVAL = 3600
"""
Seconds between routing-table refresh cycles (spec 7.1, C{REFRESH_INTERVAL}).
"""

CHECK_REFRESH_INTERVAL = 720
"""
Seconds a contact stays "good" after its last reply to us, and how often
2015 nodes checked for buckets to refresh (spec 7.1 and 7.4,
C{CHECK_REFRESH_INTERVAL}).
"""

PROTOCOL_VERSION = 1
"""
The C{protocolVersion} modern nodes put in every request's trailing argument
dictionary and in C{findValue} results (spec 7.2).
"""

COMPACT_PEER_SIZE = 54
"""
Bytes in a compact peer address: 4 IPv4 bytes, a 2-byte big-endian TCP port
and a 48-byte node id (spec 7.3).
"""
