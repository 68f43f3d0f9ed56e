"""
What is read from the ledger: the state of one payee or payer, and a
reading of the whole ledger at one moment (L{LedgerSummary}): what
C{p2pblob wallet} prints, and what the ledger's invariants are checked
against.

L{read_summary} reads a ledger file without opening it as a wallet (no key
needed, nothing created or changed), so the command can look at the ledger
of a node that is running.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from p2pblob.errors import LedgerError
from p2pblob.wallet.cheques import Cheque

__all__ = [
    "DebtRow",
    "LedgerSummary",
    "PayeeState",
    "PayerState",
    "PaymentRow",
    "read_summary",
    "summarize",
]


@dataclass(frozen=True)
class PayeeState:
    """
    What we have promised one payee: our latest cheque to it, and how much
    of that it has acknowledged.
    """

    payee: bytes
    total: int
    sequence: int
    signature: bytes
    delivered_total: int
    delivered_sequence: int

    def cheque(self, owner: bytes) -> Cheque:
        """
        Our latest cheque to this payee (C{owner} is our public key).
        """
        return Cheque(owner, self.payee, self.total, self.sequence, self.signature)

    @property
    def undelivered(self) -> bool:
        """
        Whether the payee has not yet acknowledged our latest cheque.
        """
        return self.delivered_sequence < self.sequence


@dataclass(frozen=True)
class PayerState:
    """
    The latest cheque accepted from one payer.
    """

    payer: bytes
    total: int
    sequence: int


@dataclass(frozen=True)
class DebtRow:
    """
    What one peer owes us: C{expected} for the blobs we served it, of which
    it has C{paid}, in micro-points.  C{peer} is its key in hex, or its
    address while its key is unknown.
    """

    peer: str
    expected: int
    paid: int

    @property
    def owes(self) -> int:
        """
        What it still owes (negative if it paid ahead).
        """
        return self.expected - self.paid


@dataclass(frozen=True)
class PaymentRow:
    """
    What we have promised one payee (its key in hex): C{total} over
    C{sequence} cheques, of which it has acknowledged C{delivered_total}.
    """

    payee: str
    total: int
    sequence: int
    delivered_total: int
    delivered_sequence: int

    @property
    def undelivered(self) -> int:
        """
        Micro-points promised in cheques the payee has not acknowledged yet.
        """
        return self.total - self.delivered_total


@dataclass(frozen=True)
class LedgerSummary:
    """
    The ledger's state, amounts in micro-points.

    @ivar owner: our public key, in hex.
    @ivar balance: the points we hold, reserved ones included.
    @ivar reserved: the points set aside by open reservations.
    @ivar reservations: how many reservations are open.
    @ivar granted: the initial grant the ledger started with.
    @ivar received: everything peers have paid us.
    @ivar sent: everything we have promised peers.
    """

    owner: str
    balance: int
    reserved: int
    reservations: int
    granted: int
    received: int
    sent: int
    debts: list[DebtRow] = field(default_factory=list)
    payments: list[PaymentRow] = field(default_factory=list)

    @property
    def available(self) -> int:
        """
        The points held and not set aside.
        """
        return self.balance - self.reserved

    def problems(self) -> list[str]:
        """
        The invariants that do not hold, in words (none, normally).
        """
        problems = []
        if self.balance < 0:
            problems.append(f"negative balance {self.balance}")
        if self.available < 0:
            problems.append(f"{self.reserved} reserved of a balance of {self.balance}")
        if self.balance + self.sent != self.granted + self.received:
            problems.append(
                f"balance {self.balance} + sent {self.sent} != "
                f"grant {self.granted} + received {self.received}"
            )
        for row in self.payments:
            if not (0 <= row.delivered_total <= row.total
                    and 0 <= row.delivered_sequence <= row.sequence):
                problems.append(f"payee {row.payee[:16]}… acknowledged more than it was sent")
        for debt in self.debts:
            if debt.expected < 0 or debt.paid < 0:
                problems.append(f"negative amounts for peer {debt.peer}")
        return problems


def summarize(db: sqlite3.Connection) -> LedgerSummary:
    """
    Read a ledger's state from C{db} (an autocommit connection), in one read
    transaction so that the figures agree with each other.
    """
    db.execute("BEGIN")
    try:
        owner, balance, granted = db.execute(
            "SELECT owner, balance, granted FROM account"
        ).fetchone()
        reserved, reservations = db.execute(
            "SELECT coalesce(sum(amount), 0), count(*) FROM reservation"
        ).fetchone()
        (received,) = db.execute("SELECT coalesce(sum(total), 0) FROM payer").fetchone()
        payments = [
            PaymentRow(*row)
            for row in db.execute(
                "SELECT payee, total, sequence, delivered_total, delivered_sequence "
                "FROM payee ORDER BY rowid"
            )
        ]
        debts = [
            DebtRow(*row)
            for row in db.execute(
                "SELECT peer, sum(expected), sum(paid) FROM ("
                "  SELECT peer, amount AS expected, 0 AS paid FROM expected"
                "  UNION ALL SELECT payer, 0, total FROM payer"
                ") GROUP BY peer ORDER BY sum(expected) - sum(paid) DESC, peer"
            )
        ]
    finally:
        db.execute("COMMIT")
    return LedgerSummary(
        owner=owner,
        balance=balance,
        reserved=reserved,
        reservations=reservations,
        granted=granted,
        received=received,
        sent=sum(row.total for row in payments),
        debts=debts,
        payments=payments,
    )


def read_summary(path: Path) -> LedgerSummary | None:
    """
    Read the ledger file C{path} without changing it.

    @return: its summary, or L{None} if there is no ledger there yet.
    @raise LedgerError: the file is not a ledger p2pblob can read.
    """
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    except sqlite3.Error as e:
        raise LedgerError(f"cannot open the wallet ledger {path}: {e}") from None
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == 0:
            return None
        return summarize(db)
    except sqlite3.Error as e:
        raise LedgerError(f"cannot read the wallet ledger {path}: {e}") from None
    finally:
        db.close()
