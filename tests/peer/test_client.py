"""
Tests for L{p2pblob.peer.client}: the client side of a blob-exchange
connection, fed the bytes a real lbry-sdk server sent (C{blob_exchange/
exchanges.json} of the shared vectors) and every kind of bad answer.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.staged import StagedBlobWriter, blob_buffers
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobTooLargeError,
    BlobUnavailableError,
    BlobWriteCancelledError,
    DiskLimitError,
    NoResponseError,
    PeerTimeoutError,
    ProtocolViolationError,
)
from p2pblob.interfaces import (
    IBlobWriter,
    IConnectionManager,
    IRateLimited,
    IRateLimiter,
    IRequestSender,
)
from p2pblob.peer.client import (
    READ_SIZE,
    BlobExchangeClient,
    ClientState,
    RequestTooLargeError,
)
from p2pblob.peer.peer import Peer
from p2pblob.peer.requests import ClientBlobRequest, ClientRequest
from p2pblob.peer.wire import MAX_RESPONSE_JSON_SIZE
from p2pblob.ratelimit import RateLimiter, TrafficCounters
from p2pblob.testing import MemoryBlobStore
from p2pblob.traffic import Traffic
from tests._vectors import load_json, sd_blob_bytes, vector_bytes

# What lbry-sdk's client sent and its server answered (the vectors'
# blob_exchange/exchanges.json): the case-e sd blob, whose length the client
# did not know, the 16-byte case-b data blob, and a blob the server lacks.
_CAPTURE = load_json("blob_exchange", "exchanges.json")
EXCHANGES = _CAPTURE["exchanges"]
SD_MESSAGE, B_MESSAGE = EXCHANGES["i_client_downloads_blobs"]["messages"][:2]
MISSING_EXCHANGE = EXCHANGES["iii_client_requests_missing_blob"]
SD_HASH: str = SD_MESSAGE["blob_hash"]
B_HASH: str = B_MESSAGE["blob_hash"]
SD_REQUEST = bytes.fromhex(SD_MESSAGE["request_hex"])
SD_RESPONSE = bytes.fromhex(SD_MESSAGE["response"]["json_hex"])
B_REQUEST = bytes.fromhex(B_MESSAGE["request_hex"])
B_RESPONSE = bytes.fromhex(B_MESSAGE["response"]["json_hex"])
MISSING_HASH: str = _CAPTURE["blobs_served"]["missing"]["hash"]
MISSING_REQUEST = bytes.fromhex(MISSING_EXCHANGE["request_hex"])
MISSING_RESPONSE = bytes.fromhex(MISSING_EXCHANGE["response"]["json_hex"])

SD_BLOB = sd_blob_bytes("e_5MiB_plus_123")
B_BLOB = vector_bytes("streams", "b_one_byte", "blobs", B_HASH)

_BUFFERS = blob_buffers(keep=2)


@implementer(IConnectionManager)
class FakeConnectionManager:
    """
    Hands each C{get_next_request} Deferred to the test, which fires it.
    """

    def __init__(self) -> None:
        self.asks: list[Deferred[bool]] = []
        self.disconnected: list[IRequestSender] = []

    def get_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.asks.append(d)
        return d

    def protocol_disconnected(self, peer: Any, protocol: IRequestSender) -> None:
        self.disconnected.append(protocol)


verifyObject(IConnectionManager, FakeConnectionManager())


@implementer(IRateLimiter)
class FakeRateLimiter:
    def __init__(self) -> None:
        self.dl: list[int] = []
        self.ul: list[int] = []
        self.registered: list[IRateLimited] = []

    def report_dl_bytes(self, num_bytes: int) -> None:
        self.dl.append(num_bytes)

    def report_ul_bytes(self, num_bytes: int) -> None:
        self.ul.append(num_bytes)

    def register_protocol(self, protocol: IRateLimited) -> None:
        self.registered.append(protocol)

    def unregister_protocol(self, protocol: IRateLimited) -> None:
        self.registered.remove(protocol)


verifyObject(IRateLimiter, FakeRateLimiter())


class RecordingTransport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Harness:
    """
    A client connected to a L{RecordingTransport}, with a memory store for
    the blobs it receives.
    """

    def __init__(
        self,
        timeout: float = 30.0,
        rate_limiter: IRateLimiter | None = None,
        transport: RecordingTransport | None = None,
    ) -> None:
        self.clock = Clock()
        self.manager = FakeConnectionManager()
        self.store = MemoryBlobStore()
        self.peer = Peer("10.0.0.2", 3333)
        self.client = BlobExchangeClient(self.peer, self.manager, self.clock, timeout, rate_limiter)
        self.transport = transport or RecordingTransport()
        self.client.makeConnection(self.transport)

    def blob_request(self, blob_hash: str, length: int | None) -> ClientBlobRequest:
        """
        A request for a blob built as lbry-sdk's client builds it.
        """
        return ClientBlobRequest(
            {
                "requested_blobs": [blob_hash],
                "lbrycrd_address": True,
                "blob_data_payment_rate": 0.0,
                "requested_blob": blob_hash,
            },
            "incoming_blob",
            blob_hash,
            length,
            lambda n: StagedBlobWriter(self.store, blob_hash, n, _BUFFERS),
        )

    def go(self, more: bool = True) -> None:
        """
        Fire the connection manager's pending C{get_next_request}.
        """
        self.manager.asks.pop().callback(more)

    def request_blob(
        self, blob_hash: str, length: int | None
    ) -> tuple[ClientBlobRequest, Deferred[dict[str, Any]]]:
        blob_request = self.blob_request(blob_hash, length)
        d = self.client.add_blob_request(blob_request)
        self.go()
        return blob_request, d

    def feed(self, *chunks: bytes) -> None:
        """
        Deliver C{chunks} as separate reads (empty ones are skipped, as no
        transport delivers them).
        """
        for chunk in chunks:
            if chunk:
                self.client.dataReceived(chunk)

    def lose(self, reason: Failure | None = None) -> None:
        self.client.connectionLost(reason or Failure(ConnectionDone()))


def ignore(d: Deferred[Any]) -> None:
    d.addErrback(lambda _: None)


class InterfaceTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """
        The client provides L{IRequestSender} and L{IRateLimited}.
        """
        client = Harness().client
        self.assertTrue(verifyObject(IRequestSender, client))
        self.assertTrue(verifyObject(IRateLimited, client))


class RequestTests(SynchronousTestCase):
    def test_asks_on_connect(self) -> None:
        """
        Once connected, the client asks the connection manager for requests
        and sends nothing until it answers.
        """
        h = Harness()
        self.assertEqual(len(h.manager.asks), 1)
        self.assertIs(h.client.state, ClientState.ASKING)
        self.assertEqual(h.transport.value(), b"")

    def test_modern_request_bytes(self) -> None:
        """
        A blob request built like lbry-sdk's goes out as exactly the bytes
        lbry-sdk's client sends.
        """
        for blob_hash, expected in [
            (SD_HASH, SD_REQUEST),
            (B_HASH, B_REQUEST),
            (MISSING_HASH, MISSING_REQUEST),
        ]:
            h = Harness()
            _, d = h.request_blob(blob_hash, None)
            self.assertEqual(h.transport.value(), expected)
            self.assertEqual(len(expected), 295)
            self.assertEqual(h.client.bytes_sent, 295)
            self.assertIs(h.client.state, ClientState.AWAITING_RESPONSE)
            ignore(d)

    def test_requests_merged(self) -> None:
        """
        Requests queued before a message goes out are merged into one object.
        """
        h = Harness()
        d1 = h.client.add_request(ClientRequest({"requested_blobs": [B_HASH]}, "available_blobs"))
        d2 = h.client.add_request(ClientRequest({"lbrycrd_address": True}, "lbrycrd_address"))
        h.go()
        self.assertEqual(
            json.loads(h.transport.value()),
            {"requested_blobs": [B_HASH], "lbrycrd_address": True},
        )
        h.feed(b'{"available_blobs": [], "lbrycrd_address": "x"}')
        self.assertEqual(self.successResultOf(d1)["available_blobs"], [])
        self.assertEqual(self.successResultOf(d2)["lbrycrd_address"], "x")
        self.assertEqual(len(h.manager.asks), 1)

    def test_missing_response_key(self) -> None:
        """
        A request whose key the response lacks fails with L{NoResponseError};
        one with no identifier gets any response; the connection stays open.
        """
        h = Harness()
        d1 = h.client.add_request(ClientRequest({"requested_blobs": [B_HASH]}, "available_blobs"))
        d2 = h.client.add_request(ClientRequest({"lbrycrd_address": True}, None))
        h.go()
        h.feed(b'{"lbrycrd_address": true}')
        self.assertEqual(self.failureResultOf(d1, NoResponseError).value.key, "available_blobs")
        self.assertEqual(self.successResultOf(d2), {"lbrycrd_address": True})
        self.assertFalse(h.transport.disconnecting)
        self.assertIs(h.client.state, ClientState.ASKING)

    def test_extension_key(self) -> None:
        """
        A response key that a queued request names is allowed.
        """
        h = Harness()
        d = h.client.add_request(ClientRequest({"x_query": 1}, "x_answer"))
        h.go()
        h.feed(b'{"x_answer": 2}')
        self.assertEqual(self.successResultOf(d), {"x_answer": 2})

    def test_conflicting_requests(self) -> None:
        """
        Two requests giving one key different values, or two blob requests
        in one message, are programming errors.
        """
        h = Harness()
        h.client.add_request(ClientRequest({"requested_blobs": [B_HASH]}, None))
        self.assertRaises(
            ValueError,
            h.client.add_request,
            ClientRequest({"requested_blobs": [SD_HASH]}, None),
        )
        h.client.add_blob_request(h.blob_request(B_HASH, 16))
        self.assertRaises(ValueError, h.client.add_blob_request, h.blob_request(SD_HASH, None))

    def test_request_too_large(self) -> None:
        """
        A message of 1200 bytes or more is not sent: its requests fail with
        L{RequestTooLargeError} and the connection is closed.
        """
        h = Harness()
        d = h.client.add_request(ClientRequest({"requested_blobs": [B_HASH] * 12}, None))
        h.go()
        self.failureResultOf(d, RequestTooLargeError)
        self.assertEqual(h.transport.value(), b"")
        self.assertTrue(h.transport.disconnecting)
        h.lose()
        self.assertEqual(h.manager.disconnected, [h.client])

    def test_nothing_to_ask(self) -> None:
        """
        When the manager has nothing for the peer, or says yes but queued
        nothing, the client hangs up cleanly.
        """
        for more in (False, True):
            h = Harness()
            h.go(more)
            self.assertTrue(h.transport.disconnecting)
            self.assertFalse(h.transport.aborted)
            self.assertIs(h.client.state, ClientState.CLOSING)
            h.lose()
            self.assertEqual(h.manager.disconnected, [h.client])

    def test_false_with_queued_requests(self) -> None:
        """
        Requests queued when the manager says no fail once the connection
        is gone.
        """
        h = Harness()
        d = h.client.add_request(ClientRequest({"lbrycrd_address": True}, None))
        h.go(False)
        h.lose()
        self.failureResultOf(d, ConnectionDone)

    def test_ask_fails(self) -> None:
        """
        If asking for the next request fails, the failure is logged and the
        connection closed.
        """
        h = Harness()
        h.manager.asks.pop().errback(RuntimeError("creator bug"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(h.transport.disconnecting)

    def test_add_after_close(self) -> None:
        """
        Requests added once the connection is closed fail at once.
        """
        h = Harness()
        h.lose(Failure(ConnectionLost()))
        self.failureResultOf(h.client.add_request(ClientRequest({}, None)), ConnectionDone)
        blob_request = h.blob_request(B_HASH, 16)
        self.failureResultOf(h.client.add_blob_request(blob_request), ConnectionDone)
        self.failureResultOf(blob_request.finished_deferred, ConnectionDone)


class VectorTests(SynchronousTestCase):
    """
    The answers of a real lbry-sdk server, however TCP splits them.
    """

    def test_vectors(self) -> None:
        """
        The blob bytes that followed the captured answers are the shipped
        blob files.
        """
        for message, blob in [(SD_MESSAGE, SD_BLOB), (B_MESSAGE, B_BLOB)]:
            self.assertEqual(
                message["request_text"].encode(), bytes.fromhex(message["request_hex"])
            )
            self.assertEqual(bytes.fromhex(message["response"]["following_bytes_hex"]), blob)
        self.assertNotIn(b'"incoming_blob"', MISSING_RESPONSE)

    def check_download(
        self, blob_hash: str, length: int | None, wire: bytes, splits: list[list[int]]
    ) -> None:
        for points in splits:
            h = Harness()
            blob_request, d = h.request_blob(blob_hash, length)
            bounds = [0, *points, len(wire)]
            h.feed(*(wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)))
            response = self.successResultOf(d)
            self.assertEqual(response["incoming_blob"]["blob_hash"], blob_hash)
            blob = self.successResultOf(blob_request.finished_deferred)
            self.assertEqual(blob.blob_hash, blob_hash)
            self.assertTrue(h.store.has_blob(blob_hash))
            self.assertIs(h.client.state, ClientState.ASKING)
            self.assertEqual(len(h.manager.asks), 1)
            self.assertFalse(h.transport.disconnecting)
            self.assertEqual(h.client.bytes_received, len(wire))

    def test_sd_blob_every_split(self) -> None:
        """
        The case-e sd blob (length unknown to the client) arrives whole
        whatever the split point.
        """
        wire = SD_RESPONSE + SD_BLOB
        self.check_download(SD_HASH, None, wire, [[i] for i in range(len(wire) + 1)])

    def test_data_blob_every_split(self) -> None:
        """
        The 16-byte case-b blob, with its known length, split at every pair
        of points.
        """
        wire = B_RESPONSE + B_BLOB
        n = len(wire)
        self.check_download(
            B_HASH, 16, wire, [[i, j] for i in range(n + 1) for j in range(i, n + 1, 7)]
        )

    def test_byte_by_byte(self) -> None:
        """
        One byte per read works too.
        """
        for blob_hash, length, wire in [
            (SD_HASH, None, SD_RESPONSE + SD_BLOB),
            (B_HASH, 16, B_RESPONSE + B_BLOB),
        ]:
            self.check_download(blob_hash, length, wire, [list(range(1, len(wire)))])

    def test_two_blobs_one_connection(self) -> None:
        """
        Two blobs in sequence on one connection; the second request goes out
        only after the first blob's last byte.
        """
        h = Harness()
        first, d1 = h.request_blob(SD_HASH, None)
        h.feed(SD_RESPONSE + SD_BLOB[:-1])
        self.assertEqual(h.manager.asks, [])
        second = h.blob_request(B_HASH, 16)
        d2 = h.client.add_blob_request(second)
        h.feed(SD_BLOB[-1:])
        self.successResultOf(first.finished_deferred)
        self.assertEqual(h.transport.value(), SD_REQUEST)
        h.go()
        self.assertEqual(h.transport.value(), SD_REQUEST + B_REQUEST)
        h.feed(B_RESPONSE, B_BLOB)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.successResultOf(second.finished_deferred)
        self.assertTrue(h.store.has_blob(SD_HASH))
        self.assertTrue(h.store.has_blob(B_HASH))
        self.assertEqual(h.peer.failures, 0)

    def test_counters(self) -> None:
        """
        The client counts bytes and notes when the blob body started.
        """
        h = Harness()
        h.clock.advance(100)
        blob_request, d = h.request_blob(SD_HASH, None)
        h.clock.advance(2)
        h.feed(SD_RESPONSE + SD_BLOB[:100])
        self.assertEqual(h.client.blob_started_at, 102)
        self.assertEqual(h.client.blob_length, 971)
        self.assertEqual(h.client.blob_remaining, 871)
        h.clock.advance(3)
        h.feed(SD_BLOB[100:])
        self.assertEqual(h.client.bytes_received, len(SD_RESPONSE) + 971)
        self.assertEqual(h.client.blob_remaining, 0)
        self.successResultOf(blob_request.finished_deferred)

    def test_big_blob_reads_passed_whole(self) -> None:
        """
        A read that is all body reaches the writer as the very same object.
        """
        h = Harness()
        seen: list[bytes] = []
        blob_request = h.blob_request(B_HASH, 16)
        self.patch(blob_request, "write", seen.append)
        h.client.add_blob_request(blob_request)
        h.go()
        chunk = B_BLOB[:8]
        h.feed(B_RESPONSE, chunk, B_BLOB[8:])
        self.assertIs(seen[0], chunk)


class UnavailableTests(SynchronousTestCase):
    """
    A peer that does not send the blob fails the request, not the connection.
    """

    def check_unavailable(self, response: bytes, detail: str) -> None:
        h = Harness()
        blob_request, d = h.request_blob(B_HASH, 16)
        h.feed(response)
        error = self.failureResultOf(d, BlobUnavailableError).value
        self.assertIn(detail, str(error))
        self.assertEqual(error.blob_hash, B_HASH)
        self.failureResultOf(blob_request.finished_deferred, BlobUnavailableError)
        self.assertFalse(h.transport.disconnecting)
        self.assertIs(h.client.state, ClientState.ASKING)
        self.assertEqual(len(h.manager.asks), 1)
        # and the connection is still good for the next blob
        second, d2 = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + B_BLOB)
        self.successResultOf(second.finished_deferred)

    def test_missing_blob(self) -> None:
        """
        lbry-sdk's answer for a blob it lacks has no C{incoming_blob}.
        """
        self.check_unavailable(MISSING_RESPONSE, "does not have it")

    def test_error_answers(self) -> None:
        """
        2015-2018 servers answer C{incoming_blob: {"error": ...}}.
        """
        for error in ("BLOB_UNAVAILABLE", "RATE_UNSET"):
            response = json.dumps({"incoming_blob": {"error": error}}).encode()
            self.check_unavailable(response, error)

    def test_price_refused(self) -> None:
        """
        A price other than C{RATE_ACCEPTED} makes the blob unavailable.
        """
        response = json.dumps(
            {"blob_data_payment_rate": "RATE_TOO_LOW", "available_blobs": [B_HASH]}
        ).encode()
        self.check_unavailable(response, "price not accepted: 'RATE_TOO_LOW'")

    def test_price_refused_blob_sent(self) -> None:
        """
        A refused price with a blob announced anyway: its bytes are read,
        dropped, and the connection is reused.
        """
        h = Harness()
        blob_request, d = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE.replace(b"RATE_ACCEPTED", b"RATE_TOO_LOW") + B_BLOB[:5])
        self.assertIn("price not accepted", str(self.failureResultOf(d).value))
        self.failureResultOf(blob_request.finished_deferred, BlobUnavailableError)
        self.assertEqual(h.manager.asks, [])
        h.feed(B_BLOB[5:])
        self.assertFalse(h.store.has_blob(B_HASH))
        self.assertEqual(len(h.manager.asks), 1)
        self.assertFalse(h.transport.disconnecting)

    def test_corrupt_blob(self) -> None:
        """
        Bytes that do not hash to the name fail the blob, nothing is stored,
        and the exchange itself was fine: the connection is reused.
        """
        h = Harness()
        blob_request, d = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + bytes(16))
        self.successResultOf(d)
        self.failureResultOf(blob_request.finished_deferred, BlobHashMismatchError)
        self.assertFalse(h.store.has_blob(B_HASH))
        self.assertEqual(h.store.used_bytes(), 0)
        self.assertEqual(len(h.manager.asks), 1)

    def test_writer_cannot_open(self) -> None:
        """
        If no writer can be opened, the blob fails, its bytes are dropped
        and the connection is reused.
        """
        h = Harness()

        def open_writer(length: int) -> IBlobWriter:
            raise DiskLimitError(length, 0, 0)

        blob_request = ClientBlobRequest({"requested_blob": B_HASH}, None, B_HASH, 16, open_writer)
        d = h.client.add_blob_request(blob_request)
        h.go()
        h.feed(B_RESPONSE + B_BLOB)
        self.successResultOf(d)
        self.failureResultOf(blob_request.finished_deferred, DiskLimitError)
        self.assertEqual(len(h.manager.asks), 1)
        self.assertFalse(h.transport.disconnecting)

    def test_cancel_mid_blob(self) -> None:
        """
        A blob cancelled while it arrives: the rest of its bytes are dropped
        and the connection carries the next request.
        """
        h = Harness()
        blob_request, d = h.request_blob(SD_HASH, None)
        h.feed(SD_RESPONSE + SD_BLOB[:500])
        blob_request.cancel()
        self.failureResultOf(blob_request.finished_deferred, BlobWriteCancelledError)
        h.feed(SD_BLOB[500:900], SD_BLOB[900:])
        self.assertFalse(h.store.has_blob(SD_HASH))
        self.assertEqual(len(h.manager.asks), 1)
        second, _ = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + B_BLOB)
        self.successResultOf(second.finished_deferred)

    def test_cancel_before_response(self) -> None:
        """
        A blob cancelled before its answer arrives is drained the same way.
        """
        h = Harness()
        blob_request, d = h.request_blob(B_HASH, 16)
        blob_request.cancel()
        self.failureResultOf(blob_request.finished_deferred, BlobWriteCancelledError)
        h.feed(B_RESPONSE + B_BLOB)
        self.successResultOf(d)
        self.assertFalse(h.store.has_blob(B_HASH))
        self.assertEqual(len(h.manager.asks), 1)


def violating_responses() -> list[tuple[str, bytes]]:
    def incoming(blob_hash: Any = B_HASH, length: Any = 16, **extra: Any) -> bytes:
        body = {"incoming_blob": {"blob_hash": blob_hash, "length": length}}
        body.update(extra)
        return json.dumps(body).encode()

    return [
        ("wrong hash", incoming(blob_hash=SD_HASH) + B_BLOB),
        ("hash not a string", incoming(blob_hash=None)),
        ("wrong length", incoming(length=17) + B_BLOB + b"x"),
        ("length too big", incoming(length=MAX_BLOB_SIZE + 1)),
        ("length zero", incoming(length=0)),
        ("length negative", incoming(length=-16)),
        ("length bool", incoming(length=True)),
        ("length string", incoming(length="16")),
        ("length float", incoming(length=16.0)),
        ("incoming_blob a list", b'{"incoming_blob": [1]}'),
        ("unexpected key", incoming(foo=1)),
        ("empty object", b"{}"),
        ("JSON array", b"[1, 2]"),
        ("not JSON", b"{nope}"),
        ("not UTF-8", b'{"a\xff": 1}'),
        ("oversized JSON", b'{"available_blobs": "' + b"a" * MAX_RESPONSE_JSON_SIZE),
        ("bytes after a blobless answer", MISSING_RESPONSE + b"x"),
    ]


class ViolationTests(SynchronousTestCase):
    """
    A peer that breaks the protocol fails everything outstanding and the
    connection is aborted.
    """

    def test_bad_responses(self) -> None:
        for name, response in violating_responses():
            with self.subTest(name):
                h = Harness()
                plain = h.client.add_request(ClientRequest({"lbrycrd_address": True}, None))
                blob_request, d = h.request_blob(B_HASH, 16)
                h.feed(response)
                self.failureResultOf(d, ProtocolViolationError)
                self.failureResultOf(plain, ProtocolViolationError)
                self.failureResultOf(blob_request.finished_deferred, ProtocolViolationError)
                self.assertTrue(h.transport.aborted)
                self.assertIs(h.client.state, ClientState.CLOSING)
                self.assertFalse(h.store.has_blob(B_HASH))
                self.assertEqual(h.manager.asks, [])
                h.feed(b"more")  # ignored once closing
                h.lose(Failure(ConnectionLost()))
                self.assertEqual(h.manager.disconnected, [h.client])

    def test_logged(self) -> None:
        """
        A violation is logged as a warning naming the peer and the error.
        """
        h = Harness()
        with capturedLogs() as events:
            h.feed(b"x")
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIs(event["peer"], h.peer)
        self.assertIsInstance(event["error"], ProtocolViolationError)
        self.assertIn("no request outstanding", formatEvent(event))

    def test_unrequested_blob(self) -> None:
        """
        A blob announced in answer to a plain request is a violation.
        """
        h = Harness()
        d = h.client.add_request(ClientRequest({"requested_blobs": [B_HASH]}, None))
        h.go()
        h.feed(B_RESPONSE)
        self.assertIn("did not ask", str(self.failureResultOf(d, ProtocolViolationError).value))
        self.assertTrue(h.transport.aborted)

    def test_unsolicited_bytes(self) -> None:
        """
        Bytes with no request outstanding abort the connection.
        """
        h = Harness()
        h.feed(b"{")
        self.assertTrue(h.transport.aborted)
        h.lose()
        h.lose()
        self.assertEqual(h.manager.disconnected, [h.client])

    def test_surplus_after_blob(self) -> None:
        """
        Bytes beyond the announced length: the blob, complete, is kept; the
        connection is aborted and the peer marked down.
        """
        for wire in ([B_RESPONSE + B_BLOB + b"{}"], [B_RESPONSE + B_BLOB[:3], B_BLOB[3:] + b"x"]):
            h = Harness()
            blob_request, d = h.request_blob(B_HASH, 16)
            h.feed(*wire)
            self.successResultOf(blob_request.finished_deferred)
            self.assertTrue(h.store.has_blob(B_HASH))
            self.assertTrue(h.transport.aborted)
            self.assertEqual(h.manager.asks, [])
            self.assertEqual(h.peer.failures, 1)
            h.lose()
            self.assertEqual(h.manager.disconnected, [h.client])

    def test_writer_refuses(self) -> None:
        """
        A writer that raises on bytes the peer announced: the blob fails and
        the connection is aborted.
        """
        h = Harness()
        blob_request = ClientBlobRequest(
            {"requested_blob": B_HASH},
            None,
            B_HASH,
            None,
            lambda n: StagedBlobWriter(h.store, B_HASH, n - 1, _BUFFERS),
        )
        d = h.client.add_blob_request(blob_request)
        h.go()
        h.feed(B_RESPONSE, B_BLOB)
        self.successResultOf(d)
        self.failureResultOf(blob_request.finished_deferred, BlobTooLargeError)
        self.assertTrue(h.transport.aborted)


class TimeoutTests(SynchronousTestCase):
    def test_no_response(self) -> None:
        """
        No answer within the timeout: L{PeerTimeoutError}, abort.
        """
        h = Harness(timeout=30)
        blob_request, d = h.request_blob(B_HASH, 16)
        h.clock.advance(29.9)
        self.assertFalse(h.transport.aborted)
        h.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(d, PeerTimeoutError).value.seconds, 30)
        self.failureResultOf(blob_request.finished_deferred, PeerTimeoutError)
        self.assertTrue(h.transport.aborted)
        h.lose(Failure(ConnectionLost()))
        self.assertEqual(h.manager.disconnected, [h.client])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_partial_response(self) -> None:
        """
        Half an answer, then silence.
        """
        h = Harness(timeout=30)
        blob_request, d = h.request_blob(B_HASH, 16)
        h.clock.advance(20)
        h.feed(B_RESPONSE[:10])
        h.clock.advance(29)
        self.assertNoResult(d)
        h.clock.advance(1)
        self.failureResultOf(d, PeerTimeoutError)
        self.failureResultOf(blob_request.finished_deferred, PeerTimeoutError)

    def test_mid_blob(self) -> None:
        """
        Silence in the middle of a blob fails the blob; nothing is stored.
        """
        h = Harness(timeout=30)
        blob_request, d = h.request_blob(SD_HASH, None)
        h.feed(SD_RESPONSE + SD_BLOB[:10])
        self.successResultOf(d)
        h.clock.advance(30)
        self.failureResultOf(blob_request.finished_deferred, PeerTimeoutError)
        self.assertTrue(h.transport.aborted)
        self.assertFalse(h.store.has_blob(SD_HASH))

    def test_trickle(self) -> None:
        """
        A slow peer that never stays silent for the timeout is not cut off.
        """
        h = Harness(timeout=30)
        blob_request, _ = h.request_blob(SD_HASH, None)
        wire = SD_RESPONSE + SD_BLOB
        for i in range(len(wire)):
            h.clock.advance(29)
            h.feed(wire[i : i + 1])
        self.successResultOf(blob_request.finished_deferred)
        self.assertFalse(h.transport.aborted)
        self.assertLessEqual(len(h.clock.getDelayedCalls()), 1)

    def test_idle_between_requests(self) -> None:
        """
        No timeout while the connection waits for the next request.
        """
        h = Harness(timeout=30)
        blob_request, _ = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + B_BLOB)
        h.clock.advance(1000)
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        second, d = h.request_blob(B_HASH, 16)
        h.clock.advance(30)
        self.failureResultOf(d, PeerTimeoutError)
        self.failureResultOf(second.finished_deferred, PeerTimeoutError)


class ConnectionLostTests(SynchronousTestCase):
    def test_lost_mid_blob(self) -> None:
        """
        The connection lost in the middle of a blob: the blob fails with the
        reason, nothing is stored, the manager hears of it once.
        """
        h = Harness()
        blob_request, d = h.request_blob(SD_HASH, None)
        h.feed(SD_RESPONSE + SD_BLOB[:10])
        h.lose(Failure(ConnectionLost()))
        self.failureResultOf(blob_request.finished_deferred, ConnectionLost)
        self.assertFalse(h.store.has_blob(SD_HASH))
        self.assertEqual(h.store.used_bytes(), 0)
        self.assertIs(h.client.state, ClientState.CLOSED)
        h.lose()
        self.assertEqual(h.manager.disconnected, [h.client])

    def test_lost_awaiting_response(self) -> None:
        """
        Everything queued or in flight fails with the reason.
        """
        h = Harness()
        blob_request, d = h.request_blob(SD_HASH, None)
        queued = h.client.add_request(ClientRequest({"lbrycrd_address": True}, None))
        h.lose(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.failureResultOf(queued, ConnectionLost)
        self.failureResultOf(blob_request.finished_deferred, ConnectionLost)

    def test_lost_while_asking(self) -> None:
        """
        The manager's answer arriving after the connection is gone is ignored.
        """
        h = Harness()
        h.lose()
        h.go()
        self.assertEqual(h.transport.value(), b"")
        self.assertEqual(h.manager.disconnected, [h.client])


class ReentrancyTests(SynchronousTestCase):
    def test_callback_loses_connection(self) -> None:
        """
        A response callback that makes the connection go away at once (as an
        in-memory transport may) leaves the rest of the message failed with
        the reason, and nothing else happens.
        """
        h = Harness()
        plain = h.client.add_request(ClientRequest({"lbrycrd_address": True}, None))
        plain.addCallback(lambda _: h.lose(Failure(ConnectionLost())))
        blob_request, d = h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + B_BLOB)
        self.failureResultOf(d, ConnectionLost)
        self.failureResultOf(blob_request.finished_deferred, ConnectionLost)
        self.assertFalse(h.store.has_blob(B_HASH))
        self.assertEqual(h.manager.asks, [])
        self.assertEqual(h.manager.disconnected, [h.client])

    def test_callback_queues_next(self) -> None:
        """
        Requests queued from a response callback go in the next message.
        """
        h = Harness()
        blob_request, d = h.request_blob(B_HASH, 16)
        follow: list[Deferred[dict[str, Any]]] = []
        d.addCallback(
            lambda _: follow.append(
                h.client.add_request(ClientRequest({"requested_blobs": [SD_HASH]}, None))
            )
        )
        h.feed(B_RESPONSE + B_BLOB)
        self.successResultOf(blob_request.finished_deferred)
        h.go()
        self.assertEqual(
            h.transport.value(), B_REQUEST + b'{"requested_blobs": ["' + SD_HASH.encode() + b'"]}'
        )
        h.feed(b'{"available_blobs": []}')
        self.successResultOf(follow[0])


class RateLimitTests(SynchronousTestCase):
    def test_reports_and_throttles(self) -> None:
        limiter = FakeRateLimiter()
        h = Harness(rate_limiter=limiter)
        self.assertEqual(limiter.registered, [h.client])
        blob_request, _ = h.request_blob(B_HASH, 16)
        self.assertEqual(limiter.ul, [len(B_REQUEST)])
        h.feed(B_RESPONSE, B_BLOB[:4], B_BLOB[4:])
        self.assertEqual(limiter.dl, [len(B_RESPONSE), 4, 12])
        h.client.throttle_download()
        self.assertEqual(h.transport.producerState, "paused")
        h.client.unthrottle_download()
        self.assertEqual(h.transport.producerState, "producing")
        h.client.throttle_upload()
        h.client.unthrottle_upload()
        h.lose()
        self.assertEqual(limiter.registered, [])
        h.client.throttle_download()  # harmless once closed

    def test_read_size(self) -> None:
        """
        A transport that reads C{bufferSize} bytes at a time reads more.
        """
        transport = RecordingTransport()
        transport.bufferSize = 65536  # type: ignore[attr-defined]
        Harness(transport=transport)
        self.assertEqual(transport.bufferSize, READ_SIZE)  # type: ignore[attr-defined]

    def test_no_timeout_while_throttled(self) -> None:
        """
        While the rate limiter holds the connection's reading, the peer's
        silence is not counted: the timeout runs again from the moment
        reading resumes.
        """
        h = Harness(timeout=30)
        blob_request, d = h.request_blob(SD_HASH, None)
        h.feed(SD_RESPONSE + SD_BLOB[:10])
        h.client.throttle_download()
        h.clock.advance(100)
        self.assertFalse(h.transport.aborted)
        h.client.unthrottle_download()
        h.clock.advance(29.9)
        self.assertFalse(h.transport.aborted)
        h.clock.advance(0.2)
        self.failureResultOf(blob_request.finished_deferred, PeerTimeoutError)
        self.assertTrue(h.transport.aborted)

    def test_other_pause_kept(self) -> None:
        """
        Unthrottling does not resume a reading paused for another reason.
        """
        h = Harness()
        h.client._reading.pause("full")
        h.client.throttle_download()
        h.client.unthrottle_download()
        self.assertEqual(h.transport.producerState, "paused")
        h.client._reading.resume("full")
        self.assertEqual(h.transport.producerState, "producing")

    def test_counted_per_peer_and_stream(self) -> None:
        """
        With a L{RateLimiter}, the bytes count for the peer's host, and the
        body bytes of each blob for its stream, complete or cut short.
        """
        streams = {B_HASH: "s" * 96, SD_HASH: SD_HASH}
        limiter = RateLimiter(Clock(), counters=TrafficCounters(streams.get))
        h = Harness(rate_limiter=limiter)
        h.request_blob(B_HASH, 16)
        h.feed(B_RESPONSE + B_BLOB[:4], B_BLOB[4:])
        blob_request, _ = h.request_blob(SD_HASH, None)
        ignore(blob_request.finished_deferred)
        h.feed(SD_RESPONSE + SD_BLOB[:100])
        h.lose()
        wire_in = len(B_RESPONSE) + len(B_BLOB) + len(SD_RESPONSE) + 100
        self.assertEqual(
            limiter.counters.by_peer(),
            {"10.0.0.2": Traffic(up=len(h.transport.value()), down=wire_in)},
        )
        self.assertEqual(
            limiter.counters.by_stream(),
            {"s" * 96: Traffic(down=len(B_BLOB)), SD_HASH: Traffic(down=100)},
        )
        self.assertEqual(limiter.connections, 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
incoming_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "blob_hash": st.sampled_from([B_HASH, SD_HASH, ""]),
            "length": st.one_of(
                st.integers(-2, 40), st.just(MAX_BLOB_SIZE + 1), st.booleans(), st.text(max_size=3)
            ),
        }
    ),
    st.fixed_dictionaries({"error": json_values}),
)
responses = st.dictionaries(
    st.sampled_from(
        ["incoming_blob", "blob_data_payment_rate", "available_blobs", "lbrycrd_address", "foo"]
    ),
    st.one_of(json_values, st.just("RATE_ACCEPTED")),
    max_size=5,
).flatmap(lambda d: st.one_of(st.just(d), incoming_values.map(lambda v: {**d, "incoming_blob": v})))
wires = st.one_of(
    st.tuples(responses, st.binary(max_size=40)).map(
        lambda pair: json.dumps(pair[0]).encode() + pair[1]
    ),
    st.tuples(st.sampled_from([B_RESPONSE, MISSING_RESPONSE]), st.binary(max_size=40)).map(
        lambda pair: pair[0] + pair[1]
    ),
    st.binary(max_size=80),
)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None, database=None)
    @given(
        wire=wires,
        splits=st.lists(st.integers(0, 200), max_size=5),
        length=st.sampled_from([16, None]),
    )
    def test_never_raises(self, wire: bytes, splits: list[int], length: int | None) -> None:
        """
        Whatever the peer sends, however split, dataReceived does not raise,
        and a closed connection leaves nothing pending.
        """
        h = Harness()
        plain = h.client.add_request(ClientRequest({"lbrycrd_address": True}, "lbrycrd_address"))
        blob_request, d = h.request_blob(B_HASH, length)
        bounds = [0, *sorted(min(s, len(wire)) for s in splits), len(wire)]
        h.feed(*(wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)))
        state = h.client.state
        if state is ClientState.CLOSING:
            self.assertTrue(h.transport.disconnecting)
            for deferred in (d, plain, blob_request.finished_deferred):
                self.assertTrue(deferred.called)
        else:
            self.assertIn(
                state,
                (ClientState.ASKING, ClientState.AWAITING_RESPONSE, ClientState.RECEIVING_BLOB),
            )
        h.lose()
        for deferred in (d, plain, blob_request.finished_deferred):
            self.assertTrue(deferred.called)
            ignore(deferred)
        self.assertEqual(h.manager.disconnected, [h.client])
