"""
Tests for L{p2pblob.dht.ids}: 48-byte ids, XOR distance and random ids.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.constants import HASH_LENGTH
from p2pblob.dht.ids import (
    ID_SPACE,
    check_id,
    distance,
    id_from_int,
    id_to_int,
    random_id,
    random_id_in_range,
)

ids = st.binary(min_size=HASH_LENGTH, max_size=HASH_LENGTH)


class CheckIdTests(SynchronousTestCase):
    """
    L{check_id} accepts 48 bytes only.
    """

    def test_bytes(self) -> None:
        """
        48 bytes are returned as they are.
        """
        value = bytes(range(HASH_LENGTH))
        self.assertEqual(check_id(value), value)

    def test_bytearray(self) -> None:
        """
        A C{bytearray} of 48 bytes is returned as C{bytes}.
        """
        result = check_id(bytearray(HASH_LENGTH))
        self.assertIs(type(result), bytes)
        self.assertEqual(result, bytes(HASH_LENGTH))

    def test_wrong_length(self) -> None:
        """
        Shorter or longer strings are refused, saying how long they are.
        """
        for length in (0, 20, 47, 49, 96):
            error = self.assertRaises(ValueError, check_id, b"x" * length)
            self.assertIn(f"not {length}", str(error))

    def test_wrong_type(self) -> None:
        """
        Text, integers and C{None} are refused, naming their type.
        """
        for value in ("a" * HASH_LENGTH, 7, None, [0] * HASH_LENGTH):
            error = self.assertRaises(ValueError, check_id, value)
            self.assertIn(type(value).__name__, str(error))


class DistanceTests(SynchronousTestCase):
    """
    L{distance} is XOR read as a big-endian integer.
    """

    def test_example(self) -> None:
        """
        Ids differing in their last bit are at distance 1; in their first
        bit, at distance C{2 ** 383}.
        """
        zero = bytes(HASH_LENGTH)
        self.assertEqual(distance(zero, bytes(HASH_LENGTH - 1) + b"\x01"), 1)
        self.assertEqual(distance(zero, b"\x80" + bytes(HASH_LENGTH - 1)), 2**383)

    def test_lengths_differ(self) -> None:
        """
        Ids of different lengths cannot be compared.
        """
        self.assertRaises(ValueError, distance, bytes(HASH_LENGTH), bytes(20))

    @settings(max_examples=200, deadline=None, database=None)
    @given(ids, ids, ids)
    def test_metric(self, a: bytes, b: bytes, c: bytes) -> None:
        """
        The distance is zero exactly between equal ids, symmetric, and obeys
        the triangle inequality; for a fixed id it is a bijection (no two
        ids at the same distance from it).
        """
        self.assertEqual(distance(a, b) == 0, a == b)
        self.assertEqual(distance(a, b), distance(b, a))
        self.assertLessEqual(distance(a, c), distance(a, b) + distance(b, c))
        self.assertEqual(distance(a, b) == distance(a, c), b == c)


class ConversionTests(SynchronousTestCase):
    """
    Ids convert to and from integers of the id space.
    """

    @settings(max_examples=100, deadline=None, database=None)
    @given(ids)
    def test_round_trip(self, node_id: bytes) -> None:
        """
        An id survives the round trip through its integer.
        """
        self.assertEqual(id_from_int(id_to_int(node_id)), node_id)

    def test_out_of_space(self) -> None:
        """
        Negative integers and integers beyond the id space are not ids.
        """
        self.assertRaises(ValueError, id_from_int, -1)
        self.assertRaises(ValueError, id_from_int, ID_SPACE)


class RandomIdTests(SynchronousTestCase):
    """
    L{random_id} and L{random_id_in_range}.
    """

    def test_random_id(self) -> None:
        """
        A random id is 48 bytes, and two are different.
        """
        first, second = random_id(), random_id()
        self.assertEqual(len(first), HASH_LENGTH)
        self.assertNotEqual(first, second)

    def test_seeded(self) -> None:
        """
        With a seeded generator the ids are reproducible.
        """
        self.assertEqual(random_id(random.Random(7)), random_id(random.Random(7)))
        self.assertEqual(len(random_id(random.Random(7))), HASH_LENGTH)

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.integers(min_value=0, max_value=ID_SPACE - 1).flatmap(
            lambda low: st.tuples(st.just(low), st.integers(low + 1, ID_SPACE))
        ),
        st.integers(),
    )
    def test_in_range(self, bounds: tuple[int, int], seed: int) -> None:
        """
        An id drawn from a range is in the range.
        """
        low, high = bounds
        value = id_to_int(random_id_in_range(low, high, random.Random(seed)))
        self.assertTrue(low <= value < high)

    def test_single_id_range(self) -> None:
        """
        A range of one id gives that id.
        """
        self.assertEqual(random_id_in_range(5, 6, random.Random()), id_from_int(5))

    def test_bad_ranges(self) -> None:
        """
        Empty, inverted and out-of-space ranges are refused.
        """
        rng = random.Random()
        for low, high in ((3, 3), (4, 3), (-1, 5), (0, ID_SPACE + 1)):
            self.assertRaises(ValueError, random_id_in_range, low, high, rng)
