"""
Request bodies handed to the resource as they arrive, instead of spooled.

twisted.web reads a request's whole body before it renders anything,
keeping it in memory or, above 100,000 bytes, in a temporary file.  An
upload of several gigabytes would then fill a temporary directory, and be
published only once it had all arrived.  L{streaming_site} makes a L{Site}
whose requests (L{StreamingRequest}) ask a C{route} function, as soon as a
request's headers are in, whether its body goes to an L{IBodyReceiver}; if
so, the body goes to the receiver chunk by chunk as it comes off the socket
(with a C{Content-Length} or with C{Transfer-Encoding: chunked}), nothing
of it is kept (C{request.content} stays empty), and the request is rendered
as usual once the body has ended.  Other requests are read and rendered
exactly as twisted.web always does.

Backpressure: when the receiver's C{body_chunk} answers a L{Deferred}, the
request stops the transport from reading (C{pauseProducing}) until the
Deferred fires; bytes already read meanwhile (at most a socket read, 64 kB)
are held and handed over in order afterwards.  A receiver is never given a
chunk before the Deferred of the one before has fired, so a slow receiver
makes the sender wait, and memory stays flat whatever the body's size.  (The
site's idle C{timeout}, 12 hours by default, still runs while a receiver
holds a chunk: a receiver stuck longer loses the connection.)

A receiver's life, each call at most once but C{body_chunk}:
C{body_started}, then C{body_chunk} any number of times, then either
C{body_finished} (the body is complete; the request is then rendered) or
C{body_lost} (the connection closed first: a body shorter than its
C{Content-Length}, a malformed chunked body, a client gone, a timeout).

 - The receiver refuses the body by setting an error status (400 or more)
   on the request in C{body_started}; the request says so in
   L{StreamingRequest.body_refused}, and the resource renders the refusal.
   The body is then thrown away as it arrives, except that a request with
   C{Expect: 100-continue} gets no C{100 Continue}: it is rendered at once,
   without reading the body, and its connection is closed after the answer
   (the client may send the body nonetheless).
 - A receiver that fails (C{body_chunk} raises, or its Deferred fails) is
   given nothing more: the failure is kept in
   L{StreamingRequest.body_failure}, the rest of the body is read and
   thrown away, and the request is rendered once the body has ended.  (So
   is one whose C{body_finished} raises.)  Such a failure is only logged
   at the info level: reporting it, and logging it as an error if it is
   a bug, is the resource's job.
 - A route or C{body_started} that raises is a bug: it is logged, the body
   is refused, and the request is answered 500 without being rendered.

HTTP/1.1 only: a request that arrives over HTTP/2 (possible only with TLS
and ALPN) is buffered as usual.

This relies on details of twisted.web (26.x) that are not public API, each
pinned by a test in C{tests/http/test_body.py} (C{TwistedInternalsTests}):

 1. L{twisted.web.http.HTTPChannel} calls C{gotLength} on the request
    from C{allHeadersReceived}, once every header is in and before it
    checks C{Expect: 100-continue}; at that moment the request's method
    and target are only on the channel, as its private C{_command} and
    C{_path}.  The route is asked there, with those.
 2. C{handleContentChunk} receives the decoded body and
    C{requestReceived} is called once it has all arrived (the channel's
    documented contract with its requests); it is delayed until the
    receiver has had every chunk.
 3. Removing the C{Expect} header from C{requestHeaders} in C{gotLength}
    keeps the channel from sending C{100 Continue}.
 4. Calling the channel's C{allContentReceived} ends the body at once (it
    then renders the request and buffers what the client still sends),
    and setting its C{persistent} to false makes it close the connection
    after the answer; C{callLater} is the channel's C{TimeoutMixin} one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import INTERNAL_SERVER_ERROR, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from p2pblob.interfaces import IBodyReceiver

__all__ = ["BodyRoute", "StreamingRequest", "StreamingSite", "streaming_site"]

_log = Logger()

BodyRoute = Callable[[bytes, bytes, Headers], "IBodyReceiver | None"]
"""
C{route(method, target, headers)}: the receiver of a request's body, or
L{None} to have it buffered as twisted.web does.  C{target} is the request
target as sent (the path and the query, as C{request.uri} will be).
"""


class StreamingRequest(Request):
    """
    A request whose body may go to an L{IBodyReceiver} as it arrives.

    @ivar body_receiver: the receiver the route gave, or L{None} if the body
        is buffered as usual (in C{content}).
    @ivar body_refused: whether the body was refused (by the receiver, or
        because the route or the receiver raised).
    @ivar body_failure: why the receiver gave up mid-body, or L{None}.
    @ivar body_received: body bytes handed to the receiver so far.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_receiver: IBodyReceiver | None = None
        self.body_refused = False
        self.body_failure: Failure | None = None
        self.body_received = 0
        # "buffered" (as twisted.web does), "receiving", then "finished" or
        # "lost"; or "refused" (thrown away) or "failed" (the receiver gave
        # up; the rest is thrown away)
        self._body_state = "buffered"
        self._broken: Failure | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._waiting: Deferred[None] | None = None
        self._delivering = False
        self._paused = False
        # the arguments of requestReceived, kept until the receiver has
        # had every chunk
        self._ended: tuple[bytes, bytes, bytes] | None = None
        self._rendered = False
        self._target = b""

    @property
    def body_buffered(self) -> int:
        """
        Body bytes read from the connection but not yet handed to the
        receiver (while it is busy with a chunk).
        """
        return self._queued

    # the channel's side

    def gotLength(self, length: int | None) -> None:
        """
        The headers are in: ask the route where the body goes.
        """
        try:
            receiver = self._route()
        except Exception:
            self._broken = Failure()
            _log.failure("Routing the body of a request failed", self._broken)
            self._refuse(length)
            return
        if receiver is None:
            super().gotLength(length)
            return
        self.content = BytesIO()
        self.body_receiver = receiver
        self._body_state = "receiving"
        try:
            receiver.body_started(self)
        except Exception:
            self._broken = Failure()
            _log.failure("A body receiver failed to start", self._broken)
        if self._broken is not None or self.code >= 400:
            self._refuse(length)

    def _route(self) -> IBodyReceiver | None:
        route = getattr(getattr(self.channel, "site", None), "route", None)
        if route is None or not isinstance(self.channel, HTTPChannel):
            return None
        method = getattr(self.channel, "_command", None)
        target = getattr(self.channel, "_path", None)
        if not isinstance(method, bytes) or not isinstance(target, bytes):
            return None
        self._target = target
        receiver: IBodyReceiver | None = route(method, target, self.requestHeaders)
        return receiver

    def _refuse(self, length: int | None) -> None:
        if self.content is None:
            self.content = BytesIO()
        self._body_state = "refused"
        self.body_refused = True
        if length == 0:
            return
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue":
            # no "100 Continue": answer now, and close the connection after
            self.requestHeaders.removeHeader(b"expect")
            channel = self.channel
            channel.persistent = False
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
            channel.callLater(0, self._answer_now)

    def _answer_now(self) -> None:
        if not self._rendered and self.channel is not None:
            self.channel.allContentReceived()

    def handleContentChunk(self, data: bytes) -> None:
        state = self._body_state
        if state == "buffered":
            super().handleContentChunk(data)
        elif state == "receiving":
            self._queue.append(data)
            self._queued += len(data)
            self._deliver()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The body has ended; render the request once the receiver has had
        all of it.
        """
        self._ended = (command, path, version)
        if self._body_state == "receiving":
            self._deliver()
        else:
            self._render()

    def connectionLost(self, reason: Failure) -> None:
        if self._body_state == "receiving":
            self._body_state = "lost"
            self._queue.clear()
            self._queued = 0
            assert self.body_receiver is not None
            try:
                self.body_receiver.body_lost(reason)
            except Exception:
                _log.failure("A body receiver failed")
        super().connectionLost(reason)

    def process(self) -> None:
        if self._broken is None:
            super().process()
            return
        # a bug, logged already: answer without rendering
        self.site = getattr(self.channel, "site", None)
        self.setResponseCode(INTERNAL_SERVER_ERROR)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.write(b"Internal server error\n")
        self.finish()

    # handing the body over

    def _deliver(self) -> None:
        """
        Hand the receiver the chunks held, one at a time, and keep the
        transport paused while it is busy with one.
        """
        if self._delivering:
            return  # a Deferred fired at once, inside the loop below
        self._delivering = True
        try:
            while self._body_state == "receiving" and self._waiting is None and self._queue:
                data = self._queue.popleft()
                self._queued -= len(data)
                self.body_received += len(data)
                assert self.body_receiver is not None
                try:
                    result = self.body_receiver.body_chunk(data)
                except Exception:
                    self._receiver_failed(Failure())
                    break
                if isinstance(result, Deferred):
                    self._waiting = result
                    result.addBoth(self._chunk_taken, result)
        finally:
            self._delivering = False
        if self._body_state == "failed":
            self._render()
        if self._body_state != "receiving":
            return
        if self._waiting is not None:
            # again even if paused already: the channel resumes the
            # transport when its own writes drain
            self._pause()
            return
        self._resume()
        if self._ended is not None:
            self._body_state = "finished"
            assert self.body_receiver is not None
            try:
                self.body_receiver.body_finished()
            except Exception:
                self.body_failure = Failure()
                _log.info(
                    "The receiver of the body of {uri} failed at its end: {error!r}",
                    uri=self._target.decode("ascii", "replace"), error=self.body_failure.value,
                )
            self._render()

    def _chunk_taken(self, result: object, waited: Deferred[None]) -> None:
        if self._waiting is waited:
            self._waiting = None
        if isinstance(result, Failure):
            self._receiver_failed(result)
        else:
            self._deliver()

    def _receiver_failed(self, failure: Failure) -> None:
        # not logged as an error: the resource reports the failure (and
        # logs it, if it is a bug)
        _log.info(
            "The receiver of the body of {uri} gave up: {error!r}",
            uri=self._target.decode("ascii", "replace"), error=failure.value,
        )
        if self._body_state != "receiving":
            return
        self._body_state = "failed"
        self.body_failure = failure
        self._queue.clear()
        self._queued = 0
        self._resume()
        if not self._delivering:  # else _deliver renders, once out of its loop
            self._render()

    def _render(self) -> None:
        if self._rendered or self._ended is None:
            return
        self._rendered = True
        command, path, version = self._ended
        super().requestReceived(command, path, version)

    def _producer(self) -> IPushProducer | None:
        producer: IPushProducer | None = IPushProducer(self.transport, None)
        return producer

    def _pause(self) -> None:
        producer = self._producer()
        if producer is not None:
            producer.pauseProducing()
            self._paused = True

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            producer = self._producer()
            if producer is not None and self.channel is not None:
                producer.resumeProducing()


class StreamingSite(Site):
    """
    A L{Site} whose requests stream their bodies to the receivers C{route}
    gives (see the module's docstring).

    @ivar route: the L{BodyRoute}.
    """

    requestFactory = StreamingRequest

    def __init__(self, resource: IResource, route: BodyRoute, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.route = route


def streaming_site(resource: IResource, route: BodyRoute, **site_kwargs: Any) -> StreamingSite:
    """
    A L{Site} serving C{resource} whose request bodies go to the receivers
    C{route} gives, as they arrive.

    @param route: called with the method, the request target and the
        headers of each request as soon as its headers are in; answers the
        L{IBodyReceiver} of its body, or L{None} to have the body buffered
        (in C{request.content}) as twisted.web does.
    @param site_kwargs: passed to L{Site} (C{timeout}, C{reactor}...); a
        C{requestFactory} given must make L{StreamingRequest}s.
    """
    return StreamingSite(resource, route, **site_kwargs)
