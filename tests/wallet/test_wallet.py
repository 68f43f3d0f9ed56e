"""
Tests for L{p2pblob.wallet.wallet.Wallet}: every transition of a payment,
between two wallets on one L{Clock}, with real ledger files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.config import Config
from p2pblob.errors import (
    DebtLimitError,
    ForgedChequeError,
    MalformedChequeError,
    PaymentError,
    ReservationError,
    StorageError,
    UnknownPayeeError,
    WrongPayeeError,
)
from p2pblob.interfaces import IQueryHandlerFactory, IRequestCreator, IWallet
from p2pblob.peer.peer import Peer
from p2pblob.wallet.cheques import Cheque, issue_cheque
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.summary import LedgerSummary, read_summary
from p2pblob.wallet.units import MICRO
from p2pblob.wallet.wallet import SYNC_INTERVAL, ReservedPoints, Wallet, open_wallet
from tests.wallet._helpers import (
    CLIENT,
    SEED_A,
    SEED_B,
    SEED_C,
    SERVER,
    HeldWorker,
    make_wallet,
)


def _time_of(wallet: Wallet, query: str, *arguments: object) -> float:
    db = sqlite3.connect(wallet.ledger_path)
    try:
        (value,) = db.execute(query, arguments).fetchone()
    finally:
        db.close()
    return float(value)


class _PaymentCase(SynchronousTestCase):
    """
    A downloads from B: A is B's client, B is A's server.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.payer = make_wallet(self, self.clock, SEED_A)
        self.payee = make_wallet(self, self.clock, SEED_B)
        # A learns B's key through the exchange
        self.payer.learn_peer_key(SERVER, self.payee.public_key)

    def pay(self, points: float, reserve: float | None = None) -> Cheque:
        reservation = self.payer.reserve_points(SERVER, reserve or points)
        assert reservation is not None
        cheque = self.successResultOf(self.payer.send_points(reservation, points))
        assert cheque is not None
        return cheque

    def balances(self) -> tuple[float, float]:
        return (self.successResultOf(self.payer.get_balance()),
                self.successResultOf(self.payee.get_balance()))


class InterfaceTests(_PaymentCase):
    def test_provides(self) -> None:
        """
        The wallet is an L{IWallet}; its exchanger and handler factory
        provide theirs.
        """
        verifyObject(IWallet, self.payer)
        verifyObject(IRequestCreator, self.payer.get_info_exchanger())
        verifyObject(IQueryHandlerFactory, self.payer.get_wallet_info_query_handler_factory())
        self.assertIs(self.payer.get_info_exchanger(), self.payer.get_info_exchanger())

    def test_in_memory(self) -> None:
        """
        A wallet whose ledger is C{:memory:} works, and leaves no file.
        """
        wallet = Wallet(self.clock, NodeKey.from_seed(SEED_C), Path(":memory:"))
        wallet.start()
        self.addCleanup(wallet.stop)
        wallet.learn_peer_key(SERVER, self.payee.public_key)
        reservation = wallet.reserve_points(SERVER, 1)
        assert reservation is not None
        cheque = self.successResultOf(wallet.send_points(reservation, 1))
        self.assertEqual(self.payee.receive_cheque(CLIENT, cheque), MICRO)
        self.assertFalse(Path(":memory:").exists())

    def test_not_running(self) -> None:
        """
        A stopped wallet refuses everything with a clear error.
        """
        wallet = Wallet(self.clock, NodeKey.from_seed(SEED_C), Path(self.mktemp()) / "l.sqlite")
        self.assertIsInstance(self.failureResultOf(wallet.get_balance()).value, PaymentError)
        with self.assertRaises(PaymentError):
            wallet.reserve_points(SERVER, 1)
        wallet.stop()  # harmless


class ReserveTests(_PaymentCase):
    def test_reserve_and_cancel(self) -> None:
        """
        Reserving sets points aside (balance unchanged), up to what is
        available; cancelling gives them back; cancelling twice is
        harmless.
        """
        first = self.payer.reserve_points(SERVER, 60)
        assert first is not None
        self.assertIsInstance(first, ReservedPoints)
        self.assertEqual((first.amount, first.micro, first.account),
                         (60.0, 60 * MICRO, self.payee.public_hex))
        self.assertEqual(_time_of(self.payer, "SELECT created_on FROM reservation"), 1000)
        self.assertIsNone(self.payer.reserve_points(SERVER, 40.000001))
        second = self.payer.reserve_points(SERVER, 40)
        assert second is not None
        self.assertEqual(self.balances()[0], 100.0)
        self.assertEqual(self.payer.ledger.available(), 0)
        self.payer.cancel_point_reservation(first)
        self.payer.cancel_point_reservation(first)
        self.assertEqual(self.payer.ledger.available(), 60 * MICRO)
        with self.assertRaises(TypeError):
            self.payer.cancel_point_reservation("not a reservation")

    def test_unknown_key(self) -> None:
        """
        Points can be reserved for a peer whose key is unknown, but not
        paid to it until the key is learnt; the reservation survives.
        """
        elsewhere = Peer("192.0.2.77", 3333)
        reservation = self.payer.reserve_points(elsewhere, 5)
        assert reservation is not None
        self.assertEqual(reservation.account, "192.0.2.77:3333")
        failure = self.failureResultOf(self.payer.send_points(reservation, 5))
        self.assertIsInstance(failure.value, UnknownPayeeError)
        self.assertIn("192.0.2.77:3333", str(failure.value))
        self.payer.learn_peer_key(elsewhere, NodeKey.from_seed(SEED_C).public_key)
        cheque = self.successResultOf(self.payer.send_points(reservation, 5))
        assert cheque is not None
        self.assertEqual(cheque.payee, NodeKey.from_seed(SEED_C).public_key)


class SendTests(_PaymentCase):
    def test_send(self) -> None:
        """
        Sending pays from the reservation, releases the rest, and queues a
        cumulative cheque: listeners hear of it, and it waits in the outbox
        until acknowledged.
        """
        heard: list[Cheque] = []
        stop = self.payer.when_cheque_queued(heard.append)
        self.clock.advance(5)
        first = self.pay(1.5, reserve=2)
        self.assertEqual((first.total, first.sequence), (1_500_000, 1))
        self.assertEqual(self.payer.ledger.reserved(), 0)
        self.assertEqual(self.balances()[0], 98.5)
        self.assertEqual(heard, [first])
        self.assertEqual(_time_of(self.payer, "SELECT updated_on FROM payee"), 1005)
        self.assertEqual(self.payer.cheque_for(SERVER), first)
        second = self.pay(0.25)
        self.assertEqual((second.total, second.sequence), (1_750_000, 2))
        self.assertEqual(self.payer.pending_cheques(), [second])
        self.payer.cheque_delivered(second)
        self.assertIsNone(self.payer.cheque_for(SERVER))
        self.assertEqual(self.payer.latest_cheque_for(SERVER), second)
        self.assertEqual(self.payer.pending_cheques(), [])
        stop()
        self.pay(1)
        self.assertEqual(len(heard), 2)

    def test_send_refused(self) -> None:
        """
        Paying more than reserved, paying twice, or paying oneself fails
        and changes nothing.
        """
        reservation = self.payer.reserve_points(SERVER, 1)
        assert reservation is not None
        failure = self.failureResultOf(self.payer.send_points(reservation, 1.000001))
        self.assertIsInstance(failure.value, ReservationError)
        self.assertIsNotNone(self.payer.ledger.reservation(reservation.identifier))
        self.successResultOf(self.payer.send_points(reservation, 1))
        failure = self.failureResultOf(self.payer.send_points(reservation, 1))
        self.assertIsInstance(failure.value, ReservationError)
        self.assertIsInstance(self.failureResultOf(self.payer.send_points(reservation, -1)).value,
                              ValueError)
        self.payer.learn_peer_key(CLIENT, self.payer.public_key)
        mine = self.payer.reserve_points(CLIENT, 1)
        assert mine is not None
        self.assertIsInstance(self.failureResultOf(self.payer.send_points(mine, 1)).value,
                              PaymentError)
        self.assertEqual(self.balances()[0], 99.0)

    def test_send_nothing(self) -> None:
        """
        A payment of 0 only releases the reservation: no cheque.
        """
        reservation = self.payer.reserve_points(SERVER, 1)
        assert reservation is not None
        self.assertIsNone(self.successResultOf(self.payer.send_points(reservation, 0)))
        self.assertEqual(self.payer.ledger.reserved(), 0)
        self.assertEqual(self.payer.pending_cheques(), [])

    def test_send_keeping_some(self) -> None:
        """
        A payment may keep part of its reservation to pay from again; a
        reservation may be shrunk, not grown.
        """
        reservation = self.payer.reserve_micro(SERVER, 3 * MICRO)
        assert reservation is not None
        cheque = self.payer.send_micro(reservation, MICRO, keep=MICRO)
        assert cheque is not None
        self.assertEqual(self.payer.ledger.reserved(), MICRO)
        self.assertIsNone(self.payer.send_micro(reservation, 0, keep=MICRO // 2))
        self.assertEqual(self.payer.ledger.reserved(), MICRO // 2)
        with self.assertRaises(ReservationError):
            self.payer.send_micro(reservation, MICRO // 2, keep=1)
        with self.assertRaises(ReservationError):
            self.payer.shrink_reservation(reservation, MICRO)
        self.payer.shrink_reservation(reservation, 0)
        self.assertEqual(self.payer.ledger.reserved(), 0)
        with self.assertRaises(ReservationError):
            self.payer.shrink_reservation(reservation, 0)
        self.assertEqual(self.payer.ledger.balance(), 99 * MICRO)

    def test_listener_failure(self) -> None:
        """
        A listener that fails is logged; the payment stands.
        """
        def broken(cheque: Cheque) -> None:
            raise RuntimeError("boom")

        self.payer.when_cheque_queued(broken)
        with capturedLogs() as events:
            cheque = self.pay(1)
        self.assertEqual(self.payer.pending_cheques(), [cheque])
        self.assertEqual(len([e for e in events if e.get("log_failure")]), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


# the values of SQLite's "PRAGMA synchronous"
NORMAL, FULL = 1, 2


class SyncWorkerTests(SynchronousTestCase):
    """
    A wallet with a sync worker: payments made and received share one
    fsync, in the worker, and a cheque leaves only once it is on the disk.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = HeldWorker()
        self.steps: list[tuple[str, int]] = []
        self.payer = self.wallet(SEED_A, self.worker)
        self.payee = self.wallet(SEED_B, self.worker)
        self.payer.learn_peer_key(SERVER, self.payee.public_key)

    def wallet(self, seed: bytes, worker: HeldWorker | None = None) -> Wallet:
        wallet: Wallet

        def step(name: str) -> None:
            # how the transaction under way will wait for the disk when it
            # commits (a setting of the ledger's own connection)
            if wallet._ledger is not None:
                (mode,) = wallet._ledger._db.execute("PRAGMA synchronous").fetchone()
                self.steps.append((name, mode))

        wallet = Wallet(self.clock, NodeKey.from_seed(seed), Path(self.mktemp()) / "l.sqlite",
                        sync_worker=worker, fault=step)  # type: ignore[arg-type]
        wallet.start()
        self.addCleanup(wallet.stop)
        return wallet

    def pay(self, micro: int) -> Cheque:
        reservation = self.payer.reserve_micro(SERVER, micro)
        assert reservation is not None
        cheque = self.payer.send_micro(reservation, micro)
        assert cheque is not None
        return cheque

    def test_payments_share_one_sync(self) -> None:
        """
        Payments commit without waiting for the disk; L{SYNC_INTERVAL}
        seconds after the first, one fsync in the worker puts them all
        there, and only then is the latest cheque sendable and queued.
        """
        queued: list[Cheque] = []
        self.payer.when_cheque_queued(queued.append)
        self.pay(MICRO)
        latest = self.pay(2 * MICRO)
        self.assertIsNone(self.payer.sendable_cheque_for(SERVER))
        self.clock.advance(SYNC_INTERVAL - 0.001)
        self.assertEqual(self.worker.calls, [])
        self.clock.advance(0.001)
        self.assertEqual(len(self.worker.calls), 1)
        self.assertIsNone(self.payer.sendable_cheque_for(SERVER))
        self.worker.run_all()
        self.assertEqual(self.payer.sendable_cheque_for(SERVER), latest)
        self.assertEqual(queued, [latest])
        pays = [mode for name, mode in self.steps if name == "pay:begin"]
        self.assertEqual(pays, [NORMAL, NORMAL])

    def test_earlier_cheque_sendable_meanwhile(self) -> None:
        """
        While a payment waits for the disk, the cheque before it (on the
        disk already) is the one that may be sent.
        """
        first = self.pay(MICRO)
        self.clock.advance(SYNC_INTERVAL)
        self.worker.run_all()
        self.pay(MICRO)
        self.assertEqual(self.payer.sendable_cheque_for(SERVER), first)

    def test_received_cheque_synced_in_worker(self) -> None:
        """
        A cheque received commits without waiting for the disk (the receipt
        goes at once), and the next fsync in the worker puts it there.
        """
        cheque = self.pay(MICRO)
        self.clock.advance(SYNC_INTERVAL)
        self.worker.run_all()
        self.assertEqual(self.payee.receive_cheque(CLIENT, cheque), MICRO)
        self.assertIn(("receive:verified", NORMAL), self.steps)
        self.clock.advance(SYNC_INTERVAL)
        self.assertEqual(len(self.worker.calls), 1)
        self.worker.run_all()
        # a replay credits nothing and needs no sync
        self.assertEqual(self.payee.receive_cheque(CLIENT, cheque), 0)
        self.clock.advance(SYNC_INTERVAL)
        self.assertEqual(self.worker.calls, [])

    def test_debts_and_deliveries_written_with_next_sync(self) -> None:
        """
        Debts recorded and cheques acknowledged count at once, and are
        written together with the next sync, not each in a transaction of
        its own.
        """
        cheque = self.pay(MICRO)
        self.clock.advance(SYNC_INTERVAL)
        self.worker.run_all()
        del self.steps[:]
        self.payee.expect_micro(CLIENT, 3 * MICRO)
        self.payee.expect_micro(CLIENT, 2 * MICRO)
        self.payer.cheque_delivered(cheque)
        self.assertEqual(self.payee.unpaid_debt(CLIENT), 5 * MICRO)
        self.assertIsNone(self.payer.sendable_cheque_for(SERVER))
        self.assertEqual(self.steps, [])
        self.assertEqual(debts_in(self.payee.ledger_path), [])
        self.clock.advance(SYNC_INTERVAL)
        self.assertEqual(
            [name for name, _ in self.steps],
            ["expect:added", "expect:committed", "deliver:marked", "deliver:committed"],
        )
        account = self.payee.account_of(CLIENT)
        self.assertEqual(debts_in(self.payee.ledger_path), [(account, 5 * MICRO)])
        [payment] = written(self.payer.ledger_path).payments
        self.assertEqual((payment.total, payment.delivered_total), (MICRO, MICRO))

    def test_debt_written_at_once_without_worker(self) -> None:
        """
        Without a sync worker, a debt is written before
        L{Wallet.expect_micro} returns.
        """
        payee = self.wallet(SEED_C, worker=None)
        payee.expect_micro(CLIENT, MICRO)
        self.assertEqual(debts_in(payee.ledger_path), [(payee.account_of(CLIENT), MICRO)])

    def test_received_cheque_durable_without_worker(self) -> None:
        """
        Without a sync worker, a cheque received is on the disk before
        L{Wallet.receive_cheque} returns.
        """
        cheque = self.pay(MICRO)
        self.clock.advance(SYNC_INTERVAL)
        self.worker.run_all()
        payee = self.wallet(SEED_B, worker=None)
        self.assertEqual(payee.receive_cheque(CLIENT, cheque), MICRO)
        self.assertIn(("receive:verified", FULL), self.steps)
        self.assertNotIn(("receive:verified", NORMAL), self.steps)


class ReceiveTests(_PaymentCase):
    def test_receive(self) -> None:
        """
        The payee credits what each new cheque adds; a lost cheque is made
        good by the next; replays and older cheques credit nothing.
        """
        first = self.pay(1)
        second = self.pay(2)
        third = self.pay(3)
        self.clock.advance(7)
        self.assertEqual(self.payee.receive_cheque(CLIENT, second.to_wire()), 3 * MICRO)
        self.assertEqual(_time_of(self.payee, "SELECT received_on FROM payer"), 1007)
        self.assertEqual(self.payee.receive_cheque(CLIENT, second), 0)
        self.assertEqual(self.payee.receive_cheque(CLIENT, first), 0)
        self.assertEqual(self.payee.receive_cheque(CLIENT, third), 3 * MICRO)
        self.assertEqual(self.payee.receive_cheque(None, third.to_wire()), 0)
        self.assertEqual(self.balances(), (94.0, 106.0))

    def test_refused(self) -> None:
        """
        Forged, misdirected and malformed cheques raise and credit nothing.
        """
        genuine = self.pay(1)
        forged = Cheque(genuine.payer, genuine.payee, 50 * MICRO, 2, genuine.signature)
        with self.assertRaises(ForgedChequeError):
            self.payee.receive_cheque(CLIENT, forged)
        elsewhere = issue_cheque(NodeKey.from_seed(SEED_A), NodeKey.from_seed(SEED_C).public_key,
                                 MICRO, 1)
        with self.assertRaises(WrongPayeeError):
            self.payee.receive_cheque(CLIENT, elsewhere.to_wire())
        with self.assertRaises(MalformedChequeError):
            self.payee.receive_cheque(CLIENT, {"total": 5})
        self.assertEqual(self.balances()[1], 100.0)
        self.assertIsNone(self.payee.peer_key(CLIENT))


class DebtTests(_PaymentCase):
    def setUp(self) -> None:
        super().setUp()
        self.payee.debt_limit = 2 * MICRO

    def test_threshold(self) -> None:
        """
        The server serves a client until its unpaid debt passes the limit,
        then refuses it with a clear error until it pays.
        """
        self.payee.add_expected_payment(CLIENT, 1.5)
        self.assertEqual(self.payee.unpaid_debt(CLIENT), 1_500_000)
        self.assertTrue(self.payee.may_serve(CLIENT))
        self.payee.add_expected_payment(CLIENT, 0.5)
        self.assertTrue(self.payee.may_serve(CLIENT))  # at the limit: still served
        with capturedLogs() as events:
            self.payee.add_expected_payment(CLIENT, 0.000001)
        self.assertFalse(self.payee.may_serve(CLIENT))
        self.assertTrue(any("no more blobs" in e.get("log_format", "") for e in events))
        with self.assertRaises(DebtLimitError) as e:
            self.payee.check_may_serve(CLIENT)
        self.assertEqual((e.exception.debt, e.exception.limit), (2_000_001, 2 * MICRO))
        self.assertIn("owes 2.000001 points", str(e.exception))
        # the client pays: its first cheque names it, and clears the debt
        cheque = self.pay(2)
        with capturedLogs() as events:
            self.payee.receive_cheque(CLIENT, cheque.to_wire())
        self.assertEqual(self.payee.account_of(CLIENT), self.payer.public_hex)
        self.assertEqual(self.payee.unpaid_debt(CLIENT), 1)
        self.assertTrue(self.payee.may_serve(CLIENT))
        self.payee.check_may_serve(CLIENT)
        self.assertTrue(any("served again" in e.get("log_format", "") for e in events))

    def test_named_by_key_across_connections(self) -> None:
        """
        Debts follow the key from one connection to the next; a connection
        whose key is not known yet starts under its address.
        """
        self.payee.receive_cheque(CLIENT, self.pay(1).to_wire())
        self.payee.add_expected_payment(CLIENT, 3)
        self.payee.forget_peer_key(CLIENT)
        later = Peer(CLIENT.host, 50999)
        self.assertTrue(self.payee.may_serve(later))
        self.payee.add_expected_payment(later, 1)
        self.assertEqual(self.payee.unpaid_debt(later), MICRO)
        self.payee.receive_cheque(later, self.payer.latest_cheque_for(SERVER))
        self.assertEqual(self.payee.unpaid_debt(later), 3 * MICRO)
        self.assertFalse(self.payee.may_serve(self.payer.public_key))

    def test_no_limit(self) -> None:
        self.payee.debt_limit = None
        self.payee.add_expected_payment(CLIENT, 10**6)
        self.assertTrue(self.payee.may_serve(CLIENT))
        self.payee.check_may_serve(CLIENT)
        self.payee.add_expected_payment(CLIENT, 0)


class RestartTests(_PaymentCase):
    def test_reopened(self) -> None:
        """
        A restarted wallet finds its balance, debts and unacknowledged
        cheques in the ledger file; reservations of the last run are
        released.
        """
        cheque = self.pay(4)
        self.payee.receive_cheque(CLIENT, cheque)
        self.payee.add_expected_payment(CLIENT, 6)
        self.assertIsNotNone(self.payer.reserve_points(SERVER, 10))
        for wallet in (self.payer, self.payee):
            wallet.stop()
        payer = make_wallet(self, self.clock, SEED_A, self.payer.ledger_path.parent)
        payee = make_wallet(self, self.clock, SEED_B, self.payee.ledger_path.parent)
        self.assertEqual(self.successResultOf(payer.get_balance()), 96.0)
        self.assertEqual(payer.ledger.reserved(), 0)
        self.assertEqual(payer.pending_cheques(), [cheque])
        self.assertEqual(self.successResultOf(payee.get_balance()), 104.0)
        self.assertEqual(payee.unpaid_debt(payer.public_key), 2 * MICRO)
        # the cheque is sent again after the restart: it credits nothing
        self.assertEqual(payee.receive_cheque(CLIENT, cheque), 0)

    def test_service(self) -> None:
        """
        As a service, the wallet opens its ledger when started and closes
        it when stopped.
        """
        wallet = Wallet(self.clock, NodeKey.from_seed(SEED_C), Path(self.mktemp()) / "w.sqlite")
        wallet.startService()
        self.assertTrue(wallet.running)
        self.assertEqual(self.successResultOf(wallet.get_balance()), 100.0)
        wallet.startService()  # already open: nothing more
        wallet.stopService()
        self.assertIsInstance(self.failureResultOf(wallet.get_balance()).value, PaymentError)

    def test_open_wallet(self) -> None:
        """
        The wallet of a data directory gets its key from there (made on
        first use) and its grant and debt limit from the configuration.
        """
        config = Config(Path(self.mktemp()), initial_grant=7.5, debt_limit=0.5)
        wallet = open_wallet(self.clock, config)
        wallet.start()
        self.addCleanup(wallet.stop)
        self.assertEqual(self.successResultOf(wallet.get_balance()), 7.5)
        self.assertEqual(wallet.debt_limit, 500_000)
        self.assertTrue(config.wallet_key_path.exists())
        self.assertEqual(wallet.ledger_path, config.ledger_path)
        again = open_wallet(self.clock, config)
        self.assertEqual(again.public_key, wallet.public_key)

    def test_ledger_unusable(self) -> None:
        """
        A ledger that cannot be opened is a storage error at start.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "w.sqlite").write_bytes(b"x" * 4096)
        wallet = Wallet(self.clock, NodeKey.from_seed(SEED_C), directory / "w.sqlite")
        with self.assertRaises(StorageError):
            wallet.start()


class NamesTests(_PaymentCase):
    def test_account_of(self) -> None:
        """
        Peers are named by key once known, by address before; keys given
        directly name themselves.
        """
        peer: Any = Peer("2001:db8::1", 3333)
        self.assertEqual(self.payer.account_of(peer), "[2001:db8::1]:3333")
        self.assertEqual(self.payer.account_of(SERVER), self.payee.public_hex)
        self.assertEqual(self.payer.account_of(self.payee.public_key), self.payee.public_hex)
        self.assertEqual(self.payer.account_of(self.payee.public_hex), self.payee.public_hex)
        self.assertEqual(self.payer.peer_key(SERVER), self.payee.public_key)
        self.assertIsNone(self.payer.peer_key(peer))
        self.payer.forget_peer_key(SERVER)
        self.assertIsNone(self.payer.peer_key(SERVER))
        with self.assertRaises(ValueError):
            self.payer.account_of(b"short")
        with self.assertRaises(ValueError):
            self.payer.learn_peer_key(peer, b"short")
        with self.assertRaises(TypeError):
            self.payer.account_of(42)


def written(path: Path) -> LedgerSummary:
    """
    The ledger as the file at C{path} holds it.
    """
    summary = read_summary(path)
    assert summary is not None
    return summary


def debts_in(path: Path) -> list[tuple[str, int]]:
    """
    What each peer owes, as the file at C{path} holds it.
    """
    return [(debt.peer, debt.owes) for debt in written(path).debts]
