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

    client: reserve blob_cost(max_bytes, R)            (or: not enough points)
    client: {"requested_blobs": [...], "lbrycrd_address": true,
             "blob_data_payment_rate": R, "requested_blob": H,
             "p2pblob_payment_key": true,              (until the key is known)
             "p2pblob_cheque": {...}}                  (when one is to be sent)
    server: reads the cheque, credits it; checks the debt; answers
            {..., "incoming_blob": {"blob_hash": H, "length": n},
             "p2pblob_payment_key": "<hex>", "p2pblob_cheque": {receipt}} + n bytes
    server: once the n bytes are sent: expect blob_cost(n, R) from the peer
    client: the blob is verified: pay blob_cost(n, R) from the reservation
            (a new cumulative cheque, queued); or cancel the reservation if
            the blob did not come
    client: once the payment is on the disk (payments share one fsync, in
            the wallet's thread, some 50 ms after the first: so one cheque
            pays for several blobs), the cheque rides on the next request
            to that peer; a receipt whose sequence is at least the
            cheque's marks it delivered.

Extension keys ride only beside the standard keys of a blob request (an LBRY
server closes a connection whose request has no key it knows, and ignores
keys it does not know), and only in paid mode.  An LBRY server, which
answers without a payment key, is never paid: the reservation is released.
The first request on each connection carries our latest cheque to the peer
even if it was delivered, so that the server knows from the start whose
debts that connection's blobs add to.  A cheque goes once on each
connection (TCP loses nothing short of losing the connection, and the next
connection carries the latest cheque again).
"""

from __future__ import annotations

import weakref
from typing import Any

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

__all__ = ["DownloadPayments"]

_log = Logger()


class DownloadPayments:
    """
    The payments of a downloader that offers C{offer} points per MiB.

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
        # the sequence of the latest cheque each connection carried
        self._carried: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def reserve(self, peer: Any, length: int | None) -> ReservedPoints:
        """
        Set aside what a blob of C{length} bytes (L{None}: unknown, up to
        the largest blob) costs from C{peer}.

        @raise InsufficientFundsError: the wallet's available points do not
            cover it.
        """
        needed = blob_cost(MAX_BLOB_SIZE if length is None else length, self.rate)
        reservation = self.wallet.reserve_micro(peer, needed)
        if reservation is None:
            raise InsufficientFundsError(needed, self.wallet.ledger.available())
        return reservation

    def pay(self, reservation: ReservedPoints, length: int) -> Cheque | None:
        """
        Pay for C{length} bytes received from the reservation's peer; the
        rest of the reservation is released.  A peer without a payment key
        (an LBRY peer: it never asked for payment) is not paid.
        """
        cost = blob_cost(length, self.rate)
        try:
            cheque = self.wallet.send_micro(reservation, cost)
        except UnknownPayeeError:
            self.cancel(reservation)
            return None
        except PaymentError as e:
            _log.warn("Could not pay {peer}: {error}", peer=str(reservation.peer), error=e)
            self.cancel(reservation)
            return None
        self.paid_micro += cost
        return cheque

    def cancel(self, reservation: ReservedPoints) -> None:
        """
        Release a reservation: the blob did not come.
        """
        try:
            self.wallet.cancel_point_reservation(reservation)
        except PaymentError as e:
            _log.warn("Could not release a reservation: {error}", error=e)

    def add_requests(self, peer: Any, protocol: IRequestSender) -> None:
        """
        Queue, beside a blob request on C{protocol}, the request for the
        peer's payment key (until it is known) and the cheque to send it
        (if any, and if that connection has not carried it): never one
        whose payment is not on the disk yet.
        """
        self.wallet.get_info_exchanger().send_next_request(peer, protocol)
        carried = self._carried.get(protocol)
        cheque = self.wallet.sendable_cheque_for(peer, latest=carried is None)
        if cheque is None or (carried is not None and carried >= cheque.sequence):
            return
        self._carried[protocol] = cheque.sequence
        answer = protocol.add_request(ClientRequest({CHEQUE_QUERY: cheque.to_wire()}, CHEQUE_QUERY))
        answer.addCallbacks(self._receipt, _ignore, callbackArgs=(peer, cheque))

    def has_cheque_for(self, peer: Any) -> bool:
        """
        Whether a cheque to C{peer} is waiting for delivery.
        """
        try:
            return self.wallet.cheque_for(peer) is not None
        except PaymentError:
            return False

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
