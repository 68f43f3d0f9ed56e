"""
Blob names and sizes (spec section 1).

A blob is named by the lowercase hex sha384 of its exact bytes and holds at
most L{MAX_BLOB_SIZE} bytes.
"""

from __future__ import annotations

import hashlib
import re

from p2pblob.errors import InvalidBlobHashError

__all__ = [
    "MAX_BLOB_SIZE",
    "BLOB_HASH_LENGTH",
    "blob_hash",
    "is_blob_hash",
    "check_blob_hash",
    "new_hasher",
]

MAX_BLOB_SIZE = 2 * 1024 * 1024
BLOB_HASH_LENGTH = 2 * hashlib.sha384().digest_size

_BLOB_HASH = re.compile(f"[0-9a-f]{{{BLOB_HASH_LENGTH}}}")


def new_hasher() -> hashlib._Hash:
    """
    A fresh sha384 hasher, the digest that names blobs.
    """
    return hashlib.sha384()


def blob_hash(data: bytes) -> str:
    """
    The name of a blob holding C{data}.
    """
    return hashlib.sha384(data).hexdigest()


def is_blob_hash(value: object) -> bool:
    """
    Whether C{value} is a string of 96 lowercase hex characters.
    """
    return isinstance(value, str) and _BLOB_HASH.fullmatch(value) is not None


def check_blob_hash(value: object) -> str:
    """
    Return C{value} if it is a valid blob name.

    @raise InvalidBlobHashError: if it is not.
    """
    if not is_blob_hash(value):
        raise InvalidBlobHashError(str(value))
    assert isinstance(value, str)
    return value
