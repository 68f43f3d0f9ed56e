"""
Tests for L{p2pblob.wallet.rates.PaymentRateManager}: free mode answers as
the server always has; paid mode refuses offers below the minimum.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.interfaces import IPaymentRateManager
from p2pblob.peer.handlers import (
    BlobAvailabilityHandlerFactory,
    BlobRequestHandlerFactory,
    FreeRatePolicy,
    IPaymentRatePolicy,
    WalletInfoHandlerFactory,
)
from p2pblob.peer.server import BlobServerFactory
from p2pblob.peer.wire import RATE_ACCEPTED, RATE_TOO_LOW, encode_request
from p2pblob.testing import MemoryBlobStore
from p2pblob.wallet.rates import MAX_RATE, PaymentRateManager
from p2pblob.wallet.units import MIB, MICRO

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


class InterfaceTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """
        The manager is an L{IPaymentRateManager} and, for the server, an
        L{IPaymentRatePolicy}.
        """
        for manager in (PaymentRateManager(), PaymentRateManager(0.5, 0.25)):
            verifyObject(IPaymentRateManager, manager)
            verifyObject(IPaymentRatePolicy, manager)
            self.assertIn("price=", repr(manager))


class FreeModeTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        manager = PaymentRateManager()
        self.assertEqual((manager.price, manager.min_price, manager.paid), (0.0, 0.0, False))
        self.assertEqual(manager.get_rate_blob_data(None), 0.0)
        self.assertEqual(manager.cost(2 * MIB), 0)

    @given(_JSON)
    def test_same_as_free_policy(self, offer: object) -> None:
        """
        Whatever is offered, even garbage, the answer is the free policy's.
        """
        manager = PaymentRateManager()
        self.assertEqual(manager.judge_offer(offer), FreeRatePolicy().judge_offer(offer))
        self.assertTrue(manager.accept_rate_blob_data(None, offer))

    def test_same_server_bytes(self) -> None:
        """
        A server judging offers with the manager in free mode sends the
        very bytes it sends with the free policy.
        """
        store = MemoryBlobStore()
        blob = self.successResultOf(store.put_blob(b"x" * 1000))
        requests = [
            {"requested_blobs": [blob.blob_hash], "lbrycrd_address": True,
             "blob_data_payment_rate": 0.0, "requested_blob": blob.blob_hash},
            {"blob_data_payment_rate": "nonsense"},
            {"blob_data_payment_rate": -3, "requested_blob": "0" * 96},
        ]
        outputs = []
        for policy in (None, PaymentRateManager()):
            outputs.append([
                _answer(store, policy, encode_request(request)) for request in requests
            ])
        self.assertEqual(outputs[0], outputs[1])
        self.assertIn(b'"RATE_ACCEPTED"', outputs[1][1])


def _answer(store: MemoryBlobStore, policy: IPaymentRatePolicy | None, request: bytes) -> bytes:
    factory = BlobServerFactory(
        [
            BlobAvailabilityHandlerFactory(store),
            BlobRequestHandlerFactory(store, policy),
            WalletInfoHandlerFactory("addr"),
        ],
        Clock(),
    )
    address = IPv4Address("TCP", "192.0.2.1", 40000)
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    output = transport.value()
    transport.loseConnection()
    protocol.connectionLost()
    return output


class PaidModeTests(SynchronousTestCase):
    def test_minimum(self) -> None:
        """
        In paid mode, offers of at least the minimum are accepted, compared
        as the decimals they print as; anything else is too low.
        """
        manager = PaymentRateManager(price=0.5, min_price=0.3)
        self.assertTrue(manager.paid)
        self.assertEqual(manager.get_rate_blob_data(object()), 0.5)
        for offer in (0.3, 0.1 + 0.2, 0.5, 1, 1000.0, int(MAX_RATE)):
            self.assertEqual(manager.judge_offer(offer), RATE_ACCEPTED, offer)
            self.assertTrue(manager.accept_rate_blob_data(None, offer))
        for offer in (0.0, 0.29999, 0, -1, float("nan"), float("inf"), True, "0.5", None,
                      [0.5], {"rate": 1}, float(MAX_RATE) * 2):
            self.assertEqual(manager.judge_offer(offer), RATE_TOO_LOW, repr(offer))

    def test_minimum_is_price_by_default(self) -> None:
        manager = PaymentRateManager(price=2)
        self.assertEqual(manager.min_price, 2.0)
        self.assertEqual(manager.judge_offer(1.999999), RATE_TOO_LOW)
        self.assertEqual(manager.judge_offer(2), RATE_ACCEPTED)

    def test_charge_only(self) -> None:
        """
        A node may charge for what it serves and offer nothing for what it
        downloads.
        """
        manager = PaymentRateManager(price=0, min_price=1)
        self.assertTrue(manager.paid)
        self.assertEqual(manager.get_rate_blob_data(None), 0.0)
        self.assertEqual(manager.judge_offer(0.0), RATE_TOO_LOW)

    def test_lbry_client_refused(self) -> None:
        """
        An LBRY client offers 0: a paid server answers RATE_TOO_LOW (and the
        client moves on).
        """
        store = MemoryBlobStore()
        request = encode_request({"requested_blobs": [], "blob_data_payment_rate": 0.0})
        response = json.loads(_answer(store, PaymentRateManager(0.5), request))
        self.assertEqual(response["blob_data_payment_rate"], RATE_TOO_LOW)

    def test_cost(self) -> None:
        """
        Costs are the blob cost at the accepted rate (or our price), in
        micro-points.
        """
        manager = PaymentRateManager(price=0.5)
        self.assertEqual(manager.cost(2 * MIB), MICRO)
        self.assertEqual(manager.cost(2 * MIB, 2.0), 4 * MICRO)
        self.assertEqual(manager.cost(939, 0.5), 448)
        self.assertEqual(manager.cost(2 * MIB, "garbage"), 0)

    def test_bad_rates(self) -> None:
        for price, minimum in ((-1, None), (0, -0.5), (float("nan"), None),
                               (float(MAX_RATE) + 1, None)):
            with self.assertRaises(ValueError):
                PaymentRateManager(price, minimum)
