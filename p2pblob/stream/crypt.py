"""
Blob encryption for streams (spec section 2).

A stream's plaintext is cut into chunks of L{PLAINTEXT_CHUNK_SIZE} bytes (the
last one shorter).  Each chunk is encrypted on its own with AES-128 in CBC mode
under the stream's key and the blob's own IV, padded with PKCS#7, so that a
full chunk becomes exactly L{MAX_BLOB_SIZE} bytes of ciphertext.  The IV is
kept in the stream descriptor, never in the blob.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from p2pblob._buffers import Buffer
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import DecryptionError

__all__ = [
    "BLOCK_SIZE",
    "IV_SIZE",
    "KEY_SIZE",
    "PLAINTEXT_CHUNK_SIZE",
    "ciphertext_length",
    "decrypt_blob",
    "decrypt_into",
    "encrypt_blob",
    "encrypt_into",
    "random_iv",
    "random_key",
]

BLOCK_SIZE = 16
"""
The AES block size in bytes; also the largest PKCS#7 pad.
"""

KEY_SIZE = 16
"""
Bytes in a stream key (AES-128).
"""

IV_SIZE = 16
"""
Bytes in a blob's initialisation vector.
"""

PLAINTEXT_CHUNK_SIZE = MAX_BLOB_SIZE - 1
"""
Plaintext bytes per data blob: 2,097,151, so that a full chunk plus its one
byte of padding fills a blob exactly.
"""


def _cipher(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    """
    A new AES-128-CBC cipher for one blob.

    @raise ValueError: if C{key} or C{iv} is not 16 bytes long.
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"a stream key is {KEY_SIZE} bytes, not {len(key)}")
    if len(iv) != IV_SIZE:
        raise ValueError(f"a blob IV is {IV_SIZE} bytes, not {len(iv)}")
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def ciphertext_length(plaintext_length: int) -> int:
    """
    How many bytes L{encrypt_blob} produces for C{plaintext_length} bytes.

    PKCS#7 always adds 1 to 16 bytes, so the result is the next multiple of
    16 strictly above C{plaintext_length}.

    @raise ValueError: if C{plaintext_length} is negative.
    """
    if plaintext_length < 0:
        raise ValueError(f"negative plaintext length {plaintext_length}")
    return (plaintext_length // BLOCK_SIZE + 1) * BLOCK_SIZE


def encrypt_blob(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """
    Encrypt one chunk of a stream into the bytes of its blob.

    @param key: the stream's 16-byte AES key.
    @param iv: this blob's 16-byte IV.
    @param plaintext: the chunk, normally at most L{PLAINTEXT_CHUNK_SIZE}
        bytes (longer input is encrypted all the same; the caller decides
        how to cut a stream).
    @return: the ciphertext, L{ciphertext_length}C{(len(plaintext))} bytes.
    @raise ValueError: if the key or IV has the wrong size.
    """
    encryptor = _cipher(key, iv).encryptor()
    remainder = len(plaintext) % BLOCK_SIZE
    pad = BLOCK_SIZE - remainder
    whole = len(plaintext) - remainder
    view = memoryview(plaintext)
    # Encrypt the whole blocks straight from the caller's buffer, then the
    # short padded tail; only the final join copies the ciphertext.
    tail = bytes(view[whole:]) + bytes([pad]) * pad
    return b"".join((encryptor.update(view[:whole]), encryptor.update(tail), encryptor.finalize()))


def decrypt_blob(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """
    Decrypt one blob of a stream back to its chunk of plaintext.

    The padding is checked strictly: the last byte must be 1 to 16 and every
    pad byte must equal it.

    @param key: the stream's 16-byte AES key.
    @param iv: this blob's 16-byte IV, from the descriptor.
    @param ciphertext: the blob's bytes.
    @return: the plaintext with the padding removed.
    @raise DecryptionError: if C{ciphertext} is empty or not a multiple of
        16 bytes long, or its padding is malformed (wrong key, wrong IV or
        damaged data).
    @raise ValueError: if the key or IV has the wrong size.
    """
    out = bytearray(len(ciphertext) + BLOCK_SIZE - 1)
    return bytes(memoryview(out)[: decrypt_into(key, iv, ciphertext, out)])


def encrypt_into(
    key: bytes, iv: bytes, buffer: bytearray | Buffer, length: int, out: bytearray | Buffer
) -> int:
    """
    Encrypt the chunk C{buffer[:length]} into C{out} without allocating: the
    padding is written into C{buffer} after the chunk, so C{buffer} needs
    room for L{BLOCK_SIZE} more bytes, and C{out} must be at least
    L{BLOCK_SIZE} - 1 bytes longer than the ciphertext.

    @return: the ciphertext length; the blob is C{out[:result]}.
    @raise ValueError: if a buffer is too small, or the key or IV has the
        wrong size.
    """
    padded = ciphertext_length(length)
    if len(buffer) < padded or len(out) < padded + BLOCK_SIZE - 1:
        raise ValueError("buffer too small for the padded chunk")
    pad = padded - length
    buffer[length:padded] = bytes([pad]) * pad
    encryptor = _cipher(key, iv).encryptor()
    written = encryptor.update_into(memoryview(buffer)[:padded], memoryview(out))
    encryptor.finalize()
    return written


def decrypt_into(
    key: bytes, iv: bytes, ciphertext: bytes | memoryview, out: bytearray | Buffer
) -> int:
    """
    Decrypt one blob into C{out} (at least L{BLOCK_SIZE} - 1 bytes longer
    than C{ciphertext}) without allocating, checking the padding as strictly
    as L{decrypt_blob}.

    @return: the plaintext length; the chunk is C{out[:result]}.
    @raise DecryptionError: as L{decrypt_blob}.
    """
    length = len(ciphertext)
    if length == 0 or length % BLOCK_SIZE:
        raise DecryptionError(
            f"an encrypted blob of {length} bytes cannot be AES-CBC output "
            f"(it must be a nonzero multiple of {BLOCK_SIZE} bytes)"
        )
    decryptor = _cipher(key, iv).decryptor()
    written = decryptor.update_into(ciphertext, memoryview(out))
    decryptor.finalize()
    pad = out[written - 1]
    if not 1 <= pad <= BLOCK_SIZE:
        raise DecryptionError(
            f"the blob decrypts to a bad PKCS#7 pad length {pad} (expected "
            f"1 to {BLOCK_SIZE}): wrong key or IV, or damaged data"
        )
    if out[written - pad : written] != bytes([pad]) * pad:
        raise DecryptionError(
            f"the blob's {pad} PKCS#7 pad bytes are not all equal to {pad}: "
            "wrong key or IV, or damaged data"
        )
    return written - pad


def random_key() -> bytes:
    """
    A new random stream key.
    """
    return os.urandom(KEY_SIZE)


def random_iv() -> bytes:
    """
    A new random blob IV.
    """
    return os.urandom(IV_SIZE)
