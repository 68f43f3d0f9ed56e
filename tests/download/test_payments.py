"""
Paid downloads in the in-process swarm (L{tests.download._swarm}): real
servers with wallets, the real client, requester and wallet on one clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.staged import blob_buffers
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download.requester import BlobRequester
from p2pblob.errors import BlobUnavailableError, InsufficientFundsError
from p2pblob.interfaces import IRequestSender
from p2pblob.peer.handlers import DEBT_LIMIT_REACHED
from p2pblob.peer.peer import PeerRegistry
from p2pblob.peer.wire import CLIENT_MAX_REQUEST_SIZE, encode_request
from p2pblob.testing import MemoryBlobStore
from p2pblob.wallet.exchange import CHEQUE_QUERY, PAYMENT_KEY_QUERY
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.paying import FLOAT_IDLE, DownloadPayments
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.units import MICRO, blob_cost, to_micro
from p2pblob.wallet.wallet import Wallet
from tests.download._swarm import Seeder, SwarmHarness, publish
from tests.download.test_units import FakeSender, Wanted, make_blobs
from tests.wallet._helpers import SEED_A, SEED_B, SEED_C, make_wallet

# three data blobs, the last one short
SIZE = 2 * (MAX_BLOB_SIZE - 1) + 54321
RATE = 2.5


class _PaidSwarm(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.published = publish(self.base / "source", SIZE)
        self.harness = SwarmHarness()
        self.store = MemoryBlobStore()
        self.out = self.base / "out"
        self.client_wallet = make_wallet(self, self.harness.clock, SEED_A, grant=100 * MICRO)

    def seeder(self, seed: bytes, min_price: float = RATE, debt_limit: int | None = 10 * MICRO,
               **options: Any) -> tuple[Seeder, Wallet]:
        wallet = make_wallet(self, self.harness.clock, seed, grant=0, debt_limit=debt_limit)
        seeder = self.harness.add_seeder(
            self.published, wallet=wallet, rates=PaymentRateManager(min_price), **options
        )
        return seeder, wallet

    def download(self, payments: DownloadPayments | None, **options: Any) -> Any:
        swarm = self.harness.swarm(self.store, payments=payments, **options)
        downloader = self.harness.downloader(swarm, self.published, self.out)
        d = downloader.start()
        self.harness.run(d)
        return d

    def expected_cost(self) -> int:
        rate = to_micro(RATE)
        return sum(blob_cost(info.length, rate) for info in self.published.descriptor.data_blobs)


class PaidSwarmTests(_PaidSwarm):

    def test_paid_download_moves_exact_points(self) -> None:
        """
        The downloader pays each blob at the offered rate, the server
        expects the same, and once the last cheque is delivered nobody owes
        anything: the payer's balance fell and the payee's rose by the sum
        of C{blob_cost} over the blobs.
        """
        seeder, seller = self.seeder(SEED_B)
        payments = DownloadPayments(self.client_wallet, RATE)
        path = self.successResultOf(self.download(payments))
        self.assertEqual(path.read_bytes(), self.published.data)
        cost = self.expected_cost()
        self.assertEqual(payments.paid_micro, cost)
        self.assertEqual(self.client_wallet.ledger.balance(), 100 * MICRO - cost)
        self.harness.clock.advance(FLOAT_IDLE)
        self.assertEqual(self.client_wallet.ledger.reserved(), 0)
        self.assertEqual(seller.ledger.balance(), cost)
        self.assertEqual(seller.unpaid_debt(self.client_wallet.public_hex), 0)
        self.assertEqual(self.client_wallet.pending_cheques(), [])

    def test_rate_too_low_moves_on(self) -> None:
        """
        A seeder whose minimum is above our offer answers RATE_TOO_LOW; the
        downloader stops asking it and gets every blob from the seeder that
        accepts.
        """
        dear, dear_wallet = self.seeder(SEED_B, min_price=RATE * 2)
        cheap, cheap_wallet = self.seeder(SEED_C)
        payments = DownloadPayments(self.client_wallet, RATE)
        self.successResultOf(self.download(payments))
        self.assertEqual(dear.uploads, [])
        self.assertEqual(sorted(cheap.uploads), sorted(self.published.descriptor.blob_hashes))
        self.assertEqual(dear_wallet.ledger.balance(), 0)
        self.assertEqual(cheap_wallet.ledger.balance(), self.expected_cost())

    def test_free_download_from_paid_seeder_moves_on(self) -> None:
        """
        A free downloader (offer 0) is refused by a paid seeder and served
        by a free one; no points move.
        """
        paid, paid_wallet = self.seeder(SEED_B)
        free = self.harness.add_seeder(self.published)
        self.successResultOf(self.download(None))
        self.assertEqual(paid.uploads, [])
        self.assertEqual(len(free.uploads), len(self.published.descriptor.blob_hashes))
        self.assertEqual(paid_wallet.ledger.balance(), 0)

    def test_paid_downloader_does_not_pay_free_seeder(self) -> None:
        """
        A free seeder (an LBRY peer, or p2pblob without a price) tells no
        payment key: the downloader reserves, then releases, and pays nothing.
        """
        self.harness.add_seeder(self.published)
        payments = DownloadPayments(self.client_wallet, RATE)
        self.successResultOf(self.download(payments))
        self.assertEqual(payments.paid_micro, 0)
        self.assertEqual(self.client_wallet.ledger.balance(), 100 * MICRO)
        self.harness.clock.advance(FLOAT_IDLE)
        self.assertEqual(self.client_wallet.ledger.reserved(), 0)

    def test_insufficient_funds(self) -> None:
        """
        A wallet that cannot cover the next reservation stops the download
        with InsufficientFundsError naming what was needed; what it reserved
        is released.
        """
        poor = make_wallet(self, self.harness.clock, SEED_A, grant=3 * MICRO)
        self.seeder(SEED_B)
        payments = DownloadPayments(poor, RATE)
        with capturedLogs() as events:
            d = self.download(payments)
        failure = self.failureResultOf(d, InsufficientFundsError)
        first = self.published.descriptor.data_blobs[0].length
        self.assertEqual(failure.value.needed, blob_cost(first, to_micro(RATE)))
        self.assertIn("not enough points", str(failure.value))
        self.assertTrue(any("Download paused" in e.get("log_format", "") for e in events))
        self.assertEqual(poor.ledger.reserved(), 0)


class _NeverPays(DownloadPayments):
    """
    A modified client: it reserves and offers like an honest one, and never
    sends a cheque.
    """

    def add_requests(self, peer: Any, protocol: IRequestSender, promptly: bool = False) -> None:
        self.wallet.get_info_exchanger().send_next_request(peer, protocol)

    def pay(self, reservation: Any, length: int) -> None:
        self.cancel(reservation)


class DebtLimitSwarmTests(_PaidSwarm):
    def test_non_payer_is_cut_off(self) -> None:
        """
        A client that never pays gets blobs until its debt passes the
        limit, then C{DEBT_LIMIT_REACHED}; the seeder logs why.
        """
        limit = blob_cost(MAX_BLOB_SIZE, to_micro(RATE)) // 2  # half a blob
        seeder, seller = self.seeder(SEED_B, debt_limit=limit)
        payments = _NeverPays(self.client_wallet, RATE)
        with capturedLogs() as events:
            d = self.download(payments, stall_timeout=30.0)
        self.failureResultOf(d)
        self.assertLess(len(seeder.uploads), len(self.published.descriptor.blob_hashes))
        self.assertEqual(seller.ledger.balance(), 0)
        refusals = [e for e in events if "Refusing blob" in e.get("log_format", "")]
        self.assertTrue(refusals)
        self.assertIn("no more blobs until it pays", str(refusals[0]["error"]))



SERVER = ("10.0.0.1", 3333)


class PaidRequesterTests(SynchronousTestCase):
    """
    The requester in paid mode, spoken to through a L{FakeSender}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = PeerRegistry(self.clock)
        self.peer = self.registry.get(*SERVER)
        self.infos, self.blobs = make_blobs(6, size=1000)
        self.wallet = make_wallet(self, self.clock, SEED_A, grant=100 * MICRO)
        # a third of a point per MiB: the longest offer a float writes
        self.payments = DownloadPayments(self.wallet, 1 / 3)
        self.requester = BlobRequester(
            Wanted(self.infos), MemoryBlobStore(),
            StaticPeerFinder(self.registry, [SERVER]), self.clock, blob_buffers(),
            payments=self.payments,
        )

    def ask(self) -> FakeSender:
        sender = FakeSender()
        self.assertTrue(self.successResultOf(self.requester.send_next_request(self.peer, sender)))
        return sender

    def test_paid_request_fits(self) -> None:
        """
        The largest request a paid download makes (a cheque with the
        largest exact JSON numbers, the payment-key query, the price offer
        and the availability of other blobs) stays under the
        C{CLIENT_MAX_REQUEST_SIZE} bytes our client and LBRY's servers
        accept.
        """
        self.wallet.learn_peer_key(self.peer, NodeKey.generate().public_key)
        reservation = self.payments.reserve(self.peer, 1000)
        self.payments.pay(reservation, 1000)
        message = self.ask().message()
        self.assertIn(CHEQUE_QUERY, message)
        self.assertGreater(len(message["requested_blobs"]), 1)
        message[CHEQUE_QUERY].update(total=2**53 - 1, sequence=2**53 - 1)
        message[PAYMENT_KEY_QUERY] = True
        self.assertLess(len(encode_request(message)), CLIENT_MAX_REQUEST_SIZE)

    def test_debt_limit_is_not_lacking(self) -> None:
        """
        A blob refused with C{DEBT_LIMIT_REACHED} is not taken as missing
        on the peer: the requester stops asking that peer until it backs
        off, or until it has a cheque for it, then asks for the same blob.
        """
        sender = self.ask()
        blob_request, answer = sender.blob_requests[0]
        response = {"available_blobs": [blob_request.blob_hash],
                    "blob_data_payment_rate": "RATE_ACCEPTED",
                    "incoming_blob": {"error": DEBT_LIMIT_REACHED}}
        for _, d in sender.requests:
            d.callback(response)
        refusal = BlobUnavailableError(self.peer, blob_request.blob_hash, DEBT_LIMIT_REACHED)
        answer.errback(refusal)
        blob_request.fail(refusal)
        self.assertFalse(self.successResultOf(
            self.requester.send_next_request(self.peer, FakeSender())
        ))
        self.assertTrue(self.requester.usable(self.peer))
        self.clock.advance(self.peer.retry_at - self.clock.seconds())
        again = self.ask()
        self.assertEqual(again.blob_requests[0][0].blob_hash, blob_request.blob_hash)
