"""
Tests for L{p2pblob.peer.server} and L{p2pblob.peer.handlers}: routing,
refusals, timeouts, flow control, connection limits and hostile input,
over in-memory transports and a L{Clock}.
"""

from __future__ import annotations

import io
import json
import os
from io import BufferedIOBase
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash
from p2pblob.blob.store import BlobStore
from p2pblob.errors import ProtocolViolationError
from p2pblob.interfaces import (
    IBlobSender,
    IQueryHandler,
    IQueryHandlerFactory,
    IRateLimited,
    IRateLimiter,
    IRequestHandler,
)
from p2pblob.peer.handlers import (
    CHUNK_SIZE,
    BlobAvailabilityHandlerFactory,
    BlobRequestHandlerFactory,
    BlobUploadProducer,
    FreeRatePolicy,
    IPaymentRatePolicy,
    WalletInfoHandlerFactory,
)
from p2pblob.peer.server import BlobServerFactory, BlobServerProtocol, IReleasable
from p2pblob.peer.wire import JSONObjectFramer, encode_request
from p2pblob.ratelimit import RateLimiter, TrafficCounters
from p2pblob.testing import MemoryBlob, MemoryBlobStore
from p2pblob.traffic import Traffic
from tests._vectors import generate_plaintext

ADDRESS = "bQEaw42GXsgCAGio1nxFncJSyRmnztSCjP"
SMALL = generate_plaintext(1000, 7)
BIG = generate_plaintext(MAX_BLOB_SIZE, 3)  # 8 chunks
H_SMALL, H_BIG = blob_hash(SMALL), blob_hash(BIG)
H_MISSING = blob_hash(b"not stored")


def full_request(h: str) -> bytes:
    """
    The request a modern LBRY client sends for one blob.
    """
    return encode_request({"requested_blobs": [h], "lbrycrd_address": True,
                           "blob_data_payment_rate": 0.0, "requested_blob": h})


class _Transport(StringTransport):
    """
    A L{StringTransport} that, if C{slow}, pauses its producer after every
    write, as a socket transport does when its buffer is full.
    """

    def __init__(self, address: IPv4Address, slow: bool = False) -> None:
        super().__init__(peerAddress=address)
        self.slow = slow

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.slow and self.producer is not None:
            self.producer.pauseProducing()


def connect(
    factory: BlobServerFactory, host: str = "192.0.2.1", port: int = 40000, slow: bool = False
) -> tuple[BlobServerProtocol, _Transport]:
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = _Transport(address, slow)
    protocol.makeConnection(transport)
    return protocol, transport


def lose(protocol: BlobServerProtocol, transport: StringTransport) -> None:
    """
    What a socket transport does when the connection goes: stop its
    producer, then tell the protocol.
    """
    if transport.producer is not None:
        transport.producer.stopProducing()
    protocol.connectionLost(Failure(ConnectionDone()))


def producer_of(transport: StringTransport) -> IPushProducer:
    """
    The producer registered with C{transport} (the connection's upload
    channel), as the transport sees it.
    """
    assert transport.producer is not None
    producer: IPushProducer = transport.producer
    return producer


def drain(transport: StringTransport) -> None:
    """
    Resume the producer until the upload ends, as a reader catching up would.
    """
    while transport.producer is not None:
        producer_of(transport).resumeProducing()


def parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    result = JSONObjectFramer(1 << 20).feed(data)
    assert result is not None, data
    return result


@implementer(IQueryHandler)
class _Handler:
    def __init__(self, identifiers: list[str], answer: Any) -> None:
        self.identifiers = identifiers
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.peer: Any = None

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        self.peer = peer
        request_handler.register_query_handler(self, self.identifiers)

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        self.received.append(queries)
        result: Deferred[dict[str, Any]] = self.answer(queries)
        return result


@implementer(IQueryHandlerFactory)
class _HandlerFactory:
    """
    Builds L{_Handler}s answering C{identifiers} with C{answer(queries)}.
    """

    def __init__(self, identifiers: list[str], answer: Any) -> None:
        self.identifiers = identifiers
        self.answer = answer
        self.built: list[_Handler] = []

    def build_query_handler(self) -> _Handler:
        self.built.append(_Handler(self.identifiers, self.answer))
        return self.built[-1]


verifyClass(IQueryHandler, _Handler)
verifyClass(IQueryHandlerFactory, _HandlerFactory)


@implementer(IRateLimiter)
class _Limiter:
    def __init__(self) -> None:
        self.down = self.up = 0
        self.protocols: list[IRateLimited] = []

    def report_dl_bytes(self, num_bytes: int) -> None:
        self.down += num_bytes

    def report_ul_bytes(self, num_bytes: int) -> None:
        self.up += num_bytes

    def register_protocol(self, protocol: IRateLimited) -> None:
        self.protocols.append(protocol)

    def unregister_protocol(self, protocol: IRateLimited) -> None:
        self.protocols.remove(protocol)


verifyClass(IRateLimiter, _Limiter)


class _RecordingBlob(MemoryBlob):
    def __init__(
        self, store: MemoryBlobStore, blob_hash: str, length: int, opened: list[BufferedIOBase]
    ) -> None:
        super().__init__(store, blob_hash, length)
        self._opened = opened

    def open_for_reading(self) -> BufferedIOBase:
        file = super().open_for_reading()
        self._opened.append(file)
        return file


class _RecordingStore(MemoryBlobStore):
    """
    Keeps every file it opens for reading.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[BufferedIOBase] = []

    def get_blob(self, blob_hash: str) -> MemoryBlob:
        blob = super().get_blob(blob_hash)
        return _RecordingBlob(self, blob_hash, blob.length, self.opened)


class _ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBlobStore()
        for data in (SMALL, BIG):
            self.successResultOf(self.store.put_blob(data))
        self.factory = self.make_factory(self.store)

    def make_factory(self, store: Any, *extra: Any, **options: Any) -> BlobServerFactory:
        handlers = [BlobAvailabilityHandlerFactory(store), BlobRequestHandlerFactory(store),
                    WalletInfoHandlerFactory(ADDRESS), *extra]
        return BlobServerFactory(handlers, self.clock, **options)

    def assertServed(self, transport: StringTransport, data: bytes) -> None:
        response, rest = parse(transport.value())
        self.assertEqual(response["incoming_blob"], {"blob_hash": blob_hash(data),
                                                     "length": len(data)})
        self.assertEqual(rest, data)

    def assertRefused(self, transport: StringTransport) -> None:
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)


class InterfaceTests(_ServerTestCase):
    def test_verified(self) -> None:
        """
        The protocol, the factories, the handlers, the producer and the
        policy provide what they declare.
        """
        protocol, _ = connect(self.factory)
        verifyObject(IRequestHandler, protocol)
        verifyObject(IRateLimited, protocol)
        for handler_factory in self.factory.query_handler_factories:
            verifyObject(IQueryHandlerFactory, handler_factory)
            verifyObject(IQueryHandler, handler_factory.build_query_handler())
        blob_handler = BlobRequestHandlerFactory(self.store).build_query_handler()
        verifyObject(IBlobSender, blob_handler)
        verifyObject(IReleasable, blob_handler)
        verifyObject(IPushProducer, BlobUploadProducer(H_SMALL, io.BytesIO(SMALL), len(SMALL)))
        verifyObject(IPaymentRatePolicy, FreeRatePolicy())
        channel = protocol._channel
        verifyObject(IConsumer, channel)
        verifyObject(IPushProducer, channel)


class RoutingTests(_ServerTestCase):
    def test_routing_and_merging(self) -> None:
        """
        Each handler is given only its keys; the answers are merged, and
        unknown keys beside known ones are ignored.
        """
        first = _HandlerFactory(["a", "b"], lambda q: succeed({"x": 1}))
        second = _HandlerFactory(["c"], lambda q: succeed({"y": [2]}))
        factory = BlobServerFactory([first, second], self.clock)
        protocol, transport = connect(factory, "192.0.2.9", 1234)
        protocol.dataReceived(b'{"c": 3, "a": 1, "zzz": 0, "b": {"n": null}}')
        self.assertEqual(first.built[0].received, [{"a": 1, "b": {"n": None}}])
        self.assertEqual(second.built[0].received, [{"c": 3}])
        self.assertEqual(str(first.built[0].peer), "192.0.2.9:1234")
        self.assertEqual(transport.value(), b'{"x": 1, "y": [2]}')
        self.assertFalse(transport.disconnecting)

    def test_full_request_keep_alive(self) -> None:
        """
        A connection is answered request after request, with the blob
        right after each answer.
        """
        protocol, transport = connect(self.factory)
        for data in (SMALL, BIG, SMALL):
            transport.clear()
            protocol.dataReceived(full_request(blob_hash(data)))
            self.assertServed(transport, data)
            response, _ = parse(transport.value())
            self.assertEqual(response["available_blobs"], [blob_hash(data)])
            self.assertEqual(response["lbrycrd_address"], ADDRESS)
            self.assertEqual(response["blob_data_payment_rate"], "RATE_ACCEPTED")
        self.assertFalse(transport.disconnecting)

    def test_availability(self) -> None:
        """
        Available hashes come in request order, once; whatever is not a
        stored blob hash is left out; lbry-sdk's C{true} address is added.
        """
        protocol, transport = connect(self.factory)
        asked = [H_MISSING, H_BIG, 7, H_SMALL.upper(), [H_SMALL], None, H_SMALL, H_BIG, "x"]
        protocol.dataReceived(json.dumps({"requested_blobs": asked}).encode())
        self.assertEqual(parse(transport.value()),
                         ({"available_blobs": [H_BIG, H_SMALL], "lbrycrd_address": True}, b""))

    def test_any_offer_accepted(self) -> None:
        """
        The price is accepted whatever the offer.
        """
        protocol, transport = connect(self.factory)
        offers: list[Any] = [0.0, -1, "free", None, {"a": []}, 1e300]
        for offer in offers:
            transport.clear()
            protocol.dataReceived(json.dumps({"blob_data_payment_rate": offer}).encode())
            self.assertEqual(transport.value(), b'{"blob_data_payment_rate": "RATE_ACCEPTED"}')

    def test_missing_blob(self) -> None:
        """
        A blob not held, or a name that is not a blob hash, gets no
        C{incoming_blob} and no bytes; the connection stays usable.
        """
        protocol, transport = connect(self.factory)
        for name in (H_MISSING, "nonsense", H_SMALL.upper()):
            transport.clear()
            protocol.dataReceived(encode_request({"requested_blob": name, "lbrycrd_address": 1}))
            self.assertEqual(parse(transport.value()), ({"lbrycrd_address": ADDRESS}, b""))
        transport.clear()
        protocol.dataReceived(encode_request({"requested_blob": H_MISSING}))
        self.assertEqual(transport.value(), b"{}")
        self.assertFalse(transport.disconnecting)

    def test_refusals(self) -> None:
        """
        Bad requests close the connection without reply: no known key, a
        malformed query value, trailing bytes (pipelining), broken JSON,
        an oversized message.
        """
        big = json.dumps({"requested_blobs": [H_SMALL] * 100}).encode()
        for data in (
            b'{"foo": 1}', b"{}", b'{"requested_blobs": "' + H_SMALL.encode() + b'"}',
            b'{"requested_blob": 5}', b'{"requested_blob": null}',
            full_request(H_SMALL) + full_request(H_SMALL), full_request(H_SMALL) + b"x",
            b"[]", b"{]}", b'{"a": "\xff"}', b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            b'{"a": ' + b"9" * 5000 + b"}", big,
        ):
            protocol, transport = connect(self.make_factory(self.store, max_request_size=9000))
            with capturedLogs() as events:
                protocol.dataReceived(data)
            self.assertRefused(transport)
            self.assertTrue(events, data[:40])
            self.assertFalse([e for e in events if "log_failure" in e], data[:40])

    def test_trailing_whitespace(self) -> None:
        """
        Whitespace after a request is not a second request.
        """
        protocol, transport = connect(self.factory)
        protocol.dataReceived(full_request(H_SMALL) + b"\r\n")
        self.assertServed(transport, SMALL)
        self.assertFalse(transport.disconnecting)

    def test_data_during_upload(self) -> None:
        """
        Bytes sent while a blob is being uploaded abort the connection.
        """
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        protocol.dataReceived(b" \n")
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"{")
        self.assertTrue(transport.disconnected)
        lose(protocol, transport)
        self.assertEqual(self.factory.open_connections, 0)

    def test_handler_failure(self) -> None:
        """
        A handler that fails (or raises) closes the connection without
        reply; unexpected errors are logged as failures.
        """
        def raises(queries: Any) -> Deferred[Any]:
            raise ZeroDivisionError()

        for answer, logged in (
            (lambda q: fail(ProtocolViolationError("peer", "no")), 0),
            (lambda q: fail(ZeroDivisionError()), 1),
            (raises, 1),
        ):
            factory = self.make_factory(self.store, _HandlerFactory(["boom"], answer))
            protocol, transport = connect(factory)
            protocol.dataReceived(encode_request({"boom": 1, "requested_blob": H_SMALL}))
            self.assertRefused(transport)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), logged)
            lose(protocol, transport)

    def test_announced_blob_released(self) -> None:
        """
        A blob opened for a request whose answer is never sent is closed
        when the connection goes.
        """
        store = _RecordingStore()
        self.successResultOf(store.put_blob(SMALL))
        never: Deferred[Any] = Deferred()
        factory = self.make_factory(store, _HandlerFactory(["wait"], lambda q: never))
        protocol, transport = connect(factory)
        protocol.dataReceived(encode_request({"wait": 1, "requested_blob": H_SMALL}))
        self.assertFalse(store.opened[0].closed)
        lose(protocol, transport)
        self.assertTrue(store.opened[0].closed)
        self.assertTrue(never.called)  # cancelled
        self.assertEqual(transport.value(), b"")


class TimeoutTests(_ServerTestCase):
    def test_idle(self) -> None:
        """
        A connection with no complete request for 30 s is closed; partial
        requests do not count as activity.
        """
        protocol, transport = connect(self.factory)
        self.clock.advance(20)
        protocol.dataReceived(full_request(H_SMALL)[:20])
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_restarted_after_answer(self) -> None:
        """
        The idle timer does not run while a blob is being sent, however
        slowly the peer reads, and starts again once the answer is sent.
        """
        protocol, transport = connect(self.factory, slow=True)
        self.clock.advance(29)
        protocol.dataReceived(full_request(H_BIG))
        while transport.producer is not None:
            self.clock.advance(50)  # a slow reader, but a reader
            producer_of(transport).resumeProducing()
        self.assertFalse(transport.disconnecting)
        self.assertServed(transport, BIG)
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_stalled_upload(self) -> None:
        """
        A peer that takes no blob bytes for the transfer timeout (60 s) is
        cut off, and the blob is let go.
        """
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        self.clock.advance(59.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)  # aborted
        lose(protocol, transport)
        self.assertEqual(self.factory.open_connections, 0)
        self.assertFalse(self.clock.getDelayedCalls())


class FlowControlTests(_ServerTestCase):
    def test_one_chunk_per_resume(self) -> None:
        """
        To a reader that pauses after every write, a blob goes out one chunk
        per resume, and arrives whole.
        """
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        header = len(transport.value()) - CHUNK_SIZE
        resumes = 0
        while transport.producer is not None:
            self.assertEqual(len(transport.value()), header + (resumes + 1) * CHUNK_SIZE)
            producer_of(transport).resumeProducing()
            resumes += 1
        self.assertEqual(resumes, MAX_BLOB_SIZE // CHUNK_SIZE - 1)
        self.assertServed(transport, BIG)

    def test_throttle_upload(self) -> None:
        """
        A throttled connection sends its answer but no blob bytes, even if
        the transport asks for more, until it is unthrottled.
        """
        protocol, transport = connect(self.factory)
        protocol.throttle_upload()
        protocol.dataReceived(full_request(H_BIG))
        response, rest = parse(transport.value())
        self.assertEqual(rest, b"")
        producer_of(transport).pauseProducing()
        producer_of(transport).resumeProducing()
        self.assertEqual(parse(transport.value())[1], b"")
        producer_of(transport).pauseProducing()
        protocol.unthrottle_upload()
        self.assertEqual(parse(transport.value())[1], b"")
        producer_of(transport).resumeProducing()
        self.assertServed(transport, BIG)

    def test_throttle_mid_upload(self) -> None:
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        protocol.throttle_upload()
        sent = len(transport.value())
        producer_of(transport).resumeProducing()
        self.assertEqual(len(transport.value()), sent)
        protocol.unthrottle_upload()
        drain(transport)
        self.assertServed(transport, BIG)

    def test_throttle_download(self) -> None:
        protocol, transport = connect(self.factory)
        protocol.throttle_download()
        self.assertEqual(transport.producerState, "paused")
        protocol.unthrottle_download()
        self.assertEqual(transport.producerState, "producing")

    def test_rate_limiter(self) -> None:
        """
        Every byte in and out is reported; the connection is registered
        while it is open.
        """
        limiter = _Limiter()
        factory = self.make_factory(self.store, rate_limiter=limiter)
        protocol, transport = connect(factory)
        self.assertEqual(limiter.protocols, [protocol])
        request = full_request(H_BIG)
        protocol.dataReceived(request[:10])
        protocol.dataReceived(request[10:])
        self.assertEqual(limiter.down, len(request))
        self.assertEqual(limiter.up, len(transport.value()))
        lose(protocol, transport)
        self.assertEqual(limiter.protocols, [])

    def test_registered_while_throttling(self) -> None:
        """
        A connection that the rate limiter throttles as it registers sends
        its answer, and no blob bytes until the limiter lets it.
        """
        limiter = RateLimiter(self.clock, max_upload=1_000_000)
        limiter.report_ul_bytes(2_000_000)
        factory = self.make_factory(self.store, rate_limiter=limiter)
        protocol, transport = connect(factory)
        protocol.dataReceived(full_request(H_BIG))
        self.assertEqual(parse(transport.value())[1], b"")
        self.clock.advance(2.01)
        self.assertEqual(parse(transport.value())[1], BIG[:CHUNK_SIZE])
        while transport.producer is not None:
            self.clock.advance(1)
        self.assertServed(transport, BIG)

    def test_no_transfer_timeout_while_throttled(self) -> None:
        """
        An upload held by the rate limiter for longer than the transfer
        timeout is not cut off: the peer is not the one being silent.
        """
        limiter = RateLimiter(self.clock, max_upload=2_000)
        factory = self.make_factory(self.store, rate_limiter=limiter, transfer_timeout=60.0)
        protocol, transport = connect(factory)
        protocol.dataReceived(full_request(H_BIG))
        # the answer takes the bucket's first tokens; the first chunk, once
        # they are paid for, puts it 131 s in debt
        self.clock.advance(1)
        self.assertEqual(len(parse(transport.value())[1]), CHUNK_SIZE)
        self.clock.advance(125)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)
        self.assertEqual(len(parse(transport.value())[1]), 2 * CHUNK_SIZE)
        self.assertFalse(transport.disconnecting)

    def test_counted_per_peer_and_stream(self) -> None:
        """
        With a L{RateLimiter}, the bytes count for the peer's host, and a
        blob's body bytes for its stream.
        """
        stream = "5" * 96
        limiter = RateLimiter(self.clock, counters=TrafficCounters({H_BIG: stream}.get))
        factory = self.make_factory(self.store, rate_limiter=limiter)
        protocol, transport = connect(factory)
        request = full_request(H_BIG)
        protocol.dataReceived(request)
        self.assertServed(transport, BIG)
        lose(protocol, transport)
        self.assertEqual(
            limiter.counters.by_peer(),
            {"192.0.2.1": Traffic(up=len(transport.value()), down=len(request))},
        )
        self.assertEqual(limiter.counters.by_stream(), {stream: Traffic(up=len(BIG))})

    def test_blob_cut_short_counted(self) -> None:
        """
        A blob upload cut short by the connection's loss counts what was
        sent of it.
        """
        stream = "5" * 96
        limiter = RateLimiter(self.clock, counters=TrafficCounters({H_BIG: stream}.get))
        factory = self.make_factory(self.store, rate_limiter=limiter)
        protocol, transport = connect(factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        producer_of(transport).resumeProducing()
        lose(protocol, transport)
        self.assertEqual(limiter.counters.by_stream(), {stream: Traffic(up=2 * CHUNK_SIZE)})

    def test_other_pause_kept(self) -> None:
        """
        Unthrottling does not resume a reading paused for another reason.
        """
        protocol, transport = connect(self.factory)
        protocol._reading.pause("full")
        protocol.throttle_download()
        protocol.unthrottle_download()
        self.assertEqual(transport.producerState, "paused")
        protocol._reading.resume("full")
        self.assertEqual(transport.producerState, "producing")


class DiskBlobTests(_ServerTestCase):
    """
    A blob on disk is opened when it is announced.
    """

    def setUp(self) -> None:
        super().setUp()
        root = Path(self.mktemp())
        self.disk = BlobStore(self.clock, run_inline, root / "blobs", root / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.disk.start()))
        self.addCleanup(self.disk.stop)
        self.successResultOf(self.disk.put_blob(BIG))

    def test_deleted_after_announce(self) -> None:
        protocol, transport = connect(self.make_factory(self.disk), slow=True)
        protocol.dataReceived(full_request(H_BIG))
        self.successResultOf(self.disk.delete_blobs([H_BIG]))
        self.assertFalse(self.disk.path_of(H_BIG).exists())
        drain(transport)
        self.assertServed(transport, BIG)

    def test_truncated(self) -> None:
        """
        A file found shorter than announced aborts the connection.
        """
        protocol, transport = connect(self.make_factory(self.disk), slow=True)
        protocol.dataReceived(full_request(H_BIG))
        os.truncate(self.disk.path_of(H_BIG), CHUNK_SIZE + 10)
        drain(transport)
        self.assertEqual(parse(transport.value())[1], BIG[: CHUNK_SIZE + 10])
        self.assertTrue(transport.disconnected)
        self.assertIsNone(transport.producer)
        lose(protocol, transport)
        self.assertEqual(self.flushLoggedErrors(), [])


class ConnectionTests(_ServerTestCase):
    def test_per_ip_cap(self) -> None:
        factory = self.make_factory(self.store, max_connections_per_ip=2)
        first = [connect(factory, "192.0.2.1", p) for p in (1, 2)]
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 3)))
        other = connect(factory, "192.0.2.2", 1)
        self.assertEqual((factory.open_connections, factory.connections_from("192.0.2.1")), (3, 2))
        lose(*first[0])
        again = connect(factory, "192.0.2.1", 4)
        for protocol, transport in (first[1], other, again):
            lose(protocol, transport)
        self.assertEqual(factory.open_connections, 0)

    def test_lost_during_upload(self) -> None:
        """
        Losing the connection mid-blob stops the upload quietly.
        """
        store = _RecordingStore()
        self.successResultOf(store.put_blob(BIG))
        factory = self.make_factory(store)
        protocol, transport = connect(factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        producer = producer_of(transport)
        lose(protocol, transport)
        self.assertTrue(store.opened[0].closed)
        self.assertEqual(factory.open_connections, 0)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(self.clock.getDelayedCalls())
        producer.resumeProducing()  # too late: nothing happens
        self.assertEqual(len(parse(transport.value())[1]), CHUNK_SIZE)

    def test_close_all(self) -> None:
        connections = [connect(self.factory, port=p, slow=True) for p in (1, 2)]
        connections[1][0].dataReceived(full_request(H_BIG))
        closed = self.factory.close_all()
        self.assertNoResult(closed)
        self.assertTrue(connections[0][1].disconnecting)
        self.assertTrue(connections[1][1].disconnected)
        for protocol, transport in connections:
            lose(protocol, transport)
        self.successResultOf(closed)

    def test_producer_stopped(self) -> None:
        """
        A producer stopped by its consumer closes its file and fails with
        L{ConnectionLost}.
        """
        file = io.BytesIO(BIG)
        producer = BlobUploadProducer(H_BIG, file, len(BIG))
        transport = _Transport(IPv4Address("TCP", "192.0.2.1", 1), slow=True)
        done = producer.start(transport)
        self.assertEqual(producer.sent, CHUNK_SIZE)
        producer.stopProducing()
        self.failureResultOf(done, ConnectionLost)
        self.assertTrue(file.closed)


class BlobsServedTests(_ServerTestCase):
    """
    L{BlobRequestHandlerFactory.blobs_served} counts the uploads completed
    on every connection of the server.
    """

    def blobs_served(self) -> int:
        [blob_requests] = [
            handlers for handlers in self.factory.query_handler_factories
            if isinstance(handlers, BlobRequestHandlerFactory)
        ]
        return blob_requests.blobs_served

    def test_complete_uploads_counted(self) -> None:
        """
        Each blob sent in full counts once, whichever connection sent it;
        a blob asked for but not held counts nothing.
        """
        self.assertEqual(self.blobs_served(), 0)
        first, _ = connect(self.factory, port=1)
        second, _ = connect(self.factory, port=2)
        for data in (SMALL, BIG):
            first.dataReceived(full_request(blob_hash(data)))
        second.dataReceived(full_request(H_SMALL))
        second.dataReceived(full_request(H_MISSING))
        self.assertEqual(self.blobs_served(), 3)

    def test_upload_counted_when_complete(self) -> None:
        """
        A blob sent one chunk at a time counts once its last chunk is
        written, not before.
        """
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        producer_of(transport).resumeProducing()
        self.assertEqual(self.blobs_served(), 0)
        drain(transport)
        self.assertEqual(self.blobs_served(), 1)

    def test_cut_short_not_counted(self) -> None:
        """
        An upload cut short by the connection's loss is not counted.
        """
        protocol, transport = connect(self.factory, slow=True)
        protocol.dataReceived(full_request(H_BIG))
        producer_of(transport).resumeProducing()
        lose(protocol, transport)
        self.assertEqual(self.blobs_served(), 0)


_VALID = [
    full_request(H_SMALL),
    full_request(H_MISSING),
    encode_request({"requested_blobs": [H_SMALL, H_BIG, H_MISSING]}),
    encode_request({"lbrycrd_address": True, "blob_data_payment_rate": 0.5}),
]
_SYNTAX = [bytes([c]) for c in b'{}[]"\\,: ']
_BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@st.composite
def _hostile(draw: Any) -> list[bytes]:
    """
    Random bytes, or a valid request mutated, bloated, nested deeply or
    given bad UTF-8; possibly several of them back to back; split into
    random reads.
    """
    kind = draw(st.sampled_from(["random", "mutated", "huge", "deep", "utf8"]))
    if kind == "random":
        data = draw(st.binary(max_size=600))
    elif kind == "mutated":
        mutable = bytearray(draw(st.sampled_from(_VALID)))
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(mutable)))
            op = draw(st.sampled_from(["flip", "insert", "delete"]))
            if op == "flip" and i < len(mutable):
                mutable[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                mutable[i:i] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(_SYNTAX))
            else:
                del mutable[i : i + draw(st.integers(1, 40))]
        data = bytes(mutable)
    elif kind == "huge":
        count = draw(st.integers(600, 3000))
        data = encode_request({"requested_blobs": [H_SMALL] * count})
    elif kind == "deep":
        depth = draw(st.integers(100, 10000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a": ', b"}")]))
        data = b'{"requested_blobs": ' + opener * depth + closer * depth + b"}"
    else:
        valid = draw(st.sampled_from(_VALID))
        i = draw(st.integers(2, len(valid) - 2))
        data = valid[:i] + draw(st.sampled_from(_BAD_UTF8)) + valid[i:]
    data *= draw(st.integers(1, 2))
    return _split(data, draw(st.lists(st.integers(min_value=0), max_size=10)))


class HostileInputTests(_ServerTestCase):
    @settings(max_examples=300, deadline=None, database=None)
    @given(_hostile(), st.booleans())
    def test_hostile_input(self, pieces: list[bytes], slow: bool) -> None:
        """
        Whatever a peer sends, no exception escapes and nothing unexpected
        is logged; a well-behaved peer is then served as before, and the
        per-address count goes back to zero.
        """
        ip = "198.51.100.7"
        protocol, transport = connect(self.factory, ip, 1, slow=slow)
        for piece in pieces:
            protocol.dataReceived(piece)
        lose(protocol, transport)
        self.assertEqual(self.flushLoggedErrors(), [])
        good, good_transport = connect(self.factory, ip, 2)
        good.dataReceived(full_request(H_SMALL))
        self.assertServed(good_transport, SMALL)
        lose(good, good_transport)
        self.assertEqual(self.factory.connections_from(ip), 0)
        self.assertEqual(self.factory.open_connections, 0)
        self.assertFalse(self.clock.getDelayedCalls())
