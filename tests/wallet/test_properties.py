"""
Property tests of the wallet: random sequences of reserve, send, cancel,
expect, receive (in any order, repeated, forged) and restart, between two
wallets that pay each other, checked against a model after every step.

The invariants: no balance or available balance is ever negative; each
ledger's sums hold (balance + sent == grant + received); the model's
balances, reservations, receipts and debts are the ledger's exactly; a
payee never receives more than was sent to it; and no point is made or lost
between the two (balances plus points in flight equal the two grants).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import BadChequeError, ReservationError
from p2pblob.peer.peer import Peer
from p2pblob.wallet.accounts import ReservedPoints
from p2pblob.wallet.cheques import Cheque, credit_for
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.wallet import Wallet
from tests.wallet._helpers import SEED_A, SEED_B

GRANT = 1_000
NAMES = ("a", "b")
ADDRESSES = {"a": Peer("192.0.2.1", 3333), "b": Peer("192.0.2.2", 3333)}
SEEDS = {"a": SEED_A, "b": SEED_B}


def _other(name: str) -> str:
    return "b" if name == "a" else "a"


@dataclass
class _Model:
    balance: int = GRANT
    sent: int = 0
    received: int = 0
    last_accepted: tuple[int, int] | None = None
    expected: int = 0


@dataclass(frozen=True)
class _Reservation:
    owner: str
    points: ReservedPoints


@dataclass(frozen=True)
class _Issued:
    owner: str
    cheque: Cheque


class WalletMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")
    cheques = Bundle("cheques")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="p2pblob-wallet-"))
        self.clock = Clock()
        self.wallets = {name: self._open(name) for name in NAMES}
        self.models = {name: _Model() for name in NAMES}
        self.open: dict[str, dict[int, int]] = {name: {} for name in NAMES}

    def _open(self, name: str) -> Wallet:
        wallet = Wallet(
            self.clock, NodeKey.from_seed(SEEDS[name]), self.directory / name / "ledger.sqlite",
            initial_grant=GRANT, debt_limit=100,
        )
        wallet.start()
        other = _other(name)
        wallet.learn_peer_key(ADDRESSES[other], NodeKey.from_seed(SEEDS[other]).public_key)
        return wallet

    def teardown(self) -> None:
        for wallet in self.wallets.values():
            wallet.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # transitions

    @rule(target=reservations, name=st.sampled_from(NAMES), amount=st.integers(0, 700))
    def reserve(self, name: str, amount: int) -> object:
        wallet, model = self.wallets[name], self.models[name]
        available = model.balance - sum(self.open[name].values())
        points = wallet.reserve_micro(ADDRESSES[_other(name)], amount)
        if available < amount:
            assert points is None, (available, amount)
            return multiple()
        assert points is not None
        self.open[name][points.identifier] = amount
        return _Reservation(name, points)

    @rule(reservation=consumes(reservations))
    def cancel(self, reservation: _Reservation) -> None:
        self.wallets[reservation.owner].cancel_point_reservation(reservation.points)
        self.open[reservation.owner].pop(reservation.points.identifier, None)

    @rule(target=cheques, reservation=consumes(reservations), share=st.fractions(0, 1))
    def send(self, reservation: _Reservation, share: object) -> object:
        name, points = reservation.owner, reservation.points
        amount = int(points.micro * share)  # type: ignore[operator]
        try:
            cheque = self.wallets[name].send_micro(points, amount)
        except ReservationError:
            # released by a restart since it was made
            assert points.identifier not in self.open[name]
            return multiple()
        reserved = self.open[name].pop(points.identifier)
        assert amount <= reserved
        if cheque is None:
            assert amount == 0
            return multiple()
        self.models[name].balance -= amount
        self.models[name].sent += amount
        assert cheque.total == self.models[name].sent
        return _Issued(name, cheque)

    @rule(target=cheques, name=st.sampled_from(NAMES), amount=st.integers(1, 200))
    def pay(self, name: str, amount: int) -> object:
        """
        Reserve and pay at once, the common case.
        """
        reservation = self.reserve(name, amount)
        if not isinstance(reservation, _Reservation):
            return multiple()
        return self.send(reservation, 1)

    @rule(reservation=reservations, extra=st.integers(1, 10))
    def overspend(self, reservation: _Reservation, extra: int) -> None:
        wallet = self.wallets[reservation.owner]
        try:
            wallet.send_micro(reservation.points, reservation.points.micro + extra)
        except ReservationError:
            pass
        else:
            raise AssertionError("paid more than was reserved")

    @rule(issued=cheques, wire=st.booleans())
    def receive(self, issued: _Issued, wire: bool) -> None:
        payee = _other(issued.owner)
        model = self.models[payee]
        expected = credit_for(issued.cheque.total, issued.cheque.sequence, model.last_accepted)
        credited = self.wallets[payee].receive_cheque(
            ADDRESSES[issued.owner], issued.cheque.to_wire() if wire else issued.cheque
        )
        assert credited == (expected or 0), (credited, expected)
        if expected is not None:
            model.last_accepted = (issued.cheque.total, issued.cheque.sequence)
            model.received += expected
            model.balance += expected

    @rule(issued=cheques, more=st.integers(1, 10**6))
    def forge(self, issued: _Issued, more: int) -> None:
        cheque = issued.cheque
        forged = Cheque(cheque.payer, cheque.payee, cheque.total + more,
                        cheque.sequence + 1, cheque.signature)
        try:
            self.wallets[_other(issued.owner)].receive_cheque(None, forged)
        except BadChequeError:
            pass
        else:
            raise AssertionError("a forged cheque was accepted")

    @rule(issued=cheques)
    def acknowledge(self, issued: _Issued) -> None:
        self.wallets[issued.owner].cheque_delivered(issued.cheque)

    @rule(name=st.sampled_from(NAMES), amount=st.integers(0, 300))
    def expect(self, name: str, amount: int) -> None:
        self.wallets[name].expect_micro(ADDRESSES[_other(name)], amount)
        self.models[name].expected += amount

    @rule(name=st.sampled_from(NAMES), seconds=st.integers(0, 100))
    def restart(self, name: str, seconds: int) -> None:
        self.wallets[name].stop()
        self.clock.advance(seconds)
        self.wallets[name] = self._open(name)
        self.open[name].clear()

    @precondition(lambda self: any(self.open.values()))
    @rule()
    def tick(self) -> None:
        self.clock.advance(1)

    # invariants

    @invariant()
    def ledgers_agree_with_model(self) -> None:
        for name in NAMES:
            wallet, model = self.wallets[name], self.models[name]
            ledger = wallet.ledger
            summary = ledger.summary()
            assert summary.problems() == [], summary.problems()
            assert summary.balance >= 0 and summary.available >= 0
            assert summary.balance == model.balance
            assert summary.reserved == sum(self.open[name].values())
            assert summary.sent == model.sent
            assert summary.received == model.received
            assert summary.balance + summary.sent == GRANT + summary.received
            other = self.wallets[_other(name)]
            assert wallet.unpaid_debt(other.public_key) == model.expected - model.received

    @invariant()
    def no_point_made_or_lost(self) -> None:
        a, b = self.models["a"], self.models["b"]
        assert b.received <= a.sent and a.received <= b.sent
        in_flight = (a.sent - b.received) + (b.sent - a.received)
        assert a.balance + b.balance + in_flight == 2 * GRANT

    @invariant()
    def outbox_holds_latest(self) -> None:
        for name in NAMES:
            wallet = self.wallets[name]
            latest = wallet.latest_cheque_for(ADDRESSES[_other(name)])
            sent = self.models[name].sent
            assert (latest.total if latest else 0) == sent
            pending = wallet.pending_cheques()
            assert len(pending) <= 1
            assert all(cheque == latest for cheque in pending)


class WalletPropertyTests(SynchronousTestCase):
    def test_random_sequences(self) -> None:
        """
        No sequence of transitions breaks an invariant.
        """
        run_state_machine_as_test(
            WalletMachine,
            settings=settings(
                max_examples=60,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
