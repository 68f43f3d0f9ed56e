"""
Points, counted exactly.

Users and the wire speak of I{points} (prices are points per MiB of blob
data, as in LBRY's 2015 design), and the seed's L{p2pblob.interfaces.IWallet}
takes and gives points as C{float}s.  Inside the wallet every amount is an
C{int} number of I{micro-points} (one point is C{MICRO} = 1,000,000 of
them), so that sums, balances and cheque totals never drift: floats appear
only at the edges, converted by L{to_micro} and L{from_micro}.

Rounding happens in exactly two places, both upwards (a fraction of a
micro-point is paid in full, in favour of the payee), so that payer and
payee, computing the same function, always agree:

  - L{to_micro}: a number of points given as a C{float}, C{int}, C{str} or
    L{Decimal} (a float is read as the shortest decimal that prints as it,
    so C{0.1} is exactly 100,000 micro-points);
  - L{blob_cost}: the price of C{length} bytes at C{rate} micro-points per
    MiB, C{ceil(length * rate / 2**20)}.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal, InvalidOperation

__all__ = [
    "MAX_MICRO",
    "MIB",
    "MICRO",
    "blob_cost",
    "exact_points",
    "format_points",
    "from_micro",
    "to_micro",
]

MICRO = 1_000_000
"""
Micro-points in one point.
"""

MIB = 2**20
"""
Bytes in a MiB: prices are points per MiB.
"""

MAX_MICRO = 2**63 - 1
"""
The largest amount the ledger can hold (SQLite's C{INTEGER}): about 9.2
million million points.
"""


def exact_points(amount: float | int | str | Decimal) -> Decimal:
    """
    Read a number of points exactly as a L{Decimal}.

    A C{float} is read as the shortest decimal that prints as it (C{repr}),
    not as its binary expansion, so C{0.1} is one tenth.

    @raise ValueError: C{amount} is not a finite number (a C{bool} is not a
        number here).
    """
    if isinstance(amount, bool):
        raise ValueError(f"{amount!r} is not an amount of points")
    if isinstance(amount, float):
        if not math.isfinite(amount):
            raise ValueError(f"{amount!r} is not an amount of points")
        value = Decimal(repr(amount))
    elif isinstance(amount, (int, Decimal)):
        value = Decimal(amount)
    elif isinstance(amount, str):
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            raise ValueError(f"{amount!r} is not an amount of points") from None
    else:
        raise ValueError(f"{amount!r} is not an amount of points")
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not an amount of points")
    return value


def to_micro(amount: float | int | str | Decimal) -> int:
    """
    Convert a number of points to micro-points, rounding any fraction of a
    micro-point up.

    @raise ValueError: C{amount} is negative, not a finite number, or more
        than the ledger can hold (L{MAX_MICRO}).
    """
    value = exact_points(amount)
    if value < 0:
        raise ValueError(f"{amount!r} is negative; amounts of points cannot be")
    micro = int((value * MICRO).to_integral_value(rounding=ROUND_CEILING))
    if micro > MAX_MICRO:
        raise ValueError(f"{amount!r} points is more than a wallet can hold")
    return micro


def from_micro(micro: int) -> float:
    """
    Micro-points as a C{float} number of points, for the seed's interface and
    for display.  Never add these up: add the C{int}s.
    """
    return micro / MICRO


def format_points(micro: int) -> str:
    """
    Micro-points as a decimal number of points, exactly, without trailing
    zeros: C{1500000} is C{"1.5"}, C{7} is C{"0.000007"}.
    """
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")


def blob_cost(length: int, rate: int) -> int:
    """
    The price, in micro-points, of C{length} bytes of blob data at C{rate}
    micro-points per MiB: C{ceil(length * rate / 2**20)}.

    This is the one place where the cost of blob data is rounded: the
    downloader reserves and pays it, and the server expects it, with this
    function, so both sides agree to the micro-point.

    @raise ValueError: C{length} or C{rate} is negative.
    """
    if length < 0 or rate < 0:
        raise ValueError("a blob's length and a rate cannot be negative")
    return -(-length * rate // MIB)
