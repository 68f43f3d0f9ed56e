"""
The server side of the blob exchange: a L{BlobServerFactory} makes one
L{BlobServerProtocol} per connection.

The protocol knows no request key itself.  When a connection opens, each
query-handler factory builds a handler for it (L{p2pblob.peer.handlers}),
which registers the request keys it answers and, if it uploads blobs,
registers as an L{IBlobSender}.  For each request the protocol gives every
handler the keys it registered, merges their answers into one response,
writes it, then lets each blob sender upload what it announced.  Then it
waits for the next request on the same connection (keep-alive).

A connection is in one of three states: C{WAITING} for a request (bytes go
to a L{JSONObjectFramer} bounded by C{max_request_size}), C{ANSWERING} one
(handlers are working or a blob is being sent), or C{CLOSED}.  As lbry-sdk's
server does, anything it cannot take is answered by closing the connection
without a reply: a message that is too large, not a JSON object or not
valid UTF-8 JSON; a request with no query this server answers; bytes after
a complete request (pipelining: a client must wait for the whole answer,
blob included, before it sends again).  A handler that fails also closes
the connection.  Nothing a peer sends can raise out of L{dataReceived}.

Every byte sent goes through an L{UploadChannel}, which counts it for the
rate limiter and stands between the transport and the blob producer: the
producer runs only while the transport wants data I{and} the rate limiter
has not throttled uploads.  A connection throttled for downloads stops
reading its transport (L{ReadingPauses}).  The connection reports to the
rate limiter through a L{ConnectionMeter}, under the peer's host.

A connection that sends no complete request for C{idle_timeout} seconds
(from its opening, or from the end of the last answer) is closed; partial
requests do not reset the timer, so a peer cannot hold a connection open by
trickling bytes.  While an answer is being sent a transfer timer runs
instead: a peer that takes no bytes for C{transfer_timeout} seconds (lbry-sdk:
60) is cut off.
The factory refuses a connection from an address that already has
C{max_connections_per_ip} open.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from p2pblob.errors import P2PBlobError
from p2pblob.interfaces import (
    IBlobSender,
    IQueryHandler,
    IQueryHandlerFactory,
    IRateLimited,
    IRateLimiter,
    IRequestHandler,
)
from p2pblob.peer._channel import UploadChannel
from p2pblob.peer._pausing import ReadingPauses
from p2pblob.peer.peer import Peer
from p2pblob.peer.wire import (
    DEFAULT_MAX_REQUEST_SIZE,
    FramingError,
    JSONObjectFramer,
    encode_response,
)
from p2pblob.ratelimit import ConnectionMeter

__all__ = ["BlobServerFactory", "BlobServerProtocol", "IReleasable"]

_log = Logger()

_WHITESPACE = b" \t\r\n"
# why a connection's reading is paused
_RATE_LIMIT = "rate limit"


class IReleasable(Interface):
    """
    A query handler holding resources for its connection (an open blob
    file, say) that must be let go when the connection closes.
    """

    def release() -> None:
        """
        Let go of whatever is held for the connection; called once, when
        the connection has been lost.

        @return: C{None}
        """


class _State(Enum):
    WAITING = "waiting for a request"
    ANSWERING = "answering a request"
    CLOSED = "closed"


@implementer(IRequestHandler, IRateLimited)
class BlobServerProtocol(Protocol):
    """
    One connection from a peer: reads its requests, has them answered by
    the query handlers, and sends the answers and blobs back.

    @ivar peer: the remote end of the connection.
    @ivar ip: the remote address, as counted against the per-address limit.
    @ivar closed: a Deferred that fires with L{None} once the connection has
        been lost.
    """

    def __init__(self, factory: BlobServerFactory, address: IAddress | None) -> None:
        self.factory = factory
        self._factory = factory
        self.peer = _peer_of(address)
        self.ip = _ip_of(address)
        self._label = str(self.peer)
        self._framer = JSONObjectFramer(factory.max_request_size)
        self._state = _State.WAITING
        self._routes: dict[str, IQueryHandler] = {}
        self._handlers: list[IQueryHandler] = []
        self._blob_senders: list[IBlobSender] = []
        self._channel: UploadChannel | None = None
        self._idle_call: IDelayedCall | None = None
        self._answering: Deferred[None] | None = None
        self._meter: ConnectionMeter | None = None
        self._reading = ReadingPauses()
        self._lost = False
        self.closed: Deferred[None] = Deferred()

    # IRequestHandler

    def register_query_handler(
        self, query_handler: IQueryHandler, query_identifiers: list[str]
    ) -> None:
        for identifier in query_identifiers:
            if self._routes.get(identifier, query_handler) is not query_handler:
                raise ValueError(f"two query handlers answer {identifier!r}")
            self._routes[identifier] = query_handler
        if not any(h is query_handler for h in self._handlers):
            self._handlers.append(query_handler)

    def register_blob_sender(self, blob_sender: IBlobSender) -> None:
        self._blob_senders.append(blob_sender)

    # IRateLimited

    def throttle_upload(self) -> None:
        if self._channel is not None:
            self._channel.throttle()

    def unthrottle_upload(self) -> None:
        if self._channel is not None:
            self._channel.unthrottle()

    def throttle_download(self) -> None:
        self._reading.pause(_RATE_LIMIT)

    def unthrottle_download(self) -> None:
        self._reading.resume(_RATE_LIMIT)

    # connection life cycle

    @property
    def _transport(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        self._reading.attach(IPushProducer(self.transport, None))
        # the channel first: the rate limiter may throttle us as we register
        self._channel = UploadChannel(self.transport, self._factory.clock)
        rate_limiter = self._factory.rate_limiter
        try:
            if rate_limiter is not None:
                self._meter = self._channel.meter = ConnectionMeter(rate_limiter, self, self.ip)
            for handler_factory in self._factory.query_handler_factories:
                handler = handler_factory.build_query_handler()
                handler.register_with_request_handler(self, self.peer)
        except Exception:
            _log.failure("Could not set up a connection from {peer}", peer=self._label)
            self._close(abort=True)
            return
        _log.debug("Connection from {peer}", peer=self._label)
        self._start_idle_timer()

    def dataReceived(self, data: bytes) -> None:
        if self._meter is not None:
            self._meter.received(len(data))
        try:
            self._received(data)
        except Exception:
            _log.failure("Unexpected error reading from {peer}", peer=self._label)
            self._close(abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self._state = _State.CLOSED
        self._stop_idle_timer()
        self._reading.detach()
        if self._channel is not None:
            self._channel.stopProducing()
        answering, self._answering = self._answering, None
        if answering is not None:
            answering.cancel()
        for handler in self._handlers:
            if IReleasable.providedBy(handler):
                try:
                    handler.release()
                except Exception:
                    _log.failure("A query handler for {peer} failed to close", peer=self._label)
        self._handlers.clear()
        self._routes.clear()
        self._blob_senders.clear()
        if self._meter is not None:
            self._meter.close()
        self._factory._connection_lost(self)
        _log.debug("Connection from {peer} closed", peer=self._label)
        self.closed.callback(None)

    def close(self) -> None:
        """
        Close the connection: at once if a blob is being sent, else once
        what has been written is sent.
        """
        self._close(abort=False)

    def _closing(self) -> bool:
        return self._state is _State.CLOSED

    def _close(self, abort: bool) -> None:
        if self._closing():
            return
        self._state = _State.CLOSED
        self._stop_idle_timer()
        # closing: the rate limiter no longer pauses or resumes the reading
        self._reading.detach()
        if self.transport is None:
            # built but never connected
            self.connectionLost()
        elif abort or (self._channel is not None and self._channel.busy):
            self._transport.abortConnection()
        else:
            self._transport.loseConnection()

    def _refuse(self, reason: str) -> None:
        _log.info(
            "Closing the connection from {peer} without reply: {reason}",
            peer=self._label, reason=reason,
        )
        self._close(abort=False)

    # idle timeout

    def _start_idle_timer(self) -> None:
        self._stop_idle_timer()
        timeout = self._factory.idle_timeout
        if timeout is not None and not self._closing():
            self._idle_call = self._factory.clock.callLater(timeout, self._idle)

    def _stop_idle_timer(self) -> None:
        call, self._idle_call = self._idle_call, None
        if call is not None and call.active():
            call.cancel()

    def _start_transfer_timer(self) -> None:
        """
        While an answer is being sent, the idle timer watches the upload
        instead: a peer that stops reading for C{transfer_timeout} seconds
        is cut off (it would hold a connection and an open blob forever).
        """
        self._stop_idle_timer()
        timeout = self._factory.transfer_timeout
        if timeout is not None and not self._closing():
            self._idle_call = self._factory.clock.callLater(timeout, self._check_transfer)

    def _check_transfer(self) -> None:
        self._idle_call = None
        timeout = self._factory.transfer_timeout
        assert timeout is not None and self._channel is not None
        stalled = self._factory.clock.seconds() - self._channel.last_write
        if self._state is not _State.ANSWERING or self._closing():
            return
        if self._channel.throttled:
            # held by our own rate limiter: not the peer's silence
            stalled = 0.0
        if stalled >= timeout:
            _log.info(
                "Aborting the connection from {peer}: it read nothing for {seconds:g} seconds",
                peer=self._label, seconds=timeout,
            )
            self._close(abort=True)
        else:
            self._idle_call = self._factory.clock.callLater(timeout - stalled, self._check_transfer)

    def _idle(self) -> None:
        self._idle_call = None
        _log.info(
            "Closing the connection from {peer}: no request for {seconds:g} seconds",
            peer=self._label, seconds=self._factory.idle_timeout,
        )
        self._close(abort=False)

    # requests

    def _received(self, data: bytes) -> None:
        if self._closing():
            return
        if self._state is _State.ANSWERING:
            if data.strip(_WHITESPACE):
                self._refuse("it sent more data before its request was fully answered")
            return
        try:
            parsed = self._framer.feed(data)
        except FramingError as e:
            self._refuse(str(e))
            return
        except (ValueError, RecursionError) as e:
            # what json itself refuses: nesting too deep for the decoder,
            # integers too long to convert
            self._refuse(f"message cannot be decoded ({e})")
            return
        if parsed is None:
            return
        request, rest = parsed
        if rest.strip(_WHITESPACE):
            self._refuse("it sent more data before its request was answered")
            return
        routed = self._route(request)
        if not routed:
            self._refuse("its request has no query this server answers")
            return
        self._state = _State.ANSWERING
        self._stop_idle_timer()
        answering = Deferred.fromCoroutine(self._answer(routed))
        answering.addErrback(self._answer_failed)
        if not answering.called:
            self._answering = answering

    def _route(self, request: dict[str, Any]) -> list[tuple[IQueryHandler, dict[str, Any]]]:
        """
        Split C{request} among the handlers, in their registration order;
        keys nobody registered are dropped.
        """
        routed = []
        for handler in self._handlers:
            queries = {k: v for k, v in request.items() if self._routes.get(k) is handler}
            if queries:
                routed.append((handler, queries))
        return routed

    async def _answer(self, routed: list[tuple[IQueryHandler, dict[str, Any]]]) -> None:
        try:
            answers: list[dict[str, Any]] = await gatherResults(
                [maybeDeferred(handler.handle_queries, queries) for handler, queries in routed],
                consumeErrors=True,
            )
        except FirstError as e:
            if not self._closing():
                self._handler_failed(e.subFailure)
            return
        if self._closing():
            return
        response: dict[str, Any] = {}
        for answer in answers:
            response.update(answer)
        if "available_blobs" in response and "lbrycrd_address" not in response:
            # lbry-sdk's server does this (its availability answer defaults
            # the address to true); done too so that our bytes match
            response["lbrycrd_address"] = True
        assert self._channel is not None
        self._channel.write(encode_response(response))
        self._start_transfer_timer()
        for sender in list(self._blob_senders):
            try:
                await sender.send_blob_if_requested(self._channel)
            except (ConnectionLost, ConnectionDone):
                _log.info("The connection from {peer} was lost during an upload",
                          peer=self._label)
                return
            except Exception as e:
                if not self._closing():
                    _log.warn("Aborting the connection from {peer}: the upload failed: {error}",
                              peer=self._label, error=e)
                    self._close(abort=True)
                return
            if self._closing():
                return
        self._answering = None
        self._state = _State.WAITING
        self._stop_idle_timer()
        self._start_idle_timer()

    def _handler_failed(self, failure: Failure) -> None:
        if failure.check(P2PBlobError):
            _log.info("Closing the connection from {peer}: {error}",
                      peer=self._label, error=failure.value)
        else:
            _log.failure("A query handler failed answering {peer}", failure, peer=self._label)
        self._close(abort=False)

    def _answer_failed(self, failure: Failure) -> None:
        if self._closing():
            return
        _log.failure("Unexpected error answering {peer}", failure, peer=self._label)
        self._close(abort=True)


class BlobServerFactory(ServerFactory):
    """
    Makes a L{BlobServerProtocol} for each connection, answering with
    handlers from C{query_handler_factories}.

    @param clock: times idle connections.
    @param max_request_size: a request of this many bytes or more closes
        the connection (lbry-sdk's server: 1200).
    @param idle_timeout: seconds a connection may go without a complete
        request; L{None} for no limit.
    @param max_connections_per_ip: connections one address may hold open
        at once; L{None} for no limit.
    @param transfer_timeout: seconds an upload may go without the peer
        taking any bytes; L{None} for no limit.
    @param rate_limiter: what every connection reports its traffic to and
        is throttled by, if anything.
    """

    def __init__(
        self,
        query_handler_factories: Sequence[IQueryHandlerFactory],
        clock: IReactorTime,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        idle_timeout: float | None = 30.0,
        max_connections_per_ip: int | None = 8,
        rate_limiter: IRateLimiter | None = None,
        transfer_timeout: float | None = 60.0,
    ) -> None:
        self.query_handler_factories = list(query_handler_factories)
        self.transfer_timeout = transfer_timeout
        self.clock = clock
        self.max_request_size = max_request_size
        self.idle_timeout = idle_timeout
        self.max_connections_per_ip = max_connections_per_ip
        self.rate_limiter = rate_limiter
        # remote IP -> its open connections
        self._connections: dict[str, set[BlobServerProtocol]] = {}

    @property
    def open_connections(self) -> int:
        """
        How many connections are open.
        """
        return sum(len(c) for c in self._connections.values())

    def connections_from(self, ip: str) -> int:
        """
        How many connections from C{ip} are open.
        """
        return len(self._connections.get(ip, ()))

    def buildProtocol(self, addr: IAddress | None) -> BlobServerProtocol | None:
        ip = _ip_of(addr)
        count = self.connections_from(ip)
        limit = self.max_connections_per_ip
        if limit is not None and count >= limit:
            _log.info(
                "Refusing a connection from {ip}: it already has {count} open",
                ip=ip, count=count,
            )
            return None
        protocol = BlobServerProtocol(self, addr)
        self._connections.setdefault(ip, set()).add(protocol)
        return protocol

    def close_all(self) -> Deferred[None]:
        """
        Close every open connection.

        @return: a Deferred that fires with L{None} once they are all lost.
        """
        protocols = [p for c in self._connections.values() for p in c]
        for protocol in protocols:
            protocol.close()
        closed: Deferred[Any] = DeferredList([p.closed for p in protocols])
        return closed.addCallback(lambda _: None)

    def _connection_lost(self, protocol: BlobServerProtocol) -> None:
        connections = self._connections.get(protocol.ip)
        if connections is not None:
            connections.discard(protocol)
            if not connections:
                del self._connections[protocol.ip]


def _ip_of(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else str(address)


def _peer_of(address: IAddress | None) -> Peer:
    port = getattr(address, "port", None)
    return Peer(_ip_of(address), port if isinstance(port, int) else 0)
