"""
Tests for L{p2pblob.dht.bencode}: every DHT datagram captured from
lbry-sdk decodes to its recorded value and encodes back to the same bytes;
lbry-sdk's decoder quirks (C{vectors/dht/bencode_quirks.json}) each get a
stated decision; anything malformed raises L{BencodeError} and nothing else.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.bencode import MAX_INTEGER_DIGITS, MAX_NESTING, bdecode, bencode
from p2pblob.errors import BencodeError, DHTError, P2PBlobError
from tests._vectors import load_json, typed_value

DATAGRAMS = load_json("dht", "datagrams.json")
CONSTRUCTORS = load_json("dht", "request_constructors.json")
QUIRKS = load_json("dht", "bencode_quirks.json")


def captured_datagrams() -> list[tuple[str, dict[str, Any]]]:
    """
    Every datagram in the DHT vectors, with a name for failure messages.
    """
    found = []
    for step in DATAGRAMS["steps"]:
        for number, datagram in enumerate(step["datagrams"]):
            found.append((f"{step['title']} #{number}", datagram))
    for datagram in CONSTRUCTORS["datagrams"]:
        found.append((datagram["constructor"], datagram))
    return found


def pairs(value: Any) -> Any:
    """
    C{value} with every dictionary turned into its list of pairs, so that
    comparisons see the order of keys too.
    """
    if isinstance(value, dict):
        return [(key, pairs(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [pairs(item) for item in value]
    return value


def nesting(value: Any) -> int:
    """
    How many lists and dictionaries are nested at the deepest point of
    C{value}.
    """
    if isinstance(value, dict):
        return 1 + max((nesting(item) for item in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((nesting(item) for item in value), default=0)
    return 0


class CapturedDatagramTests(SynchronousTestCase):
    """
    The bencoding of every datagram lbry-sdk sent in the vectors.
    """

    def test_decode(self) -> None:
        """
        Each datagram decodes to its recorded value, keys in wire order.
        """
        for name, datagram in captured_datagrams():
            decoded = bdecode(bytes.fromhex(datagram["hex"]))
            self.assertEqual(pairs(decoded), pairs(typed_value(datagram["decoded"])), name)

    def test_encode(self) -> None:
        """
        Each recorded value encodes to the datagram's exact bytes.
        """
        for name, datagram in captured_datagrams():
            encoded = bencode(typed_value(datagram["decoded"]))
            self.assertEqual(encoded.hex(), datagram["hex"], name)
            self.assertEqual(len(encoded), datagram["length"], name)

    def test_integer_keys(self) -> None:
        """
        A datagram is a dictionary with integer keys, not byte strings.
        """
        for name, datagram in captured_datagrams():
            decoded = bdecode(bytes.fromhex(datagram["hex"]))
            assert isinstance(decoded, dict)
            self.assertEqual(list(decoded)[:4], [0, 1, 2, 3], name)


class EncoderKeyOrderTests(SynchronousTestCase):
    """
    Keys are written sorted as lbry-sdk sorts them
    (C{encoder_key_order} in the quirks file).
    """

    def test_integer_keys_numerically(self) -> None:
        """
        Integer keys sort as numbers: 10 after 3, not between 1 and 3.
        """
        case = QUIRKS["encoder_key_order"][0]
        value = {10: 1, 3: b"x", 1: b"y", 0: 0}
        self.assertEqual(bencode(value).hex(), case["encoded_hex"])
        self.assertEqual(bdecode(bytes.fromhex(case["encoded_hex"])), value)

    def test_byte_keys_bytewise(self) -> None:
        """
        Byte string keys sort bytewise: a raw 48-byte key starting with
        0xe3 comes after the ASCII keys.
        """
        case = QUIRKS["encoder_key_order"][1]
        key = bytes.fromhex(DATAGRAMS["blob_key_hex"])
        value = {key: [], b"token": b"t", b"protocolVersion": 1, b"p": 0, b"contacts": []}
        self.assertEqual(bencode(value).hex(), case["encoded_hex"])
        decoded = bdecode(bytes.fromhex(case["encoded_hex"]))
        assert isinstance(decoded, dict)
        self.assertEqual(list(decoded), [b"contacts", b"p", b"protocolVersion", b"token", key])

    def test_tuples_are_lists(self) -> None:
        """
        Tuples encode as lists (requests keep their arguments in tuples).
        """
        self.assertEqual(bencode((1, (b"a",))), bencode([1, [b"a"]]))
        self.assertEqual(bencode((1, (b"a",))), b"li1el1:aee")


# What lbry-sdk's decoder does with each odd input in bencode_quirks.json,
# and what ours does: (accepted, why).  Our decoder reads exactly the
# canonical form lbry's encoder writes, and reads it correctly.
QUIRK_DECISIONS = {
    "d1:ad1:bi1ee1:ci2ee": (
        True,
        "valid canonical bencode: lbry's decoder loses the key after a nested "
        "dictionary, ours keeps it (it must: dropping data silently is a bug, "
        "not a format); what we send never has this shape, see test_messages",
    ),
    "ld1:xi1eei5ee": (
        True,
        "valid canonical bencode: lbry loses the list item after a nested "
        "dictionary, ours keeps it (same reasoning)",
    ),
    "d1:ali1ei2ee1:ci2ee": (True, "the control case: everyone decodes it fully"),
    "d1:ai-0ee": (
        False,
        "-0 is not canonical and lbry's encoder never writes it (b'i%de' % 0 is "
        "i0e); accepting it would break decode-then-encode giving the same bytes",
    ),
    "d1:ai03ee": (
        False,
        "leading zeros are not canonical and lbry's encoder never writes them",
    ),
    "di0ei1ei1e3:abce": (True, "integer keys: every LBRY datagram uses them"),
    "d1:ai1eeTRAILING": (
        False,
        "a UDP datagram is exactly one message, lbry never sends bytes after it, "
        "and ignoring them would let two different datagrams read the same",
    ),
}


class QuirkDecisionTests(SynchronousTestCase):
    """
    Each quirk of lbry-sdk's decoder, and what ours does instead.
    """

    def test_every_case_decided(self) -> None:
        """
        Every case in the quirks file has a decision here, so a new case
        cannot go untested.
        """
        cases = {case["input_text"] for case in QUIRKS["decoder_cases"]}
        self.assertEqual(cases, set(QUIRK_DECISIONS))

    def test_decisions(self) -> None:
        """
        Accepted cases decode to the full value (lbry's rendering when lbry
        decodes it fully); refused ones raise L{BencodeError}.
        """
        for case in QUIRKS["decoder_cases"]:
            data = bytes.fromhex(case["input_hex"])
            accepted, why = QUIRK_DECISIONS[case["input_text"]]
            if not accepted:
                self.assertRaises(BencodeError, bdecode, data)
                continue
            decoded = bdecode(data)
            self.assertEqual(bencode(decoded), data, why)

    def test_control_and_integer_keys_as_lbry(self) -> None:
        """
        Where lbry's decoder has no quirk, we decode what it decodes.
        """
        for case in QUIRKS["decoder_cases"]:
            if case["input_text"] in ("d1:ali1ei2ee1:ci2ee", "di0ei1ei1e3:abce"):
                expected = typed_value(case["lbry_bdecode"]["decoded"])
                self.assertEqual(bdecode(bytes.fromhex(case["input_hex"])), expected)

    def test_nested_dictionary_not_lost(self) -> None:
        """
        Unlike lbry's decoder, ours keeps what follows a nested dictionary.
        """
        self.assertEqual(bdecode(b"d1:ad1:bi1ee1:ci2ee"), {b"a": {b"b": 1}, b"c": 2})
        self.assertEqual(bdecode(b"ld1:xi1eei5ee"), [{b"x": 1}, 5])

    def test_lbry_lost_data(self) -> None:
        """
        The file really shows lbry losing data in the first two cases:
        its rendering is missing what ours finds.
        """
        for case in QUIRKS["decoder_cases"][:2]:
            lbry = typed_value(case["lbry_bdecode"]["decoded"])
            ours = bdecode(bytes.fromhex(case["input_hex"]))
            self.assertNotEqual(lbry, ours)


class MalformedInputTests(SynchronousTestCase):
    """
    Anything but one canonical value raises L{BencodeError}.
    """

    def assertRefused(self, data: bytes, fragment: str = "") -> None:
        with self.assertRaises(BencodeError) as caught:
            bdecode(data)
        self.assertIn(fragment, caught.exception.reason)
        self.assertTrue(str(caught.exception).startswith("invalid bencoded data: "))

    def test_error_family(self) -> None:
        """
        L{BencodeError} is a L{DHTError}, hence a L{P2PBlobError}.
        """
        self.assertTrue(issubclass(BencodeError, DHTError))
        self.assertTrue(issubclass(DHTError, P2PBlobError))

    def test_empty(self) -> None:
        self.assertRefused(b"", "no data")

    def test_not_bytes(self) -> None:
        """
        Only L{bytes} are decoded; text and other buffers are refused.
        """
        for value in ["i1e", bytearray(b"i1e"), memoryview(b"i1e"), None]:
            with self.assertRaises(BencodeError):
                bdecode(value)  # type: ignore[arg-type]

    def test_every_truncation(self) -> None:
        """
        Every proper prefix of a captured datagram is refused.
        """
        data = bytes.fromhex(DATAGRAMS["steps"][4]["datagrams"][1]["hex"])
        for end in range(len(data)):
            self.assertRaises(BencodeError, bdecode, data[:end])

    def test_trailing_bytes(self) -> None:
        self.assertRefused(b"i1ee", "1 unexpected byte(s)")
        self.assertRefused(b"dei0e", "unexpected byte(s)")

    def test_integers(self) -> None:
        """
        Integers must be canonical: no sign but a leading minus, no leading
        zeros, no -0, no spaces, some digits.
        """
        for bad in [
            b"i-0e",
            b"i03e",
            b"i-03e",
            b"i+3e",
            b"i e",
            b"ie",
            b"i-e",
            b"i 3e",
            b"i3 e",
            b"i1_0e",
            b"i0x10e",
            b"i\xd9\xa3e",
            b"i3",
        ]:
            self.assertRefused(bad, "malformed integer")
        self.assertEqual(bdecode(b"i0e"), 0)
        self.assertEqual(bdecode(b"i-7e"), -7)

    def test_integer_digits(self) -> None:
        """
        Integers of up to L{MAX_INTEGER_DIGITS} digits are read; longer ones
        are refused before being converted.
        """
        longest = int("9" * MAX_INTEGER_DIGITS)
        self.assertEqual(bdecode(b"i%de" % longest), longest)
        self.assertEqual(bdecode(b"i%de" % -longest), -longest)
        self.assertRefused(b"i%de" % (longest + 1), "malformed integer")
        self.assertRefused(b"i" + b"9" * 5000 + b"e", "malformed integer")

    def test_string_lengths(self) -> None:
        """
        A length must be canonical decimal and fit in what is left.
        """
        self.assertRefused(b"03:abc", "malformed byte string length")
        self.assertRefused(b"3:ab", "runs past the end")
        self.assertRefused(b"4294967296:x", "runs past the end")
        self.assertRefused(b"99999999999:x", "malformed byte string length")
        self.assertRefused(b"3abc", "malformed byte string length")
        self.assertRefused(b"-1:", "unexpected byte 0x2d")
        self.assertEqual(bdecode(b"0:"), b"")

    def test_unknown_markers(self) -> None:
        """
        2015 lbrynet's floats and nulls, and any other byte, are refused.
        """
        for bad in [b"f1.000000e", b"n", b"x", b"li1ef1.0ee", b"e"]:
            self.assertRaises(BencodeError, bdecode, bad)

    def test_unterminated(self) -> None:
        self.assertRefused(b"li1e", "ends inside")
        self.assertRefused(b"d1:a", "ends inside")

    def test_key_without_value(self) -> None:
        self.assertRefused(b"d1:ae", "has no value")

    def test_container_keys(self) -> None:
        """
        A list or dictionary cannot be a key.
        """
        self.assertRefused(b"dli1eei1ee", "not an integer or a byte string")
        self.assertRefused(b"ddei1ee", "not an integer or a byte string")

    def test_unsorted_keys(self) -> None:
        self.assertRefused(b"d1:bi1e1:ai2ee", "out of order")
        self.assertRefused(b"di2ei1ei1ei2ee", "out of order")
        self.assertRefused(b"di10e0:i3e0:e", "out of order")

    def test_duplicate_keys(self) -> None:
        self.assertRefused(b"d1:ai1e1:ai2ee", "duplicate")
        self.assertRefused(b"di0ei1ei0ei2ee", "duplicate")

    def test_mixed_keys(self) -> None:
        """
        A dictionary's keys are all integers or all byte strings.
        """
        self.assertRefused(b"di0ei1e1:ai2ee", "mixes")
        self.assertRefused(b"d1:ai1ei0ei2ee", "mixes")

    def test_nesting_limit(self) -> None:
        """
        L{MAX_NESTING} levels are read; one more is refused.
        """
        self.assertEqual(nesting(bdecode(b"l" * MAX_NESTING + b"e" * MAX_NESTING)), MAX_NESTING)
        self.assertRefused(b"l" * (MAX_NESTING + 1) + b"e" * (MAX_NESTING + 1), "nesting")
        self.assertRefused(b"d1:a" * (MAX_NESTING + 1) + b"e" * (MAX_NESTING + 1), "nesting")

    def test_deep_nesting_no_recursion_error(self) -> None:
        """
        Nesting far beyond Python's recursion limit raises
        L{BencodeError}, never L{RecursionError}.
        """
        self.assertRefused(b"l" * 100_000, "nesting")
        self.assertRefused(b"l" * 100_000 + b"e" * 100_000, "nesting")


class EncoderRefusalTests(SynchronousTestCase):
    """
    L{bencode} refuses what bencode cannot carry with L{BencodeError}.
    """

    def test_unsupported_types(self) -> None:
        """
        Text, booleans, None, floats, sets and bytearrays are refused
        (lbry-sdk would silently encode text and booleans; we never mean to).
        """
        for value in ["text", True, None, 1.5, {1}, bytearray(b"x"), [b"ok", "not ok"]]:
            self.assertRaises(BencodeError, bencode, value)

    def test_bad_keys(self) -> None:
        """
        Keys must be all integers or all byte strings.
        """
        for value in [{b"a": 1, 0: 2}, {"a": 1}, {True: 1}, {(1,): 1}, {None: 1}]:
            self.assertRaises(BencodeError, bencode, value)

    def test_integer_digits(self) -> None:
        longest = int("9" * MAX_INTEGER_DIGITS)
        self.assertEqual(bencode(-longest), b"i-%de" % longest)
        self.assertRaises(BencodeError, bencode, longest + 1)
        self.assertRaises(BencodeError, bencode, -(longest + 1))
        self.assertRaises(BencodeError, bencode, 10**10_000)

    def test_nesting(self) -> None:
        """
        Values nested deeper than L{MAX_NESTING} are refused, however deep,
        without L{RecursionError}.
        """
        deep: list[Any] = []
        for _ in range(MAX_NESTING - 1):
            deep = [deep]
        self.assertEqual(bencode(deep), b"l" * MAX_NESTING + b"e" * MAX_NESTING)
        self.assertRaises(BencodeError, bencode, [deep])
        for _ in range(100_000):
            deep = [deep]
        self.assertRaises(BencodeError, bencode, deep)


_keys = st.integers(min_value=-(10**20), max_value=10**20) | st.binary(max_size=12)
_integers = st.integers(
    min_value=-(10**MAX_INTEGER_DIGITS - 1), max_value=10**MAX_INTEGER_DIGITS - 1
)
_values = st.recursive(
    _integers | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=12), children, max_size=5)
        | st.dictionaries(st.integers(min_value=-(10**20), max_value=10**20), children, max_size=5)
    ),
    max_leaves=25,
)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """
    C{data} with each edit applied: C{(kind, place, byte)} replaces,
    inserts or deletes one byte, or cuts the data there.
    """
    buffer = bytearray(data)
    for kind, place, byte in edits:
        index = place % (len(buffer) + 1)
        if kind == 0 and index < len(buffer):
            buffer[index] = byte
        elif kind == 1:
            buffer.insert(index, byte)
        elif kind == 2 and index < len(buffer):
            del buffer[index]
        elif kind == 3:
            del buffer[index:]
    return bytes(buffer)


_edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0),
        st.sampled_from(b"ilde0123456789:-x\x00\xff"),
    ),
    min_size=1,
    max_size=4,
)


class PropertyTests(SynchronousTestCase):
    """
    Round trips over arbitrary values; arbitrary bytes raise only
    L{BencodeError}.
    """

    @settings(max_examples=500, deadline=None, database=None)
    @given(_values)
    def test_round_trip(self, value: Any) -> None:
        """
        Any value within the limits encodes, and decodes back equal, with
        dictionary keys in sorted order; a too deep one is refused.
        """
        if nesting(value) > MAX_NESTING:
            self.assertRaises(BencodeError, bencode, value)
            return
        encoded = bencode(value)
        decoded = bdecode(encoded)
        self.assertEqual(decoded, value)
        self.assertEqual(bencode(decoded), encoded)

    @settings(max_examples=1000, deadline=None, database=None)
    @given(st.binary(max_size=200))
    def test_random_bytes(self, data: bytes) -> None:
        """
        Random bytes decode or raise L{BencodeError}, and whatever decodes
        was canonical: it encodes back to the same bytes.
        """
        try:
            decoded = bdecode(data)
        except BencodeError:
            return
        self.assertEqual(bencode(decoded), data)

    @settings(max_examples=1000, deadline=None, database=None)
    @given(st.sampled_from([bytes.fromhex(d["hex"]) for _, d in captured_datagrams()]), _edits)
    def test_mutated_datagrams(self, data: bytes, edits: list[tuple[int, int, int]]) -> None:
        """
        Captured datagrams with a few bytes changed, added, removed or cut
        decode or raise L{BencodeError}; what decodes encodes back to the
        same bytes.
        """
        mutated = _mutate(data, edits)
        try:
            decoded = bdecode(mutated)
        except BencodeError:
            return
        self.assertEqual(bencode(decoded), mutated)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.dictionaries(_keys, st.integers(), max_size=8))
    def test_any_key_mix_refused_or_sorted(self, value: dict[Any, int]) -> None:
        """
        A dictionary with keys of one kind encodes sorted; with both kinds
        it is refused.
        """
        kinds = {type(key) for key in value}
        if len(kinds) > 1:
            self.assertRaises(BencodeError, bencode, value)
            return
        decoded = bdecode(bencode(value))
        assert isinstance(decoded, dict)
        self.assertEqual(list(decoded), sorted(value))
