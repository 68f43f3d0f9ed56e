"""
Tests for L{p2pblob.stream.crypt}: blob encryption must reproduce, byte for
byte, the blobs lbry-sdk made for the test vectors.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.errors import DecryptionError, StreamError
from p2pblob.stream.crypt import (
    IV_SIZE,
    KEY_SIZE,
    PLAINTEXT_CHUNK_SIZE,
    ciphertext_length,
    decrypt_blob,
    encrypt_blob,
    random_iv,
    random_key,
)
from tests._vectors import (
    case_names,
    generate_plaintext,
    load_case,
    vector_bytes,
    vector_path,
)

KEY = bytes(range(16))
IV = bytes(range(16, 32))


def _raw_cbc(key: bytes, iv: bytes, blocks: bytes) -> bytes:
    """
    AES-CBC without any padding, to craft ciphertexts with chosen padding.
    """
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(blocks) + encryptor.finalize()


class ConstantsTests(SynchronousTestCase):
    """
    The sizes the spec fixes.
    """

    def test_sizes(self) -> None:
        """
        A full plaintext chunk is one byte short of a blob; keys and IVs are
        16 bytes.
        """
        self.assertEqual(PLAINTEXT_CHUNK_SIZE, 2_097_151)
        self.assertEqual(PLAINTEXT_CHUNK_SIZE, MAX_BLOB_SIZE - 1)
        self.assertEqual((KEY_SIZE, IV_SIZE), (16, 16))

    def test_ciphertext_length(self) -> None:
        """
        PKCS#7 always adds 1 to 16 bytes.
        """
        for plain, cipher in [(0, 16), (1, 16), (15, 16), (16, 32), (17, 32)]:
            self.assertEqual(ciphertext_length(plain), cipher)
        self.assertEqual(ciphertext_length(PLAINTEXT_CHUNK_SIZE), MAX_BLOB_SIZE)
        self.assertRaises(ValueError, ciphertext_length, -1)

    def test_random_key_and_iv(self) -> None:
        """
        Random keys and IVs have the right size and differ each time.
        """
        self.assertEqual(len(random_key()), KEY_SIZE)
        self.assertEqual(len(random_iv()), IV_SIZE)
        self.assertNotEqual(random_key(), random_key())
        self.assertNotEqual(random_iv(), random_iv())


class VectorTests(SynchronousTestCase):
    """
    Encrypting the vectors' plaintexts reproduces every blob lbry-sdk made.
    """

    def _check_case(self, name: str) -> None:
        """
        For every data blob of case C{name}: the recorded plaintext slice
        encrypts, with the case's key and the blob's IV, to bytes with the
        recorded length and hash, and decrypts back.
        """
        case = load_case(name)
        plaintext = generate_plaintext(case["input"]["length"])
        self.assertEqual(hashlib.sha384(plaintext).hexdigest(), case["input"]["sha384"])
        key = bytes.fromhex(case["key_hex"])
        self.assertEqual(key, hashlib.sha256(f"lbry-vectors/{name}/key".encode()).digest()[:16])
        data = [b for b in case["blobs"] if not b.get("terminator")]
        self.assertEqual(len(data), case["data_blob_count"])
        self.assertEqual(len(case["ivs_hex"]), len(case["blobs"]))
        for number, info in enumerate(data):
            self.assertEqual(info["iv"], case["ivs_hex"][number])
            self.assertEqual(info["plaintext_offset"], number * PLAINTEXT_CHUNK_SIZE)
            start = info["plaintext_offset"]
            chunk = plaintext[start : start + info["plaintext_length"]]
            iv = bytes.fromhex(info["iv"])
            blob = encrypt_blob(key, iv, chunk)
            self.assertEqual(len(blob), info["length"])
            self.assertEqual(len(blob) - len(chunk), info["pkcs7_pad_bytes"])
            self.assertEqual(blob_hash(blob), info["blob_hash"])
            # Only small blobs are kept in tests/vectors (case b's).
            if info["file"] is not None and vector_path("streams", name, info["file"]).exists():
                self.assertEqual(blob, vector_bytes("streams", name, info["file"]))
            self.assertEqual(decrypt_blob(key, iv, blob), chunk)
        covered = sum(info["plaintext_length"] for info in data)
        self.assertEqual(covered, len(plaintext))

    def test_every_case_is_tested(self) -> None:
        """
        The vectors hold exactly the cases this class tests.
        """
        tested = {n[len("test_") :] for n in dir(self) if n.startswith("test_")}
        self.assertEqual(
            {name.split("_", 1)[0] for name in case_names()},
            {t for t in tested if len(t) == 1},
        )

    def test_a(self) -> None:
        """
        Case a: an empty file has no data blob.
        """
        self._check_case("a_empty")

    def test_b(self) -> None:
        """
        Case b: one byte, padded with 15; the shipped blob is reproduced.
        """
        self.assertTrue(vector_path("streams", "b_one_byte", "blobs").is_dir())
        self._check_case("b_one_byte")

    def test_c(self) -> None:
        """
        Case c: one full chunk makes a blob of exactly 2 MiB.
        """
        self._check_case("c_one_full_blob")

    def test_d(self) -> None:
        """
        Case d: a full chunk plus one byte makes a 2 MiB and a 16-byte blob.
        """
        self._check_case("d_full_blob_plus_one")

    def test_e(self) -> None:
        """
        Case e: 5 MiB + 123 bytes make three blobs.
        """
        self._check_case("e_5MiB_plus_123")

    def test_f(self) -> None:
        """
        Case f: 1000 bytes (a Unicode file name; names do not matter here).
        """
        self._check_case("f_unicode_name")

    def test_g(self) -> None:
        """
        Case g: 100 bytes.
        """
        self._check_case("g_sanitized_name")


class DecryptErrorTests(SynchronousTestCase):
    """
    L{decrypt_blob} refuses whatever is not a well-padded AES-CBC output.
    """

    def test_bad_lengths(self) -> None:
        """
        An empty blob or one that is not a multiple of 16 bytes is refused.
        """
        for length in (0, 1, 15, 17, 31):
            error = self.assertRaises(DecryptionError, decrypt_blob, KEY, IV, b"\0" * length)
            self.assertIn(f"{length} bytes", str(error))
            self.assertIsInstance(error, StreamError)

    def test_pad_length_zero(self) -> None:
        """
        A last byte of 0 is not a PKCS#7 pad length.
        """
        blob = _raw_cbc(KEY, IV, b"A" * 15 + b"\x00")
        error = self.assertRaises(DecryptionError, decrypt_blob, KEY, IV, blob)
        self.assertIn("pad length 0", str(error))

    def test_pad_length_too_large(self) -> None:
        """
        A last byte above 16 is not a PKCS#7 pad length.
        """
        blob = _raw_cbc(KEY, IV, b"A" * 31 + b"\x11")
        error = self.assertRaises(DecryptionError, decrypt_blob, KEY, IV, blob)
        self.assertIn("pad length 17", str(error))

    def test_unequal_pad_bytes(self) -> None:
        """
        Every pad byte must equal the pad length.
        """
        for block in (b"A" * 14 + b"\x01\x02", b"A" + b"\x0f" * 14 + b"\x0e"):
            blob = _raw_cbc(KEY, IV, block)
            error = self.assertRaises(DecryptionError, decrypt_blob, KEY, IV, blob)
            self.assertIn("not all equal", str(error))

    def test_full_pad_block(self) -> None:
        """
        A block of sixteen 16s is a valid pad of the empty plaintext.
        """
        self.assertEqual(decrypt_blob(KEY, IV, _raw_cbc(KEY, IV, b"\x10" * 16)), b"")

    def test_wrong_key_sizes(self) -> None:
        """
        Keys and IVs of the wrong size are programming errors.
        """
        for key, iv in [(KEY[:15], IV), (KEY + b"x", IV), (KEY, IV[:8]), (b"", b"")]:
            self.assertRaises(ValueError, encrypt_blob, key, iv, b"data")
            self.assertRaises(ValueError, decrypt_blob, key, iv, b"\0" * 16)


class RoundTripTests(SynchronousTestCase):
    """
    Property: decryption inverts encryption.
    """

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        key=st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE),
        iv=st.binary(min_size=IV_SIZE, max_size=IV_SIZE),
        plaintext=st.binary(max_size=5000),
    )
    def test_round_trip(self, key: bytes, iv: bytes, plaintext: bytes) -> None:
        """
        Any plaintext encrypts to L{ciphertext_length} bytes and decrypts
        back to itself.
        """
        blob = encrypt_blob(key, iv, plaintext)
        self.assertEqual(len(blob), ciphertext_length(len(plaintext)))
        self.assertEqual(decrypt_blob(key, iv, blob), plaintext)

    @settings(max_examples=100, deadline=None, database=None)
    @given(
        key=st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE),
        iv=st.binary(min_size=IV_SIZE, max_size=IV_SIZE),
        blob=st.binary(min_size=1, max_size=200),
    )
    def test_decrypt_garbage(self, key: bytes, iv: bytes, blob: bytes) -> None:
        """
        Decrypting arbitrary bytes gives bytes or L{DecryptionError}, and
        whatever decrypts re-encrypts to the same bytes.
        """
        try:
            plaintext = decrypt_blob(key, iv, blob)
        except DecryptionError:
            return
        self.assertEqual(encrypt_blob(key, iv, plaintext), blob)
