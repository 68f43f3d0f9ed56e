"""
Deciding what to ask each peer for.

One L{BlobRequester} serves one download.  Each time a connection is free
it picks a blob for that peer: the first blob the stream still needs that no
other connection is fetching and that the peer is not known to lack (so
several connections fetch different blobs at once, roughly in stream order);
when every needed blob is already being fetched it races the oldest one on a
second peer ("end game"), and the first verified copy wins.  Each request
has the form modern LBRY clients send, so LBRY peers answer it, plus the
availability of a few more needed blobs.

What happens with each answer is scored on the peer (see
L{p2pblob.peer.peer.Peer}): a served blob raises its score; bad data, a
protocol violation, a stall or a lost connection lower it and back it off,
and after enough failures the peer is not used again for this download;
a peer that lacks a blob is simply not asked for it again, and a peer that
refuses our price offer (C{RATE_TOO_LOW}) is not asked again in this
download.

In paid mode (given L{DownloadPayments}) each blob request offers our rate
and is preceded by a reservation of what the blob may cost; the blob is
paid once verified (or once announced, if another peer's copy won the
race: the server sends it all the same), and the reservation is released if
it does not come.  A peer that refuses a blob because we owe it too much
(C{DEBT_LIMIT_REACHED}) is not taken to lack it: the blob is asked of it
again with the next cheque we queue for it, or, if none comes, on a new
connection once the peer's back-off is over (the first request of a
connection carries our latest cheque); each such refusal counts as a minor
failure, so a peer that never lets us pay our way back is dropped in the
end.  A connection with nothing left to ask waits while blobs
from its peer are being verified, then carries the cheque that pays for
them (with an empty availability query, a standard key) before it closes.
When the wallet cannot cover a reservation the download is told
(C{Wanted.out_of_funds}) and nothing more is asked.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob._buffers import BufferPool
from p2pblob.blob.staged import HeldBlobs, StagedBlobWriter
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobTooLargeError,
    BlobUnavailableError,
    BlobWriteCancelledError,
    InsufficientFundsError,
    ProtocolViolationError,
    StorageError,
)
from p2pblob.interfaces import IBlob, IBlobStore, IPeerFinder, IRequestCreator, IRequestSender
from p2pblob.peer.client import ClientState
from p2pblob.peer.handlers import DEBT_LIMIT_REACHED
from p2pblob.peer.peer import FAILURE_POINTS, MINOR_FAILURE_POINTS, Peer
from p2pblob.peer.requests import ClientBlobRequest, ClientRequest
from p2pblob.peer.wire import RATE_ACCEPTED
from p2pblob.stream.descriptor import BlobInfo

if TYPE_CHECKING:
    from p2pblob.wallet.paying import BlobShare, DownloadPayments

__all__ = ["BlobRequester"]

_log = Logger()

# Hashes asked about besides the requested blob; keeps requests well under
# the 1,200 bytes lbry-sdk servers accept (each hash costs ~100 bytes).
AVAILABILITY_BATCH = 6
# ... fewer when a cheque (some 350 bytes) may ride along
PAID_AVAILABILITY_BATCH = 2
# A peer whose score within this download falls below this is dropped.
MIN_LOCAL_SCORE = -25.0
# Blobs in memory at once, from the request until the store has them, or,
# when they are held for the blob handler, until it takes them: downloading
# faster than the disk or the output takes the blobs must not grow memory.
MAX_BUFFERED_BLOBS = 24
# At most this many connections fetch the same blob in the end game, and
# only once the first has been at it this many seconds.
MAX_RACERS = 2
RACE_AFTER = 1.0


class Wanted(Protocol):
    """
    What the requester needs to know about the download.
    """

    def needed_blobs(self) -> list[BlobInfo]: ...

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> None: ...

    def download_failed(self, failure: Failure) -> None: ...

    def out_of_funds(self, error: InsufficientFundsError) -> None: ...


class _InFlight:
    def __init__(
        self,
        info: BlobInfo,
        peer: Peer,
        request: ClientBlobRequest,
        started: float,
        reservation: BlobShare | None = None,
    ) -> None:
        self.info = info
        self.peer = peer
        self.request = request
        self.started = started
        # paid mode: the points set aside, until paid or released
        self.reservation = reservation
        # the length the peer announced, once it answered
        self.announced: int | None = None
        self.answered = False
        # cancelled before the answer came: pay if the blob is announced
        self.pay_when_announced = False
        # refused because we owe the peer too much (paid mode)
        self.over_debt_limit = False


@implementer(IRequestCreator)
class BlobRequester:
    """
    The request creator of one download.

    @param wanted: the download: which blobs are needed, and where verified
        ones go.
    @param store: where received blobs are verified and kept.
    @param peer_finder: where to look for peers of the first needed blob.
    @param buffers: where each arriving blob's buffer comes from.
    @param held: where each stored blob's buffer is kept for the blob
        handler, if anywhere.
    """

    def __init__(
        self,
        wanted: Wanted,
        store: IBlobStore,
        peer_finder: IPeerFinder,
        clock: IReactorTime,
        buffers: BufferPool,
        held: HeldBlobs | None = None,
        payments: DownloadPayments | None = None,
    ) -> None:
        self._wanted = wanted
        self._payments = payments
        self._price_refused: set[Peer] = set()
        # peers that refused us a blob over our debt: asked again only with
        # a new cheque, or once backed off
        self._owed: set[Peer] = set()
        self._out_of_funds = False
        # connections waiting for blobs of their peer to be paid for
        self._settling: list[tuple[Peer, IRequestSender, Deferred[bool]]] = []
        # the cheque sequence each connection last carried alone
        self._flushed: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        # blobs whose reservation is neither paid nor released yet
        self._reserved: set[_InFlight] = set()
        # answers awaited to messages that carry only a cheque
        self._flushes: set[Deferred[Any]] = set()
        self._store = store
        self._finder = peer_finder
        self._clock = clock
        self._buffers = buffers
        self._held = held
        if held is not None:
            held.when_taken(self._wake_waiting)
        self._in_flight: dict[str, list[_InFlight]] = {}
        self._has: dict[Peer, set[str]] = {}
        self._lacks: dict[Peer, set[str]] = {}
        self._local_score: dict[Peer, float] = {}
        self.bytes_received = 0
        self.last_error: str | None = None
        self._buffered = 0
        self._waiting: list[tuple[Peer, IRequestSender, Deferred[bool]]] = []

    # IRequestCreator

    def get_new_peers(self) -> Deferred[list[Any]]:
        needed = self._wanted.needed_blobs()
        if not needed:
            return succeed([])
        # the first needed blob that no known peer is known to have
        target = needed[0]
        for info in needed:
            if not any(info.blob_hash in has for has in self._has.values()):
                target = info
                break
        assert target.blob_hash is not None
        found = self._finder.find_peers_for_blob(target.blob_hash)

        # peers that said they have needed blobs: the DHT may not name them
        # for every blob (a node may announce only the head of a stream)
        wanted = {info.blob_hash for info in needed}
        known = [peer for peer, has in self._has.items() if not has.isdisjoint(wanted)]

        def usable(peers: list[Peer]) -> list[Peer]:
            candidates = dict.fromkeys([*peers, *known])
            return [p for p in candidates if self.usable(p) and self._choose(p) is not None]

        def failed(failure: Failure) -> list[Peer]:
            _log.warn("Could not look for peers: {error}", error=failure.value)
            return []

        return found.addCallbacks(usable, failed)

    def send_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        if self._in_memory() >= MAX_BUFFERED_BLOBS:
            # the connection waits until the store catches up
            waiting: Deferred[bool] = Deferred()
            self._waiting.append((peer, protocol, waiting))
            return waiting
        sent = self._send(peer, protocol)
        if sent or self._payments is None:
            return succeed(sent)
        return self._settle_then_flush(peer, protocol)

    def _settle_then_flush(self, peer: Peer, protocol: IRequestSender) -> Deferred[bool]:
        """
        Nothing to ask C{peer} for: wait while blobs from it are being
        verified, then send it the cheque that pays for them, if any.
        """
        if any(entry.peer is peer for entry in self._reserved):
            waiting: Deferred[bool] = Deferred()
            self._settling.append((peer, protocol, waiting))
            return waiting
        return succeed(self._flush(peer, protocol))

    def _flush(self, peer: Peer, protocol: IRequestSender) -> bool:
        payments = self._payments
        if payments is None or self._out_of_funds:
            return False
        cheque = payments.cheque_for(peer)
        if cheque is None or self._flushed.get(protocol, 0) >= cheque.sequence:
            return False
        self._flushed[protocol] = cheque.sequence
        # an extension key never travels alone: LBRY servers would hang up
        answer = protocol.add_request(ClientRequest({"requested_blobs": []}, "available_blobs"))
        self._flushes.add(answer)

        def answered(result: object) -> None:
            self._flushes.discard(answer)

        answer.addBoth(answered)
        payments.add_requests(peer, protocol, promptly=True)
        return True

    def flushing(self, timeout: float = 10.0) -> Deferred[Any] | None:
        """
        A Deferred that fires once the messages carrying the last cheques
        are answered (or after C{timeout} seconds), or L{None} if none is
        awaited.
        """
        if not self._flushes:
            return None
        waiting: Deferred[Any] = DeferredList(list(self._flushes), consumeErrors=True)
        return waiting.addTimeout(timeout, self._clock).addErrback(lambda failure: None)

    def _wake_settling(self, peer: Peer) -> None:
        settling, self._settling = self._settling, []
        for waiting_peer, protocol, waiting in settling:
            if waiting_peer is not peer:
                self._settling.append((waiting_peer, protocol, waiting))
            elif getattr(protocol, "state", None) in (ClientState.CLOSING, ClientState.CLOSED):
                waiting.callback(False)
            else:
                self.send_next_request(peer, protocol).chainDeferred(waiting)

    def _in_memory(self) -> int:
        return self._buffered + (len(self._held) if self._held is not None else 0)

    def _wake_waiting(self) -> None:
        while self._waiting and self._in_memory() < MAX_BUFFERED_BLOBS:
            peer, protocol, waiting = self._waiting.pop(0)
            if getattr(protocol, "state", None) in (ClientState.CLOSING, ClientState.CLOSED):
                waiting.callback(False)
            else:
                self.send_next_request(peer, protocol).chainDeferred(waiting)

    def _send(self, peer: Peer, protocol: IRequestSender) -> bool:
        if not self.usable(peer) or self._out_of_funds:
            return False
        payments = self._payments
        owed = peer in self._owed
        if owed:
            if not peer.available(self._clock.seconds()) and not (
                payments is not None and payments.has_cheque_for(peer)
            ):
                return False
            self._owed.discard(peer)
        info = self._choose(peer)
        if info is None:
            return False
        assert info.blob_hash is not None
        blob_hash = info.blob_hash
        length = info.length if info.length > 0 else None
        reservation = None
        if payments is not None:
            try:
                reservation = payments.reserve(peer, length)
            except InsufficientFundsError as e:
                self._no_funds(e)
                return False
        batch = AVAILABILITY_BATCH if payments is None else PAID_AVAILABILITY_BATCH
        others = self._unknown_on(peer, exclude=blob_hash, batch=batch)
        availability = ClientRequest(
            {"requested_blobs": [blob_hash, *others], "lbrycrd_address": True},
            "available_blobs",
        )
        offer = 0.0 if payments is None else payments.offer
        price = ClientRequest({"blob_data_payment_rate": offer}, "blob_data_payment_rate")
        request = ClientBlobRequest(
            {"requested_blob": blob_hash},
            "incoming_blob",
            blob_hash,
            length,
            lambda n: StagedBlobWriter(self._store, blob_hash, n, self._buffers, self._held),
        )
        started = self._clock.seconds()
        entry = _InFlight(info, peer, request, started, reservation)
        self._in_flight.setdefault(blob_hash, []).append(entry)
        if reservation is not None:
            self._reserved.add(entry)
        self._buffered += 1
        protocol.add_request(availability).addCallbacks(
            lambda response: self._availability(peer, [blob_hash, *others], response),
            lambda failure: None,
        )
        protocol.add_request(price).addCallbacks(
            lambda response: self._price_answer(entry, response), lambda failure: None
        )
        protocol.add_blob_request(request).addCallbacks(
            lambda response: self._announced(entry, response),
            lambda failure: self._refused(entry),
        )
        if payments is not None:
            payments.add_requests(peer, protocol, promptly=owed)
        request.finished_deferred.addCallbacks(
            lambda blob: self._received(entry, blob, started),
            lambda failure: self._not_received(entry, failure),
        )
        return True

    # paying

    def _no_funds(self, error: InsufficientFundsError) -> None:
        if not self._out_of_funds:
            self._out_of_funds = True
            _log.warn("Download paused: {error}", error=error)
            self._wanted.out_of_funds(error)

    def _price_answer(self, entry: _InFlight, response: dict[str, Any]) -> None:
        # the whole response comes here before the blob request hears of a
        # refusal, which says only that the blob will not come: note why
        incoming = response.get("incoming_blob")
        if isinstance(incoming, dict) and incoming.get("error") == DEBT_LIMIT_REACHED:
            entry.over_debt_limit = True
            if self._payments is not None:
                self._payments.impatient(entry.peer)
        peer = entry.peer
        verdict = response.get("blob_data_payment_rate")
        if verdict != RATE_ACCEPTED and peer not in self._price_refused:
            self._price_refused.add(peer)
            _log.info("Peer {peer} refused our price offer ({verdict}); not asking it again",
                      peer=str(peer), verdict=f"{verdict!s:.40}")
            self.last_error = f"{peer}: refused our price offer ({verdict!s:.40})"

    def _announced(self, entry: _InFlight, response: dict[str, Any]) -> None:
        entry.answered = True
        incoming = response.get("incoming_blob")
        length = incoming.get("length") if isinstance(incoming, dict) else None
        entry.announced = length if isinstance(length, int) else None
        if entry.pay_when_announced and entry.announced is not None:
            self._settle(entry, entry.announced)

    def _refused(self, entry: _InFlight) -> None:
        entry.answered = True
        if entry.pay_when_announced:
            self._settle(entry, None)

    def _settle(self, entry: _InFlight, length: int | None, wake: bool = True) -> None:
        """
        Pay for C{length} bytes of C{entry}'s blob, or release its
        reservation (L{None}); then connections waiting for it may go on.
        """
        reservation, entry.reservation = entry.reservation, None
        if reservation is None:
            return
        self._reserved.discard(entry)
        assert self._payments is not None
        if length is None:
            self._payments.cancel(reservation)
        else:
            self._payments.pay(reservation, length)
        if wake:
            self._wake_settling(entry.peer)

    # choosing

    def usable(self, peer: Peer) -> bool:
        return self._local_score.get(peer, 0.0) > MIN_LOCAL_SCORE and peer not in self._price_refused

    def _choose(self, peer: Peer) -> BlobInfo | None:
        lacks = self._lacks.get(peer, set())
        has = self._has.get(peer, set())
        racing: BlobInfo | None = None
        fresh_unknown: BlobInfo | None = None
        race_before = self._clock.seconds() - RACE_AFTER
        for info in self._wanted.needed_blobs():
            blob_hash = info.blob_hash
            if blob_hash is None or blob_hash in lacks:
                continue
            fetching = self._in_flight.get(blob_hash, [])
            if not fetching:
                if blob_hash in has:
                    return info
                if fresh_unknown is None:
                    fresh_unknown = info
            elif (
                racing is None
                and len(fetching) < MAX_RACERS
                and fetching[0].started <= race_before
                and all(entry.peer is not peer for entry in fetching)
            ):
                racing = info
        return fresh_unknown or racing

    def _unknown_on(self, peer: Peer, exclude: str, batch: int = AVAILABILITY_BATCH) -> list[str]:
        known = self._has.get(peer, set()) | self._lacks.get(peer, set())
        hashes = []
        for info in self._wanted.needed_blobs():
            if info.blob_hash and info.blob_hash != exclude and info.blob_hash not in known:
                hashes.append(info.blob_hash)
                if len(hashes) == batch:
                    break
        return hashes

    def _availability(self, peer: Peer, asked: list[str], response: dict[str, Any]) -> None:
        available = response.get("available_blobs")
        if not isinstance(available, list):
            return
        has = self._has.setdefault(peer, set())
        lacks = self._lacks.setdefault(peer, set())
        present = {h for h in available if isinstance(h, str)}
        for blob_hash in asked:
            if blob_hash in present:
                has.add(blob_hash)
            elif blob_hash not in has:
                lacks.add(blob_hash)

    # outcomes

    def _done(self, entry: _InFlight) -> None:
        self._buffered -= 1
        self._wake_waiting()
        entries = self._in_flight.get(entry.info.blob_hash or "", [])
        if entry in entries:
            entries.remove(entry)
        if not entries:
            self._in_flight.pop(entry.info.blob_hash or "", None)

    def _received(self, entry: _InFlight, blob: IBlob, started: float) -> None:
        self._done(entry)
        # paid at once; connections waiting for it go on only once the blob
        # is no longer needed, lest one ask for it again
        self._settle(entry, blob.length, wake=False)
        peer = entry.peer
        peer.report_success(blob.length, self._clock.seconds() - started)
        self._local_score[peer] = self._local_score.get(peer, 0.0) + 5.0
        self._has.setdefault(peer, set()).add(blob.blob_hash)
        self.bytes_received += blob.length
        _log.debug(
            "Received blob {blob} ({length} bytes) from {peer}",
            blob=blob.blob_hash[:16], length=blob.length, peer=str(peer),
        )
        # others racing for the same blob can stop
        for other in list(self._in_flight.get(blob.blob_hash, [])):
            other.request.cancel()
        self._wanted.blob_downloaded(blob, entry.info)
        if self._payments is not None:
            self._wake_settling(peer)

    def _not_received(self, entry: _InFlight, failure: Failure) -> None:
        self._done(entry)
        peer = entry.peer
        error = failure.value
        blob_hash = entry.info.blob_hash or ""
        if isinstance(error, BlobWriteCancelledError):
            # another peer's copy won: this one is paid for if it is sent
            if entry.announced is not None:
                self._settle(entry, entry.announced)
            elif entry.answered:
                self._settle(entry, None)
            else:
                entry.pay_when_announced = True
            return
        self._settle(entry, None)
        if isinstance(error, BlobUnavailableError) and entry.over_debt_limit:
            # it has the blob, but wants paying first
            _log.info("Peer {peer} wants paying before it sends more: {error}",
                      peer=str(peer), error=error)
            self._owed.add(peer)
            self._penalise(peer, MINOR_FAILURE_POINTS)
            self.last_error = f"{peer}: {error}"
            return
        if isinstance(error, BlobUnavailableError):
            self._lacks.setdefault(peer, set()).add(blob_hash)
            self._has.get(peer, set()).discard(blob_hash)
            peer.score += MINOR_FAILURE_POINTS
            return
        if isinstance(error, StorageError):
            # our disk, not the peer: the download cannot go on
            self._wanted.download_failed(failure)
            return
        if isinstance(error, (BlobHashMismatchError, BlobTooLargeError, ProtocolViolationError)):
            _log.warn("Peer {peer} sent bad data: {error}", peer=str(peer), error=error)
            self._lacks.setdefault(peer, set()).add(blob_hash)
            self._penalise(peer, 4 * FAILURE_POINTS)
        elif isinstance(error, ConnectionDone):
            self._penalise(peer, MINOR_FAILURE_POINTS)
        else:
            _log.info("Peer {peer} failed: {error}", peer=str(peer), error=error)
            self._penalise(peer, FAILURE_POINTS)
        self.last_error = f"{peer}: {error}"

    def _penalise(self, peer: Peer, points: float) -> None:
        self._local_score[peer] = self._local_score.get(peer, 0.0) + points
        peer.report_failure(self._clock.seconds(), points)

    def cancel_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        settling, self._settling = self._settling, []
        for _, _, d in waiting:
            d.callback(False)
        for peer, protocol, d in settling:
            # the download is over: the cheque for its last blobs still goes
            open_ = getattr(protocol, "state", None) not in (ClientState.CLOSING, ClientState.CLOSED)
            d.callback(open_ and self._flush(peer, protocol))
        for entries in list(self._in_flight.values()):
            for entry in list(entries):
                entry.request.cancel()
