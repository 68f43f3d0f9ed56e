"""
Paying for the blobs a download receives: L{DownloadPayments}, which the
blob requester (L{p2pblob.download.requester}) consults for each blob.

How the client chooses its offer: it offers exactly its configured rate
(C{p2pblob download --price R}, points per MiB) with every blob request, as
LBRY's 2015 client did; there is no counter-offer.  A server whose minimum
is above the offer answers C{RATE_TOO_LOW} and the requester moves on to
other peers; one that accepts charges the offered rate, so the downloader
pays C{blob_cost(length, R)} for each blob, whatever the server's own
minimum.  An offer of 0 (free mode, the default) puts nothing but
C{"blob_data_payment_rate": 0.0} about prices on the wire.

The exchange of one paid blob, on one connection::

    client: set aside blob_cost(max_bytes, R) from the points reserved
            for that peer (reserving 8 blobs' worth when they run out;
            or: not enough points)
    client: {"requested_blobs": [...], "lbrycrd_address": true,
             "blob_data_payment_rate": R, "requested_blob": H,
             "p2pblob_payment_key": true,              (until the key is known)
             "p2pblob_cheque": {...}}                  (when one is to be sent)
    server: reads the cheque, credits it; checks the debt; answers
            {..., "incoming_blob": {"blob_hash": H, "length": n},
             "p2pblob_payment_key": "<hex>", "p2pblob_cheque": {receipt}} + n bytes
    server: once the n bytes are sent: expect blob_cost(n, R) from the peer
    client: the blob is verified: it owes blob_cost(n, R) from what was
            set aside, the rest going back to the reservation; or it gives
            it all back if the blob did not come
    client: just before the wallet's next sync (some 50 ms after the first
            blob owed), what each reservation owes is paid from it: one
            payment and one new cumulative cheque for all those blobs,
            put on the disk by that sync (in the wallet's thread, with one
            fsync); then the latest cheque rides on the next request to
            that peer, at most every CHEQUE_INTERVAL (0.25 s) on one
            connection; a receipt whose sequence is at least the cheque's
            marks it delivered.  What is owed to a peer is paid at once
            when its cheque is asked for (nothing is left to ask it, or it
            refused us over our debt), and when the wallet stops.

Extension keys ride only beside the standard keys of a blob request (an LBRY
server closes a connection whose request has no key it knows, and ignores
keys it does not know), and only in paid mode.  An LBRY server, which
answers without a payment key, is never paid: the reservation is released.
The first request on each connection carries our latest cheque to the peer
even if it was delivered, so that the server knows from the start whose
debts that connection's blobs add to.  A cheque goes once on each
connection (TCP loses nothing short of losing the connection, and the next
connection carries the latest cheque again).  A peer that refuses us a blob
over our debt is not kept waiting for CHEQUE_INTERVAL again: from then on
each request to it carries our latest cheque.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import InsufficientFundsError, PaymentError, UnknownPayeeError
from p2pblob.interfaces import IRequestSender
from p2pblob.peer.requests import ClientRequest
from p2pblob.wallet.accounts import ReservedPoints
from p2pblob.wallet.cheques import Cheque
from p2pblob.wallet.exchange import CHEQUE_QUERY
from p2pblob.wallet.units import blob_cost, format_points, to_micro
from p2pblob.wallet.wallet import Wallet

__all__ = ["BlobShare", "DownloadPayments"]

_log = Logger()


# One reservation in the ledger sets points aside for this many blobs from
# a peer (each blob then takes its share, and is paid from it), so that a
# paid download writes the ledger about once per blob, not twice.
FLOAT_BLOBS = 8

# A reservation no blob takes a share of for this long is released.
FLOAT_IDLE = 1.0

# A connection carries a new cheque at most this often (seconds), unless
# nothing is left to ask its peer, or the peer once refused us a blob over
# our debt (then each request carries the latest): one cheque pays for many
# blobs, and each costs both ends a signature, its check and a write of
# the ledger.  At 400 MB/s and 0.0625 points per MiB some 6 points go
# unpaid in that time, within the default debt limit of 10 points.
CHEQUE_INTERVAL = 0.25


@dataclass(eq=False)
class _Float:
    """
    A reservation in the ledger from which the blobs of one peer take
    their shares.

    @ivar held: micro-points it holds in the ledger.
    @ivar free: of those, micro-points no blob has taken.
    @ivar shares: blobs whose share is neither paid nor returned.
    @ivar retired: no new blob takes a share of it; it is released as its
        shares are paid or returned.
    @ivar owed: micro-points owed for blobs received, to be paid from it
        with the next sync (L{DownloadPayments.settle}); the ledger holds
        them beside C{held}.
    """

    peer: Any
    reservation: ReservedPoints
    held: int
    free: int
    shares: int = 0
    owed: int = 0
    retired: bool = False
    idle: IDelayedCall | None = None


@dataclass(eq=False, frozen=True)
class BlobShare:
    """
    What one blob request set aside: its share of a reservation.

    @ivar micro: the micro-points set aside.
    """

    source: _Float
    micro: int

    @property
    def peer(self) -> Any:
        return self.source.peer


class DownloadPayments:
    """
    The payments of a downloader that offers C{offer} points per MiB.

    Points are reserved in the ledger for L{FLOAT_BLOBS} blobs from a peer
    at once (or, if the wallet holds less, for one), and each blob request
    takes its share; a blob is paid from its share, the rest of which goes
    back to the reservation.  A reservation is released once no blob has
    taken a share of it for L{FLOAT_IDLE} seconds, and a wallet that cannot
    cover a blob first releases what its idle reservations hold.

    @ivar offer: the rate offered, as it goes on the wire.
    @ivar rate: the same, in micro-points per MiB.
    @ivar paid_micro: micro-points paid through this object.
    """

    def __init__(self, wallet: Wallet, offer: float) -> None:
        if offer <= 0:
            raise ValueError("a paid download offers a rate above 0")
        self.wallet = wallet
        self.offer = float(offer)
        self.rate = to_micro(self.offer)
        self.paid_micro = 0
        self._clock = wallet.clock
        # the reservation each peer's blobs take their shares of
        self._floats: dict[Any, _Float] = {}
        # the sequence of the latest cheque each connection carried, and when
        self._carried: weakref.WeakKeyDictionary[Any, tuple[int, float]] = (
            weakref.WeakKeyDictionary()
        )
        # peers that refused us a blob over our debt: paid without delay
        self._impatient: set[Any] = set()
        # the reservations from which something is owed
        self._owing: list[_Float] = []

    def reserve(self, peer: Any, length: int | None) -> BlobShare:
        """
        Set aside what a blob of C{length} bytes (L{None}: unknown, up to
        the largest blob) costs from C{peer}.

        @raise InsufficientFundsError: the wallet's available points do not
            cover it.
        """
        needed = blob_cost(MAX_BLOB_SIZE if length is None else length, self.rate)
        source = self._floats.get(peer)
        if source is None or source.free < needed:
            if source is not None:
                self._retire(source)
            source = self._open(peer, needed)
        source.free -= needed
        source.shares += 1
        if source.idle is not None and source.idle.active():
            source.idle.cancel()
        source.idle = None
        return BlobShare(source, needed)

    def _open(self, peer: Any, needed: int) -> _Float:
        reservation = self.wallet.reserve_micro(peer, needed * FLOAT_BLOBS)
        if reservation is None:
            for other in list(self._floats.values()):
                self._retire(other)
            reservation = self.wallet.reserve_micro(peer, needed)
        if reservation is None:
            raise InsufficientFundsError(needed, self.wallet.ledger.available())
        source = _Float(peer, reservation, reservation.micro, reservation.micro)
        self._floats[peer] = source
        return source

    def _retire(self, source: _Float, write: bool = True) -> None:
        """
        Take no more shares of C{source}: release what no blob has taken
        (if C{write}: else its reservation is gone).
        """
        source.retired = True
        if self._floats.get(source.peer) is source:
            del self._floats[source.peer]
        if source.idle is not None and source.idle.active():
            source.idle.cancel()
        source.idle = None
        if not (source.free and write):
            return
        source.held -= source.free
        source.free = 0
        self._write(source)

    def _write(self, source: _Float) -> None:
        """
        Bring C{source}'s reservation in the ledger to what it holds: pay
        what is owed from it, or shrink it.
        """
        if source.owed:
            self._pay_owed(source)
            return
        try:
            self.wallet.shrink_reservation(source.reservation, source.held)
        except PaymentError as e:
            _log.warn("Could not release reserved points: {error}", error=e)

    def _left(self, share: BlobShare, spent: int) -> int:
        """
        What the share's reservation holds once C{share} is paid
        (C{spent} micro-points of it) or returned (0 spent): the rest of the
        share goes back to it, unless it is retired.
        """
        source = share.source
        return source.held - (share.micro if source.retired else spent)

    def _settled(self, share: BlobShare, spent: int) -> None:
        source = share.source
        source.held = self._left(share, spent)
        source.shares -= 1
        if not source.retired:
            source.free += share.micro - spent
            if source.shares == 0:
                source.idle = self._clock.callLater(FLOAT_IDLE, self._release_idle, source)

    def _release_idle(self, source: _Float) -> None:
        source.idle = None
        if source.shares == 0 and not source.retired:
            self._retire(source)

    def pay(self, share: BlobShare, length: int) -> None:
        """
        Pay for C{length} bytes received from the share's peer; the rest of
        the share goes back to its reservation.  A peer without a payment
        key (an LBRY peer: it never asked for payment) is not paid.

        With a wallet that syncs later (L{Wallet.syncs_later}) the cost is
        owed, and paid with what else is owed to that peer just before the
        wallet's next sync (L{settle}); else it is paid at once.
        """
        cost = blob_cost(length, self.rate)
        if cost > share.micro:
            _log.warn("Could not pay {peer}: {length} bytes cost more than was reserved",
                      peer=str(share.peer), length=length)
            self.cancel(share)
            return
        if self.wallet.peer_key(share.source.reservation.account) is None:
            self.cancel(share)
            return
        source = share.source
        source.owed += cost
        self._settled(share, cost)
        if source.owed == cost:
            self._owing.append(source)
            self.wallet.pay_before_sync(self.settle)

    def settle(self, peer: Any = None) -> None:
        """
        Pay what is owed (to C{peer}, or to every peer): one payment, and
        one cheque, per reservation.
        """
        owing, self._owing = self._owing, []
        for source in owing:
            if peer is None or source.peer == peer:
                self._pay_owed(source)
            else:
                self._owing.append(source)

    def _pay_owed(self, source: _Float) -> None:
        owed, source.owed = source.owed, 0
        if source in self._owing:
            self._owing.remove(source)
        if not owed:
            return
        try:
            self.wallet.send_micro(source.reservation, owed, keep=source.held)
        except UnknownPayeeError:
            # (its key was forgotten meanwhile: nothing is paid, and what
            # the ledger held for it is released)
            self._write(source)
            return
        except PaymentError as e:
            # (its reservation is gone: the next blob reserves again)
            _log.warn("Could not pay {peer}: {error}", peer=str(source.peer), error=e)
            self._retire(source, write=False)
            return
        self.paid_micro += owed

    def cancel(self, share: BlobShare) -> None:
        """
        Return a share: the blob did not come.
        """
        source = share.source
        self._settled(share, 0)
        if source.retired:
            self._write(source)

    def add_requests(self, peer: Any, protocol: IRequestSender, promptly: bool = False) -> None:
        """
        Queue, beside a blob request on C{protocol}, the request for the
        peer's payment key (until it is known) and the cheque to send it
        (if any, and if that connection has not carried it): never one
        whose payment is not on the disk yet.  After the first, a
        connection carries a cheque at most every L{CHEQUE_INTERVAL}
        seconds, unless C{promptly} or the peer is L{impatient}.
        """
        self.wallet.get_info_exchanger().send_next_request(peer, protocol)
        carried = self._carried.get(protocol)
        now = self._clock.seconds()
        if (
            carried is not None and now - carried[1] < CHEQUE_INTERVAL
            and not promptly and peer not in self._impatient
        ):
            return
        cheque = self.wallet.sendable_cheque_for(peer, latest=carried is None)
        if cheque is None or (carried is not None and carried[0] >= cheque.sequence):
            return
        self._carried[protocol] = (cheque.sequence, now)
        answer = protocol.add_request(ClientRequest({CHEQUE_QUERY: cheque.to_wire()}, CHEQUE_QUERY))
        answer.addCallbacks(self._receipt, _ignore, callbackArgs=(peer, cheque))

    def impatient(self, peer: Any) -> None:
        """
        C{peer} refused us a blob because we owe it too much: from now on
        each request to it carries our latest cheque, if it has not.
        """
        self._impatient.add(peer)

    def has_cheque_for(self, peer: Any) -> bool:
        """
        Whether a cheque to C{peer} is waiting for delivery, once what is
        owed to it is paid.
        """
        try:
            return self.cheque_for(peer) is not None
        except PaymentError:
            return False

    def cheque_for(self, peer: Any) -> Cheque | None:
        """
        Pay what is owed to C{peer}, then return the latest cheque to it
        that it has not acknowledged, if any (L{Wallet.cheque_for}: this
        waits for the disk).
        """
        self.settle(peer)
        return self.wallet.cheque_for(peer)

    def _receipt(self, response: dict[str, Any], peer: Any, cheque: Cheque) -> None:
        receipt = response.get(CHEQUE_QUERY)
        if not isinstance(receipt, dict):
            return
        sequence, total = receipt.get("sequence"), receipt.get("total")
        if (
            type(sequence) is int and type(total) is int
            and sequence >= cheque.sequence and total >= cheque.total
        ):
            self.wallet.cheque_delivered(cheque)
            return
        error = receipt.get("error")
        _log.warn(
            "Peer {peer} did not accept cheque {sequence} ({total} points): {error}",
            peer=str(peer), sequence=cheque.sequence, total=format_points(cheque.total),
            error=f"{error!s:.40}: {receipt.get('detail')!s:.200}",
        )


def _ignore(failure: Failure) -> None:
    # the connection was lost: the cheque goes again on the next one
    return None
