"""
The queries a blob server answers, and the producer that uploads a blob.

Each kind of query has a factory (L{IQueryHandlerFactory}) that the server
holds and a handler (L{IQueryHandler}) that the factory builds afresh for
every connection, as in LBRY's 2015 design.  A handler registers the request
keys it answers with the connection's L{IRequestHandler}
(L{p2pblob.peer.server.BlobServerProtocol}) and is given, for each request,
only those keys; the connection merges the handlers' answers into one
response.  So the server protocol knows no request key itself, and a new
query is a new handler, not a change to the protocol.

What is answered is what a modern LBRY server (lbry-sdk 0.113.0) answers:

  - C{requested_blobs}: the requested hashes the store holds, in request
    order, without repeats (L{BlobAvailabilityHandlerFactory});
  - C{blob_data_payment_rate} and C{requested_blob}: the price is accepted
    whatever is offered, and a blob the store holds is announced as
    C{incoming_blob} and sent right after the response; a blob it does not
    hold gets no C{incoming_blob} key at all (L{BlobRequestHandlerFactory});
  - C{lbrycrd_address}: a configured address (L{WalletInfoHandlerFactory}).

How offers are judged is an L{IPaymentRatePolicy}; L{FreeRatePolicy}
accepts every offer.  In paid mode the blob request handler is also given
L{Charges} (L{p2pblob.wallet.serving.BlobCharges}): it then remembers the
rate it accepted on the connection, as LBRY's 2015 server did, answers a
blob request made before any accepted offer with C{incoming_blob: {"error":
"RATE_UNSET"}}, refuses a blob to a peer over its debt limit with
C{incoming_blob: {"error": "DEBT_LIMIT_REACHED"}}, and records what each
blob sent costs once its upload is complete (the charges decide whom a
debt is owed by: a client whose payment key is not known yet owes under
its host, so reconnecting does not clear it, and what a host's clients owe
in all, keys included, is limited too).  Without charges (free mode)
it answers exactly as lbry-sdk's server does.

A blob is opened when its request is answered, so that it cannot vanish
between the announcement and the upload, and is then streamed by a
L{BlobUploadProducer}: a push producer that reads one chunk at a time and
stops whenever its consumer pauses it, so memory use does not depend on the
blob's size or on how fast the peer reads.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BufferedIOBase
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from p2pblob.blob.hashing import is_blob_hash
from p2pblob.errors import BlobNotFoundError, DebtLimitError, ProtocolViolationError
from p2pblob.interfaces import (
    IBlobSender,
    IBlobStore,
    IQueryHandler,
    IQueryHandlerFactory,
    IRequestHandler,
)
from p2pblob.peer.server import IReleasable
from p2pblob.peer.wire import RATE_ACCEPTED, RATE_UNSET

__all__ = [
    "CHUNK_SIZE",
    "BlobAvailabilityHandler",
    "BlobAvailabilityHandlerFactory",
    "BlobRequestHandler",
    "BlobRequestHandlerFactory",
    "BlobUploadProducer",
    "Charges",
    "DEBT_LIMIT_REACHED",
    "FreeRatePolicy",
    "IPaymentRatePolicy",
    "WalletInfoHandler",
    "WalletInfoHandlerFactory",
]

_log = Logger()

CHUNK_SIZE = 256 * 1024
"""
The most bytes of a blob read from its file and written at once.
"""

DEBT_LIMIT_REACHED = "DEBT_LIMIT_REACHED"
"""
The C{incoming_blob} error sent to a peer whose unpaid debt is over the
limit (the same as L{p2pblob.wallet.exchange.DEBT_LIMIT_REACHED}).
"""


# ---------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------


@implementer(IQueryHandlerFactory)
class BlobAvailabilityHandlerFactory:
    """
    Answers C{requested_blobs} from C{store}.
    """

    def __init__(self, store: IBlobStore) -> None:
        self.store = store

    def build_query_handler(self) -> BlobAvailabilityHandler:
        return BlobAvailabilityHandler(self.store)


@implementer(IQueryHandler)
class BlobAvailabilityHandler:
    """
    Says which of the requested blobs the store holds.
    """

    IDENTIFIERS = ("requested_blobs",)

    def __init__(self, store: IBlobStore) -> None:
        self._store = store
        self._peer: Any = None

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        self._peer = peer
        request_handler.register_query_handler(self, list(self.IDENTIFIERS))

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        requested = queries["requested_blobs"]
        if not isinstance(requested, list):
            return fail(ProtocolViolationError(self._peer, "requested_blobs is not a list"))
        # anything that is not a blob hash is simply not available
        wanted = dict.fromkeys(h for h in requested if is_blob_hash(h))
        available = [h for h in wanted if self._store.has_blob(h)]
        return succeed({"available_blobs": available})


# ---------------------------------------------------------------------------
# Price and blob requests
# ---------------------------------------------------------------------------


class IPaymentRatePolicy(Interface):
    """
    Decides whether the price a peer offers for blob data is acceptable.
    """

    def judge_offer(offer: object) -> str:
        """
        Judge the C{blob_data_payment_rate} a peer offered.

        @param offer: the value the peer sent, as decoded from JSON (a
            number for a well-behaved peer, but anything may arrive).

        @return: the answer to send: L{p2pblob.peer.wire.RATE_ACCEPTED},
            L{p2pblob.peer.wire.RATE_TOO_LOW} or
            L{p2pblob.peer.wire.RATE_UNSET}.
        @rtype: C{str}
        """


@implementer(IPaymentRatePolicy)
class FreeRatePolicy:
    """
    Blob data is free: every offer is accepted, even one that is not a
    number (what lbry-sdk's server does).
    """

    def judge_offer(self, offer: object) -> str:
        return RATE_ACCEPTED


class Charges(Protocol):
    """
    What a paid-mode server charges for blobs
    (L{p2pblob.wallet.serving.BlobCharges}).
    """

    def check(self, peer: Any) -> None:
        """
        @raise DebtLimitError: C{peer} may not be sent another blob.
        """

    def served(self, peer: Any, length: int, rate: object) -> int:
        """
        Record that C{peer} was sent C{length} bytes at C{rate}.
        """


@implementer(IQueryHandlerFactory)
class BlobRequestHandlerFactory:
    """
    Answers C{blob_data_payment_rate} and C{requested_blob} from C{store},
    judging offers with C{rate_policy} (by default L{FreeRatePolicy}) and,
    in paid mode, charging for blobs with C{charges}.

    @ivar blobs_served: how many blobs the handlers it built have uploaded
        in full (an upload cut short is not counted).
    """

    def __init__(
        self,
        store: IBlobStore,
        rate_policy: IPaymentRatePolicy | None = None,
        charges: Charges | None = None,
    ) -> None:
        self.store = store
        self.rate_policy = rate_policy if rate_policy is not None else FreeRatePolicy()
        self.charges = charges
        self.blobs_served = 0

    def build_query_handler(self) -> BlobRequestHandler:
        return BlobRequestHandler(self.store, self.rate_policy, self.charges, self._served)

    def _served(self) -> None:
        self.blobs_served += 1


@implementer(IQueryHandler, IBlobSender, IReleasable)
class BlobRequestHandler:
    """
    Answers price offers and blob requests, and uploads the blob announced
    in the last response.

    @param served: called each time an upload is complete.
    """

    IDENTIFIERS = ("blob_data_payment_rate", "requested_blob")

    def __init__(
        self,
        store: IBlobStore,
        rate_policy: IPaymentRatePolicy,
        charges: Charges | None = None,
        served: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._rate_policy = rate_policy
        self._charges = charges
        self._served = served
        self._peer: Any = None
        # the offer accepted on this connection (paid mode only)
        self._rate: object = None
        self._rate_accepted = False
        # the upload announced in the last response, not started yet, and
        # the rate it is charged at
        self._pending: BlobUploadProducer | None = None
        self._pending_rate: object = None

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        self._peer = peer
        request_handler.register_query_handler(self, list(self.IDENTIFIERS))
        request_handler.register_blob_sender(self)

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        answer: dict[str, Any] = {}
        if "blob_data_payment_rate" in queries:
            offer = queries["blob_data_payment_rate"]
            verdict = self._rate_policy.judge_offer(offer)
            answer["blob_data_payment_rate"] = verdict
            # as LBRY's 2015 server: only an accepted offer is remembered
            self._rate_accepted = verdict == RATE_ACCEPTED
            self._rate = offer if self._rate_accepted else None
        if "requested_blob" in queries:
            blob_hash = queries["requested_blob"]
            if not isinstance(blob_hash, str):
                return fail(ProtocolViolationError(self._peer, "requested_blob is not a string"))
            refusal = self._refusal(blob_hash)
            if refusal is not None:
                answer["incoming_blob"] = {"error": refusal}
                return succeed(answer)
            return self._open(blob_hash).addCallback(self._offer, blob_hash, answer)
        return succeed(answer)

    def _offer(
        self, upload: BlobUploadProducer | None, blob_hash: str, answer: dict[str, Any]
    ) -> dict[str, Any]:
        """
        Announce the blob opened for this request, if it could be.
        """
        if upload is not None:
            self.release()
            self._pending = upload
            self._pending_rate = self._rate
            answer["incoming_blob"] = {"blob_hash": blob_hash, "length": upload.length}
        return answer

    def _refusal(self, blob_hash: str) -> str | None:
        """
        Why a blob may not be sent to this peer in paid mode, if it may not.
        """
        charges = self._charges
        if charges is None:
            return None
        if not self._rate_accepted:
            return RATE_UNSET
        try:
            charges.check(self._peer)
        except DebtLimitError as e:
            _log.info("Refusing blob {blob} to {peer}: {error}",
                      blob=blob_hash[:16], peer=str(self._peer), error=e)
            return DEBT_LIMIT_REACHED
        return None

    def _open(self, blob_hash: str) -> Deferred[BlobUploadProducer | None]:
        """
        Open a blob for uploading (a local file at once; a blob kept by a
        storage backend once fetched); L{None} if it cannot be sent.
        """
        if not is_blob_hash(blob_hash) or not self._store.has_blob(blob_hash):
            return succeed(None)
        try:
            blob = self._store.get_blob(blob_hash)
        except BlobNotFoundError:
            return succeed(None)

        def opened(file: BufferedIOBase) -> BlobUploadProducer:
            return BlobUploadProducer(blob_hash, file, blob.length)

        def unavailable(failure: Failure) -> None:
            if not failure.check(BlobNotFoundError):
                _log.warn("Cannot open blob {blob} for {peer}: {error}",
                          blob=blob_hash, peer=str(self._peer), error=failure.value)
            return None

        return blob.open().addCallbacks(opened, unavailable)

    def send_blob_if_requested(self, consumer: IConsumer) -> Deferred[None]:
        upload, self._pending = self._pending, None
        if upload is None:
            return succeed(None)
        _log.debug("Sending blob {blob} ({length} bytes) to {peer}",
                   blob=upload.blob_hash, length=upload.length, peer=str(self._peer))
        sent = upload.start(consumer)
        served = self._served
        if served is not None:
            sent.addCallback(lambda _: served())
        charges, rate = self._charges, self._pending_rate
        if charges is not None:

            def charge(result: None) -> None:
                try:
                    charges.served(self._peer, upload.length, rate)
                except Exception:
                    _log.failure("Could not record what {peer} owes for blob {blob}",
                                 peer=str(self._peer), blob=upload.blob_hash)

            sent.addCallback(charge)
        return sent

    def release(self) -> None:
        """
        Close the blob announced but not sent (the connection is closing).
        """
        upload, self._pending = self._pending, None
        if upload is not None:
            upload.close()


# ---------------------------------------------------------------------------
# Payment address
# ---------------------------------------------------------------------------


@implementer(IQueryHandlerFactory)
class WalletInfoHandlerFactory:
    """
    Answers C{lbrycrd_address} with C{address}.  No payment is ever asked
    for; LBRY clients ask for the address in every request all the same.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def build_query_handler(self) -> WalletInfoHandler:
        return WalletInfoHandler(self.address)


@implementer(IQueryHandler)
class WalletInfoHandler:
    """
    Gives the server's payment address.
    """

    IDENTIFIERS = ("lbrycrd_address",)

    def __init__(self, address: str) -> None:
        self._address = address

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        request_handler.register_query_handler(self, list(self.IDENTIFIERS))

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        return succeed({"lbrycrd_address": self._address})


# ---------------------------------------------------------------------------
# Uploading
# ---------------------------------------------------------------------------


@implementer(IPushProducer)
class BlobUploadProducer:
    """
    Writes exactly C{length} bytes of an open blob file to a consumer, one
    chunk of at most C{chunk_size} bytes at a time, for as long as the
    consumer does not pause it.

    The file is owned by the producer from construction on: it is closed
    when the upload ends, whichever way, or by L{close}.

    @ivar sent: bytes written so far.
    """

    def __init__(
        self, blob_hash: str, file: BufferedIOBase, length: int, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.blob_hash = blob_hash
        self.length = length
        self.sent = 0
        self._file = file
        self._chunk_size = chunk_size
        self._consumer: IConsumer | None = None
        self._paused = False
        self._writing = False
        self._finished = False
        self._done: Deferred[None] = Deferred(lambda d: self.close())

    def start(self, consumer: IConsumer) -> Deferred[None]:
        """
        Register with C{consumer} as a push producer and write as much as it
        takes.

        @return: a Deferred that fires with L{None} once all C{length} bytes
            have been written.  It fails with L{BlobNotFoundError} if the
            file ends early (the consumer then holds a truncated blob: the
            connection must be dropped), with
            L{twisted.internet.error.ConnectionLost} if the consumer stops
            the producer first, or with the error met reading the file.
            Cancelling it closes the file.
        """
        if self._consumer is not None:
            raise RuntimeError("an upload can only be started once")
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._write_chunks()
        return self._done

    def close(self) -> None:
        """
        Give up the upload and close the file (if the upload is still going).
        """
        if not self._finished:
            self._finished = True
            self._file.close()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write_chunks()

    def stopProducing(self) -> None:
        if self._finished:
            return
        self.close()
        self._done.errback(
            ConnectionLost(f"the connection was lost while blob {self.blob_hash[:16]}… was sent")
        )

    # writing

    def _write_chunks(self) -> None:
        # the consumer may pause or resume us from inside write(): the
        # _writing flag keeps a single loop running, which sees _paused
        if self._writing or self._finished or self._consumer is None:
            return
        self._writing = True
        try:
            while not self._finished:
                if self.sent == self.length:
                    self._end(None)
                    break
                if self._paused:
                    break
                chunk = self._file.read(min(self._chunk_size, self.length - self.sent))
                if not chunk:
                    _log.warn(
                        "Blob {blob} ended after {sent} of {length} bytes while it was sent",
                        blob=self.blob_hash, sent=self.sent, length=self.length,
                    )
                    self._end(Failure(BlobNotFoundError(self.blob_hash)))
                    break
                self.sent += len(chunk)
                self._consumer.write(chunk)
        except Exception:
            self._end(Failure())
        finally:
            self._writing = False

    def _end(self, failure: Failure | None) -> None:
        """
        Close the file, unregister from the consumer, and report.
        """
        if self._finished:
            return
        self.close()
        assert self._consumer is not None
        try:
            self._consumer.unregisterProducer()
        finally:
            if failure is None:
                self._done.callback(None)
            else:
                self._done.errback(failure)
