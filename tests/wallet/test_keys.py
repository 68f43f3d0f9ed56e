"""
Tests for L{p2pblob.wallet.keys}: the key pair is made once, kept private
and read back; public keys from peers are read strictly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import WalletKeyError
from p2pblob.wallet import keys
from p2pblob.wallet.keys import (
    NodeKey,
    load_or_create_key,
    parse_public_key,
    verify_signature,
)
from tests.wallet._helpers import SEED_A


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.path = self.directory / "wallet" / "key"

    def test_created_on_first_use(self) -> None:
        """
        The first use makes the key file, readable by its owner only, in a
        private directory, with nothing else left behind.
        """
        with capturedLogs() as events:
            key = load_or_create_key(self.path)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(self.path.parent.stat().st_mode), 0o700)
        self.assertEqual(os.listdir(self.path.parent), ["key"])
        self.assertTrue(self.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----"))
        self.assertEqual(len(key.public_key), 32)
        self.assertEqual(key.public_hex, key.public_key.hex())
        self.assertTrue(any(key.public_hex in str(e.get("public")) for e in events))

    def test_kept(self) -> None:
        """
        Later uses read the same key back.
        """
        first = load_or_create_key(self.path)
        again = load_or_create_key(self.path)
        self.assertEqual(again.public_key, first.public_key)
        signature = again.sign(b"message")
        self.assertTrue(verify_signature(first.public_key, signature, b"message"))

    def test_created_meanwhile(self) -> None:
        """
        If another process links its key first, that key is the one used,
        and the temporary file is gone.
        """
        other = NodeKey.from_seed(SEED_A)
        real_link = os.link

        def link(source: str | Path, destination: str | Path) -> None:
            Path(destination).write_bytes(other.to_pem())
            real_link(source, destination)

        self.patch(keys.os, "link", link)
        key = load_or_create_key(self.path)
        self.assertEqual(key.public_key, other.public_key)
        self.assertEqual(os.listdir(self.path.parent), ["key"])

    def test_unreadable(self) -> None:
        """
        A file that is not a private key, or not an Ed25519 one, is an error
        that names the file.
        """
        self.path.parent.mkdir(parents=True)
        self.path.write_bytes(b"garbage")
        with self.assertRaises(WalletKeyError) as e:
            load_or_create_key(self.path)
        self.assertIn(str(self.path), str(e.exception))
        ec_key = generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.path.write_bytes(ec_key)
        with self.assertRaises(WalletKeyError) as e:
            load_or_create_key(self.path)
        self.assertIn("not an Ed25519 key", str(e.exception))

    def test_cannot_create(self) -> None:
        """
        A directory that cannot be made is an error, not a traceback.
        """
        self.directory.mkdir()
        (self.directory / "wallet").write_bytes(b"a file where the directory should be")
        with self.assertRaises(WalletKeyError) as e:
            load_or_create_key(self.path)
        self.assertIn("the wallet key", str(e.exception))
        self.assertIn("Not a directory", str(e.exception))

    def test_readable_by_others(self) -> None:
        """
        A key file others can read is used, with a warning.
        """
        key = load_or_create_key(self.path)
        self.path.chmod(0o644)
        with capturedLogs() as events:
            again = load_or_create_key(self.path)
        self.assertEqual(again.public_key, key.public_key)
        self.assertTrue(any("chmod 600" in e.get("log_format", "") for e in events))


class PublicKeyTests(SynchronousTestCase):
    def test_parse(self) -> None:
        key = NodeKey.from_seed(SEED_A)
        self.assertEqual(parse_public_key(key.public_hex), key.public_key)
        for bad in (None, 5, key.public_hex.upper(), key.public_hex[:-1], key.public_hex + "0",
                    "zz" * 32, key.public_key):
            with self.assertRaises(ValueError, msg=repr(bad)):
                parse_public_key(bad)

    def test_verify(self) -> None:
        """
        Signatures check against the signer's key only; wrong sizes are
        simply invalid.
        """
        key = NodeKey.from_seed(SEED_A)
        other = NodeKey.generate()
        signature = key.sign(b"data")
        self.assertTrue(verify_signature(key.public_key, signature, b"data"))
        self.assertFalse(verify_signature(other.public_key, signature, b"data"))
        self.assertFalse(verify_signature(key.public_key, signature, b"date"))
        self.assertFalse(verify_signature(key.public_key[:31], signature, b"data"))
        self.assertFalse(verify_signature(key.public_key, signature[:63], b"data"))
        self.assertIn(key.public_hex[:16], repr(key))
