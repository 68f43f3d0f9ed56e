"""
The client side of one blob-exchange connection (C{spec/lbry-wire.md} 4.1,
4.3, 4.5), as a state machine (L{ClientState})::

    CONNECTING --connectionMade--> ASKING
    ASKING --manager fires True, requests queued: one message sent--> AWAITING_RESPONSE
    ASKING --manager fires False or fails, nothing queued, too big--> CLOSING (loseConnection)
    AWAITING_RESPONSE --response, no blob follows--> ASKING
    AWAITING_RESPONSE --response announcing N blob bytes--> RECEIVING_BLOB
    RECEIVING_BLOB --the N bytes are in--> ASKING
    any --violation, timeout, writer refusing bytes--> CLOSING (abortConnection)
    any --connectionLost--> CLOSED

Rules:
  - While ASKING, request creators queue requests; all go out as I{one} JSON
    object under C{CLIENT_MAX_REQUEST_SIZE} bytes (else L{RequestTooLargeError}:
    keeping requests small is the creators' job).  At most one blob request
    per message; one message in flight, never sent before the previous
    response and its blob bytes have all arrived.
  - A response is a non-empty object whose keys are LBRY's or a queued
    request's C{response_identifier}.  A plain request gets the whole
    response, or L{NoResponseError} if its key is absent.  A blob request
    whose answer lacks C{incoming_blob}, carries C{incoming_blob.error} or
    refuses the price gets L{BlobUnavailableError}; the connection stays
    usable (a blob announced anyway is read and dropped).  A wrong hash, a
    length not an int in 1..2 MiB or not the known length, a blob nobody
    asked for, bytes after a blobless response, bad or oversized JSON:
    L{ProtocolViolationError} to everything outstanding, and abort.
  - RECEIVING_BLOB hands exactly the announced bytes to
    C{ClientBlobRequest.write}, a whole read as it is (no copy); a cancelled
    request's bytes are dropped and the connection is reused.  Bytes beyond
    the blob (LBRY truncates them with a warning) abort the connection and
    count against the peer; the complete blob is judged by its hash.  Bytes
    with no request outstanding abort too.
  - No bytes for C{timeout} seconds while AWAITING_RESPONSE or
    RECEIVING_BLOB: L{PeerTimeoutError}, abort.  One timer re-arms itself
    from the time of the last read, so reads cost no timer work.
  - connectionLost fails everything outstanding (with the error we closed
    for, else the reason) and calls C{protocol_disconnected} exactly once.
  - With a rate limiter, every byte read and written is reported (through a
    L{ConnectionMeter}, under the peer's host), and so is the end of each
    blob body, for the per-stream figures.  Throttling downloads pauses the
    transport's reading (L{ReadingPauses}); while it is paused, the peer's
    silence is not held against it.  Uploads are requests of a few hundred
    bytes: they are counted, never held back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import (
    BlobUnavailableError,
    NoResponseError,
    PeerTimeoutError,
    ProtocolViolationError,
)
from p2pblob.interfaces import IConnectionManager, IRateLimited, IRateLimiter, IRequestSender
from p2pblob.peer._pausing import ReadingPauses
from p2pblob.peer.peer import Peer
from p2pblob.peer.requests import ClientBlobRequest, ClientRequest
from p2pblob.peer.wire import (
    CLIENT_MAX_REQUEST_SIZE,
    LBRY_RESPONSE_KEYS,
    MAX_RESPONSE_JSON_SIZE,
    RATE_ACCEPTED,
    FramingError,
    JSONObjectFramer,
    encode_request,
)
from p2pblob.ratelimit import ConnectionMeter

__all__ = ["BlobExchangeClient", "ClientState", "RequestTooLargeError"]

_log = Logger()

DEFAULT_TIMEOUT = 30.0
# Bytes per recv() asked of transports that have a bufferSize (Twisted's TCP
# reads 64 KiB by default).
READ_SIZE = 256 * 1024
# why a connection's reading is paused
_RATE_LIMIT = "rate limit"


class ClientState(enum.Enum):
    CONNECTING = "connecting"
    ASKING = "asking"
    AWAITING_RESPONSE = "awaiting response"
    RECEIVING_BLOB = "receiving blob"
    CLOSING = "closing"
    CLOSED = "closed"


class RequestTooLargeError(ValueError):
    """
    The requests queued for one message do not fit in the
    C{CLIENT_MAX_REQUEST_SIZE} bytes an LBRY server accepts (a bug in a
    request creator).
    """


class _Violation(Exception):
    pass


class _Message:
    """
    The requests that go out (or went out) together in one message.
    """

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.requests: list[tuple[ClientRequest, Deferred[dict[str, Any]]]] = []
        self.blob: tuple[ClientBlobRequest, Deferred[dict[str, Any]]] | None = None

    def merge(self, request: ClientRequest) -> None:
        for key, value in request.request_dict.items():
            if key in self.fields and self.fields[key] != value:
                raise ValueError(f"two queued requests give {key!r} different values")
        self.fields.update(request.request_dict)

    def fail(self, error: Failure | BaseException) -> None:
        for _, d in self.requests:
            if not d.called:
                d.errback(error)
        self.requests = []
        if self.blob is not None:
            blob_request, d = self.blob
            self.blob = None
            if not d.called:
                d.errback(error)
            blob_request.fail(error)


def _discard(data: bytes) -> None:
    pass


@implementer(IRequestSender, IRateLimited)
class BlobExchangeClient(Protocol):
    """
    One connection to one peer, sending what the connection manager's request
    creators queue and handing back the answers and blob bytes.

    @ivar peer: the L{Peer} at the other end.
    @ivar timeout: seconds of silence tolerated while an answer or blob bytes
        are due.
    @ivar bytes_received: every byte read on this connection.
    @ivar bytes_sent: every byte written on this connection.
    @ivar blob_started_at: C{clock.seconds()} when the current (or last)
        blob's body started, or L{None} before any; with C{blob_length} and
        C{blob_remaining} a request creator can compute the peer's rate.
    @ivar blob_length: the announced length of that blob (0 before any).
    """

    def __init__(
        self,
        peer: Peer,
        connection_manager: IConnectionManager,
        clock: IReactorTime,
        timeout: float = DEFAULT_TIMEOUT,
        rate_limiter: IRateLimiter | None = None,
    ) -> None:
        self.peer = peer
        self.timeout = timeout
        self.bytes_received = 0
        self.bytes_sent = 0
        self.blob_started_at: float | None = None
        self.blob_length = 0
        self._connection_manager = connection_manager
        self._clock = clock
        self._rate_limiter = rate_limiter
        self._meter: ConnectionMeter | None = None
        self._reading = ReadingPauses()
        # the blob whose body is arriving, for the per-stream figures
        self._body_blob: str | None = None
        self._state = ClientState.CONNECTING
        self._framer = JSONObjectFramer(MAX_RESPONSE_JSON_SIZE)
        self._queued = _Message()
        self._in_flight: _Message | None = None
        self._remaining = 0
        self._sink: Callable[[bytes], None] = _discard
        self._timer: IDelayedCall | None = None
        self._last_activity = 0.0
        self._close_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<BlobExchangeClient {self.peer} {self._state.value}>"

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def blob_remaining(self) -> int:
        """
        Bytes of the current blob still to arrive (0 when none is arriving).
        """
        return self._remaining

    # IRequestSender

    def add_request(self, request: ClientRequest) -> Deferred[dict[str, Any]]:
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            return fail(self._close_error or ConnectionDone("the connection is closed"))
        self._queued.merge(request)
        d: Deferred[dict[str, Any]] = Deferred()
        self._queued.requests.append((request, d))
        return d

    def add_blob_request(self, blob_request: ClientBlobRequest) -> Deferred[dict[str, Any]]:
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            error = self._close_error or ConnectionDone("the connection is closed")
            blob_request.fail(error)
            return fail(error)
        if self._queued.blob is not None:
            raise ValueError("only one blob request may go in a message")
        self._queued.merge(blob_request)
        d: Deferred[dict[str, Any]] = Deferred()
        self._queued.blob = (blob_request, d)
        return d

    # IRateLimited

    def throttle_upload(self) -> None:
        pass

    def unthrottle_upload(self) -> None:
        pass

    def throttle_download(self) -> None:
        self._reading.pause(_RATE_LIMIT)

    def unthrottle_download(self) -> None:
        # the time we did not read is not the peer's silence
        self._last_activity = self._clock.seconds()
        self._reading.resume(_RATE_LIMIT)

    # the connection

    def connectionMade(self) -> None:
        if getattr(self.transport, "bufferSize", READ_SIZE) < READ_SIZE:
            setattr(self.transport, "bufferSize", READ_SIZE)  # noqa: B010 (not in ITransport)
        self._reading.attach(IPushProducer(self.transport, None))
        if self._rate_limiter is not None:
            self._meter = ConnectionMeter(self._rate_limiter, self, self.peer.host)
        self._ask()

    def dataReceived(self, data: bytes) -> None:
        size = len(data)
        self.bytes_received += size
        self._last_activity = self._clock.seconds()
        if self._meter is not None:
            self._meter.received(size)
        state = self._state
        if state is ClientState.RECEIVING_BLOB:
            self._receive_body(data)
        elif state is ClientState.AWAITING_RESPONSE:
            self._receive_response(data)
        elif size and (state is ClientState.ASKING or state is ClientState.CONNECTING):
            self._violation(f"{size} bytes arrived with no request outstanding")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._state is ClientState.CLOSED:
            return
        self._blob_ended()
        self._state = ClientState.CLOSED
        self._reading.detach()
        self._cancel_timer()
        error: Failure | BaseException = self._close_error or reason
        self._fail_outstanding(error)
        if self._meter is not None:
            self._meter.close()
        self._connection_manager.protocol_disconnected(self.peer, self)

    # asking and sending

    def _ask(self) -> None:
        self._blob_ended()
        self._state = ClientState.ASKING
        self._in_flight = None
        self._remaining = 0
        self._sink = _discard
        d = maybeDeferred(self._connection_manager.get_next_request, self.peer, self)
        d.addCallbacks(self._send, self._ask_failed)

    def _ask_failed(self, failure: Failure) -> None:
        _log.failure("Asking for the next request to {peer} failed", failure, peer=self.peer)
        if self._state is ClientState.ASKING:
            self._close(None, abort=False)

    def _send(self, more: bool) -> None:
        if self._state is not ClientState.ASKING:
            return
        message = self._queued
        if not more or not (message.requests or message.blob):
            self._close(None, abort=False)
            return
        self._queued = _Message()
        data = encode_request(message.fields)
        if len(data) >= CLIENT_MAX_REQUEST_SIZE:
            error = RequestTooLargeError(f"{len(data)} bytes; must be < {CLIENT_MAX_REQUEST_SIZE}")
            message.fail(error)
            self._close(error, abort=False)
            return
        self._in_flight = message
        self._state = ClientState.AWAITING_RESPONSE
        self._last_activity = self._clock.seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self.timeout, self._check_timeout)
        assert self.transport is not None
        self.transport.write(data)
        self.bytes_sent += len(data)
        if self._meter is not None:
            self._meter.sent(len(data))

    # receiving

    def _receive_response(self, data: bytes) -> None:
        try:
            parsed = self._framer.feed(data)
        except FramingError as e:
            self._violation(str(e))
            return
        if parsed is None:
            return
        response, rest = parsed
        message = self._in_flight
        assert message is not None
        try:
            length, refusal = self._judge(message, response, rest)
        except _Violation as v:
            self._violation(str(v))
            return
        if length:
            assert message.blob is not None
            self._state = ClientState.RECEIVING_BLOB
            self._remaining = self.blob_length = length
            self.blob_started_at = self._last_activity
            self._body_blob = message.blob[0].blob_hash
        expected = self._state
        for request, d in message.requests:
            if self._state is not expected:
                return  # a callback closed the connection
            key = request.response_identifier
            if key is None or key in response:
                d.callback(response)
            else:
                d.errback(NoResponseError(self.peer, key))
        message.requests = []
        if message.blob is not None and self._state is expected:
            self._answer_blob(message, response, length, refusal)
        if self._state is not expected:
            return  # a callback closed the connection
        if not length:
            self._ask()
        elif rest:
            self._receive_body(rest)

    def _judge(
        self, message: _Message, response: dict[str, Any], rest: bytes
    ) -> tuple[int, BlobUnavailableError | None]:
        """
        Check a response against the message it answers: how many blob bytes
        follow it, and why the blob request (if any) is refused.

        @raise _Violation: the response breaks the protocol.
        """
        if not response:
            raise _Violation("the response is an empty object")
        allowed = LBRY_RESPONSE_KEYS.union(
            request.response_identifier
            for request, _ in message.requests
            if request.response_identifier is not None
        )
        unexpected = response.keys() - allowed
        if unexpected:
            raise _Violation(f"unexpected response keys {sorted(unexpected)!r:.200}")
        incoming = response.get("incoming_blob")
        announced = isinstance(incoming, dict) and "error" not in incoming
        if message.blob is None:
            if announced:
                raise _Violation("it announced a blob we did not ask for")
            length, refusal = 0, None
        else:
            length, refusal = self._judge_blob(message.blob[0], response, incoming)
        if rest and not length:
            raise _Violation(f"{len(rest)} bytes followed a response announcing no blob")
        return length, refusal

    def _judge_blob(
        self, blob_request: ClientBlobRequest, response: dict[str, Any], incoming: Any
    ) -> tuple[int, BlobUnavailableError | None]:
        blob_hash = blob_request.blob_hash
        rate = response.get("blob_data_payment_rate", RATE_ACCEPTED)
        refusal = None
        if rate != RATE_ACCEPTED:
            refusal = BlobUnavailableError(
                self.peer, blob_hash, f"price not accepted: {rate!r:.40}"
            )
        if "incoming_blob" not in response:
            return 0, refusal or BlobUnavailableError(self.peer, blob_hash)
        if not isinstance(incoming, dict):
            raise _Violation(f"incoming_blob is {incoming!r:.60}, not an object")
        if "error" in incoming:
            return 0, BlobUnavailableError(self.peer, blob_hash, f"{incoming['error']!s:.60}")
        if incoming.get("blob_hash") != blob_hash:
            raise _Violation(
                f"it announced blob {incoming.get('blob_hash')!r:.100} instead of {blob_hash[:16]}…"
            )
        length = incoming.get("length")
        if type(length) is not int:
            raise _Violation(f"blob length {length!r:.40} is not an integer")
        if not 0 < length <= MAX_BLOB_SIZE:
            raise _Violation(f"blob length {length} is not in 1..{MAX_BLOB_SIZE}")
        if blob_request.length is not None and length != blob_request.length:
            raise _Violation(f"blob length {length} is not the known {blob_request.length}")
        return length, refusal

    def _answer_blob(
        self,
        message: _Message,
        response: dict[str, Any],
        length: int,
        refusal: BlobUnavailableError | None,
    ) -> None:
        assert message.blob is not None
        blob_request, d = message.blob
        if refusal is not None:
            d.errback(refusal)
            blob_request.fail(refusal)
            return
        d.callback(response)
        try:
            blob_request.start(length)
        except Exception as e:
            _log.warn("No writer for blob {blob}: {error}", blob=blob_request.blob_hash, error=e)
            blob_request.fail(Failure())
            return
        if self._state is ClientState.RECEIVING_BLOB:
            self._sink = blob_request.write

    def _receive_body(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self._write(data)
            return
        surplus = len(data) - remaining
        self._remaining = 0
        self._write(memoryview(data)[:remaining] if surplus else data)
        if self._state is not ClientState.RECEIVING_BLOB:
            return
        if surplus:
            self._surplus(surplus)
        else:
            self._ask()

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._sink(data)  # type: ignore[arg-type]  # the writers take any buffer
        except Exception as e:
            self._close(e)

    def _surplus(self, surplus: int) -> None:
        error = ProtocolViolationError(self.peer, f"{surplus} bytes followed the blob")
        self.peer.report_failure(self._clock.seconds())
        self._in_flight = None  # the blob itself is complete
        self._close(error)

    # closing

    def _check_timeout(self) -> None:
        self._timer = None
        if self._state not in (ClientState.AWAITING_RESPONSE, ClientState.RECEIVING_BLOB):
            return
        if self._reading.paused:
            # we are not reading: the peer cannot be blamed for silence
            self._timer = self._clock.callLater(self.timeout, self._check_timeout)
            return
        left = self.timeout - (self._clock.seconds() - self._last_activity)
        if left > 1e-6:
            self._timer = self._clock.callLater(left, self._check_timeout)
            return
        self._close(PeerTimeoutError(self.peer, self.timeout))

    def _violation(self, reason: str) -> None:
        self._close(ProtocolViolationError(self.peer, reason))

    def _close(self, error: BaseException | None, abort: bool = True) -> None:
        """
        Fail everything outstanding with C{error} (if given) and close.
        """
        if error is not None:
            _log.warn("Closing the connection to {peer}: {error}", peer=self.peer, error=error)
        self._blob_ended()
        self._state = ClientState.CLOSING
        self._reading.detach()
        self._close_error = error
        self._cancel_timer()
        if error is not None:
            self._fail_outstanding(error)
        assert self.transport is not None
        abort_connection = getattr(self.transport, "abortConnection", None)
        if abort and abort_connection is not None:
            abort_connection()
        else:
            self.transport.loseConnection()

    def _fail_outstanding(self, error: Failure | BaseException) -> None:
        message, self._in_flight = self._in_flight, None
        if message is not None:
            message.fail(error)
        queued, self._queued = self._queued, _Message()
        queued.fail(error)

    def _blob_ended(self) -> None:
        """
        Report the body bytes of the blob that was arriving, if any.
        """
        blob, self._body_blob = self._body_blob, None
        if blob is not None and self._meter is not None:
            self._meter.blob(blob, received=self.blob_length - self._remaining)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
