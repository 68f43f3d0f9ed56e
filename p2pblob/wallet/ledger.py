"""
The wallet's ledger: every point this node holds, has set aside, has paid
and has been paid, in one SQLite file (C{wallet/ledger.sqlite}).

Amounts are C{int} micro-points (L{p2pblob.wallet.units}); keys are stored
as lowercase hex.  The tables::

    account       one row: our key (C{owner}), the points we hold
                  (C{balance}, reserved ones included) and the initial grant
    reservation   points set aside to pay a peer: id, peer, amount
    payee         what we have promised each peer we pay: the cumulative
                  total and sequence of our latest cheque to it, its
                  signature (to send it again), and how much of it the
                  payee has acknowledged
    payer         the latest cheque we accepted from each peer that pays us
    expected      what each peer owes us for the blobs we served it, in all
                  (by payment key, or by address until the key is known)

Every change of state is one transaction (C{BEGIN IMMEDIATE} ... C{COMMIT}
on an autocommit connection, as the blob index does), in WAL mode: once a
method returns, its change survives a crash of the process, and a crash at
any point inside it leaves the ledger as it was before.  So paying is one
transaction (release the reservations, debit the balance, raise the payees'
totals and sequences, store the signed cheques), and so is being paid (verify
the cheque, then record it and credit the balance).  These always hold, and
are checked whenever the ledger is opened (L{Ledger.problems})::

    balance >= 0, and balance - reserved >= 0
    balance + sum(payee.total) == grant + sum(payer.total)

Surviving a power cut needs the write-ahead log on the disk (an fsync),
which takes a millisecond or more; so only what must survive one waits for
it:

  - creating the ledger commits with C{synchronous=FULL};
  - being paid (L{Ledger.receive}) does too, unless the caller syncs soon
    after in another thread (C{durable=False}; the wallet does, with the
    next fsync of its payments): the receipt may then leave before the
    cheque is on the disk.  A power cut in between loses nothing but time:
    the payer sends its latest cheque again on its next connection, and a
    cumulative cheque pays for every earlier one;
  - a payment (L{Ledger.pay}), a debt (L{Ledger.expect}) and an
    acknowledged cheque (L{Ledger.delivered}) are written with the others
    made since, in one transaction, before anything else reads or changes
    the ledger (L{Ledger.flush}); a crash before forgets them, which is
    harmless (below).  That commits without waiting, but a cheque must
    not leave the node before it is on the disk (else, after a power cut,
    its sequence number could be issued again for another total):
    L{Ledger.durable_cheque} gives only cheques that are, L{Ledger.sync}
    puts every commit so far on the disk (blocking), and L{Ledger.sync_in}
    does it in a thread, so that several payments share one fsync and the
    reactor never waits for it;
  - the rest commits without waiting (C{synchronous=NORMAL}): a power cut
    may undo the last few of them, which is harmless: reservations are
    released at start-up anyway, a cheque not marked delivered is sent
    again, and a debt not recorded is one a peer is not asked for.

The ledger is synced when it is opened, so that commits a crashed process
left in the operating system's cache are on the disk before anything
relies on them.

Crash tests stop the process inside these transactions through the
C{fault} hook, which is called with each name of L{FAULT_POINTS} as the
transaction reaches it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, fail

from p2pblob._sqlite import transaction
from p2pblob._threads import BlockingRunner
from p2pblob.errors import LedgerError, ReservationError
from p2pblob.wallet._schema import APPLICATION_ID, FAULT_POINTS, SCHEMA, SCHEMA_VERSION
from p2pblob.wallet.cheques import Cheque, check_cheque, credit_for, issue_cheque
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.summary import LedgerSummary, PayeeState, PayerState, summarize
from p2pblob.wallet.units import format_points

__all__ = ["FAULT_POINTS", "Ledger", "PayeeState", "PayerState"]

class Ledger:
    """
    The ledger file of one wallet key, opened (and created, with
    C{initial_grant} micro-points, if new).

    Calls run on the calling (reactor) thread; only L{receive} (and
    L{sync}) wait for the disk.  L{sync_in} waits for it in another thread.

    @param fault: called with the name of each step of each transaction
        (L{FAULT_POINTS}); for crash tests only.
    @raise LedgerError: the file cannot be opened, is not a ledger, was
        written by a newer p2pblob, belongs to another key, or is
        inconsistent.
    """

    def __init__(
        self,
        path: Path | str,
        key: NodeKey,
        initial_grant: int,
        now: float,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._key = key
        self._owner = key.public_hex
        self._fault = fault or (lambda step: None)
        memory = str(path) == ":memory:" or str(path).startswith("file:")
        self._wal = None if memory else f"{path}-wal"
        # the latest cheque to each payee that may not be on the disk yet,
        # and, for those payees, the latest one that is (or None)
        self._unsynced: dict[bytes, Cheque] = {}
        self._synced: dict[bytes, Cheque | None] = {}
        # what peers owe and paid, as last read (the server asks before and
        # after each blob it serves); a change forgets what it touches
        self._owed: dict[str, int] = {}
        self._paid: dict[str, int] = {}
        # what we promised each payee, as last read or written (asked
        # before each request and each payment to it)
        self._payees: dict[bytes, PayeeState | None] = {}
        # payments made and not yet written (L{flush}): what each
        # reservation paid from holds after them, what they took from the
        # balance, and the latest cheque to each payee (and when)
        self._pending_holds: dict[int, int] = {}
        self._pending_debit = 0
        self._pending_cheques: dict[bytes, tuple[Cheque, float]] = {}
        # debts recorded and not yet written (what each peer owes more,
        # and when), and cheques acknowledged and not yet marked delivered
        self._pending_expected: dict[str, tuple[int, float]] = {}
        self._pending_delivered: dict[bytes, Cheque] = {}
        # what each open reservation holds, as last written or read (a
        # paid download pays from one reservation for several blobs)
        self._held: dict[int, int] = {}
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot open the wallet ledger {path}: {e}") from None
        try:
            with self._errors():
                self._open(initial_grant, now)
        except BaseException:
            self._db.close()
            raise

    def _open(self, initial_grant: int, now: float) -> None:
        db = self._db
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise LedgerError(f"{self.path} was written by a newer p2pblob (schema {version})")
        if version and application_id != APPLICATION_ID:
            raise LedgerError(f"{self.path} is not a p2pblob wallet ledger")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # what a crashed process committed may be only in the system's cache
        self._fsync_wal()
        if version == 0:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise LedgerError(f"{self.path} is not a p2pblob wallet ledger")
            with self._transaction("create", durable=True):
                for statement in SCHEMA:
                    db.execute(statement)
                self._fault("create:schema")
                db.execute(
                    "INSERT INTO account (id, owner, balance, granted, created_on) "
                    "VALUES (1, ?, ?, ?, ?)",
                    (self._owner, initial_grant, initial_grant, now),
                )
                self._fault("create:account")
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        (owner,) = db.execute("SELECT owner FROM account").fetchone()
        if owner != self._owner:
            raise LedgerError(
                f"{self.path} is the ledger of wallet key {owner[:16]}…, not of this "
                f"node's key {self._owner[:16]}…; restore that key, or move the ledger away"
            )
        problems = self.problems()
        if problems:
            raise LedgerError(f"{self.path} is inconsistent: {'; '.join(problems)}")
        db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.sync()
        self._db.close()

    def _fsync_wal(self) -> None:
        """
        Put the write-ahead log, and so every commit so far, on the disk.
        Safe to call from any thread: it uses no SQLite connection.  (In
        WAL mode SQLite syncs the log before each checkpoint and the
        database file after it, so what left the log is on the disk already.)
        """
        if self._wal is None:
            return
        try:
            fd = os.open(self._wal, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        except OSError as e:
            raise LedgerError(f"cannot sync the wallet ledger {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def sync(self) -> None:
        """
        Write the payments made so far (L{flush}) and put every commit on
        the disk, blocking: every cheque L{pay} returned may then be sent.
        """
        unsynced = dict(self._unsynced)
        self.flush()
        self._fsync_wal()
        self._mark_synced(unsynced)

    def sync_in(self, run: BlockingRunner) -> Deferred[list[Cheque]]:
        """
        Write the payments made so far (L{flush}, in the calling thread),
        then put every commit on the disk in C{run} (a thread).

        @return: a Deferred that fires with the cheques that may be sent
            now, or fails with L{LedgerError}.
        """
        unsynced = dict(self._unsynced)
        try:
            self.flush()
        except LedgerError:
            return fail()

        def synced(_: None) -> list[Cheque]:
            self._mark_synced(unsynced)
            return list(unsynced.values())

        return run(self._fsync_wal).addCallback(synced)

    def _mark_synced(self, cheques: dict[bytes, Cheque]) -> None:
        for payee, cheque in cheques.items():
            if self._unsynced.get(payee) is cheque:
                del self._unsynced[payee]
                del self._synced[payee]
            elif payee in self._unsynced:
                self._synced[payee] = cheque

    def unsynced(self) -> bool:
        """
        Whether a cheque L{pay} returned is not yet on the disk.
        """
        return bool(self._unsynced)

    def durable_cheque(self, payee: bytes) -> PayeeState | None:
        """
        What we have promised C{payee} as far as the disk holds it: the
        latest cheque to it that may be sent (and how much of it was
        acknowledged), or L{None}.
        """
        state = self.payee(payee)
        if state is None or payee not in self._unsynced:
            return state
        synced = self._synced[payee]
        if synced is None:
            return None
        return PayeeState(payee, synced.total, synced.sequence, synced.signature,
                          state.delivered_total, state.delivered_sequence)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise LedgerError(f"the wallet ledger {self.path} failed: {e}") from None

    @contextmanager
    def _transaction(
        self, name: str, durable: bool = False, flush: bool = True
    ) -> Iterator[None]:
        """
        Run the block as one transaction, then call the fault hook with
        C{"<name>:committed"}.

        @param durable: whether the commit waits until it would survive a
            power cut (not only a crash of the process).
        @param flush: whether the payments not yet written are written
            first (L{flush}), as they must be before any change that may
            depend on them.
        """
        if flush:
            self.flush()
        with self._errors():
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                with transaction(self._db, "BEGIN IMMEDIATE"):
                    yield
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
        self._fault(f"{name}:committed")

    def _one(self, query: str, *arguments: object) -> int:
        self.flush()
        with self._errors():
            (value,) = self._db.execute(query, arguments).fetchone()
        return int(value)

    # reading

    @property
    def owner(self) -> bytes:
        """
        Our public key: the payer of every cheque we issue.
        """
        return self._key.public_key

    def balance(self) -> int:
        """
        The micro-points we hold, those reserved included.
        """
        return self._one("SELECT balance FROM account")

    def reserved(self) -> int:
        """
        The micro-points set aside by open reservations.
        """
        return self._one("SELECT coalesce(sum(amount), 0) FROM reservation")

    def available(self) -> int:
        """
        The micro-points we hold that are not set aside.
        """
        return self.balance() - self.reserved()

    def reservation(self, identifier: int) -> tuple[str, int] | None:
        """
        The peer and amount of an open reservation, or L{None}.
        """
        self.flush()
        with self._errors():
            row = self._db.execute(
                "SELECT peer, amount FROM reservation WHERE id = ?", (identifier,)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def payee(self, payee: bytes) -> PayeeState | None:
        """
        What we have promised C{payee}, or L{None} if we never paid it.
        """
        if payee in self._payees:
            return self._payees[payee]
        if payee in self._pending_cheques or payee in self._pending_delivered:
            self.flush()
        with self._errors():
            row = self._db.execute(
                "SELECT total, sequence, signature, delivered_total, delivered_sequence "
                "FROM payee WHERE payee = ?",
                (payee.hex(),),
            ).fetchone()
        state = None if row is None else PayeeState(payee, *row)
        if len(self._payees) >= _REMEMBERED:
            self._payees.clear()
        self._payees[payee] = state
        return state

    def payees(self) -> list[PayeeState]:
        """
        Every peer we have paid, in the order we first paid them.
        """
        self.flush()
        with self._errors():
            rows = self._db.execute(
                "SELECT payee, total, sequence, signature, delivered_total, "
                "delivered_sequence FROM payee ORDER BY rowid"
            ).fetchall()
        return [PayeeState(bytes.fromhex(row[0]), *row[1:]) for row in rows]

    def payer(self, payer: bytes) -> PayerState | None:
        """
        The latest cheque accepted from C{payer}, or L{None}.
        """
        with self._errors():
            row = self._db.execute(
                "SELECT total, sequence FROM payer WHERE payer = ?", (payer.hex(),)
            ).fetchone()
        return None if row is None else PayerState(payer, *row)

    def expected(self, peer: str) -> int:
        """
        The micro-points C{peer} (a key in hex, or an address) owes us for
        blobs served, in all.
        """
        owed = self._owed.get(peer)
        if owed is None:
            owed = self._one("SELECT coalesce(max(amount), 0) FROM expected WHERE peer = ?", peer)
            _remember(self._owed, peer, owed)
        return owed

    def paid_by(self, peer: str) -> int:
        """
        The micro-points C{peer} (a key in hex) has paid us, in all.
        """
        paid = self._paid.get(peer)
        if paid is None:
            paid = self._one("SELECT coalesce(max(total), 0) FROM payer WHERE payer = ?", peer)
            _remember(self._paid, peer, paid)
        return paid

    def summary(self) -> LedgerSummary:
        """
        Everything the ledger holds, in one consistent reading.
        """
        self.flush()
        with self._errors():
            return summarize(self._db)

    def problems(self) -> list[str]:
        """
        Which of the ledger's invariants fail (none, unless the file was
        damaged or edited by hand).
        """
        return self.summary().problems()

    # changing

    def reserve(self, peer: str, amount: int, now: float) -> int | None:
        """
        Set C{amount} micro-points aside to pay C{peer}.

        @return: the reservation's identifier (never reused), or L{None} if
            fewer than C{amount} micro-points are available.
        """
        if amount < 0:
            raise ValueError("cannot reserve a negative amount")
        with self._transaction("reserve"):
            available = self._one(
                "SELECT balance - (SELECT coalesce(sum(amount), 0) FROM reservation) "
                "FROM account"
            )
            self._fault("reserve:checked")
            if available < amount:
                return None
            cursor = self._db.execute(
                "INSERT INTO reservation (peer, amount, created_on) VALUES (?, ?, ?)",
                (peer, amount, now),
            )
            self._fault("reserve:inserted")
        assert cursor.lastrowid is not None
        _remember(self._held, cursor.lastrowid, amount)
        return cursor.lastrowid

    def cancel(self, identifier: int) -> bool:
        """
        Release a reservation.

        @return: whether it was open.
        """
        with self._transaction("cancel"):
            cursor = self._db.execute("DELETE FROM reservation WHERE id = ?", (identifier,))
            self._fault("cancel:deleted")
        self._held.pop(identifier, None)
        return cursor.rowcount > 0

    def shrink(self, identifier: int, amount: int) -> bool:
        """
        Release part of a reservation: it holds C{amount} micro-points
        after (none: it is closed).

        @return: whether it was open and held at least C{amount}.
        """
        if amount < 0:
            raise ValueError("a reservation cannot hold a negative amount")
        with self._transaction("shrink"):
            if amount:
                cursor = self._db.execute(
                    "UPDATE reservation SET amount = ? WHERE id = ? AND amount >= ?",
                    (amount, identifier, amount),
                )
            else:
                cursor = self._db.execute("DELETE FROM reservation WHERE id = ?", (identifier,))
            self._fault("shrink:updated")
        if cursor.rowcount and amount:
            self._held[identifier] = amount
        else:
            self._held.pop(identifier, None)
        return cursor.rowcount > 0

    def release_reservations(self) -> int:
        """
        Release every reservation (at start-up: the payments they were made
        for died with the process that made them).

        @return: how many there were.
        """
        with self._transaction("release"):
            cursor = self._db.execute("DELETE FROM reservation")
            self._fault("release:deleted")
        self._held.clear()
        return cursor.rowcount

    def pay(
        self, identifier: int, amount: int, payee: bytes, now: float, keep: int = 0
    ) -> Cheque:
        """
        Pay C{amount} micro-points to C{payee} from reservation
        C{identifier}, releasing the rest of the reservation but C{keep}
        micro-points, and issue the next cumulative cheque to C{payee},
        which is returned (and kept, undelivered, until L{delivered} is
        called).

        The payment is written with the others made since the last
        (L{flush}: before anything else changes or reads the ledger, and by
        L{sync} and L{sync_in}), in one transaction that releases the
        reservations, debits the balance and records the latest cheque to
        each payee; so a download writes the ledger once for several
        blobs.  Its cheque may be sent once L{sync} or L{sync_in} has put
        it on the disk.  Until then a crash forgets the payment, which
        harms nobody: its cheque never left, and its reservation is
        released at the next start.

        @param keep: what stays reserved, to pay more from later (none:
            the reservation is closed).
        @raise ReservationError: the reservation is not open, or holds less
            than C{amount} and C{keep}.
        """
        if amount < 0 or keep < 0:
            raise ReservationError("cannot pay or keep a negative amount")
        if identifier in self._pending_holds:
            held: int | None = self._pending_holds[identifier] or None
        elif identifier in self._held:
            held = self._held[identifier]
        else:
            with self._errors():
                row = self._db.execute(
                    "SELECT amount FROM reservation WHERE id = ?", (identifier,)
                ).fetchone()
            held = None if row is None else row[0]
        if held is None:
            raise ReservationError("it was already paid or cancelled")
        if amount + keep > held:
            raise ReservationError(_too_little(amount, keep, held))
        last = self.payee(payee)
        total, sequence = (last.total, last.sequence) if last is not None else (0, 0)
        cheque = issue_cheque(self._key, payee, total + amount, sequence + 1)
        self._pending_holds[identifier] = keep
        self._pending_debit += amount
        self._pending_cheques[payee] = (cheque, now)
        self._payees[payee] = PayeeState(
            payee, cheque.total, cheque.sequence, cheque.signature,
            last.delivered_total if last is not None else 0,
            last.delivered_sequence if last is not None else 0,
        )
        if payee not in self._unsynced:
            self._synced[payee] = None if last is None else last.cheque(self.owner)
        self._unsynced[payee] = cheque
        return cheque

    def flush(self) -> None:
        """
        Write the payments, debts and acknowledged cheques recorded since
        the last flush, in one transaction (the fault hook sees the steps
        of C{pay}, then C{expect:added}, then C{deliver:marked}; it is
        named after the first kind it writes).

        @raise LedgerError: they could not be written; they stay to be
            written by the next flush.
        """
        holds, cheques = self._pending_holds, self._pending_cheques
        expected, delivered = self._pending_expected, self._pending_delivered
        if not (holds or expected or delivered):
            return
        name = "pay" if holds else "expect" if expected else "deliver"
        db = self._db
        with self._transaction(name, flush=False):
            if holds:
                self._fault("pay:begin")
                for identifier, keep in holds.items():
                    if keep:
                        cursor = db.execute(
                            "UPDATE reservation SET amount = ? WHERE id = ?", (keep, identifier)
                        )
                    else:
                        cursor = db.execute("DELETE FROM reservation WHERE id = ?", (identifier,))
                    if cursor.rowcount != 1:
                        raise sqlite3.IntegrityError(f"reservation {identifier} is gone")
                self._fault("pay:reservation-released")
                db.execute("UPDATE account SET balance = balance - ?", (self._pending_debit,))
                self._fault("pay:balance-debited")
                db.executemany(
                    "INSERT INTO payee (payee, total, sequence, signature, updated_on) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (payee) DO UPDATE SET "
                    "total = excluded.total, sequence = excluded.sequence, "
                    "signature = excluded.signature, updated_on = excluded.updated_on",
                    [(payee.hex(), cheque.total, cheque.sequence, cheque.signature, now)
                     for payee, (cheque, now) in cheques.items()],
                )
                self._fault("pay:cheque-stored")
            if expected:
                db.executemany(
                    "INSERT INTO expected (peer, amount, updated_on) VALUES (?, ?, ?) "
                    "ON CONFLICT (peer) DO UPDATE SET amount = amount + excluded.amount, "
                    "updated_on = excluded.updated_on",
                    [(peer, amount, now) for peer, (amount, now) in expected.items()],
                )
                self._fault("expect:added")
            if delivered:
                # (after the cheques: one acknowledged may be written just now)
                db.executemany(
                    "UPDATE payee SET delivered_total = ?, delivered_sequence = ? "
                    "WHERE payee = ? AND delivered_sequence < ? AND sequence >= ?",
                    [(cheque.total, cheque.sequence, payee.hex(), cheque.sequence,
                      cheque.sequence) for payee, cheque in delivered.items()],
                )
                self._fault("deliver:marked")
        self._pending_holds, self._pending_debit, self._pending_cheques = {}, 0, {}
        self._pending_expected, self._pending_delivered = {}, {}
        for identifier, keep in holds.items():
            if keep:
                _remember(self._held, identifier, keep)
            else:
                self._held.pop(identifier, None)

    def refusal(self, identifier: int, amount: int, keep: int = 0) -> str:
        """
        Why reservation C{identifier} cannot pay C{amount} micro-points and
        keep C{keep}, in words.
        """
        held = self.reservation(identifier)
        if held is None:
            return "it was already paid or cancelled"
        return _too_little(amount, keep, held[1])

    def delivered(self, cheque: Cheque) -> None:
        """
        Record that the payee acknowledged C{cheque}: it and every earlier
        cheque to that payee need not be sent again.  This is written with
        the next L{flush}: until then a crash only has the cheque sent again.
        """
        state = self.payee(cheque.payee)
        if state is None or not state.delivered_sequence < cheque.sequence <= state.sequence:
            return
        self._pending_delivered[cheque.payee] = cheque
        self._payees[cheque.payee] = replace(
            state, delivered_total=cheque.total, delivered_sequence=cheque.sequence
        )

    def receive(
        self, cheque: Cheque, now: float, bind: str | None = None, durable: bool = True
    ) -> int | None:
        """
        Accept a cheque paid to us: check it, then, in one transaction,
        record it and credit what it adds (L{credit_for}).

        @param bind: an address the payer was known by until now: what it
            owes under that address is moved to its key (done even if the
            cheque adds nothing: a valid signature shows who is paying).
        @param durable: whether the commit waits for the disk (else call
            L{sync} or L{sync_in} soon).
        @return: the micro-points credited, or L{None} if the cheque is not
            new (a replay, an older or equal cheque): nothing is credited.
        @raise p2pblob.errors.BadChequeError: the cheque pays another key or
            its signature is not its payer's; nothing changes.
        """
        check_cheque(cheque, self.owner)
        payer = cheque.payer.hex()
        self._forget(payer, bind)
        with self._transaction("receive", durable=durable):
            self._fault("receive:verified")
            last = self._db.execute(
                "SELECT total, sequence FROM payer WHERE payer = ?", (payer,)
            ).fetchone()
            credit = credit_for(cheque.total, cheque.sequence, last)
            if credit is not None:
                self._db.execute(
                    "INSERT INTO payer (payer, total, sequence, signature, received_on) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (payer) DO UPDATE SET "
                    "total = excluded.total, sequence = excluded.sequence, "
                    "signature = excluded.signature, received_on = excluded.received_on",
                    (payer, cheque.total, cheque.sequence, cheque.signature, now),
                )
                self._fault("receive:payer-updated")
                self._db.execute("UPDATE account SET balance = balance + ?", (credit,))
                self._fault("receive:credited")
            if bind is not None and bind != payer:
                self._move_expected(bind, payer, now)
            self._fault("receive:merged")
        if credit is not None:
            _remember(self._paid, payer, cheque.total)
        return credit

    def expect(self, peer: str, amount: int, now: float) -> None:
        """
        Record that C{peer} owes us C{amount} more micro-points.  This is
        written with the next L{flush}: a crash before forgets the debt,
        which costs us only what the peer is not asked for.
        """
        if amount < 0:
            raise ValueError("cannot expect a negative amount")
        owed = self._owed.get(peer)
        if owed is not None:
            self._owed[peer] = owed + amount
        before = self._pending_expected.get(peer)
        self._pending_expected[peer] = (amount + (before[0] if before else 0), now)

    def merge_expected(self, old: str, new: str, now: float) -> None:
        """
        Move what is owed under the name C{old} (an address) to C{new} (the
        same peer's key, now known).
        """
        if old == new:
            return
        self._forget(old, new)
        with self._transaction("merge"):
            self._move_expected(old, new, now)

    def _forget(self, *peers: str | None) -> None:
        """
        Forget what C{peers} owe and paid, as a change to it begins (read
        again after: a change that fails changes nothing).
        """
        for peer in peers:
            if peer is not None:
                self._owed.pop(peer, None)
                self._paid.pop(peer, None)

    def _move_expected(self, old: str, new: str, now: float) -> None:
        row = self._db.execute(
            "DELETE FROM expected WHERE peer = ? RETURNING amount", (old,)
        ).fetchone()
        self._fault("merge:removed")
        if row is not None and row[0]:
            self._db.execute(
                "INSERT INTO expected (peer, amount, updated_on) VALUES (?, ?, ?) "
                "ON CONFLICT (peer) DO UPDATE SET amount = amount + excluded.amount, "
                "updated_on = excluded.updated_on",
                (new, row[0], now),
            )
        self._fault("merge:added")


_K = TypeVar("_K")

# peers whose debts the ledger remembers at most (a server has few clients
# at a time; this bounds what a stream of new ones costs)
_REMEMBERED = 4096


def _remember(memory: dict[_K, int], peer: _K, value: int) -> None:
    if len(memory) >= _REMEMBERED:
        memory.clear()
    memory[peer] = value


def _too_little(amount: int, keep: int, held: int) -> str:
    return (f"{format_points(amount)} points asked (and {format_points(keep)} kept) of "
            f"{format_points(held)} reserved")
