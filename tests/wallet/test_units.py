"""
Tests for L{p2pblob.wallet.units}: exact points, and the one rounding of a
blob's cost.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.wallet.units import (
    MAX_MICRO,
    MIB,
    MICRO,
    blob_cost,
    exact_points,
    format_points,
    from_micro,
    to_micro,
)


class ToMicroTests(SynchronousTestCase):
    def test_exact_decimals(self) -> None:
        """
        Floats are read as the decimals they print as: no binary residue.
        """
        self.assertEqual(to_micro(0.1), 100_000)
        self.assertEqual(to_micro(0.3), 300_000)
        self.assertEqual(to_micro(1.5), 1_500_000)
        self.assertEqual(to_micro(2), 2 * MICRO)
        self.assertEqual(to_micro("0.000001"), 1)
        self.assertEqual(to_micro(Decimal("12.5")), 12_500_000)
        self.assertEqual(sum(to_micro(0.1) for _ in range(10)), to_micro(1.0))

    def test_fractions_round_up(self) -> None:
        """
        A fraction of a micro-point is a whole one.
        """
        self.assertEqual(to_micro("0.0000001"), 1)
        self.assertEqual(to_micro(1e-9), 1)
        self.assertEqual(to_micro("1.0000011"), 1_000_002)
        self.assertEqual(to_micro(0), 0)

    def test_refused(self) -> None:
        """
        Negative, infinite, NaN, boolean, non-numeric and oversized amounts
        are refused.
        """
        for bad in (-1, -0.5, float("inf"), float("nan"), "nan", "x", True, None, [1],
                    "1e30", MAX_MICRO):
            with self.assertRaises(ValueError, msg=repr(bad)):
                to_micro(bad)  # type: ignore[arg-type]
        self.assertEqual(to_micro(Decimal(MAX_MICRO) / MICRO), MAX_MICRO)

    @given(st.integers(min_value=0, max_value=MAX_MICRO))
    def test_round_trip(self, micro: int) -> None:
        """
        Micro-points printed as points read back exactly.
        """
        self.assertEqual(to_micro(format_points(micro)), micro)
        self.assertEqual(exact_points(format_points(micro)) * MICRO, micro)

    @given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
    def test_monotone(self, amount: float) -> None:
        """
        Rounding up keeps order, so a payment no larger than a reservation
        in points is no larger in micro-points.
        """
        self.assertLessEqual(to_micro(amount / 2), to_micro(amount))
        self.assertGreaterEqual(to_micro(amount) / MICRO, amount * (1 - 1e-15))


class FormatTests(SynchronousTestCase):
    def test_format(self) -> None:
        self.assertEqual(format_points(0), "0")
        self.assertEqual(format_points(7), "0.000007")
        self.assertEqual(format_points(1_500_000), "1.5")
        self.assertEqual(format_points(100 * MICRO), "100")
        self.assertEqual(format_points(-2_250_000), "-2.25")
        self.assertEqual(from_micro(2_500_000), 2.5)


class BlobCostTests(SynchronousTestCase):
    def test_vectors(self) -> None:
        """
        C{ceil(length * rate / 2**20)}, rate in micro-points per MiB.
        """
        half = to_micro(0.5)
        self.assertEqual(blob_cost(2 * MIB, half), MICRO)
        self.assertEqual(blob_cost(MIB, half), half)
        self.assertEqual(blob_cost(0, half), 0)
        self.assertEqual(blob_cost(2 * MIB, 0), 0)
        # one byte at the smallest rate still costs a micro-point
        self.assertEqual(blob_cost(1, 1), 1)
        # 939 bytes at 0.5 points/MiB: 447.7... micro-points, rounded up
        self.assertEqual(blob_cost(939, half), 448)
        with self.assertRaises(ValueError):
            blob_cost(-1, half)
        with self.assertRaises(ValueError):
            blob_cost(1, -1)

    @given(
        st.integers(min_value=0, max_value=2 * MIB),
        st.integers(min_value=0, max_value=10**12),
    )
    def test_ceiling(self, length: int, rate: int) -> None:
        """
        The cost is the least whole number of micro-points not below the
        exact price.
        """
        cost = blob_cost(length, rate)
        self.assertGreaterEqual(cost * MIB, length * rate)
        self.assertLess((cost - 1) * MIB, length * rate if cost else 1)

    @given(st.lists(st.integers(min_value=1, max_value=2 * MIB), max_size=20),
           st.integers(min_value=0, max_value=10**9))
    def test_sums_are_exact(self, lengths: list[int], rate: int) -> None:
        """
        The costs of many blobs add up to an integer both sides agree on,
        never more than one micro-point per blob above the exact price.
        """
        total = sum(blob_cost(length, rate) for length in lengths)
        exact = Decimal(sum(lengths) * rate) / MIB
        self.assertGreaterEqual(total, exact)
        self.assertLessEqual(total, exact + len(lengths))
