"""
The node's payment key: an Ed25519 key pair.

The public key names this node in payments: it is what peers learn through
the payment-key exchange and the payer or payee of every cheque.  It goes on
the wire as 64 lowercase hexadecimal characters (its 32 raw bytes).

The private key is created the first time it is needed and kept in the data
directory (C{wallet/key}), as an unencrypted PKCS#8 PEM file readable by the
node's user only (mode 0600).  The file is written whole to a temporary name,
synced, and then linked to its final name, so a crash never leaves a partial
key behind; if two processes create it at once, both end up with the one
that was linked first.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from twisted.logger import Logger

from p2pblob._durable import fsync_dir
from p2pblob.errors import WalletKeyError

__all__ = [
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "NodeKey",
    "load_or_create_key",
    "parse_public_key",
    "verify_signature",
]

_log = Logger()

KEY_SIZE = 32
"""
Bytes in an Ed25519 public key.
"""

SIGNATURE_SIZE = 64
"""
Bytes in an Ed25519 signature.
"""

_HEX_KEY = re.compile(r"[0-9a-f]{64}")


class NodeKey:
    """
    This node's payment key pair.

    @ivar public_key: the 32 raw bytes of the public key.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> NodeKey:
        """
        A new random key pair, kept in memory only.
        """
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """
        The key pair whose private key is the 32 bytes C{seed} (test vectors
        and tests; a real node uses L{load_or_create_key}).
        """
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_hex(self) -> str:
        """
        The public key as it goes on the wire: 64 lowercase hex characters.
        """
        return self.public_key.hex()

    def sign(self, data: bytes) -> bytes:
        """
        Sign C{data}; return the 64-byte signature.
        """
        return self._private_key.sign(data)

    def to_pem(self) -> bytes:
        """
        The private key as an unencrypted PKCS#8 PEM document.
        """
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"<NodeKey {self.public_hex[:16]}…>"


def parse_public_key(value: object) -> bytes:
    """
    Read a public key sent by a peer: 64 lowercase hex characters that
    decode to a valid Ed25519 public key.

    @return: the key's 32 raw bytes.
    @raise ValueError: C{value} is anything else.
    """
    if not isinstance(value, str) or _HEX_KEY.fullmatch(value) is None:
        raise ValueError(f"{value!r:.80} is not a payment key (64 lowercase hex characters)")
    raw = bytes.fromhex(value)
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError(f"{value[:16]}… is not a valid Ed25519 public key") from None
    return raw


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """
    Whether C{signature} is C{public_key}'s signature of C{data}.  Never
    raises for bad input: a key or signature of the wrong size is simply
    not valid.
    """
    if len(public_key) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_or_create_key(path: Path) -> NodeKey:
    """
    The key pair kept in C{path}, created there (mode 0600, with its
    directory, mode 0700) if the file does not exist yet.

    @raise WalletKeyError: the file cannot be read or written, or does not
        hold an Ed25519 private key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as e:
        raise WalletKeyError(f"cannot read the wallet key {path}: {e.strerror}") from None
    _check_mode(path)
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> NodeKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise WalletKeyError(
            f"{path} does not hold a readable unencrypted private key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise WalletKeyError(f"{path} holds a private key that is not an Ed25519 key")
    return NodeKey(key)


def _check_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warn(
            "The wallet key {path} can be read by other users (mode {mode:o}); "
            "run chmod 600 on it",
            path=str(path), mode=stat.S_IMODE(mode),
        )


def _create(path: Path) -> NodeKey:
    key = NodeKey.generate()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key.to_pem())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link, not rename: if another process created the key meanwhile,
            # its key stays and is the one we use
            os.link(temporary, path)
        except FileExistsError:
            return _parse(path, path.read_bytes())
        finally:
            temporary.unlink()
        fsync_dir(path.parent)
    except OSError as e:
        raise WalletKeyError(f"cannot create the wallet key {path}: {e.strerror}") from None
    _log.info("Created the wallet key {path} (public key {public})",
              path=str(path), public=key.public_hex)
    return key
