"""
Tests for L{p2pblob.wallet.paying.DownloadPayments}: how a paid download
sets points aside for the blobs it asks for, pays them and gives back what
it did not spend, on a real ledger and a fake clock.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import InsufficientFundsError
from p2pblob.peer.peer import Peer
from p2pblob.wallet.cheques import Cheque
from p2pblob.wallet.exchange import CHEQUE_QUERY
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.paying import (
    CHEQUE_INTERVAL,
    FLOAT_BLOBS,
    FLOAT_IDLE,
    BlobShare,
    DownloadPayments,
)
from p2pblob.wallet.units import MICRO, blob_cost, to_micro
from p2pblob.wallet.wallet import SYNC_INTERVAL, Wallet
from tests.wallet._helpers import SEED_A, SEED_B, SEED_C, SERVER, HeldWorker, make_wallet
from tests.wallet.test_exchange import FakeSender

OTHER = Peer("192.0.2.3", 3333)
LBRY = Peer("192.0.2.4", 3333)
RATE = 1.0
LENGTH = 1 << 20
COST = blob_cost(LENGTH, to_micro(RATE))  # one point a blob


class DownloadPaymentsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.writes: list[str] = []
        self.wallet = Wallet(self.clock, NodeKey.from_seed(SEED_A),
                             Path(self.mktemp()) / "ledger.sqlite",
                             initial_grant=100 * MICRO, fault=self.writes.append)
        self.wallet.start()
        self.addCleanup(self.wallet.stop)
        self.wallet.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        self.wallet.learn_peer_key(OTHER, NodeKey.from_seed(SEED_C).public_key)
        self.payments = DownloadPayments(self.wallet, RATE)

    def commits(self, name: str) -> int:
        return self.writes.count(f"{name}:committed")

    def reserved(self) -> int:
        return self.wallet.ledger.reserved()

    def latest(self, peer: Peer) -> Cheque:
        cheque = self.wallet.latest_cheque_for(peer)
        assert cheque is not None
        return cheque

    def test_one_reservation_for_several_blobs(self) -> None:
        """
        The first blob from a peer reserves L{FLOAT_BLOBS} blobs' worth in
        one ledger write; the next blobs take their shares of it, and each
        payment writes the ledger once, keeping the rest reserved.
        """
        shares = [self.payments.reserve(SERVER, LENGTH) for _ in range(FLOAT_BLOBS)]
        self.assertEqual(self.commits("reserve"), 1)
        self.assertEqual(self.reserved(), FLOAT_BLOBS * COST)
        for n, share in enumerate(shares, 1):
            self.payments.pay(share, LENGTH)
            self.assertEqual(self.reserved(), (FLOAT_BLOBS - n) * COST)
            self.assertEqual(self.latest(SERVER).total, n * COST)
        self.assertEqual(self.commits("pay"), FLOAT_BLOBS)
        self.assertEqual(self.commits("reserve"), 1)
        self.assertEqual(self.wallet.ledger.balance(), (100 - FLOAT_BLOBS) * MICRO)
        self.assertEqual(self.payments.paid_micro, FLOAT_BLOBS * COST)

    def test_next_reservation(self) -> None:
        """
        Once the shares run out, the next blob reserves again; what the
        spent reservation still holds for blobs in flight stays reserved
        until they are paid, and then it is closed.
        """
        first = [self.payments.reserve(SERVER, LENGTH) for _ in range(FLOAT_BLOBS)]
        extra = self.payments.reserve(SERVER, LENGTH)
        self.assertEqual(self.commits("reserve"), 2)
        self.assertEqual(self.reserved(), 2 * FLOAT_BLOBS * COST)
        for share in first:
            self.payments.pay(share, LENGTH)
        self.assertEqual(self.wallet.ledger.summary().reservations, 1)
        self.assertEqual(self.reserved(), FLOAT_BLOBS * COST)
        self.payments.pay(extra, LENGTH)
        self.assertEqual(self.reserved(), (FLOAT_BLOBS - 1) * COST)

    def test_rest_of_a_share_comes_back(self) -> None:
        """
        A blob shorter than reserved for pays what it costs; the rest of
        its share, and all of a share whose blob did not come, can be taken
        by the next blobs.
        """
        unknown = self.payments.reserve(SERVER, None)
        full = blob_cost(MAX_BLOB_SIZE, to_micro(RATE))
        self.assertEqual(unknown.micro, full)
        self.assertEqual(self.reserved(), FLOAT_BLOBS * full)
        self.payments.pay(unknown, 1000)
        lost = self.payments.reserve(SERVER, None)
        self.payments.cancel(lost)
        self.assertEqual(self.reserved(), FLOAT_BLOBS * full - blob_cost(1000, to_micro(RATE)))
        for _ in range(FLOAT_BLOBS - 1):
            self.payments.reserve(SERVER, None)
        self.assertEqual(self.commits("reserve"), 1)

    def test_idle_reservation_released(self) -> None:
        """
        Once no blob has taken a share for L{FLOAT_IDLE} seconds, the
        reservation is released; a blob asked for before then keeps it.
        """
        share = self.payments.reserve(SERVER, LENGTH)
        self.payments.pay(share, LENGTH)
        self.clock.advance(FLOAT_IDLE / 2)
        share = self.payments.reserve(SERVER, LENGTH)
        self.clock.advance(FLOAT_IDLE)
        self.assertEqual(self.reserved(), (FLOAT_BLOBS - 1) * COST)
        self.payments.pay(share, LENGTH)
        self.clock.advance(FLOAT_IDLE - 0.01)
        self.assertEqual(self.reserved(), (FLOAT_BLOBS - 2) * COST)
        self.clock.advance(0.01)
        self.assertEqual(self.reserved(), 0)
        self.assertEqual(self.wallet.ledger.balance(), 98 * MICRO)
        self.assertEqual(self.commits("reserve"), 1)

    def test_each_peer_its_reservation(self) -> None:
        """
        Blobs from different peers take shares of different reservations,
        and each peer is paid what its blobs cost.
        """
        mine = self.payments.reserve(SERVER, LENGTH)
        theirs = self.payments.reserve(OTHER, 2 * LENGTH)
        self.assertEqual(self.commits("reserve"), 2)
        self.assertIsNot(mine.source, theirs.source)
        self.payments.pay(theirs, 2 * LENGTH)
        cheque = self.latest(OTHER)
        self.assertEqual((cheque.payee, cheque.total), (NodeKey.from_seed(SEED_C).public_key,
                                                        2 * COST))
        self.payments.pay(mine, LENGTH)
        self.assertEqual(self.latest(SERVER).total, COST)

    def test_short_of_points(self) -> None:
        """
        A wallet that cannot reserve L{FLOAT_BLOBS} blobs' worth reserves
        one blob's; one that cannot cover a blob releases what other peers'
        reservations hold beyond their blobs in flight, and tries again
        before it gives up with L{InsufficientFundsError}.
        """
        poor = make_wallet(self, self.clock, SEED_A, grant=3 * COST)
        poor.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        poor.learn_peer_key(OTHER, NodeKey.from_seed(SEED_C).public_key)
        payments = DownloadPayments(poor, RATE)
        first = payments.reserve(SERVER, LENGTH)
        self.assertEqual(poor.ledger.reserved(), COST)
        payments.reserve(SERVER, LENGTH)
        payments.reserve(OTHER, LENGTH)
        self.assertEqual(poor.ledger.available(), 0)
        payments.pay(first, LENGTH)
        # SERVER's first reservation is spent; what the second holds is for
        # the blob in flight
        with self.assertRaises(InsufficientFundsError) as raised:
            payments.reserve(OTHER, LENGTH)
        self.assertEqual((raised.exception.needed, raised.exception.available), (COST, 0))

    def test_idle_points_go_to_the_peer_that_needs_them(self) -> None:
        """
        Points another peer's reservation holds for no blob in flight are
        released for a peer whose blob the wallet could not cover otherwise.
        """
        poor = make_wallet(self, self.clock, SEED_A, grant=FLOAT_BLOBS * COST)
        poor.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        poor.learn_peer_key(OTHER, NodeKey.from_seed(SEED_C).public_key)
        payments = DownloadPayments(poor, RATE)
        share = payments.reserve(SERVER, LENGTH)
        self.assertEqual(poor.ledger.available(), 0)
        other = payments.reserve(OTHER, LENGTH)
        self.assertEqual(poor.ledger.reserved(), 2 * COST)
        payments.pay(share, LENGTH)
        payments.pay(other, LENGTH)
        self.assertEqual(poor.ledger.balance(), (FLOAT_BLOBS - 2) * COST)

    def test_peer_without_payment_key(self) -> None:
        """
        A peer that never told a payment key (an LBRY peer) is not paid:
        the share comes back whole.
        """
        share = self.payments.reserve(LBRY, LENGTH)
        self.payments.pay(share, LENGTH)
        self.assertEqual(self.payments.paid_micro, 0)
        self.clock.advance(FLOAT_IDLE)
        self.assertEqual((self.reserved(), self.wallet.ledger.balance()), (0, 100 * MICRO))

    def test_costs_more_than_reserved(self) -> None:
        """
        A blob longer than its share was reserved for is not paid from the
        shares of others: it is refused with a warning.
        """
        share = self.payments.reserve(SERVER, LENGTH)
        with capturedLogs() as events:
            self.payments.pay(share, 2 * LENGTH)
        self.assertTrue(any("cost more than was reserved" in e["log_format"] for e in events))
        self.assertEqual(self.payments.paid_micro, 0)

    def test_reservation_gone(self) -> None:
        """
        A reservation released under the download (the wallet restarted)
        pays nothing, with a warning, and the next blob reserves again.
        """
        share = self.payments.reserve(SERVER, LENGTH)
        self.wallet.ledger.release_reservations()
        with capturedLogs() as events:
            self.payments.pay(share, LENGTH)
        self.assertTrue(any(e["log_format"].startswith("Could not") for e in events))
        self.assertIsNone(self.wallet.latest_cheque_for(SERVER))
        self.assertIsInstance(self.payments.reserve(OTHER, LENGTH), BlobShare)
        self.assertEqual(self.wallet.ledger.balance(), 100 * MICRO)
        share = self.payments.reserve(SERVER, LENGTH)
        self.assertEqual(self.commits("reserve"), 3)
        self.payments.pay(share, LENGTH)
        self.assertEqual(self.wallet.ledger.balance(), 100 * MICRO - COST)


class ChequePacingTests(SynchronousTestCase):
    """
    How often a connection carries a cheque: the first request carries the
    latest, later ones a newer cheque at most every L{CHEQUE_INTERVAL}
    seconds, unless asked to pay promptly or the peer once refused us over
    our debt.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.wallet = make_wallet(self, self.clock, SEED_A, grant=100 * MICRO)
        self.wallet.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        self.payments = DownloadPayments(self.wallet, RATE)
        self.connection = FakeSender()

    def pay(self) -> int:
        self.payments.pay(self.payments.reserve(SERVER, LENGTH), LENGTH)
        cheque = self.wallet.latest_cheque_for(SERVER)
        assert cheque is not None
        return cheque.sequence

    def carried(self, promptly: bool = False) -> list[int]:
        """
        Queue a request's payment requests; return the sequences of the
        cheques the connection has carried so far.
        """
        self.payments.add_requests(SERVER, self.connection, promptly=promptly)
        return [request.request_dict[CHEQUE_QUERY]["sequence"]
                for request, _ in self.connection.requests
                if CHEQUE_QUERY in request.request_dict]

    def test_paced(self) -> None:
        """
        A newer cheque waits until L{CHEQUE_INTERVAL} has passed since the
        connection last carried one; then the latest goes.
        """
        first = self.pay()
        self.assertEqual(self.carried(), [first])
        self.pay()
        latest = self.pay()
        self.clock.advance(CHEQUE_INTERVAL - 0.01)
        self.assertEqual(self.carried(), [first])
        self.clock.advance(0.01)
        self.assertEqual(self.carried(), [first, latest])
        self.clock.advance(CHEQUE_INTERVAL)
        self.assertEqual(self.carried(), [first, latest])

    def test_promptly(self) -> None:
        """
        Asked to pay promptly (nothing left to ask the peer), the connection
        carries the newer cheque at once.
        """
        first = self.pay()
        self.assertEqual(self.carried(), [first])
        second = self.pay()
        self.assertEqual(self.carried(promptly=True), [first, second])

    def test_impatient_peer(self) -> None:
        """
        Once the peer refused us over our debt, every request carries the
        latest cheque it has not carried.
        """
        first = self.pay()
        self.assertEqual(self.carried(), [first])
        self.payments.impatient(SERVER)
        second = self.pay()
        self.assertEqual(self.carried(), [first, second])
        third = self.pay()
        self.assertEqual(self.carried(), [first, second, third])


class BatchedPaymentsTests(SynchronousTestCase):
    """
    With a wallet that syncs later, what blobs cost is owed, and paid just
    before the wallet's next sync: one payment and one cheque per
    reservation for all the blobs paid since the last.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = HeldWorker()
        self.writes: list[str] = []
        self.path = Path(self.mktemp()) / "ledger.sqlite"
        self.wallet = Wallet(self.clock, NodeKey.from_seed(SEED_A), self.path,
                             initial_grant=100 * MICRO, fault=self.writes.append,
                             sync_worker=self.worker)  # type: ignore[arg-type]
        self.wallet.start()
        self.addCleanup(self.wallet.stop)
        self.wallet.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        self.wallet.learn_peer_key(OTHER, NodeKey.from_seed(SEED_C).public_key)
        self.payments = DownloadPayments(self.wallet, RATE)

    def receive(self, peer: Peer, blobs: int) -> None:
        for _ in range(blobs):
            self.payments.pay(self.payments.reserve(peer, LENGTH), LENGTH)

    def sync(self) -> None:
        """
        Let the wallet's next sync come, and its fsync run.
        """
        self.clock.advance(SYNC_INTERVAL)
        self.worker.run_all()

    def test_one_payment_per_sync(self) -> None:
        """
        Blobs paid for between two syncs make one payment to their peer,
        written by the sync, and one cheque for all of them.
        """
        self.receive(SERVER, 3)
        self.assertEqual(self.writes.count("pay:committed"), 0)
        self.assertIsNone(self.wallet.latest_cheque_for(SERVER))
        self.assertEqual(self.wallet.ledger.reserved(), FLOAT_BLOBS * COST)
        self.sync()
        self.assertEqual(self.writes.count("pay:committed"), 1)
        cheque = self.wallet.sendable_cheque_for(SERVER)
        assert cheque is not None
        self.assertEqual((cheque.sequence, cheque.total), (1, 3 * COST))
        self.assertEqual(self.wallet.ledger.reserved(), (FLOAT_BLOBS - 3) * COST)
        self.assertEqual(self.wallet.ledger.balance(), 97 * MICRO)
        self.assertEqual(self.payments.paid_micro, 3 * COST)
        self.receive(SERVER, 2)
        self.sync()
        cheque = self.wallet.sendable_cheque_for(SERVER)
        assert cheque is not None
        self.assertEqual((cheque.sequence, cheque.total), (2, 5 * COST))
        self.assertEqual(self.writes.count("pay:committed"), 2)

    def test_each_peer_paid(self) -> None:
        """
        What is owed to each peer is paid to it with the same sync.
        """
        self.receive(SERVER, 2)
        self.receive(OTHER, 1)
        self.sync()
        self.assertEqual(self.writes.count("pay:committed"), 1)
        totals = {peer: cheque.total for peer in (SERVER, OTHER)
                  if (cheque := self.wallet.sendable_cheque_for(peer)) is not None}
        self.assertEqual(totals, {SERVER: 2 * COST, OTHER: COST})

    def test_cheque_asked_for_pays_at_once(self) -> None:
        """
        Asking for the cheque to a peer (nothing is left to ask it, or it
        refused us over our debt) pays what is owed to it first, without
        waiting for the sync; what is owed to others waits.
        """
        self.receive(SERVER, 2)
        self.receive(OTHER, 1)
        self.assertTrue(self.payments.has_cheque_for(SERVER))
        cheque = self.payments.cheque_for(SERVER)
        assert cheque is not None
        self.assertEqual(cheque.total, 2 * COST)
        self.assertIsNone(self.wallet.latest_cheque_for(OTHER))
        self.sync()
        other = self.wallet.sendable_cheque_for(OTHER)
        assert other is not None
        self.assertEqual(other.total, COST)

    def test_spent_reservation_paid_and_closed(self) -> None:
        """
        A reservation whose shares ran out is paid what is owed from it
        and closed once its last blob is paid, the next one staying open.
        """
        shares = [self.payments.reserve(SERVER, LENGTH) for _ in range(FLOAT_BLOBS + 1)]
        self.assertEqual(self.wallet.ledger.summary().reservations, 2)
        for share in shares[:FLOAT_BLOBS]:
            self.payments.pay(share, LENGTH // 2)
        self.sync()
        self.assertEqual(self.wallet.ledger.summary().reservations, 1)
        self.assertEqual(self.wallet.ledger.reserved(), FLOAT_BLOBS * COST)
        self.assertEqual(self.wallet.ledger.balance(), 100 * MICRO - FLOAT_BLOBS * COST // 2)
        self.payments.cancel(shares[-1])
        self.clock.advance(FLOAT_IDLE)
        self.assertEqual(self.wallet.ledger.reserved(), 0)

    def test_owed_paid_when_the_wallet_stops(self) -> None:
        """
        What is owed when the wallet stops is paid and written before the
        ledger closes: the next start finds the payment.
        """
        self.receive(SERVER, 2)
        self.wallet.stop()
        again = Wallet(self.clock, NodeKey.from_seed(SEED_A), self.path)
        again.start()
        self.addCleanup(again.stop)
        self.assertEqual(again.ledger.balance(), 98 * MICRO)
        self.assertEqual(again.ledger.reserved(), 0)
        again.learn_peer_key(SERVER, NodeKey.from_seed(SEED_B).public_key)
        cheque = again.latest_cheque_for(SERVER)
        assert cheque is not None
        self.assertEqual(cheque.total, 2 * COST)

    def test_key_forgotten_before_the_sync(self) -> None:
        """
        Points reserved before the peer's key was known are paid to the key
        its address has when they are paid; if it was forgotten by then
        (the connection is gone), nothing is paid and they are released.
        """
        newcomer = Peer("192.0.2.9", 3333)
        share = self.payments.reserve(newcomer, LENGTH)
        self.wallet.learn_peer_key(newcomer, NodeKey.from_seed(SEED_C).public_key)
        self.payments.pay(share, LENGTH)
        self.wallet.forget_peer_key(newcomer)
        self.sync()
        self.assertEqual(self.wallet.ledger.balance(), 100 * MICRO)
        self.assertEqual(self.payments.paid_micro, 0)
        self.assertEqual(self.wallet.ledger.reserved(), (FLOAT_BLOBS - 1) * COST)
