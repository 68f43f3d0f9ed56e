"""
Tests for L{p2pblob.wallet.exchange}: the payment-key request creator
against a fake connection, and the query handler against a fake request
handler and inside a real blob server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob.errors import NoResponseError
from p2pblob.interfaces import (
    IConnectionManager,
    IQueryHandler,
    IQueryHandlerFactory,
    IRequestCreator,
    IRequestHandler,
    IRequestSender,
)
from p2pblob.peer.client import BlobExchangeClient
from p2pblob.peer.handlers import BlobAvailabilityHandlerFactory
from p2pblob.peer.peer import Peer
from p2pblob.peer.requests import ClientRequest
from p2pblob.peer.server import BlobServerFactory
from p2pblob.peer.wire import CLIENT_MAX_REQUEST_SIZE, JSONObjectFramer, encode_request
from p2pblob.testing import MemoryBlobStore
from p2pblob.wallet.exchange import (
    PAYMENT_KEY_QUERY,
    PaymentKeyExchanger,
    PaymentKeyHandler,
    PaymentKeyHandlerFactory,
)
from p2pblob.wallet.keys import NodeKey
from tests.wallet._helpers import SEED_A, SEED_B, SERVER, make_wallet

SERVER_KEY = NodeKey.from_seed(SEED_B)


@implementer(IRequestSender)
class FakeSender:
    """
    A connection that records the requests queued on it; the test answers
    them through their Deferreds.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[ClientRequest, Deferred[dict[str, Any]]]] = []

    def add_request(self, request: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.requests.append((request, d))
        return d

    def add_blob_request(self, blob_request: Any) -> Deferred[dict[str, Any]]:
        raise AssertionError("the exchange asks for no blobs")


verifyObject(IRequestSender, FakeSender())


@implementer(IRequestHandler)
class FakeRequestHandler:
    """
    A connection's request handler that records what registers with it.
    """

    def __init__(self) -> None:
        self.routes: dict[str, IQueryHandler] = {}
        self.blob_senders: list[Any] = []

    def register_query_handler(self, query_handler: Any, query_identifiers: list[str]) -> None:
        for identifier in query_identifiers:
            self.routes[identifier] = query_handler

    def register_blob_sender(self, blob_sender: Any) -> None:
        self.blob_senders.append(blob_sender)


verifyObject(IRequestHandler, FakeRequestHandler())


class ExchangerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.wallet = make_wallet(self, Clock(), SEED_A)
        self.exchanger = self.wallet.get_info_exchanger()
        self.sender = FakeSender()

    def ask(self, peer: Peer = SERVER) -> bool:
        return self.successResultOf(self.exchanger.send_next_request(peer, self.sender))

    def test_provides(self) -> None:
        verifyObject(IRequestCreator, self.exchanger)
        self.assertIsInstance(self.exchanger, PaymentKeyExchanger)
        self.assertEqual(self.successResultOf(self.exchanger.get_new_peers()), [])

    def test_learns_key(self) -> None:
        """
        The exchanger asks once, with a small extension request, and the
        wallet learns the key from the answer; then it asks no more.
        """
        self.assertTrue(self.ask())
        [(request, answer)] = self.sender.requests
        self.assertEqual(request.request_dict, {PAYMENT_KEY_QUERY: True})
        self.assertEqual(request.response_identifier, PAYMENT_KEY_QUERY)
        self.assertLess(len(encode_request(request.request_dict)), CLIENT_MAX_REQUEST_SIZE)
        self.assertFalse(self.ask())  # already asking
        answer.callback({PAYMENT_KEY_QUERY: SERVER_KEY.public_hex, "available_blobs": []})
        self.assertEqual(self.wallet.peer_key(SERVER), SERVER_KEY.public_key)
        self.assertEqual(self.wallet.account_of(SERVER), SERVER_KEY.public_hex)
        self.assertFalse(self.ask())
        self.assertEqual(len(self.sender.requests), 1)

    def test_peer_without_key(self) -> None:
        """
        A peer that does not answer the key (an LBRY peer) or answers
        nonsense is not asked again.
        """
        lbry = Peer("192.0.2.50", 3333)
        self.assertTrue(self.ask(lbry))
        self.sender.requests[0][1].errback(NoResponseError(lbry, PAYMENT_KEY_QUERY))
        self.assertTrue(self.exchanger.has_no_key(lbry))
        self.assertFalse(self.ask(lbry))
        odd = Peer("192.0.2.51", 3333)
        self.assertTrue(self.ask(odd))
        self.sender.requests[1][1].callback({PAYMENT_KEY_QUERY: "not a key"})
        self.assertTrue(self.exchanger.has_no_key(odd))
        self.assertIsNone(self.wallet.peer_key(odd))
        self.assertFalse(self.ask(odd))

    def test_connection_lost(self) -> None:
        """
        If the connection fails before the answer, the next connection
        asks again.
        """
        self.assertTrue(self.ask())
        self.sender.requests[0][1].errback(ConnectionLost())
        self.assertFalse(self.exchanger.has_no_key(SERVER))
        self.assertTrue(self.ask())


class HandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.wallet = make_wallet(self, Clock(), SEED_B)
        self.factory = self.wallet.get_wallet_info_query_handler_factory()

    def test_provides(self) -> None:
        verifyObject(IQueryHandlerFactory, self.factory)
        self.assertIsInstance(self.factory, PaymentKeyHandlerFactory)
        handler = self.factory.build_query_handler()
        verifyObject(IQueryHandler, handler)
        self.assertIsInstance(handler, PaymentKeyHandler)
        self.assertIsNot(handler, self.factory.build_query_handler())

    def test_answers(self) -> None:
        """
        The handler registers for the key alone and answers it with our
        public key, whatever was sent with it.
        """
        handler = self.factory.build_query_handler()
        request_handler = FakeRequestHandler()
        handler.register_with_request_handler(request_handler, SERVER)
        self.assertEqual(request_handler.routes, {PAYMENT_KEY_QUERY: handler})
        self.assertEqual(request_handler.blob_senders, [])
        for value in (True, None, {"anything": 1}):
            answer = self.successResultOf(handler.handle_queries({PAYMENT_KEY_QUERY: value}))
            self.assertEqual(answer, {PAYMENT_KEY_QUERY: SERVER_KEY.public_hex})

    def test_in_server(self) -> None:
        """
        In a blob server, the key is in the response only when the request
        asked for it, so LBRY clients never see it.
        """
        server = BlobServerFactory(
            [BlobAvailabilityHandlerFactory(MemoryBlobStore()), self.factory], Clock()
        )
        address = IPv4Address("TCP", "192.0.2.1", 40000)
        protocol = server.buildProtocol(address)
        assert protocol is not None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_request({"requested_blobs": []}))
        parsed = JSONObjectFramer(1 << 16).feed(transport.value())
        assert parsed is not None
        self.assertEqual(parsed[0]["available_blobs"], [])
        self.assertNotIn(PAYMENT_KEY_QUERY, parsed[0])
        transport.clear()
        protocol.dataReceived(encode_request({"requested_blobs": [], PAYMENT_KEY_QUERY: True}))
        parsed = JSONObjectFramer(1 << 16).feed(transport.value())
        assert parsed is not None
        self.assertEqual(parsed[0]["available_blobs"], [])
        self.assertEqual(parsed[0][PAYMENT_KEY_QUERY], SERVER_KEY.public_hex)
        transport.loseConnection()
        protocol.connectionLost()


def _fired(d: Deferred[bool]) -> bool:
    """
    The result of a Deferred that has already fired.
    """
    results: list[bool] = []
    d.addCallback(results.append)
    return results[0]


@implementer(IConnectionManager)
class OneRoundManager:
    """
    Asks each request creator once for a connection, then lets it close.
    """

    def __init__(self, creators: list[IRequestCreator]) -> None:
        self.creators = creators
        self.rounds = 0
        self.disconnected = 0

    def get_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        self.rounds += 1
        if self.rounds > 1:
            return succeed(False)
        asked = [_fired(c.send_next_request(peer, protocol)) for c in self.creators]
        return succeed(any(asked))

    def protocol_disconnected(self, peer: Any, protocol: IRequestSender) -> None:
        self.disconnected += 1


verifyObject(IConnectionManager, OneRoundManager([]))


class OverTheWireTests(SynchronousTestCase):
    def test_client_learns_server_key(self) -> None:
        """
        Between a real client and a real server, the client's wallet learns
        the server wallet's key.
        """
        clock = Clock()
        client_wallet = make_wallet(self, clock, SEED_A)
        server_wallet = make_wallet(self, clock, SEED_B)
        server_address = IPv4Address("TCP", SERVER.host, SERVER.port)
        client_address = IPv4Address("TCP", "192.0.2.1", 50123)
        server = BlobServerFactory(
            [server_wallet.get_wallet_info_query_handler_factory()], clock
        ).buildProtocol(client_address)
        assert server is not None
        manager = OneRoundManager([client_wallet.get_info_exchanger()])
        client = BlobExchangeClient(SERVER, manager, clock)
        pump = connect(
            server, FakeTransport(server, True, server_address, client_address),
            client, FakeTransport(client, False, client_address, server_address),
        )
        pump.flush()
        self.assertEqual(client_wallet.peer_key(SERVER), server_wallet.public_key)
        self.assertEqual(manager.disconnected, 1)
