"""
Tests for L{p2pblob.peer.wire}: the framer finds exactly one JSON object
however the bytes are split, within its size bound, and refuses anything
else with L{FramingError} only.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.peer.wire import (
    CLIENT_MAX_REQUEST_SIZE,
    FramingError,
    JSONObjectFramer,
    encode_request,
    encode_response,
)

H = "ab" * 48
REQUEST = encode_request(
    {"requested_blobs": [H], "lbrycrd_address": True, "blob_data_payment_rate": 0.0,
     "requested_blob": H}
)
# strings holding braces, quotes and backslashes, and nested containers
TRICKY = (
    b'{"a": "}{\\"}", "b\\\\": "\\\\", "c": {"d": [{"e": {}}, "}"]}, '
    b'"f": "\\u00e9\\\\\\"", "g": "caf\xc3\xa9"}'
)


def feed_all(framer: JSONObjectFramer, pieces: list[bytes]) -> tuple[Any, bytes] | None:
    """
    Feed C{pieces} until an object completes; return it with the rest of
    the stream (the unconsumed part of that piece and all later pieces).
    """
    for i, piece in enumerate(pieces):
        result = framer.feed(piece)
        if result is not None:
            message, rest = result
            return message, rest + b"".join(pieces[i + 1 :])
    return None


class SplitTests(SynchronousTestCase):
    """
    An object is found whatever the read boundaries.
    """

    def check_every_split(self, data: bytes) -> None:
        expected = json.loads(data)
        for cut in range(len(data) + 1):
            framer = JSONObjectFramer(len(data) + 1)
            first = framer.feed(data[:cut])
            if cut < len(data):
                self.assertIsNone(first, cut)
                self.assertEqual(framer.buffered, cut)
                self.assertEqual(framer.feed(data[cut:]), (expected, b""), cut)
            else:
                self.assertEqual(first, (expected, b""))
            self.assertEqual(framer.buffered, 0)

    def test_request_split_everywhere(self) -> None:
        """
        A modern LBRY request split in two at any byte is found.
        """
        self.check_every_split(REQUEST)

    def test_escapes_and_nesting_split_everywhere(self) -> None:
        """
        Braces and quotes inside strings, escaped quotes and backslashes,
        multi-byte UTF-8 and nested objects do not fool the scan, wherever
        the split falls (even between a backslash and what it escapes).
        """
        self.check_every_split(TRICKY)

    def test_byte_by_byte(self) -> None:
        """
        Fed one byte at a time, the object completes on its last byte.
        """
        framer = JSONObjectFramer(1000)
        for i in range(len(TRICKY) - 1):
            self.assertIsNone(framer.feed(TRICKY[i : i + 1]))
        self.assertEqual(framer.feed(TRICKY[-1:]), (json.loads(TRICKY), b""))

    def test_leading_whitespace(self) -> None:
        """
        Whitespace before the object is skipped.
        """
        framer = JSONObjectFramer(100)
        self.assertIsNone(framer.feed(b" \r\n\t"))
        self.assertEqual(framer.feed(b' {"a": 1}'), ({"a": 1}, b""))

    def test_rest_returned(self) -> None:
        """
        Bytes after the closing brace come back as the rest, and the framer
        is ready for the next object.
        """
        framer = JSONObjectFramer(1000)
        self.assertEqual(framer.feed(b'{"a": "}"}{"b"'), ({"a": "}"}, b'{"b"'))
        self.assertEqual(framer.feed(b'{"b": 2}\x00raw'), ({"b": 2}, b"\x00raw"))
        self.assertEqual(framer.buffered, 0)


class RefusalTests(SynchronousTestCase):
    """
    What is not one JSON object within the bound is refused.
    """

    def assertRefused(self, data: bytes, limit: int = 1000, reason: str = "") -> None:
        framer = JSONObjectFramer(limit)
        with self.assertRaises(FramingError) as raised:
            framer.feed(data)
        self.assertIn(reason, str(raised.exception))

    def test_limit(self) -> None:
        """
        An object one byte under the limit is accepted; at the limit it is
        refused, whether or not it is complete, whitespace included.
        """
        obj = b'{"a": "' + b"x" * 1190 + b'"}'
        self.assertEqual(len(obj), CLIENT_MAX_REQUEST_SIZE - 1)
        framer = JSONObjectFramer(CLIENT_MAX_REQUEST_SIZE)
        self.assertEqual(framer.feed(obj), (json.loads(obj), b""))
        self.assertRefused(b" " + obj, CLIENT_MAX_REQUEST_SIZE, "exceeds 1200 bytes")
        self.assertRefused(b"  " + obj[:-1], CLIENT_MAX_REQUEST_SIZE, "exceeds")
        self.assertRefused(b" " * 1200, CLIENT_MAX_REQUEST_SIZE, "exceeds")

    def test_limit_across_reads(self) -> None:
        """
        The bound counts everything buffered, across reads.
        """
        framer = JSONObjectFramer(20)
        self.assertIsNone(framer.feed(b'{"a": "' + b"x" * 10))
        with self.assertRaises(FramingError):
            framer.feed(b"x" * 3)

    def test_not_an_object(self) -> None:
        """
        Arrays, strings, numbers and stray closing braces are refused at
        their first byte.
        """
        for data in (b"[{}]", b'"x"', b"1", b"}", b"null", b"\xff{}"):
            self.assertRefused(data, reason="not a JSON object")

    def test_invalid_json(self) -> None:
        """
        Text that ends in a brace but is not JSON is refused.
        """
        for data in (b'{"requested_blobs": [}', b"{a}", b'{"a": 1,}', b'{"a" 1}'):
            self.assertRefused(data)

    def test_invalid_utf8(self) -> None:
        """
        Bytes that are not UTF-8 inside the object are refused.
        """
        self.assertRefused(b'{"a": "\xff\xfe"}', reason="UTF-8")
        self.assertRefused(b'{"a": "\xc3"}', reason="UTF-8")


class EncodingTests(SynchronousTestCase):
    """
    Requests and responses are written as lbry-sdk writes them.
    """

    def test_request(self) -> None:
        self.assertEqual(encode_request({"a": [1, True]}), b'{"a": [1, true]}')

    def test_response_key_order(self) -> None:
        """
        LBRY's keys come in lbry-sdk's order, then other keys sorted.
        """
        response = {"z": 1, "lbrycrd_address": "x", "available_blobs": [],
                    "blob_data_payment_rate": "RATE_ACCEPTED", "incoming_blob": {}, "b": 2}
        self.assertEqual(
            encode_response(response),
            b'{"incoming_blob": {}, "blob_data_payment_rate": "RATE_ACCEPTED", '
            b'"available_blobs": [], "lbrycrd_address": "x", "b": 2, "z": 1}',
        )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
_json_objects = st.dictionaries(st.text(), _json_values, max_size=6)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class FramerPropertyTests(SynchronousTestCase):
    """
    Properties over arbitrary objects and arbitrary bytes.
    """

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        _json_objects,
        st.booleans(),
        st.sampled_from(["", " ", "\n\t "]),
        st.binary(max_size=40),
        st.lists(st.integers(min_value=0), max_size=8),
    )
    def test_reassembled_exactly(
        self, obj: dict[str, Any], ascii_only: bool, lead: str, rest: bytes, cuts: list[int]
    ) -> None:
        """
        Any JSON object, encoded then split anywhere and followed by any
        bytes, is found intact, and the bytes after it are the rest.
        """
        encoded = (lead + json.dumps(obj, ensure_ascii=ascii_only)).encode("utf-8")
        stream = encoded + rest
        framer = JSONObjectFramer(len(encoded) + 1)
        result = feed_all(framer, _split(stream, cuts))
        self.assertEqual(result, (obj, rest))

    @settings(max_examples=500, deadline=None, database=None)
    @given(
        st.binary(max_size=300) | st.builds(lambda b: b"{" + b, st.binary(max_size=300)),
        st.lists(st.integers(min_value=0), max_size=8),
        st.integers(min_value=1, max_value=400),
    )
    def test_random_bytes(self, data: bytes, cuts: list[int], limit: int) -> None:
        """
        Random bytes give objects, wait for more, or raise L{FramingError},
        nothing else; an object found is a C{dict} that really was a prefix.
        """
        framer = JSONObjectFramer(limit)
        pieces = _split(data, cuts)
        while pieces:
            try:
                result = feed_all(framer, pieces)
            except FramingError:
                return
            if result is None:
                return
            message, rest = result
            self.assertIsInstance(message, dict)
            framer = JSONObjectFramer(limit)
            pieces = [rest] if rest else []


class DecoderLimitTests(SynchronousTestCase):
    """
    Objects within the size bound that Python's json decoder still cannot
    take are refused with L{FramingError}, like any other bad message.
    """

    def test_deep_nesting(self) -> None:
        framer = JSONObjectFramer(1 << 16)
        with self.assertRaises(FramingError):
            framer.feed(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}")

    def test_long_integer(self) -> None:
        framer = JSONObjectFramer(1 << 16)
        with self.assertRaises(FramingError):
            framer.feed(b'{"a": ' + b"1" * 5000 + b"}")
