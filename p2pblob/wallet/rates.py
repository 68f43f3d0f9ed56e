"""
Prices for blob data: L{PaymentRateManager}.

Free mode (price 0, the default) is what a modern LBRY server does: every
offer is accepted, even one that is not a number, so LBRY peers (which
always offer 0 and never pay) are served; the server answers exactly as
with L{p2pblob.peer.handlers.FreeRatePolicy}.  Paid mode is one setting
(C{--price}): the node then offers its price when it downloads, and accepts
only offers of at least its minimum (C{--min-price}, by default the price)
when it serves; anything else gets C{RATE_TOO_LOW}.

Offers are compared exactly, as decimals (a float offer is read as the
shortest decimal that prints as it), and the cost of what is served at an
accepted rate is L{p2pblob.wallet.units.blob_cost} of the rate in
micro-points, rounded up once.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

from zope.interface import implementer

from p2pblob.interfaces import IPaymentRateManager
from p2pblob.peer.handlers import IPaymentRatePolicy
from p2pblob.peer.wire import RATE_ACCEPTED, RATE_TOO_LOW
from p2pblob.wallet.units import blob_cost, exact_points, to_micro

__all__ = ["MAX_RATE", "PaymentRateManager"]

MAX_RATE = Decimal(1_000_000)
"""
The highest rate, in points per MiB, that is taken as an offer at all: a
larger number is not a price anyone means, and its costs could overflow the
ledger.
"""


@implementer(IPaymentRateManager, IPaymentRatePolicy)
class PaymentRateManager:
    """
    This node's rates for blob data, in points per MiB.

    It is also an L{IPaymentRatePolicy}, so it can judge the offers a blob
    server receives (C{BlobRequestHandlerFactory(store, rate_policy=...)}).

    @ivar price: the rate offered when downloading.
    @ivar min_price: the lowest rate accepted when serving.
    @raise ValueError: a rate is not a number from 0 to L{MAX_RATE}.
    """

    def __init__(self, price: float = 0.0, min_price: float | None = None) -> None:
        self.set_prices(price, min_price)

    def set_prices(self, price: float, min_price: float | None = None) -> None:
        """
        Change the rates (C{min_price} L{None}: the same as C{price}); both
        or neither change.

        @raise ValueError: a rate is not a number from 0 to L{MAX_RATE}.
        """
        low = price if min_price is None else min_price
        # checked and kept exactly
        exact = exact_points(float(price)), exact_points(float(low))
        for rate in exact:
            if not 0 <= rate <= MAX_RATE:
                raise ValueError(f"a rate must be from 0 to {MAX_RATE} points per MiB")
        self.price, self.min_price = float(price), float(low)
        self._price, self._min_price = exact
        self.price_micro = to_micro(self._price)
        self.min_price_micro = to_micro(self._min_price)

    def __repr__(self) -> str:
        return f"<PaymentRateManager price={self.price:g} min_price={self.min_price:g}>"

    @property
    def paid(self) -> bool:
        """
        Whether this node charges for the blobs it serves.
        """
        return self._min_price > 0

    # IPaymentRateManager

    def get_rate_blob_data(self, peer: Any) -> float:
        return self.price

    def accept_rate_blob_data(self, peer: Any, payment_rate: object) -> bool:
        if not self.paid:
            return True
        offer = _offered(payment_rate)
        return offer is not None and offer >= self._min_price

    def judge_offer(self, offer: object) -> str:
        return RATE_ACCEPTED if self.accept_rate_blob_data(None, offer) else RATE_TOO_LOW

    # costs

    def cost(self, length: int, rate: object | None = None) -> int:
        """
        The micro-points C{length} bytes of blob data cost at C{rate}
        (points per MiB: an offer this manager accepted), or at our own
        price if no rate is given.  An offer that is not a number from 0
        to L{MAX_RATE} costs nothing: it is only ever accepted in free
        mode.
        """
        if rate is None:
            return blob_cost(length, self.price_micro)
        offer = _offered(rate)
        if offer is None:
            return 0
        return blob_cost(length, to_micro(offer))


def _offered(rate: object) -> Decimal | None:
    """
    An offered rate as an exact decimal, or L{None} if it is not a finite
    number from 0 to L{MAX_RATE}.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        return None
    return _read_offer(rate)


@lru_cache(maxsize=64, typed=True)
def _read_offer(rate: int | float) -> Decimal | None:
    # (a server reads each client's offer several times per blob, and
    # clients offer few different rates)
    try:
        value = exact_points(rate)
    except ValueError:
        return None
    return value if 0 <= value <= MAX_RATE else None
