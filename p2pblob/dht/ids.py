"""
Node ids and keys of the DHT: 48-byte strings, compared by XOR distance.

Node ids, blob hashes used as keys and the ids looked up to refresh a bucket
all live in the same space of C{2 ** 384} values (spec section 7.1,
C{HASH_LENGTH}).  Here they are plain C{bytes}; the routing table turns them
into integers (big-endian) when it needs ranges.
"""

from __future__ import annotations

import random
import secrets

from p2pblob.dht.constants import HASH_LENGTH

__all__ = [
    "ID_SPACE",
    "check_id",
    "distance",
    "id_from_int",
    "id_to_int",
    "random_id",
    "random_id_in_range",
]

ID_SPACE = 2 ** (8 * HASH_LENGTH)
"""
The number of distinct ids; ranges of ids are sub-ranges of C{[0, ID_SPACE)}.
"""


def check_id(value: object) -> bytes:
    """
    Make sure C{value} is a node id or key.

    @param value: anything received from a peer or a caller.
    @return: C{value} as C{bytes}.
    @raise ValueError: if C{value} is not C{bytes} (or C{bytearray}) of
        exactly L{HASH_LENGTH} bytes.
    """
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"a node id must be {HASH_LENGTH} bytes, not a {type(value).__name__}")
    if len(value) != HASH_LENGTH:
        raise ValueError(f"a node id must be {HASH_LENGTH} bytes, not {len(value)}")
    return bytes(value)


def id_to_int(node_id: bytes) -> int:
    """
    @return: C{node_id} read as a big-endian unsigned integer.
    """
    return int.from_bytes(node_id, "big")


def id_from_int(value: int) -> bytes:
    """
    @param value: an integer in C{[0, ID_SPACE)}.
    @return: the id whose big-endian value is C{value}.
    @raise ValueError: if C{value} is out of the id space.
    """
    if not 0 <= value < ID_SPACE:
        raise ValueError(f"{value} is outside the id space")
    return value.to_bytes(HASH_LENGTH, "big")


def distance(a: bytes, b: bytes) -> int:
    """
    The Kademlia distance between two ids.

    @param a: an id of L{HASH_LENGTH} bytes.
    @param b: another id of the same length.
    @return: C{a XOR b} read as a big-endian unsigned integer: C{0} when they
        are equal; smaller means closer.
    @raise ValueError: if the two ids differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"cannot compare ids of {len(a)} and {len(b)} bytes")
    return id_to_int(a) ^ id_to_int(b)


def random_id(rng: random.Random | None = None) -> bytes:
    """
    A new random id, e.g. for a node that has none yet.

    @param rng: where to take the bits from; by default the operating
        system's secure source (use a seeded L{random.Random} only in tests
        and simulations).
    @return: L{HASH_LENGTH} random bytes.
    """
    if rng is None:
        return secrets.token_bytes(HASH_LENGTH)
    return rng.getrandbits(8 * HASH_LENGTH).to_bytes(HASH_LENGTH, "big")


def random_id_in_range(low: int, high: int, rng: random.Random) -> bytes:
    """
    A random id in a range of the id space, as looked up to refresh the
    k-bucket that covers that range.

    @param low: the smallest id of the range, as an integer.
    @param high: one more than the largest id of the range.
    @param rng: the source of randomness.
    @return: an id C{i} with C{low <= id_to_int(i) < high}.
    @raise ValueError: if the range is empty or not inside C{[0, ID_SPACE)}.
    """
    if not 0 <= low < high <= ID_SPACE:
        raise ValueError(f"[{low}, {high}) is not a non-empty range of the id space")
    return id_from_int(rng.randrange(low, high))
