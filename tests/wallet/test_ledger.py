"""
Tests for L{p2pblob.wallet.ledger} on real SQLite files: each change, its
refusals, and what opening a ledger checks.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import (
    ForgedChequeError,
    LedgerError,
    ReservationError,
    StorageError,
    WrongPayeeError,
)
from p2pblob.wallet.cheques import Cheque, check_cheque, issue_cheque
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.ledger import FAULT_POINTS, Ledger
from p2pblob.wallet.summary import read_summary
from tests.wallet._helpers import SEED_A, SEED_B, SEED_C

A = NodeKey.from_seed(SEED_A)
B = NodeKey.from_seed(SEED_B)
C = NodeKey.from_seed(SEED_C)
GRANT = 1_000


def _file_balance(path: Path) -> int:
    """
    The balance in the ledger file, as another process reads it.
    """
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT balance FROM account").fetchone()[0])
    finally:
        db.close()


class _LedgerCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = self.directory / "ledger.sqlite"
        self.ledger = self.open()

    def open(self, key: NodeKey = A, path: Path | None = None) -> Ledger:
        ledger = Ledger(path or self.path, key, GRANT, now=1.0)
        self.addCleanup(ledger.close)
        return ledger

    def assertConsistent(self, ledger: Ledger | None = None) -> None:
        self.assertEqual((ledger or self.ledger).problems(), [])


class OpeningTests(_LedgerCase):
    def test_new(self) -> None:
        """
        A new ledger holds the initial grant and nothing else; its file is
        in WAL mode with full syncs.
        """
        self.assertEqual(self.ledger.balance(), GRANT)
        self.assertEqual((self.ledger.reserved(), self.ledger.available()), (0, GRANT))
        summary = self.ledger.summary()
        self.assertEqual((summary.owner, summary.granted, summary.sent, summary.received),
                         (A.public_hex, GRANT, 0, 0))
        self.assertEqual((summary.debts, summary.payments), ([], []))
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertConsistent()

    def test_reopened(self) -> None:
        """
        Reopening keeps everything, whatever grant is given then.
        """
        self.ledger.expect("192.0.2.1:1", 5, 2.0)
        self.ledger.close()
        again = Ledger(self.path, A, 5 * GRANT, now=3.0)
        self.addCleanup(again.close)
        self.assertEqual(again.balance(), GRANT)
        self.assertEqual(again.expected("192.0.2.1:1"), 5)

    def test_other_key(self) -> None:
        """
        A ledger opened with another key is refused: its cheques would be
        issued from a payer whose history the payees do not know.
        """
        self.ledger.close()
        with self.assertRaises(LedgerError) as e:
            Ledger(self.path, B, GRANT, now=1.0)
        self.assertIn("not of this node's key", str(e.exception))
        self.assertIsInstance(e.exception, StorageError)

    def test_not_a_ledger(self) -> None:
        """
        Another SQLite database, a newer schema, or a file that is not a
        database at all are refused.
        """
        other = self.directory / "other.sqlite"
        db = sqlite3.connect(other)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
        with self.assertRaises(LedgerError) as e:
            Ledger(other, A, GRANT, now=1.0)
        self.assertIn("not a p2pblob wallet ledger", str(e.exception))
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA user_version=99")
        db.close()
        with self.assertRaises(LedgerError) as e:
            Ledger(self.path, A, GRANT, now=1.0)
        self.assertIn("newer p2pblob", str(e.exception))
        junk = self.directory / "junk.sqlite"
        junk.write_bytes(b"not a database at all" * 100)
        with self.assertRaises(LedgerError):
            Ledger(junk, A, GRANT, now=1.0)

    def test_inconsistent(self) -> None:
        """
        A ledger whose sums do not add up (edited by hand) is refused.
        """
        self.ledger.close()
        db = sqlite3.connect(self.path)
        db.execute("UPDATE account SET balance = balance + 1")
        db.commit()
        db.close()
        with self.assertRaises(LedgerError) as e:
            Ledger(self.path, A, GRANT, now=1.0)
        self.assertIn("inconsistent", str(e.exception))

    def test_read_summary(self) -> None:
        """
        The summary can be read without the key; there is none before the
        ledger exists.
        """
        self.assertIsNone(read_summary(self.directory / "missing.sqlite"))
        self.ledger.expect("x:1", 7, 1.0)
        self.ledger.flush()
        summary = read_summary(self.path)
        assert summary is not None
        self.assertEqual(summary, self.ledger.summary())
        self.assertEqual([(d.peer, d.owes) for d in summary.debts], [("x:1", 7)])
        junk = self.directory / "junk.sqlite"
        junk.write_bytes(b"not a database at all" * 100)
        with self.assertRaises(LedgerError):
            read_summary(junk)

    def test_fault_points_named(self) -> None:
        """
        Every transaction reports its steps to the fault hook, ending with
        its commit.
        """
        steps: list[str] = []
        ledger = Ledger(self.directory / "hooked.sqlite", A, GRANT, 1.0, steps.append)
        self.addCleanup(ledger.close)
        rid = ledger.reserve("p", 10, 1.0)
        assert rid is not None
        ledger.pay(rid, 10, B.public_key, 1.0)
        ledger.flush()
        for operation in ("create", "reserve", "pay"):
            for step in FAULT_POINTS[operation]:
                self.assertIn(step, steps)
        self.assertTrue(all(step.split(":")[0] in FAULT_POINTS for step in steps))


class PayingTests(_LedgerCase):
    def test_reserve(self) -> None:
        """
        Reservations take from what is available, and fail once it is not
        enough; identifiers are never reused.
        """
        first = self.ledger.reserve("p", 600, 1.0)
        self.assertIsNotNone(first)
        self.assertIsNone(self.ledger.reserve("p", 401, 1.0))
        second = self.ledger.reserve("q", 400, 1.0)
        self.assertEqual((self.ledger.reserved(), self.ledger.available()), (GRANT, 0))
        self.assertIsNone(self.ledger.reserve("p", 1, 1.0))
        self.assertIsNotNone(self.ledger.reserve("p", 0, 1.0))
        assert first is not None and second is not None
        self.assertEqual(self.ledger.reservation(second), ("q", 400))
        self.assertTrue(self.ledger.cancel(second))
        self.assertFalse(self.ledger.cancel(second))
        third = self.ledger.reserve("q", 400, 1.0)
        assert third is not None
        self.assertGreater(third, second)
        self.assertEqual(self.ledger.release_reservations(), 3)
        self.assertEqual(self.ledger.available(), GRANT)
        with self.assertRaises(ValueError):
            self.ledger.reserve("p", -1, 1.0)
        self.assertConsistent()

    def test_pay(self) -> None:
        """
        Paying releases the reservation, debits the balance and issues the
        next cumulative cheque.
        """
        rid = self.ledger.reserve("p", 300, 1.0)
        assert rid is not None
        cheque = self.ledger.pay(rid, 250, B.public_key, 2.0)
        check_cheque(cheque, B.public_key)
        self.assertEqual((cheque.payer, cheque.total, cheque.sequence),
                         (A.public_key, 250, 1))
        self.assertEqual((self.ledger.balance(), self.ledger.reserved()), (GRANT - 250, 0))
        rid = self.ledger.reserve("p", 100, 1.0)
        assert rid is not None
        second = self.ledger.pay(rid, 100, B.public_key, 3.0)
        self.assertEqual((second.total, second.sequence), (350, 2))
        state = self.ledger.payee(B.public_key)
        assert state is not None
        self.assertEqual(state.cheque(A.public_key), second)
        self.assertTrue(state.undelivered)
        self.assertIsNone(self.ledger.payee(C.public_key))
        self.assertConsistent()

    def test_pay_refused(self) -> None:
        """
        A reservation that is gone, or too small, pays nothing and changes
        nothing.
        """
        rid = self.ledger.reserve("p", 100, 1.0)
        assert rid is not None
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 101, B.public_key, 1.0)
        self.assertEqual(self.ledger.reservation(rid), ("p", 100))
        self.ledger.cancel(rid)
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 1, B.public_key, 1.0)
        self.assertEqual(self.ledger.balance(), GRANT)
        self.assertIsNone(self.ledger.payee(B.public_key))
        self.assertConsistent()

    def test_pay_keeping_some(self) -> None:
        """
        A payment may keep part of the reservation reserved, to pay the
        same peer again from it; it cannot keep more than is left.
        """
        rid = self.ledger.reserve("p", 300, 1.0)
        assert rid is not None
        first = self.ledger.pay(rid, 100, B.public_key, 2.0, keep=150)
        self.assertEqual(self.ledger.reservation(rid), ("p", 150))
        self.assertEqual((self.ledger.balance(), self.ledger.reserved()), (GRANT - 100, 150))
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 100, B.public_key, 3.0, keep=51)
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 10, B.public_key, 3.0, keep=-1)
        second = self.ledger.pay(rid, 100, B.public_key, 3.0, keep=50)
        self.assertEqual((first.total, second.total, second.sequence), (100, 200, 2))
        self.ledger.pay(rid, 50, B.public_key, 4.0)
        self.assertIsNone(self.ledger.reservation(rid))
        self.assertEqual((self.ledger.balance(), self.ledger.reserved()), (GRANT - 250, 0))
        self.assertConsistent()

    def test_payments_written_together(self) -> None:
        """
        Payments are written together, in one transaction, before anything
        reads or changes the ledger, or when it is synced; until then
        another reader of the file sees none of them.
        """
        steps: list[str] = []
        ledger = Ledger(self.directory / "batched.sqlite", A, GRANT, 1.0, steps.append)
        self.addCleanup(ledger.close)
        first = ledger.reserve("p", 300, 1.0)
        second = ledger.reserve("q", 100, 1.0)
        assert first is not None and second is not None
        del steps[:]
        ledger.pay(first, 100, B.public_key, 2.0, keep=200)
        ledger.pay(first, 50, B.public_key, 2.0, keep=150)
        cheque = ledger.pay(second, 100, C.public_key, 2.0)
        self.assertEqual(steps, [])
        self.assertEqual(_file_balance(self.directory / "batched.sqlite"), GRANT)
        self.assertEqual(ledger.balance(), GRANT - 250)
        self.assertEqual(steps, list(FAULT_POINTS["pay"]))
        self.assertEqual(_file_balance(self.directory / "batched.sqlite"), GRANT - 250)
        self.assertEqual((ledger.reservation(first), ledger.reservation(second)),
                         (("p", 150), None))
        state = ledger.payee(C.public_key)
        assert state is not None
        self.assertEqual(state.cheque(A.public_key), cheque)
        self.assertConsistent(ledger)

    def test_paid_reservation_refused_before_written(self) -> None:
        """
        A reservation closed or spent by a payment not yet written refuses
        the next payment as one that is written would.
        """
        rid = self.ledger.reserve("p", 300, 1.0)
        assert rid is not None
        self.ledger.pay(rid, 100, B.public_key, 2.0, keep=100)
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 101, B.public_key, 2.0)
        self.ledger.pay(rid, 100, B.public_key, 2.0)
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 1, B.public_key, 2.0)
        self.assertEqual(self.ledger.balance(), GRANT - 200)
        self.assertConsistent()

    def test_reservation_held_after_changes(self) -> None:
        """
        After a payment is written, a shrink or a release, the next payment
        from the reservation is checked against what it holds then.
        """
        rid = self.ledger.reserve("p", 300, 1.0)
        assert rid is not None
        self.ledger.pay(rid, 100, B.public_key, 2.0, keep=150)
        self.ledger.flush()
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 151, B.public_key, 2.0)
        self.assertTrue(self.ledger.shrink(rid, 120))
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 121, B.public_key, 2.0)
        self.ledger.pay(rid, 120, B.public_key, 2.0)
        self.ledger.flush()
        with self.assertRaises(ReservationError):
            self.ledger.pay(rid, 1, B.public_key, 2.0)
        other = self.ledger.reserve("p", 50, 1.0)
        assert other is not None
        self.assertEqual(self.ledger.release_reservations(), 1)
        with self.assertRaises(ReservationError):
            self.ledger.pay(other, 1, B.public_key, 2.0)
        self.assertEqual((self.ledger.balance(), self.ledger.reserved()), (GRANT - 220, 0))
        self.assertConsistent()

    def test_failed_write_kept(self) -> None:
        """
        Payments whose write fails stay to be written by the next flush;
        nothing half-written is left.
        """
        failing = [True]

        def fault(step: str) -> None:
            if step == "pay:balance-debited" and failing[0]:
                raise sqlite3.OperationalError("disk I/O error")

        ledger = Ledger(self.directory / "failing.sqlite", A, GRANT, 1.0, fault)
        self.addCleanup(ledger.close)
        rid = ledger.reserve("p", 300, 1.0)
        assert rid is not None
        ledger.pay(rid, 120, B.public_key, 2.0)
        with self.assertRaises(LedgerError):
            ledger.flush()
        self.assertEqual(_file_balance(self.directory / "failing.sqlite"), GRANT)
        failing[0] = False
        self.assertEqual((ledger.balance(), ledger.reserved()), (GRANT - 120, 0))
        self.assertConsistent(ledger)

    def test_shrink(self) -> None:
        """
        Shrinking releases part of a reservation (all of it, down to 0);
        it cannot grow one, nor touch one that is closed.
        """
        rid = self.ledger.reserve("p", 300, 1.0)
        assert rid is not None
        self.assertTrue(self.ledger.shrink(rid, 120))
        self.assertEqual(self.ledger.available(), GRANT - 120)
        self.assertFalse(self.ledger.shrink(rid, 121))
        self.assertEqual(self.ledger.reservation(rid), ("p", 120))
        self.assertTrue(self.ledger.shrink(rid, 0))
        self.assertIsNone(self.ledger.reservation(rid))
        self.assertFalse(self.ledger.shrink(rid, 0))
        with self.assertRaises(ValueError):
            self.ledger.shrink(rid, -1)
        self.assertEqual(self.ledger.available(), GRANT)
        self.assertConsistent()

    def test_delivered(self) -> None:
        """
        An acknowledgement covers its cheque and those before it, never a
        later one.
        """
        cheques = []
        for amount in (10, 20, 30):
            rid = self.ledger.reserve("p", amount, 1.0)
            assert rid is not None
            cheques.append(self.ledger.pay(rid, amount, B.public_key, 1.0))
        self.ledger.delivered(cheques[1])
        state = self.ledger.payee(B.public_key)
        assert state is not None
        self.assertEqual((state.delivered_total, state.delivered_sequence), (30, 2))
        self.assertTrue(state.undelivered)
        self.ledger.delivered(cheques[0])  # late: changes nothing
        self.ledger.delivered(cheques[2])
        state = self.ledger.payee(B.public_key)
        assert state is not None
        self.assertEqual((state.delivered_total, state.delivered_sequence), (60, 3))
        self.assertFalse(state.undelivered)
        self.assertConsistent()


class ReceivingTests(_LedgerCase):
    def test_receive(self) -> None:
        """
        New cheques credit what they add; replays and older ones credit
        nothing.
        """
        first = issue_cheque(B, A.public_key, 40, 1)
        second = issue_cheque(B, A.public_key, 100, 2)
        self.assertEqual(self.ledger.receive(second, 1.0), 100)
        self.assertIsNone(self.ledger.receive(second, 1.0))
        self.assertIsNone(self.ledger.receive(first, 1.0))
        self.assertEqual(self.ledger.receive(issue_cheque(B, A.public_key, 100, 3), 1.0), 0)
        self.assertEqual(self.ledger.balance(), GRANT + 100)
        self.assertEqual(self.ledger.paid_by(B.public_hex), 100)
        payer = self.ledger.payer(B.public_key)
        assert payer is not None
        self.assertEqual((payer.total, payer.sequence), (100, 3))
        self.assertConsistent()

    def test_refused(self) -> None:
        """
        Forged cheques and cheques to others change nothing.
        """
        genuine = issue_cheque(B, A.public_key, 40, 1)
        forged = Cheque(genuine.payer, genuine.payee, 4000, 1, genuine.signature)
        with self.assertRaises(ForgedChequeError):
            self.ledger.receive(forged, 1.0)
        with self.assertRaises(WrongPayeeError):
            self.ledger.receive(issue_cheque(B, C.public_key, 40, 1), 1.0)
        self.assertEqual(self.ledger.balance(), GRANT)
        self.assertIsNone(self.ledger.payer(B.public_key))
        self.assertConsistent()

    def test_expected_and_binding(self) -> None:
        """
        What a peer owes under its address moves to its key with its first
        cheque (even one that adds nothing), or when its key is learnt.
        """
        self.ledger.expect("192.0.2.1:5000", 30, 1.0)
        self.ledger.expect("192.0.2.1:5000", 12, 1.0)
        self.ledger.expect(B.public_hex, 8, 1.0)
        self.assertEqual(self.ledger.expected("192.0.2.1:5000"), 42)
        self.ledger.receive(issue_cheque(B, A.public_key, 20, 1), 1.0, bind="192.0.2.1:5000")
        self.assertEqual(self.ledger.expected("192.0.2.1:5000"), 0)
        self.assertEqual(self.ledger.expected(B.public_hex), 50)
        self.ledger.expect("192.0.2.1:6000", 5, 1.0)
        self.ledger.receive(issue_cheque(B, A.public_key, 20, 1), 1.0, bind="192.0.2.1:6000")
        self.assertEqual(self.ledger.expected(B.public_hex), 55)
        self.ledger.expect("192.0.2.9:1", 3, 1.0)
        self.ledger.merge_expected("192.0.2.9:1", C.public_hex, 1.0)
        self.ledger.merge_expected("192.0.2.9:1", C.public_hex, 1.0)
        self.ledger.merge_expected(C.public_hex, C.public_hex, 1.0)
        self.assertEqual(self.ledger.expected(C.public_hex), 3)
        debts = {d.peer: (d.expected, d.paid, d.owes) for d in self.ledger.summary().debts}
        self.assertEqual(debts, {B.public_hex: (55, 20, 35), C.public_hex: (3, 0, 3)})
        with self.assertRaises(ValueError):
            self.ledger.expect("x", -1, 1.0)
        self.assertConsistent()

    def test_failed_change_read_again(self) -> None:
        """
        What peers paid is read again after a change that failed (rolled
        back), as after one that succeeded: never a value the file does not
        hold.  A debt whose write failed stays recorded, and is written by
        the next flush.
        """
        failing = {"expect:added", "receive:credited"}

        def fail_at(step: str) -> None:
            if step in failing:
                failing.remove(step)
                raise sqlite3.OperationalError("disk I/O error")

        path = self.directory / "failing.sqlite"
        ledger = Ledger(path, A, GRANT, 1.0, fail_at)
        self.addCleanup(ledger.close)
        self.assertEqual((ledger.expected(B.public_hex), ledger.paid_by(B.public_hex)), (0, 0))
        ledger.expect(B.public_hex, 5, 1.0)
        with self.assertRaises(LedgerError):
            ledger.flush()
        self.assertEqual(ledger.expected(B.public_hex), 5)
        self.assertEqual(debts_in(path), [])
        ledger.flush()
        self.assertEqual(debts_in(path), [(B.public_hex, 5)])
        with self.assertRaises(LedgerError):
            ledger.receive(issue_cheque(B, A.public_key, 20, 1), 1.0)
        self.assertEqual((ledger.expected(B.public_hex), ledger.paid_by(B.public_hex)), (5, 0))
        self.assertEqual(ledger.balance(), GRANT)


def debts_in(path: Path) -> list[tuple[str, int]]:
    """
    What each peer owes, as the file at C{path} holds it.
    """
    summary = read_summary(path)
    assert summary is not None
    return [(debt.peer, debt.owes) for debt in summary.debts]
