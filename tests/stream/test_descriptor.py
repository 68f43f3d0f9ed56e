"""
Tests for L{p2pblob.stream.descriptor}: we write the sd blobs lbry-sdk writes,
read every valid variant, and refuse every broken one cleanly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.errors import DescriptorError, InvalidDescriptorError
from p2pblob.stream.crypt import IV_SIZE, KEY_SIZE, decrypt_blob, encrypt_blob
from p2pblob.stream.descriptor import (
    BlobInfo,
    StreamDescriptor,
    blob_info_digest,
    blobs_hashsum,
    compute_stream_hash,
    parse_sd_blob,
)
from tests._vectors import (
    iter_cases,
    load_json,
    sd_blob_bytes,
    vector_bytes,
    vector_path,
)

CASE_E = "e_5MiB_plus_123"

# What the reason for refusing each file of invalid_sd/ must mention.
INVALID_REASONS = {
    "01_bad_stream_hash.json": ["stream_hash", "does not match"],
    "02_missing_terminator.json": ["terminator", "missing"],
    "03_zero_length_blob_before_end.json": ["blob 1", "length 0"],
    "04_terminator_with_blob_hash.json": ["terminator", "blob_hash"],
    "05_non_hex_key.json": ["key", "hex"],
    "06_blob_num_out_of_order.json": ["blob_num 1", "order"],
    "07_length_over_2MiB.json": ["blob 0", "2097168", "largest"],
    "08_not_json.bin": ["JSON"],
    "09_json_array.json": ["array", "not an object"],
    "10_truncated.bin": ["JSON"],
    "11_empty_blobs_list.json": ["blobs", "empty"],
    "12_missing_stream_hash.json": ["stream_hash", "missing"],
    "13_length_not_multiple_of_16.json": [
        "blob 2 has length 1048700, which is not a multiple of 16"
    ],
    "14_negative_length.json": ["blob 1", "-16", "negative"],
    "15_blob_hash_wrong_length.json": ["blob 0", "blob_hash", "95 characters"],
    "16_iv_wrong_length.json": ["blob 0", "iv"],
    "17_blob_num_gap.json": ["blob_num 3"],
    "18_stream_name_not_hex.json": ["stream_name", "hex"],
    "19_stream_name_not_utf8.json": ["stream_name", "UTF-8"],
    "20_trailing_garbage.bin": ["JSON", "Extra data"],
    "21_invalid_utf8_bytes.bin": ["UTF-8"],
    "22_stream_type_not_lbryfile.json": ["stream_type", "lbrylive"],
}


def _blob_infos(case: dict[str, Any]) -> list[BlobInfo]:
    """
    The L{BlobInfo}s a case's C{blobs} list records.
    """
    return [
        BlobInfo(b["blob_num"], b["length"], b["iv"], b.get("blob_hash")) for b in case["blobs"]
    ]


def _build(case: dict[str, Any]) -> StreamDescriptor:
    """
    Build a case's descriptor from its inputs, as a publisher would.
    """
    return StreamDescriptor.build(
        case["stream_name"],
        bytes.fromhex(case["key_hex"]),
        case["suggested_file_name"],
        _blob_infos(case),
    )


def _case_e_document() -> dict[str, Any]:
    """
    Case e's sd blob as a JSON document, to mutate.
    """
    document: dict[str, Any] = json.loads(sd_blob_bytes(CASE_E))
    return document


def _restamp(document: dict[str, Any]) -> bytes:
    """
    Serialize C{document} after recomputing its stream_hash from its
    (well-formed) fields.
    """
    document["stream_hash"] = compute_stream_hash(
        document["stream_name"],
        document["key"],
        document["suggested_file_name"],
        [
            BlobInfo(b["blob_num"], b["length"], b["iv"], b.get("blob_hash"))
            for b in document["blobs"]
        ],
    )
    return json.dumps(document).encode()


class VectorBuildTests(SynchronousTestCase):
    """
    Descriptors built from the vectors' inputs are byte-identical to
    lbry-sdk's.
    """

    def test_build_every_case(self) -> None:
        """
        For every case: the names and key encode to the recorded hex, every
        per-blob digest and the blobs hashsum match the recorded
        intermediates, and the sd blob, sd hash and stream_hash are
        lbry-sdk's.
        """
        for name, case in iter_cases():
            descriptor = _build(case)
            self.assertEqual(descriptor.stream_name_hex, case["stream_name_hex"])
            self.assertEqual(descriptor.suggested_file_name_hex, case["suggested_file_name_hex"])
            self.assertEqual(descriptor.key_hex, case["key_hex"])
            intermediates = case["stream_hash_intermediates"]
            self.assertEqual(
                [blob_info_digest(info).hex() for info in descriptor.blobs],
                intermediates["per_blob_digest_hex"],
            )
            self.assertEqual(
                blobs_hashsum(descriptor.blobs).hex(), intermediates["blobs_hashsum_hex"]
            )
            self.assertEqual(descriptor.stream_hash, case["stream_hash"], name)
            self.assertEqual(descriptor.to_sd_blob(), sd_blob_bytes(name), name)
            self.assertEqual(descriptor.sd_hash, case["sd_blob"]["sd_hash"])
            self.assertEqual(len(descriptor.to_sd_blob()), case["sd_blob"]["length"])

    def test_index(self) -> None:
        """
        C{streams/index.json} agrees with what we compute.
        """
        for entry in load_json("streams", "index.json")["cases"]:
            descriptor = parse_sd_blob(sd_blob_bytes(entry["case"]))
            self.assertEqual(descriptor.stream_hash, entry["stream_hash"])
            self.assertEqual(blob_hash(sd_blob_bytes(entry["case"])), entry["sd_hash"])
            self.assertEqual(descriptor.sd_hash, entry["sd_hash"])

    def test_old_order(self) -> None:
        """
        Case e in the 2015 key order is lbry-sdk's "old sort" file, byte for
        byte, with its different sd hash.
        """
        case = dict(iter_cases())[CASE_E]
        old = _build(case).to_sd_blob(old_order=True)
        self.assertEqual(old, sd_blob_bytes(CASE_E, old_order=True))
        self.assertEqual(blob_hash(old), case["sd_blob_old_order"]["sd_hash"])

    def test_parse_both_orders(self) -> None:
        """
        Both serializations of case e parse to the same descriptor, equal to
        the one built from the inputs, which re-serializes to either.
        """
        case = dict(iter_cases())[CASE_E]
        modern = parse_sd_blob(sd_blob_bytes(CASE_E))
        old = parse_sd_blob(sd_blob_bytes(CASE_E, old_order=True))
        self.assertEqual(modern, old)
        self.assertEqual(modern, _build(case))
        self.assertEqual(old.to_sd_blob(), sd_blob_bytes(CASE_E))
        self.assertEqual(modern.to_sd_blob(True), sd_blob_bytes(CASE_E, True))

    def test_parse_every_case(self) -> None:
        """
        Every case's sd blob parses to the built descriptor, with the
        recorded names, key, blobs and plaintext size bounds.
        """
        for name, case in iter_cases():
            descriptor = parse_sd_blob(sd_blob_bytes(name))
            self.assertEqual(descriptor, _build(case))
            self.assertEqual(descriptor.stream_name, case["input"]["file_name"])
            self.assertEqual(descriptor.suggested_file_name, case["suggested_file_name"])
            self.assertEqual(descriptor.key, bytes.fromhex(case["key_hex"]))
            self.assertEqual(descriptor.stream_type, "lbryfile")
            data = [b for b in case["blobs"] if not b.get("terminator")]
            self.assertEqual(descriptor.blob_hashes, [b["blob_hash"] for b in data])
            self.assertEqual(len(descriptor.data_blobs), case["data_blob_count"])
            self.assertTrue(descriptor.blobs[-1].is_terminator)
            self.assertFalse(any(b.is_terminator for b in descriptor.data_blobs))
            bounds = case.get("decrypted_length_bounds", {"lower": 0, "upper": 0})
            self.assertEqual(descriptor.plaintext_length_bounds, (bounds["lower"], bounds["upper"]))
            lower, upper = descriptor.plaintext_length_bounds
            self.assertTrue(lower <= case["input"]["length"] <= upper)

    def test_build_refuses_bad_key(self) -> None:
        """
        A key that is not 16 bytes is a programming error.
        """
        self.assertRaises(
            ValueError, StreamDescriptor.build, "a", b"short", "a", [BlobInfo(0, 0, "0" * 32)]
        )


class VariantTests(SynchronousTestCase):
    """
    Every serialization lbry-sdk accepts, we accept.
    """

    def test_sd_variants(self) -> None:
        """
        Every file in C{sd_variants/} parses to case e's descriptor.
        """
        index = load_json("sd_variants", "index.json")["cases"]
        self.assertEqual(len(index), 4)
        expected = parse_sd_blob(sd_blob_bytes(CASE_E))
        for entry in index:
            self.assertEqual(entry["expected"], "accept")
            data = vector_bytes("sd_variants", entry["file"])
            self.assertEqual(blob_hash(data), entry["sha384"])
            descriptor = parse_sd_blob(data)
            self.assertEqual(descriptor.stream_hash, entry["expected_stream_hash"])
            self.assertEqual(descriptor, expected)

    def test_missing_stream_type(self) -> None:
        """
        C{stream_type} is optional (it is not part of the stream_hash) and
        defaults to C{lbryfile}.
        """
        document = _case_e_document()
        del document["stream_type"]
        descriptor = parse_sd_blob(json.dumps(document).encode())
        self.assertEqual(descriptor, parse_sd_blob(sd_blob_bytes(CASE_E)))

    def test_empty_names(self) -> None:
        """
        Empty names are accepted; the downloader picks a default file name.
        """
        document = _case_e_document()
        document["suggested_file_name"] = ""
        document["stream_name"] = ""
        descriptor = parse_sd_blob(_restamp(document))
        self.assertEqual((descriptor.stream_name, descriptor.suggested_file_name), ("", ""))

    def test_bytes_like(self) -> None:
        """
        A bytearray or memoryview parses like bytes.
        """
        data = sd_blob_bytes(CASE_E)
        expected = parse_sd_blob(data)
        self.assertEqual(parse_sd_blob(bytearray(data)), expected)
        self.assertEqual(parse_sd_blob(memoryview(data)), expected)


class InvalidTests(SynchronousTestCase):
    """
    Every broken descriptor is refused with L{InvalidDescriptorError} and a
    reason in words.
    """

    def assertInvalid(self, data: object, *mentions: str) -> InvalidDescriptorError:
        """
        Parsing C{data} raises L{InvalidDescriptorError} whose reason
        mentions each of C{mentions}.
        """
        error = self.assertRaises(InvalidDescriptorError, parse_sd_blob, data)
        self.assertIsInstance(error, DescriptorError)
        for mention in mentions:
            self.assertIn(mention, error.reason)
        self.assertIn(error.reason, str(error))
        return error

    def test_invalid_sd(self) -> None:
        """
        Every file in C{invalid_sd/} is refused, for the right reason.
        """
        index = load_json("invalid_sd", "index.json")["cases"]
        files = {p.name for p in vector_path("invalid_sd").iterdir()} - {"index.json"}
        self.assertEqual({entry["file"] for entry in index}, files)
        self.assertEqual(set(INVALID_REASONS), files)
        for entry in index:
            self.assertEqual(entry["expected"], "reject")
            self.assertInvalid(
                vector_bytes("invalid_sd", entry["file"]), *INVALID_REASONS[entry["file"]]
            )

    def mutated(self, mutate: Any) -> bytes:
        """
        Case e's document after C{mutate(document)}, restamped.
        """
        document = _case_e_document()
        mutate(document)
        return _restamp(document)

    def test_not_bytes(self) -> None:
        """
        Only bytes are parsed.
        """
        self.assertInvalid(sd_blob_bytes(CASE_E).decode(), "bytes")
        self.assertInvalid(None, "bytes")

    def test_too_large(self) -> None:
        """
        Input larger than a blob is refused before any parsing.
        """
        self.assertInvalid(b" " * (MAX_BLOB_SIZE + 1), "more than a blob can hold")

    def test_deep_nesting(self) -> None:
        """
        Deeply nested JSON is refused, not a crash.
        """
        self.assertInvalid(b"[" * 200_000 + b"]" * 200_000)
        self.assertInvalid(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)

    def test_non_standard_json(self) -> None:
        """
        C{NaN}, duplicate keys and absurdly long integers are refused.
        """
        self.assertInvalid(b'{"x": NaN}', "NaN")
        data = sd_blob_bytes(CASE_E)
        self.assertInvalid(data[:-1] + b', "key": "00"}', "key", "twice")
        self.assertInvalid(b'{"x": ' + b"9" * 5000 + b"}", "JSON")

    def test_boolean_and_float_numbers(self) -> None:
        """
        C{false} is not 0, C{16.0} is not 16.
        """

        def bool_blob_num(d: dict[str, Any]) -> None:
            d["blobs"][0]["blob_num"] = False

        def float_length(d: dict[str, Any]) -> None:
            d["blobs"][-1]["length"] = 0.0

        self.assertInvalid(self.mutated(bool_blob_num), "blob_num", "not an integer")
        self.assertInvalid(self.mutated(float_length), "length", "not an integer")

    def test_uppercase_hex(self) -> None:
        """
        Hex fields must be lowercase, as every LBRY writer makes them.
        """
        for field in ("key", "stream_name"):
            document = _case_e_document()
            document[field] = document[field].upper()
            self.assertInvalid(_restamp(document), field, "lowercase")
        document = _case_e_document()
        document["blobs"][1]["iv"] = document["blobs"][1]["iv"].upper()
        self.assertInvalid(_restamp(document), "blob 1", "iv")

    def test_structure(self) -> None:
        """
        Wrong JSON types and missing entry fields are named.
        """

        self.assertInvalid(json.dumps({**_case_e_document(), "blobs": {}}).encode(), "blobs")
        self.assertInvalid(
            json.dumps({**_case_e_document(), "blobs": [1]}).encode(), "entry 0", "number"
        )
        document = _case_e_document()
        del document["blobs"][2]["iv"]
        self.assertInvalid(json.dumps(document).encode(), "entry 2", "'iv'")
        document = _case_e_document()
        document["blobs"][0]["blob_hash"] = None
        self.assertInvalid(json.dumps(document).encode(), "blob 0", "blob_hash")
        document = _case_e_document()
        document["blobs"][-1]["blob_hash"] = None
        self.assertInvalid(_restamp(document), "terminator", "blob_hash")
        self.assertInvalid(
            json.dumps({**_case_e_document(), "stream_hash": 7}).encode(), "stream_hash"
        )
        self.assertInvalid(b"null", "null")


# Any JSON value, for replacing parts of a valid descriptor.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["", "0" * 32, "0" * 96, "lbryfile", "00"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
TOP_KEYS = ["stream_name", "key", "suggested_file_name", "stream_hash", "blobs", "stream_type"]
BLOB_KEYS = ["blob_num", "length", "iv", "blob_hash"]
FUZZ = settings(max_examples=300, deadline=None, database=None)


class ParserPropertyTests(SynchronousTestCase):
    """
    Properties: whatever the input, L{parse_sd_blob} returns a descriptor
    that survives a round trip, or raises L{InvalidDescriptorError}.
    """

    def check(self, data: bytes) -> None:
        """
        Parse C{data}; anything but a descriptor or L{InvalidDescriptorError}
        fails the test, and a descriptor must round-trip.
        """
        try:
            descriptor = parse_sd_blob(data)
        except InvalidDescriptorError as e:
            self.assertIsInstance(e.reason, str)
            return
        self.assertEqual(parse_sd_blob(descriptor.to_sd_blob()), descriptor)
        self.assertEqual(parse_sd_blob(descriptor.to_sd_blob(True)), descriptor)

    @FUZZ
    @given(st.binary(max_size=2000))
    def test_random_bytes(self, data: bytes) -> None:
        """
        Random bytes.
        """
        self.check(data)

    @FUZZ
    @given(st.data())
    def test_byte_mutations(self, data: st.DataObject) -> None:
        """
        Case e's sd blob with bytes flipped, removed, inserted or cut off.
        """
        blob = bytearray(sd_blob_bytes(CASE_E))
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(blob)))
            action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
            if action == "flip" and position < len(blob):
                blob[position] ^= data.draw(st.integers(1, 255))
            elif action == "delete":
                del blob[position : position + data.draw(st.integers(1, 20))]
            elif action == "insert":
                blob[position:position] = data.draw(st.binary(min_size=1, max_size=20))
            else:
                del blob[position:]
        self.check(bytes(blob))

    @FUZZ
    @given(st.data())
    def test_json_mutations(self, data: st.DataObject) -> None:
        """
        Case e's document with keys deleted or values replaced by any JSON,
        restamped or not.
        """
        document = _case_e_document()
        for _ in range(data.draw(st.integers(1, 3))):
            target: dict[str, Any] = document
            blobs = document.get("blobs")
            entries = [b for b in blobs if isinstance(b, dict)] if isinstance(blobs, list) else []
            if data.draw(st.booleans()) and entries:
                target = data.draw(st.sampled_from(entries))
                key = data.draw(st.sampled_from(BLOB_KEYS))
            else:
                key = data.draw(st.sampled_from(TOP_KEYS))
            if data.draw(st.booleans()):
                target.pop(key, None)
            else:
                target[key] = data.draw(JSON_VALUES)
        encoded = json.dumps(document).encode()
        self.check(encoded)
        try:
            restamped = _restamp(document)
        except (AttributeError, KeyError, TypeError, ValueError):
            # The mutation broke the recipe's own inputs.
            return
        self.check(restamped)


class StreamRoundTripTests(SynchronousTestCase):
    """
    Property: a file cut, encrypted, described, serialized, parsed and
    decrypted comes back whole.
    """

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        plaintext=st.binary(max_size=3000),
        chunk_size=st.integers(1, 700),
        key=st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE),
        seed=st.binary(max_size=8),
        stream_name=st.text(max_size=30),
        suggested=st.text(max_size=30),
        old_order=st.booleans(),
    )
    def test_round_trip(
        self,
        plaintext: bytes,
        chunk_size: int,
        key: bytes,
        seed: bytes,
        stream_name: str,
        suggested: str,
        old_order: bool,
    ) -> None:
        """
        Any plaintext, any chunk size, any names.
        """

        def iv(number: int) -> bytes:
            return hashlib.sha256(seed + str(number).encode()).digest()[:IV_SIZE]

        chunks = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)]
        store: dict[str, bytes] = {}
        infos = []
        for number, chunk in enumerate(chunks):
            blob = encrypt_blob(key, iv(number), chunk)
            store[blob_hash(blob)] = blob
            infos.append(BlobInfo(number, len(blob), iv(number).hex(), blob_hash(blob)))
        infos.append(BlobInfo(len(chunks), 0, iv(len(chunks)).hex()))
        built = StreamDescriptor.build(stream_name, key, suggested, infos)

        parsed = parse_sd_blob(built.to_sd_blob(old_order))
        self.assertEqual(parsed, built)
        self.assertEqual((parsed.stream_name, parsed.suggested_file_name), (stream_name, suggested))
        recovered = b"".join(
            decrypt_blob(parsed.key, bytes.fromhex(info.iv), store[info.blob_hash or ""])
            for info in parsed.data_blobs
        )
        self.assertEqual(recovered, plaintext)
        if chunk_size % 16 == 15:
            # lbry-sdk's size estimate assumes one pad byte per full chunk.
            lower, upper = parsed.plaintext_length_bounds
            self.assertTrue(lower <= len(plaintext) <= upper)
