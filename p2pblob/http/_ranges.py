"""
The arithmetic of byte ranges and stream lengths for
L{p2pblob.http.streaming}: reading a C{Range} header (L{parse_range}), the
bytes it selects (L{satisfiable_range}), and a blob's plaintext length from
its last 32 bytes (L{last_blob_plaintext_length}).
"""

from __future__ import annotations

import re

from p2pblob.errors import DecryptionError
from p2pblob.stream.crypt import BLOCK_SIZE, decrypt_blob

__all__ = ["last_blob_plaintext_length", "parse_range", "satisfiable_range"]

_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(value: bytes) -> tuple[int | None, int | None] | None:
    """
    Read a C{Range} header asking for one range of bytes.

    @return: C{(first, last)} for C{bytes=first-last}, C{last} being
        L{None} for C{bytes=first-}; C{(None, n)} for the suffix
        C{bytes=-n}; or L{None} if the header is not a valid bytes range, or
        asks for several ranges.
    """
    try:
        unit, equals, ranges = value.decode("ascii").partition("=")
    except UnicodeDecodeError:
        return None
    specs = [spec.strip() for spec in ranges.split(",") if spec.strip()]
    if not equals or unit.strip().lower() != "bytes" or len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None or match.group(0) == "-":
        return None
    try:
        first, last = (int(text) if text else None for text in match.groups())
    except ValueError:  # more digits than Python converts
        return None
    if first is not None and last is not None and last < first:
        return None
    return first, last


def satisfiable_range(spec: tuple[int | None, int | None], total: int) -> tuple[int, int] | None:
    """
    The bytes C{(start, end)}, both included, that a range from
    L{parse_range} selects from C{total} (at least 1) bytes, or L{None} if
    none (RFC 9110 14.1.1: a start past the end, or a suffix of 0).
    """
    first, last = spec
    if first is None:
        return None if not last else (max(total - last, 0), total - 1)
    if first >= total:
        return None
    return first, total - 1 if last is None else min(last, total - 1)


def last_blob_plaintext_length(key: bytes, iv: bytes, length: int, tail: bytes) -> int:
    """
    How many bytes of plaintext a blob holds, from its final bytes alone.

    In CBC mode a block decrypts with the ciphertext block before it as its
    IV (the blob's own IV for the first), and PKCS#7 puts the whole pad in
    the final block: decrypting that block alone gives the pad length.

    @param iv: the blob's IV, used only if the blob is a single block.
    @param length: the blob's ciphertext length, from the descriptor.
    @param tail: the blob's last C{min(length, 32)} bytes.
    @raise DecryptionError: if the lengths or the padding are impossible.
    """
    if length < BLOCK_SIZE or length % BLOCK_SIZE or len(tail) != min(length, 2 * BLOCK_SIZE):
        raise DecryptionError(f"{len(tail)} final bytes of a {length}-byte blob cannot be read")
    block_iv = iv if length == BLOCK_SIZE else tail[:BLOCK_SIZE]
    return length - BLOCK_SIZE + len(decrypt_blob(key, block_iv, tail[-BLOCK_SIZE:]))
