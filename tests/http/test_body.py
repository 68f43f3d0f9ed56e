"""
Tests for L{p2pblob.http._body}: request bodies handed to a receiver as they
arrive.  The channel's side is driven in memory first (deterministic, and it
pins the details of twisted.web the module relies on), then over real
sockets on 127.0.0.1 with the real reactor.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob._threads import ThreadWorker
from p2pblob.blob.store import BlobStore
from p2pblob.errors import DiskLimitError
from p2pblob.http._body import StreamingRequest, StreamingSite, streaming_site
from p2pblob.interfaces import IBodyReceiver
from p2pblob.stream.creator import publish_file
from p2pblob.stream.writer import StreamCreator, StreamResult, derived_iv
from p2pblob.testing import MemoryBlobStore


@implementer(IBodyReceiver)
class Receiver:
    """
    Records what it is given.  While C{hold} is set, each chunk is taken
    only when the test fires C{pending}.
    """

    def __init__(self, hold: bool = False, refuse: int | None = None) -> None:
        self.hold = hold
        self.refuse = refuse
        self.events: list[str] = []
        self.size = 0
        self.chunks = 0
        self.largest = 0
        self.digest = hashlib.sha256()
        self.pending: Deferred[None] | None = None
        self.request: StreamingRequest | None = None
        self.fail_with: BaseException | None = None
        self.ended: Deferred[str] = Deferred()
        self.first_chunk: Deferred[None] = Deferred()
        self.lost_reason: Failure | None = None

    def body_started(self, request: Request) -> None:
        assert isinstance(request, StreamingRequest)
        self.request = request
        self.events.append("started")
        if self.refuse is not None:
            request.setResponseCode(self.refuse)

    def body_chunk(self, data: bytes) -> Deferred[None] | None:
        self.size += len(data)
        self.chunks += 1
        self.largest = max(self.largest, len(data))
        self.digest.update(data)
        if not self.first_chunk.called:
            self.first_chunk.callback(None)
        if self.fail_with is not None:
            raise self.fail_with
        if self.hold:
            self.pending = Deferred()
            return self.pending
        return None

    def body_finished(self) -> None:
        self.events.append("finished")
        self.ended.callback("finished")

    def body_lost(self, reason: Failure) -> None:
        self.events.append("lost")
        self.lost_reason = reason
        self.ended.callback("lost")

    def take(self) -> None:
        """
        Let the receiver take the chunk it holds.
        """
        pending, self.pending = self.pending, None
        assert pending is not None
        pending.callback(None)


verifyObject(IBodyReceiver, Receiver())


class Answer(Resource):
    """
    Answers, in JSON, what became of the request's body.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[StreamingRequest] = []

    def render(self, request: Request) -> bytes:
        assert isinstance(request, StreamingRequest)
        self.rendered.append(request)
        assert request.content is not None
        content = request.content.read()
        receiver = request.body_receiver
        answer: dict[str, Any] = {
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "content": len(content),
            "content_sha256": hashlib.sha256(content).hexdigest(),
            "refused": request.body_refused,
        }
        if isinstance(receiver, Receiver):
            answer["received"] = receiver.size
            answer["sha256"] = receiver.digest.hexdigest()
            answer["events"] = receiver.events
        if request.body_failure is not None:
            request.setResponseCode(507)
            answer["failure"] = str(request.body_failure.value)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


class Routes:
    """
    A route: C{/stream...} goes to a new receiver made by C{make}, the rest
    is buffered.
    """

    def __init__(self) -> None:
        self.receivers: list[Receiver] = []
        self.calls: list[tuple[bytes, bytes, Headers]] = []
        self.make = Receiver
        self.broken = False

    def __call__(self, method: bytes, target: bytes, headers: Headers) -> IBodyReceiver | None:
        self.calls.append((method, target, headers))
        if self.broken:
            raise ZeroDivisionError("route bug")
        if not target.startswith(b"/stream"):
            return None
        receiver = self.make()
        self.receivers.append(receiver)
        return receiver


def pattern(size: int) -> Iterator[bytes]:
    """
    C{size} bytes in 64 KiB pieces, made as they are sent.
    """
    block = hashlib.sha512(b"body").digest() * 1024
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        sent += len(piece)
        yield piece


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# In memory: the channel driven byte by byte
# ---------------------------------------------------------------------------


class MemoryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.routes = Routes()
        self.resource = Answer()
        self.site = streaming_site(self.resource, self.routes, reactor=self.clock)
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.close)

    def close(self) -> None:
        if not self.transport.disconnected:
            self.channel.connectionLost(Failure(ConnectionDone()))

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def answers(self) -> list[dict[str, Any]]:
        """
        The JSON answers written so far.
        """
        text = self.transport.value()
        found = []
        for part in text.split(b"HTTP/1.1 ")[1:]:
            head, _, rest = part.partition(b"\r\n\r\n")
            if head.startswith(b"100"):
                continue
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            found.append({"status": int(head[:3]), **json.loads(rest[:length])})
        return found


class TwistedInternalsTests(MemoryTestCase):
    """
    The details of twisted.web that L{StreamingRequest} relies on without
    their being public API (listed in the module's docstring), pinned.
    """

    def test_requests_are_streaming(self) -> None:
        self.assertIsInstance(self.site, StreamingSite)
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIsInstance(self.resource.rendered[0], StreamingRequest)

    def test_method_and_target_known_at_gotLength(self) -> None:
        """
        1: C{gotLength} comes once every header is in, with the method and
        request target on the channel (C{_command}, C{_path}).
        """
        self.send(b"PUT /stream/a%20b?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n")
        self.assertEqual(self.routes.calls, [])
        self.send(b"X-Two: 2\r\nContent-Length: 3\r\n\r\n")
        [(method, target, headers)] = self.routes.calls
        self.assertEqual((method, target), (b"PUT", b"/stream/a%20b?x=1&y=2"))
        self.assertEqual(headers.getRawHeaders(b"x-two"), [b"2"])
        self.assertEqual(self.routes.receivers[0].events, ["started"])
        inner = self.routes.receivers[0].request
        assert inner is not None
        self.assertIsInstance(inner.channel, HTTPChannel)

    def test_continue_after_started(self) -> None:
        """
        3: C{100 Continue} is sent after C{gotLength}; a receiver that
        accepts the body gets it sent.
        """
        seen: list[bytes] = []

        def make() -> Receiver:
            receiver = Receiver()
            original = receiver.body_started

            def started(request: Request) -> None:
                seen.append(self.transport.value())
                original(request)

            receiver.body_started = started  # type: ignore[method-assign]
            return receiver

        self.routes.make = make
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        self.assertEqual(seen, [b""])
        self.assertEqual(self.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.send(b"ok")
        [answer] = self.answers()
        self.assertEqual((answer["status"], answer["received"]), (200, 2))

    def test_refusal_without_continue(self) -> None:
        """
        3 and 4: a refusal removes C{Expect}, so no C{100 Continue} goes
        out; the request is then answered at once (C{allContentReceived}
        called on the next turn) and the connection closed after.
        """
        self.routes.make = lambda: Receiver(refuse=413)
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999\r\n\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0)
        [answer] = self.answers()
        self.assertEqual((answer["status"], answer["refused"], answer["received"]), (413, True, 0))
        self.assertIn(b"\r\nConnection: close\r\n", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        # what the client sends nonetheless reaches nobody
        self.send(b"x" * 1000)
        self.assertEqual(self.routes.receivers[0].size, 0)

    def test_pause_and_resume(self) -> None:
        """
        The transport is paused while a chunk is being taken, and chunks
        read meanwhile are held and handed over in order.
        """
        self.routes.make = lambda: Receiver(hold=True)
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        receiver = self.routes.receivers[0]
        request = receiver.request
        assert request is not None
        self.assertEqual(self.transport.producerState, "paused")
        self.send(b"cde")
        self.send(b"fgh")
        self.assertEqual((receiver.size, request.body_buffered), (2, 6))
        receiver.take()
        self.assertEqual((receiver.size, request.body_buffered), (5, 3))
        self.assertEqual(self.transport.producerState, "paused")
        self.send(b"ij")  # the end of the body: not rendered yet
        self.assertEqual(self.resource.rendered, [])
        receiver.take()
        receiver.take()
        self.assertEqual(receiver.size, 10)
        self.assertEqual(receiver.digest.hexdigest(), hashlib.sha256(b"abcdefghij").hexdigest())
        self.assertEqual(receiver.events, ["started"])
        receiver.take()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(receiver.events, ["started", "finished"])
        [answer] = self.answers()
        self.assertEqual((answer["received"], answer["content"]), (10, 0))

    def test_deferred_already_fired(self) -> None:
        """
        A receiver answering fired Deferreds never pauses the transport.
        """

        def make() -> Receiver:
            receiver = Receiver()
            receiver.body_chunk = lambda data: succeed(None)  # type: ignore[method-assign]
            return receiver

        self.routes.make = make
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(self.transport.producerState, "producing")
        [answer] = self.answers()
        self.assertEqual(answer["events"], ["started", "finished"])

    def test_lost_while_held(self) -> None:
        self.routes.make = lambda: Receiver(hold=True)
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        receiver = self.routes.receivers[0]
        self.channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(receiver.events, ["started", "lost"])
        receiver.take()  # too late: nothing more happens
        self.assertEqual(receiver.events, ["started", "lost"])
        self.assertEqual(self.resource.rendered, [])

    def test_receiver_fails(self) -> None:
        """
        A receiver that fails is given nothing more; the rest of the body
        is thrown away and the request rendered with the failure.
        """
        self.routes.make = lambda: Receiver(hold=True)
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        receiver = self.routes.receivers[0]
        assert receiver.pending is not None
        self.send(b"cde")
        receiver.pending.errback(DiskLimitError(10, 0, 5))
        self.assertEqual(self.transport.producerState, "producing")
        self.send(b"fghij")
        [answer] = self.answers()
        self.assertEqual(answer["status"], 507)
        self.assertIn("disk-use limit", answer["failure"])
        self.assertEqual((answer["received"], answer["events"]), (2, ["started"]))

    def test_receiver_raises_at_the_end(self) -> None:
        def make() -> Receiver:
            receiver = Receiver()
            receiver.fail_with = DiskLimitError(10, 0, 5)
            return receiver

        self.routes.make = make
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        [answer] = self.answers()
        self.assertEqual(answer["status"], 507)

    def test_receiver_raises_any_error(self) -> None:
        """
        Any exception a receiver raises is its outcome, for the resource to
        report: it is not logged as an error.
        """

        def make() -> Receiver:
            receiver = Receiver()
            receiver.fail_with = ValueError("bad signature")
            return receiver

        self.routes.make = make
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
        self.send(b"def")
        [answer] = self.answers()
        self.assertEqual((answer["status"], answer["failure"], answer["received"]), (507, "bad signature", 3))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_broken_route(self) -> None:
        """
        A route that raises is a bug: logged, and answered 500 without the
        resource being rendered; the body is thrown away.
        """
        self.routes.broken = True
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.resource.rendered, [])
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 500 "))

    def test_receiver_start_raises(self) -> None:
        def make() -> Receiver:
            receiver = Receiver()

            def started(request: Request) -> None:
                raise ZeroDivisionError("receiver bug")

            receiver.body_started = started  # type: ignore[method-assign]
            return receiver

        self.routes.make = make
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.resource.rendered, [])
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 500 "))

    def test_no_body(self) -> None:
        """
        A routed request without a body starts and finishes at once.
        """
        self.send(b"POST /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        [answer] = self.answers()
        self.assertEqual((answer["received"], answer["events"]), (0, ["started", "finished"]))

    def test_refused_without_expect(self) -> None:
        """
        A refusal without C{Expect: 100-continue} throws the body away as it
        arrives, answers once it has, and keeps the connection.
        """
        self.routes.make = lambda: Receiver(refuse=403)
        self.send(b"PUT /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        self.clock.advance(0)
        self.assertEqual(self.answers(), [])
        self.send(b"cdeGET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
        first, second = self.answers()
        self.assertEqual((first["status"], first["refused"], first["received"], first["content"]), (403, True, 0, 0))
        self.assertEqual((second["status"], second["uri"]), (200, "/plain"))
        self.assertFalse(self.transport.disconnecting)


# ---------------------------------------------------------------------------
# Over real sockets
# ---------------------------------------------------------------------------


class RawClient:
    """
    A blocking HTTP/1.1 client on a plain socket, for use in a thread.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = b""
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def send_all(self, pieces: Iterator[bytes]) -> None:
        for piece in pieces:
            self.send(piece)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def read_response(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers = self.read_head()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed mid-response")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}

    def at_eof(self) -> bool:
        return not self.buffer and not self._fill()

    def close(self) -> None:
        self.sock.close()


class SocketTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.routes = Routes()
        self.resource = Answer()
        self.site = streaming_site(self.make_resource(), self.routes)
        self.closed: list[Deferred[None]] = []
        self.channels: list[Any] = []
        self.transports: list[Any] = []
        build = self.site.buildProtocol

        def tracked(addr: Any) -> Any:
            channel = build(addr)
            done: Deferred[None] = Deferred()
            lost = channel.connectionLost

            def connection_lost(reason: Failure) -> None:
                lost(reason)
                done.callback(None)

            def make_connection(transport: Any) -> None:
                self.transports.append(transport)
                made(transport)

            made = channel.makeConnection
            channel.connectionLost = connection_lost
            channel.makeConnection = make_connection
            self.closed.append(done)
            self.channels.append(channel)
            return channel

        self.site.buildProtocol = tracked  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.address = self.port.getHost().port
        self.addCleanup(lambda: Deferred.fromCoroutine(self.close()))

    async def close(self) -> None:
        for transport in self.transports:
            if transport.connected:
                transport.loseConnection()
        for done in self.closed:
            await done
        await self.port.stopListening()

    def make_resource(self) -> Resource:
        return self.resource

    def client(self) -> RawClient:
        return RawClient(self.address)


class SocketTests(SocketTestCase):
    async def test_50_mb_content_length(self) -> None:
        """
        A 50 MB body with a Content-Length reaches the receiver whole,
        without ever being held: C{request.content} stays empty, no chunk is
        larger than a socket read, and the peak of Python allocations stays
        far below the body's size.  The receiver takes each chunk a turn of
        the reactor later, so the transport pauses and resumes hundreds of
        times.
        """
        size = 50 * 1000 * 1000

        def make() -> Receiver:
            receiver = Receiver()
            take = receiver.body_chunk

            def later(data: bytes) -> Deferred[None]:
                take(data)
                return deferLater(reactor, 0, lambda: None)  # type: ignore[arg-type]

            receiver.body_chunk = later  # type: ignore[method-assign]
            return receiver

        self.routes.make = make
        buffered: list[int] = []

        def upload() -> tuple[int, dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            conn.request("PUT", "/stream/big", body=pattern(size), headers={"Content-Length": str(size)})
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            return response.status, answer

        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        started = time.monotonic()
        watching = True

        def watch() -> None:
            for receiver in self.routes.receivers:
                if receiver.request is not None:
                    buffered.append(receiver.request.body_buffered)
            if watching:
                reactor.callLater(0.001, watch)  # type: ignore[attr-defined]

        watch()
        status, answer = await deferToThread(upload)
        watching = False
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        self.assertEqual(status, 200)
        self.assertEqual(answer["received"], size)
        self.assertEqual(answer["sha256"], pattern_sha256(size))
        self.assertEqual((answer["content"], answer["events"]), (0, ["started", "finished"]))
        receiver = self.routes.receivers[0]
        self.assertLessEqual(receiver.largest, 256 * 1024)
        self.assertGreater(receiver.chunks, 100)
        self.assertLess(max(buffered), 1024 * 1024)
        self.assertLess(peak, 8 * 1024 * 1024)
        request = self.resource.rendered[0]
        self.assertEqual(request.requestHeaders.getRawHeaders(b"content-length"), [str(size).encode()])
        print(f"\n50 MB streamed in {elapsed:.2f} s, {receiver.chunks} chunks, "
              f"Python allocation peak {peak / 1e6:.1f} MB")

    async def test_chunked(self) -> None:
        size = 3 * 1000 * 1000 + 17

        def upload() -> tuple[int, dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            conn.request("POST", "/stream/chunked?part=1", body=pattern(size), encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            return response.status, answer

        status, answer = await deferToThread(upload)
        self.assertEqual(status, 200)
        self.assertEqual((answer["received"], answer["sha256"]), (size, pattern_sha256(size)))
        self.assertEqual((answer["content"], answer["uri"]), (0, "/stream/chunked?part=1"))
        [(method, target, headers)] = self.routes.calls
        self.assertEqual((method, target), (b"POST", b"/stream/chunked?part=1"))
        self.assertEqual(headers.getRawHeaders(b"transfer-encoding"), [b"chunked"])

    async def test_expect_continue(self) -> None:
        """
        A client that waits for C{100 Continue} gets it once the receiver has
        started, then sends its body.
        """
        size = 1000 * 1000

        def upload() -> tuple[int, int, dict[str, Any]]:
            client = self.client()
            client.send(
                b"PUT /stream/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode()
            )
            interim, _ = client.read_head()
            client.send_all(pattern(size))
            status, _, answer = client.read_response()
            client.close()
            return interim, status, answer

        interim, status, answer = await deferToThread(upload)
        self.assertEqual((interim, status), (100, 200))
        self.assertEqual(answer["received"], size)

    async def test_expect_continue_refused(self) -> None:
        """
        A refused body is answered at once: no C{100 Continue}, the final
        answer, and the connection closed.
        """
        self.routes.make = lambda: Receiver(refuse=413)

        def upload() -> tuple[int, dict[str, str], dict[str, Any], bool]:
            client = self.client()
            client.send(
                b"PUT /stream/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 5000000000\r\n\r\n"
            )
            status, headers, answer = client.read_response()
            eof = client.at_eof()
            client.close()
            return status, headers, answer, eof

        status, headers, answer, eof = await deferToThread(upload)
        self.assertEqual((status, answer["refused"], answer["received"]), (413, True, 0))
        self.assertEqual(headers["connection"], "close")
        self.assertTrue(eof)

    async def test_expect_continue_with_http_client(self) -> None:
        """
        http.client, which sends its body without waiting and skips the
        interim answer, works too.
        """

        def upload() -> tuple[int, dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            conn.request("PUT", "/stream/e", body=b"x" * 300_000, headers={"Expect": "100-continue"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            return response.status, answer

        status, answer = await deferToThread(upload)
        self.assertEqual((status, answer["received"]), (200, 300_000))

    async def test_slow_receiver_makes_the_sender_wait(self) -> None:
        """
        While the receiver holds a chunk, the server stops reading: the
        sender stalls once the sockets' buffers are full, and nothing piles
        up in the server.  Once the receiver takes it, all goes on.
        """
        size = 64 * 1000 * 1000
        self.routes.make = lambda: Receiver(hold=True)
        client = self.client()
        self.addCleanup(client.close)

        def upload() -> tuple[int, dict[str, Any]]:
            client.send(f"PUT /stream/slow HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            client.send_all(pattern(size))
            status, _, answer = client.read_response()
            return status, answer

        uploaded = deferToThread(upload)
        while not self.routes.receivers or self.routes.receivers[0].pending is None:
            await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
        receiver = self.routes.receivers[0]
        request = receiver.request
        assert request is not None
        # the sockets' buffers fill, then the sender waits
        previous = -1
        while client.sent != previous:
            previous = client.sent
            await deferLater(reactor, 0.3, lambda: None)  # type: ignore[arg-type]
        self.assertLess(client.sent, size // 2)
        self.assertEqual(receiver.chunks, 1)
        self.assertLess(request.body_buffered, 1024 * 1024)
        stalled_at = client.sent
        # let it go: each chunk taken as it comes
        receiver.hold = False
        receiver.take()
        status, answer = await uploaded
        self.assertEqual((status, answer["received"]), (200, size))
        self.assertEqual(answer["sha256"], pattern_sha256(size))
        print(f"\nthe sender stalled after {stalled_at / 1e6:.1f} of {size / 1e6:.0f} MB")

    async def test_dropped_mid_body(self) -> None:
        """
        A connection that closes before the body's end reaches the
        receiver's C{body_lost}; the request is never rendered.
        """

        def upload() -> None:
            client = self.client()
            client.send(b"PUT /stream/d HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            client.send(b"y" * 100_000)
            client.close()

        await deferToThread(upload)
        while not self.routes.receivers:
            await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
        receiver = self.routes.receivers[0]
        self.assertEqual(await receiver.ended, "lost")
        assert receiver.lost_reason is not None
        self.assertTrue(receiver.lost_reason.check(ConnectionDone, ConnectionLost))
        self.assertEqual(receiver.events, ["started", "lost"])
        self.assertLessEqual(receiver.size, 100_000)
        self.assertEqual(self.resource.rendered, [])

    async def test_malformed_chunked(self) -> None:
        def upload() -> tuple[int, bool]:
            client = self.client()
            client.send(b"PUT /stream/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            client.send(b"3\r\nabc\r\nzz\r\n")
            status, _ = client.read_head()
            eof = client.at_eof()
            client.close()
            return status, eof

        self.assertEqual(await deferToThread(upload), (400, True))
        receiver = self.routes.receivers[0]
        self.assertEqual(await receiver.ended, "lost")
        self.assertEqual(receiver.size, 3)

    async def test_declined_bodies_are_buffered(self) -> None:
        """
        A request the route declines is read into C{request.content} as
        twisted.web does (a temporary file above 100 kB).
        """
        size = 300_000

        def upload() -> tuple[int, dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            conn.request("PUT", "/plain", body=b"".join(pattern(size)))
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            return response.status, answer

        status, answer = await deferToThread(upload)
        self.assertEqual(status, 200)
        self.assertEqual((answer["content"], answer["content_sha256"]), (size, pattern_sha256(size)))
        self.assertNotIn("received", answer)
        self.assertIsNone(self.resource.rendered[0].body_receiver)

    async def test_pipelined(self) -> None:
        """
        Requests pipelined behind a streamed body (in the same segment as
        its end) are answered in order afterwards, on the same connection;
        and a keep-alive connection serves streamed requests one after
        another.
        """
        size = 300_000
        self.routes.make = lambda: Receiver(hold=True)
        client = self.client()
        self.addCleanup(client.close)
        body = b"".join(pattern(size))
        head = f"PUT /stream/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        rest = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\nPUT /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        await deferToThread(client.send, head + body + rest)

        # the receiver takes its chunks slowly
        async def take_all() -> None:
            while not self.routes.receivers or self.routes.receivers[0].events[-1:] != ["finished"]:
                receivers = self.routes.receivers
                if receivers and receivers[0].pending is not None:
                    receivers[0].take()
                await deferLater(reactor, 0.001, lambda: None)  # type: ignore[arg-type]

        await take_all()

        def read_three() -> list[tuple[int, dict[str, Any]]]:
            return [client.read_response()[::2] for _ in range(3)]  # type: ignore[misc]

        answers = await deferToThread(read_three)
        self.assertEqual([status for status, _ in answers], [200, 200, 200])
        self.assertEqual((answers[0][1]["received"], answers[0][1]["sha256"]), (size, pattern_sha256(size)))
        self.assertEqual(answers[1][1]["uri"], "/plain")
        self.assertEqual((answers[2][1]["method"], answers[2][1]["content"]), ("PUT", 3))

        def keep_alive() -> list[dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            found = []
            for n in range(3):
                conn.request("PUT", f"/stream/k{n}", body=b"z" * (n * 200_000 + 1))
                found.append(json.loads(conn.getresponse().read()))
            conn.close()
            return found

        self.routes.make = Receiver
        found = await deferToThread(keep_alive)
        self.assertEqual([answer["received"] for answer in found], [1, 200_001, 400_001])
        self.assertEqual(len(self.channels), 2)

    async def test_receiver_failure_keeps_the_connection(self) -> None:
        def make() -> Receiver:
            receiver = Receiver()
            receiver.fail_with = DiskLimitError(10, 0, 5)
            return receiver

        self.routes.make = make

        def upload() -> list[int]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            statuses = []
            for path in ("/stream/f", "/plain"):
                conn.request("PUT", path, body=b"q" * 500_000)
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            conn.close()
            return statuses

        self.assertEqual(await deferToThread(upload), [507, 200])
        self.assertEqual(len(self.channels), 1)



@implementer(IBodyReceiver)
class IntoStream:
    """
    A body published as a stream while it arrives: the creator's write
    Deferreds are the backpressure.
    """

    def __init__(self, creator: StreamCreator) -> None:
        self.creator = creator
        self.result: Deferred[StreamResult] = Deferred()

    def body_started(self, request: Request) -> None:
        pass

    def body_chunk(self, data: bytes) -> Deferred[None]:
        return self.creator.write(data)

    def body_finished(self) -> None:
        self.creator.finish().chainDeferred(self.result)

    def body_lost(self, reason: Failure) -> None:
        self.creator.cancel()


class Publish(Resource):
    isLeaf = True

    def render_PUT(self, request: Request) -> object:
        assert isinstance(request, StreamingRequest)
        receiver = request.body_receiver
        assert isinstance(receiver, IntoStream)

        def answer(result: StreamResult) -> None:
            request.write(json.dumps({"sd_hash": result.sd_hash, "md5": result.md5}).encode())
            request.finish()

        receiver.result.addCallback(answer)
        return NOT_DONE_YET


class PublishWhileReceivingTests(SocketTestCase):
    """
    The two halves together: an upload streamed into a L{StreamCreator}
    gives the stream publish_file gives of the same bytes.
    """

    def make_resource(self) -> Resource:
        return Publish()

    async def test_upload_published(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        worker = ThreadWorker(reactor, "test-body", 4)  # type: ignore[arg-type]
        worker.start()
        self.addCleanup(worker.stop)
        store = BlobStore(reactor, worker, directory / "blobs", directory / "index.sqlite")  # type: ignore[arg-type]
        await store.start()
        self.addCleanup(store.stop)
        key = bytes(range(16))
        self.routes.make = lambda: IntoStream(StreamCreator(store, worker, "upload.bin", key=key))  # type: ignore[assignment,return-value]
        size = 20 * 1000 * 1000 + 3

        def upload() -> dict[str, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", self.address, timeout=60)
            conn.request("PUT", "/stream/upload.bin", body=pattern(size), headers={"Content-Length": str(size)})
            answer: dict[str, Any] = json.loads(conn.getresponse().read())
            conn.close()
            return answer

        answer = await deferToThread(upload)
        source = directory / "upload.bin"
        with open(source, "wb") as f:
            for piece in pattern(size):
                f.write(piece)
        numbers = iter(range(100))
        _, sd_hash = await publish_file(
            MemoryBlobStore(), worker, source, key=key, iv_source=lambda: derived_iv(key, next(numbers))
        )
        self.assertEqual(answer["sd_hash"], sd_hash)
        self.assertEqual(answer["md5"], hashlib.md5(source.read_bytes()).hexdigest())
        self.assertEqual(store.index.streams(), [(sd_hash, "published", False, False)])
