"""
The wallet: L{Wallet}, the node's L{IWallet}, on top of its L{Ledger}.

Amounts in the seed's interface are C{float} points; each of those methods
has a twin taking C{int} micro-points (C{reserve_micro}, C{send_micro},
C{expect_micro}), which the peer protocol uses with
L{p2pblob.wallet.units.blob_cost} so that payer and payee agree exactly.

Peers are named by their payment key (hex) once it is known, and by their
address (C{host:port}) before: the key of a peer we download from is learnt
through the payment-key exchange (L{learn_peer_key}, from the request
creator of L{get_info_exchanger}); the key of a peer we serve is learnt from
the first valid cheque it sends on a connection (L{receive_cheque}), which
then also moves what it owed under its address, and what its host owed, to
its key.  The serving side names a client of unknown key by its host
(L{p2pblob.wallet.accounts.client_host}), not its address, when it charges
it (L{p2pblob.wallet.serving.BlobCharges}).

The seam the peer protocol uses to move cheques:

  - payer side: L{send_points} commits the payment and a new cumulative
    cheque to the ledger, then calls every callback given to
    L{when_cheque_queued} with it.  The protocol sends
    L{cheque_for}C{(peer)} (the latest cheque the payee has not
    acknowledged) with a later request to that peer (which one:
    L{p2pblob.wallet.paying}), under the
    C{p2pblob_cheque} request key, and calls L{cheque_delivered} once the
    payee acknowledges it.  A cheque lost on the way, or not sent before a
    crash, is covered by the next one or found again by
    L{pending_cheques} after a restart: sending a cheque twice is harmless.
  - payee side: the protocol hands each cheque received (in its wire form)
    to L{receive_cheque}, which returns the micro-points it credits (0 for a
    replay) or raises L{p2pblob.errors.BadChequeError}; before serving a
    blob it asks L{may_serve} (or L{check_may_serve}), and after serving it
    records the cost with L{expect_micro}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from p2pblob._threads import ThreadWorker
from p2pblob.config import DEFAULT_DEBT_LIMIT, DEFAULT_INITIAL_GRANT, Config
from p2pblob.errors import (
    DebtLimitError,
    LedgerError,
    P2PBlobError,
    PaymentError,
    ReservationError,
    UnknownPayeeError,
)
from p2pblob.interfaces import IWallet
from p2pblob.wallet.accounts import (
    PeerNames,
    ReservedPoints,
    client_host,
    is_key_name,
    peer_address,
)
from p2pblob.wallet.cheques import Cheque, parse_cheque
from p2pblob.wallet.exchange import PaymentKeyExchanger, PaymentKeyHandlerFactory
from p2pblob.wallet.keys import NodeKey, load_or_create_key
from p2pblob.wallet.ledger import Ledger, PayeeState
from p2pblob.wallet.units import format_points, from_micro, to_micro

__all__ = ["ReservedPoints", "Wallet", "open_wallet"]

_log = Logger()

# How long payments wait to share one fsync (the cheque for all of them goes
# once it is done): a payee may be owed this much more than it was paid.
SYNC_INTERVAL = 0.05


@implementer(IWallet)
class Wallet(Service):
    """
    The node's wallet: a key pair and a ledger file.

    The ledger is opened by L{start} (or L{startService}) and closed by
    L{stop}; reservations left open by a previous run are released then.
    A C{ledger_path} of C{Path(":memory:")} keeps the ledger in memory, for
    tests of code that uses a wallet.

    @param initial_grant: micro-points a new ledger starts with.
    @param debt_limit: micro-points a peer may owe us before we stop
        serving it, or L{None} for no limit.
    @param fault: passed to the L{Ledger}, for crash tests.
    @param sync_worker: the thread in which payments made and received
        are put on the disk, L{SYNC_INTERVAL} seconds after the first of
        them, all at once (the wallet starts and stops it); without one,
        each payment waits for the disk before L{send_micro} or
        L{receive_cheque} returns.
    """

    name = "wallet"

    def __init__(
        self,
        clock: IReactorTime,
        key: NodeKey,
        ledger_path: Path,
        *,
        initial_grant: int = to_micro(DEFAULT_INITIAL_GRANT),
        debt_limit: int | None = to_micro(DEFAULT_DEBT_LIMIT),
        fault: Callable[[str], None] | None = None,
        sync_worker: ThreadWorker | None = None,
    ) -> None:
        self._clock = clock
        self._sync_worker = sync_worker
        self._sync_call: IDelayedCall | None = None
        self.key = key
        self.ledger_path = ledger_path
        self.initial_grant = initial_grant
        self.debt_limit = debt_limit
        self._fault = fault
        self._ledger: Ledger | None = None
        self._names = PeerNames()
        self._listeners: list[Callable[[Cheque], object]] = []
        self._before_sync: list[Callable[[], object]] = []
        self._exchanger = PaymentKeyExchanger(self)
        self._handler_factory = PaymentKeyHandlerFactory(self)

    # life cycle

    def start(self) -> None:
        if self._ledger is not None:
            return
        try:
            self.ledger_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise LedgerError(f"cannot create {self.ledger_path.parent}: {e.strerror}") from None
        ledger = Ledger(
            self.ledger_path, self.key, self.initial_grant, self._clock.seconds(), self._fault
        )
        released = ledger.release_reservations()
        if released:
            _log.info("Released {count} reservation(s) left by the last run", count=released)
        self._ledger = ledger
        if self._sync_worker is not None:
            self._sync_worker.start()

    def stop(self) -> None:
        if self._ledger is not None:
            # (payments made now are written by the close below)
            self._settle()
        ledger, self._ledger = self._ledger, None
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None
        if ledger is not None:
            ledger.release_reservations()
            ledger.close()
        if self._sync_worker is not None:
            self._sync_worker.stop()

    def startService(self) -> None:
        self.start()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    @property
    def clock(self) -> IReactorTime:
        """
        The clock the wallet dates its records by.
        """
        return self._clock

    @property
    def ledger(self) -> Ledger:
        """
        The open ledger.

        @raise PaymentError: the wallet is not started.
        """
        if self._ledger is None:
            raise PaymentError("the wallet is not running")
        return self._ledger

    # keys and names

    @property
    def public_key(self) -> bytes:
        """
        Our payment public key, 32 raw bytes.
        """
        return self.key.public_key

    @property
    def public_hex(self) -> str:
        """
        Our payment public key as the wire carries it.
        """
        return self.key.public_hex

    def account_of(self, peer: Any) -> str:
        """
        The name the ledger knows C{peer} by (L{PeerNames.account_of}).
        """
        return self._names.account_of(peer)

    def peer_key(self, peer: Any) -> bytes | None:
        """
        C{peer}'s payment key, if known.
        """
        return self._names.key_of(peer)

    def learn_peer_key(self, peer: Any, key: bytes) -> None:
        """
        Remember that the peer at C{peer}'s address has the payment key
        C{key}; what it owed under its address is now owed under its key.
        """
        address = self._names.learn(peer, key)
        if self._ledger is not None:
            self._ledger.merge_expected(address, key.hex(), self._clock.seconds())

    def forget_peer_key(self, peer: Any) -> None:
        """
        Forget the key learnt for C{peer}'s address (its connection is gone,
        and the address may next be another node's).
        """
        self._names.forget(peer)

    # IWallet

    def get_info_exchanger(self) -> PaymentKeyExchanger:
        return self._exchanger

    def get_wallet_info_query_handler_factory(self) -> PaymentKeyHandlerFactory:
        return self._handler_factory

    def reserve_points(self, peer: Any, amount: float) -> ReservedPoints | None:
        return self.reserve_micro(peer, to_micro(amount))

    def cancel_point_reservation(self, reserved_points: Any) -> None:
        """
        Release a reservation; releasing one already paid or cancelled does
        nothing.
        """
        if not isinstance(reserved_points, ReservedPoints):
            raise TypeError(f"{reserved_points!r} is not a reservation of this wallet")
        self.ledger.cancel(reserved_points.identifier)

    def send_points(self, reserved_points: Any, amount: float) -> Deferred[Cheque | None]:
        """
        Pay C{amount} points from a reservation, as L{send_micro}.

        @return: a Deferred that fires with the L{Cheque} queued for the
            peer (L{None} for a payment of 0), or fails as L{send_micro}
            raises.
        """
        try:
            return succeed(self.send_micro(reserved_points, to_micro(amount)))
        except (P2PBlobError, ValueError):
            return fail()

    def get_balance(self) -> Deferred[float]:
        """
        @return: a Deferred that fires with the points held, reserved ones
            included.
        """
        try:
            return succeed(from_micro(self.ledger.balance()))
        except P2PBlobError:
            return fail()

    def add_expected_payment(self, peer: Any, amount: float) -> None:
        self.expect_micro(peer, to_micro(amount))

    # paying, in micro-points

    def reserve_micro(self, peer: Any, micro: int) -> ReservedPoints | None:
        """
        Set C{micro} micro-points aside to pay C{peer}.

        @return: the reservation, or L{None} if fewer are available (held
            and not already reserved).
        """
        account = self.account_of(peer)
        identifier = self.ledger.reserve(account, micro, self._clock.seconds())
        if identifier is None:
            return None
        return ReservedPoints(identifier, account, micro, peer)

    def shrink_reservation(self, reserved_points: ReservedPoints, micro: int) -> None:
        """
        Release part of a reservation: it holds C{micro} micro-points after
        (0: it is closed).

        @raise ReservationError: the reservation is not open, or holds less
            than C{micro}.
        """
        if not self.ledger.shrink(reserved_points.identifier, micro):
            raise ReservationError(
                f"it was already paid or cancelled, or holds less than {format_points(micro)}"
            )

    def send_micro(
        self, reserved_points: ReservedPoints, micro: int, keep: int = 0
    ) -> Cheque | None:
        """
        Pay C{micro} micro-points to the reservation's peer, releasing the
        rest of the reservation but C{keep} micro-points, and queue the new
        cheque for it (it may be sent once it is on the disk:
        L{sendable_cheque_for}).

        @param keep: micro-points that stay reserved, to pay the same peer
            again from the same reservation.
        @return: the new cheque, or L{None} if C{micro} is 0 (the
            reservation is only shrunk to C{keep}).
        @raise ReservationError: the reservation is not open or holds less
            than C{micro} and C{keep}; nothing changes.
        @raise UnknownPayeeError: the peer's payment key is not known; the
            reservation stays open (cancel it, or pay once the key is
            known).
        """
        ledger = self.ledger
        if micro < 0 or keep < 0:
            raise ReservationError("cannot pay or keep a negative amount")
        if micro == 0:
            if not ledger.shrink(reserved_points.identifier, keep):
                raise ReservationError(ledger.refusal(reserved_points.identifier, micro, keep))
            return None
        payee = self.peer_key(reserved_points.account)
        if payee is None:
            raise UnknownPayeeError(reserved_points.account)
        if payee == self.public_key:
            raise PaymentError("this node cannot pay itself")
        cheque = ledger.pay(reserved_points.identifier, micro, payee, self._clock.seconds(), keep)
        if self._sync_worker is None:
            ledger.sync()
            self._queued([cheque])
        else:
            self._sync_soon()
        return cheque

    @property
    def syncs_later(self) -> bool:
        """
        Whether payments wait for the next sync to reach the disk (the
        wallet has a sync worker): a payer may then make its payments just
        before that sync (L{pay_before_sync}), not one by one.
        """
        return self._sync_worker is not None

    def pay_before_sync(self, settle: Callable[[], object]) -> None:
        """
        Have C{settle} called once, just before the next sync writes the
        ledger (in at most L{SYNC_INTERVAL} seconds) or when the wallet
        stops: the payments it makes then are written and synced with the
        others.  A payer that owes for many blobs thus pays them with one
        payment and one cheque.  Without a sync worker (L{syncs_later} is
        false) it is called at once.
        """
        if self._sync_worker is None:
            settle()
            return
        if settle not in self._before_sync:
            self._before_sync.append(settle)
        self._sync_soon()

    def _settle(self) -> None:
        settling, self._before_sync = self._before_sync, []
        for settle in settling:
            try:
                settle()
            except Exception:
                _log.failure("Could not make the payments due before a sync")

    def _sync_soon(self) -> None:
        """
        Put the ledger on the disk in L{SYNC_INTERVAL} seconds, in the sync
        worker's thread, with whatever else changes by then.
        """
        if self._sync_worker is not None and self._sync_call is None:
            self._sync_call = self._clock.callLater(SYNC_INTERVAL, self._sync)

    def _write_soon(self) -> None:
        """
        Have the ledger write what it holds unwritten (L{Ledger.flush}):
        with the next sync, or now if there is no sync worker.
        """
        if self._sync_worker is None:
            self.ledger.flush()
        else:
            self._sync_soon()

    def _sync(self) -> None:
        # (payments made now are synced below, not by another sync: the
        # call is still there while they are made)
        self._settle()
        self._sync_call = None
        ledger, worker = self._ledger, self._sync_worker
        if ledger is None or worker is None:
            return
        ledger.sync_in(worker).addCallbacks(
            self._queued,
            lambda failure: _log.failure("Could not sync the wallet ledger", failure),
        )

    def _queued(self, cheques: list[Cheque]) -> None:
        # (logged here, once per payee and sync, rather than per payment:
        # a paid download pays for every blob)
        for cheque in cheques:
            _log.debug("Cheque {sequence} to {payee} ({total} points in all) may be sent",
                       sequence=cheque.sequence, payee=cheque.payee.hex()[:16],
                       total=format_points(cheque.total))
            for listener in list(self._listeners):
                try:
                    listener(cheque)
                except Exception:
                    _log.failure("A listener failed on cheque {cheque}", cheque=repr(cheque))

    # the outbox

    def when_cheque_queued(self, callback: Callable[[Cheque], object]) -> Callable[[], None]:
        """
        Have C{callback} called with every cheque L{send_points} queues,
        once it is in the ledger and on the disk (with a C{sync_worker}:
        the latest to each payee of those one fsync put there).

        @return: a function that stops the calls.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def cheque_for(self, peer: Any) -> Cheque | None:
        """
        The latest cheque to C{peer} that it has not acknowledged, if any:
        the one to send it next.  If a payment is not on the disk yet, this
        waits for the disk.
        """
        state = self._payee_state(peer)
        return state.cheque(self.public_key) if state and state.undelivered else None

    def latest_cheque_for(self, peer: Any) -> Cheque | None:
        """
        The latest cheque to C{peer}, acknowledged or not (sending it again
        credits nothing, but shows the payee who we are).  If a payment is
        not on the disk yet, this waits for the disk.
        """
        state = self._payee_state(peer)
        return state.cheque(self.public_key) if state else None

    def sendable_cheque_for(self, peer: Any, latest: bool = False) -> Cheque | None:
        """
        As L{cheque_for} (or L{latest_cheque_for} if C{latest}), without
        waiting: the latest cheque to C{peer} that is on the disk already.
        """
        key = self.peer_key(peer)
        state = None if key is None else self.ledger.durable_cheque(key)
        if state is None or not (latest or state.undelivered):
            return None
        return state.cheque(self.public_key)

    def _payee_state(self, peer: Any) -> PayeeState | None:
        key = self.peer_key(peer)
        if key is None:
            return None
        ledger = self.ledger
        if ledger.unsynced():
            ledger.sync()
        return ledger.payee(key)

    def pending_cheques(self) -> list[Cheque]:
        """
        Every payee's latest cheque that it has not acknowledged (if a
        payment is not on the disk yet, this waits for the disk).
        """
        owner = self.public_key
        ledger = self.ledger
        if ledger.unsynced():
            ledger.sync()
        return [state.cheque(owner) for state in ledger.payees() if state.undelivered]

    def cheque_delivered(self, cheque: Cheque) -> None:
        """
        The payee acknowledged C{cheque}: neither it nor an earlier cheque
        to that payee needs sending again.
        """
        self.ledger.delivered(cheque)
        self._write_soon()

    # being paid

    def receive_cheque(self, peer: Any, cheque: object) -> int:
        """
        Accept a cheque received from C{peer} (a L{Cheque}, or its wire
        form): verify it, then credit what it adds to the payer's earlier
        cheques.  The cheque's payer becomes the name of C{peer}'s address,
        and what C{peer}'s host (L{client_host}) and address owed moves to
        it.

        @return: the micro-points credited: 0 for a cheque that is not new
            (replayed, older or equal to one already accepted).
        @raise p2pblob.errors.BadChequeError: the cheque is malformed
            (L{p2pblob.errors.MalformedChequeError}), pays another node
            (L{p2pblob.errors.WrongPayeeError}) or is not signed by its
            payer (L{p2pblob.errors.ForgedChequeError}); nothing changes.
        """
        if not isinstance(cheque, Cheque):
            cheque = parse_cheque(cheque)
        address = None if peer is None else peer_address(peer)
        bind = None
        if address is not None and not is_key_name(address) and not self._names.knows(address):
            bind = address
        host = None if bind is None else client_host(bind)
        ledger = self.ledger
        account = cheque.payer.hex()
        was_serving = self.may_serve(account) and (
            bind is None or (self.may_serve(bind) and self.may_serve(host))
        )
        # with a sync worker, the cheque goes on the disk with the next
        # batch of payments, off the reactor thread
        credit = ledger.receive(
            cheque, self._clock.seconds(), host, durable=self._sync_worker is None
        )
        if credit is not None:
            self._sync_soon()
        if bind is not None:
            ledger.merge_expected(bind, account, self._clock.seconds())
            self._names.learn(bind, cheque.payer)
        if credit is None:
            _log.debug("Cheque {sequence} from {payer} credits nothing (already accepted)",
                       sequence=cheque.sequence, payer=account[:16])
        if not was_serving and self.may_serve(account):
            _log.info("Peer {payer} paid its debt; it is served again", payer=account[:16])
        return credit or 0

    # debts

    def expect_micro(self, peer: Any, micro: int) -> None:
        """
        Record that C{peer} owes us C{micro} more micro-points.
        """
        if micro == 0:
            return
        account = self.account_of(peer)
        before = self.unpaid_debt(account)
        self.ledger.expect(account, micro, self._clock.seconds())
        self._write_soon()
        limit = self.debt_limit
        if limit is not None and before <= limit < before + micro:
            _log.info(
                "Peer {peer} owes {debt} points, over the limit of {limit}: no more "
                "blobs until it pays",
                peer=_short(account), debt=format_points(before + micro),
                limit=format_points(limit),
            )

    def unpaid_debt(self, peer: Any) -> int:
        """
        The micro-points C{peer} owes us for blobs served and has not paid
        (negative if it paid ahead).
        """
        account = self.account_of(peer)
        return self.ledger.expected(account) - self.ledger.paid_by(account)

    def may_serve(self, peer: Any) -> bool:
        """
        Whether C{peer} owes us no more than the debt limit.
        """
        return self.debt_limit is None or self.unpaid_debt(peer) <= self.debt_limit

    def check_may_serve(self, peer: Any) -> None:
        """
        @raise DebtLimitError: C{peer} owes us more than the debt limit.
        """
        if self.debt_limit is not None:
            debt = self.unpaid_debt(peer)
            if debt > self.debt_limit:
                raise DebtLimitError(self.account_of(peer), debt, self.debt_limit)


def _short(account: str) -> str:
    """
    A peer's name for the log: a key's first 16 characters, or an address.
    """
    return f"{account[:16]}…" if is_key_name(account) else account


def open_wallet(clock: IReactorTime, config: Config) -> Wallet:
    """
    The wallet of the data directory C{config} names (its key is created
    there if needed), with the configured grant and debt limit; not yet
    started.

    @raise p2pblob.errors.WalletKeyError: the key cannot be read or created.
    """
    threads = IReactorThreads(clock, None)
    return Wallet(
        clock,
        load_or_create_key(config.wallet_key_path),
        config.ledger_path,
        initial_grant=to_micro(config.initial_grant),
        debt_limit=to_micro(config.debt_limit),
        sync_worker=None if threads is None else ThreadWorker(threads, "p2pblob-wallet", 1),
    )
