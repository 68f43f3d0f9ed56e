"""
The blob server in paid mode (L{p2pblob.peer.service.make_server_factory}
with a wallet and a price), spoken to over a L{StringTransport}: debts,
refusal and recovery, cheques and their receipts, and what LBRY peers see.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.hashing import blob_hash as blob_hash_of
from p2pblob.peer.server import BlobServerFactory, BlobServerProtocol
from p2pblob.peer.service import make_server_factory
from p2pblob.peer.wire import JSONObjectFramer
from p2pblob.testing import MemoryBlobStore
from p2pblob.wallet.cheques import issue_cheque
from p2pblob.wallet.exchange import CHEQUE_QUERY, DEBT_LIMIT_REACHED, PAYMENT_KEY_QUERY
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.serving import FORGED_CHEQUE, HOST_DEBT_FACTOR, STALE_CHEQUE
from p2pblob.wallet.units import MICRO, blob_cost, to_micro
from tests.wallet._helpers import SEED_A, SEED_B, make_wallet

RATE = 2.0
CLIENT_KEY = NodeKey.from_seed(SEED_A)
LBRY_KEYS = {"available_blobs", "blob_data_payment_rate", "incoming_blob", "lbrycrd_address"}


class _Connection:
    """
    One client connection to a server, spoken to one request at a time.
    """

    def __init__(
        self, factory: BlobServerFactory, port: int = 40000, host: str = "192.0.2.1"
    ) -> None:
        address: IPv4Address | IPv6Address
        if ":" in host:
            address = IPv6Address("TCP", host, port)
        else:
            address = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(address)
        assert isinstance(protocol, BlobServerProtocol)
        self.protocol = protocol
        self.transport = StringTransport(peerAddress=address)
        protocol.makeConnection(self.transport)

    def ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        self.transport.clear()
        self.protocol.dataReceived(json.dumps(request).encode())
        parsed = JSONObjectFramer(65536).feed(self.transport.value())
        assert parsed is not None
        return parsed

    def close(self) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost()


def _put(store: MemoryBlobStore, data: bytes) -> str:
    store.put_blob(data)
    return blob_hash_of(data)


def _blob_request(blob_hash: str, rate: float) -> dict[str, Any]:
    return {"requested_blobs": [blob_hash], "lbrycrd_address": True,
            "blob_data_payment_rate": rate, "requested_blob": blob_hash}


class PaidServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBlobStore()
        self.blobs = [_put(self.store, bytes([n]) * (MAX_BLOB_SIZE - 1)) for n in range(4)]
        self.cost = blob_cost(MAX_BLOB_SIZE - 1, to_micro(RATE))
        # owing more than one blob is over the limit
        self.wallet = make_wallet(self, self.clock, SEED_B, grant=0, debt_limit=self.cost)
        self.factory = make_server_factory(
            self.store, self.clock, "addr", 65536, 30.0, 8,
            wallet=self.wallet, rates=PaymentRateManager(RATE),
        )

    def connect(self, port: int = 40000, host: str = "192.0.2.1") -> _Connection:
        connection = _Connection(self.factory, port, host)
        self.addCleanup(connection.close)
        return connection

    def cheque(self, total: int, sequence: int) -> dict[str, Any]:
        return issue_cheque(CLIENT_KEY, self.wallet.public_key, total, sequence).to_wire()

    def test_debt_refusal_and_recovery(self) -> None:
        """
        Each blob sent is expected to be paid at the accepted rate; past the
        limit the peer gets C{DEBT_LIMIT_REACHED} (and the log says why),
        and once a cheque pays the debt, in the same request, it is served
        again.
        """
        connection = self.connect()
        for blob_hash in self.blobs[:2]:
            response, body = connection.ask(_blob_request(blob_hash, RATE))
            self.assertEqual(response["incoming_blob"]["blob_hash"], blob_hash)
        self.assertEqual(self.wallet.unpaid_debt("192.0.2.1"), 2 * self.cost)
        with capturedLogs() as events:
            response, body = connection.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        self.assertEqual(body, b"")
        self.assertTrue(any("Refusing blob" in e.get("log_format", "") for e in events))
        request = _blob_request(self.blobs[2], RATE)
        request[CHEQUE_QUERY] = self.cheque(2 * self.cost, 1)
        response, body = connection.ask(request)
        self.assertEqual(response[CHEQUE_QUERY], {"total": 2 * self.cost, "sequence": 1})
        self.assertEqual(response["incoming_blob"]["blob_hash"], self.blobs[2])
        self.assertEqual(self.wallet.ledger.balance(), 2 * self.cost)
        self.assertEqual(self.wallet.unpaid_debt(CLIENT_KEY.public_hex), self.cost)

    def test_reconnecting_does_not_reset_debt(self) -> None:
        """
        A client whose key is not known owes under its host, not its
        address: after it is cut off, a new connection from another port of
        the same host is refused too, while a client on another host is
        served; a cheque from the host, on yet another connection, moves the
        host's debt to the payer's key and the client is served again.
        """
        first = self.connect(40000)
        for blob_hash in self.blobs[:2]:
            first.ask(_blob_request(blob_hash, RATE))
        response, _ = first.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        first.close()
        again = self.connect(40001)
        with capturedLogs() as events:
            response, body = again.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        self.assertEqual(body, b"")
        refusals = [e for e in events if "Refusing blob" in e.get("log_format", "")]
        self.assertIn("peer 192.0.2.1 owes", str(refusals[0]["error"]))
        other = self.connect(40000, host="192.0.2.7")
        response, _ = other.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"]["blob_hash"], self.blobs[2])
        self.assertEqual(self.wallet.unpaid_debt("192.0.2.7"), self.cost)
        self.assertEqual(self.wallet.unpaid_debt("192.0.2.1"), 2 * self.cost)
        paying = self.connect(40002)
        request = _blob_request(self.blobs[3], RATE)
        request[CHEQUE_QUERY] = self.cheque(self.cost, 1)
        response, _ = paying.ask(request)
        self.assertEqual(response["incoming_blob"]["blob_hash"], self.blobs[3])
        self.assertEqual(self.wallet.unpaid_debt("192.0.2.1"), 0)
        self.assertEqual(self.wallet.unpaid_debt(CLIENT_KEY.public_hex), 2 * self.cost)

    def test_debt_of_host_survives_restart(self) -> None:
        """
        What a host owes is in the ledger: after the server restarts, the
        client that was cut off is still refused.
        """
        connection = self.connect()
        for blob_hash in self.blobs[:2]:
            connection.ask(_blob_request(blob_hash, RATE))
        connection.close()
        self.wallet.stop()
        wallet = make_wallet(self, self.clock, SEED_B, self.wallet.ledger_path.parent,
                             grant=0, debt_limit=self.cost)
        self.factory = make_server_factory(
            self.store, self.clock, "addr", 65536, 30.0, 8,
            wallet=wallet, rates=PaymentRateManager(RATE),
        )
        response, _ = self.connect(40001).ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})

    def take(self, host: str, port: int, seed: int | None = None) -> int:
        """
        On a new connection from C{host}, ask for blobs until refused (four
        at most); with a C{seed}, name the client by a new payment key made
        from it, with a cheque for one micro-point in the first request.
        Return how many blobs were sent.
        """
        connection = self.connect(port, host)
        served = 0
        for n in range(4):
            request = _blob_request(self.blobs[n], RATE)
            if seed is not None and n == 0:
                key = NodeKey.from_seed(bytes([seed]) * 32)
                request[CHEQUE_QUERY] = issue_cheque(key, self.wallet.public_key, 1, 1).to_wire()
            response, _ = connection.ask(request)
            if "blob_hash" not in response["incoming_blob"]:
                self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
                break
            served += 1
        connection.close()
        return served

    def test_new_keys_share_host_limit(self) -> None:
        """
        A client that names itself with a new payment key on each connection
        (paying one micro-point each time) owes its debt limit under each,
        but its host's keys may owe only L{HOST_DEBT_FACTOR} debt limits in
        all: past that, a new key from the host is refused at once (the log
        names the host), while a client on another host is served; once one
        key pays its debt, the host is served again.
        """
        self.assertEqual(HOST_DEBT_FACTOR, 4)
        served = [self.take("192.0.2.1", 40000 + seed, seed) for seed in range(1, 4)]
        # 2, 2, then one more: the host owes 5 blobs (less 3 micro-points)
        self.assertEqual(served, [2, 2, 1])
        with capturedLogs() as events:
            self.assertEqual(self.take("192.0.2.1", 40010, 10), 0)
        refusals = [e for e in events if "Refusing blob" in e.get("log_format", "")]
        self.assertIn("peer host 192.0.2.1 owes", str(refusals[0]["error"]))
        self.assertEqual(self.take("192.0.2.1", 40011), 0)
        self.assertEqual(self.take("192.0.2.7", 40000, 11), 2)
        # the first key pays what it owes: the host owes 3 blobs, and is served
        first = NodeKey.from_seed(bytes([1]) * 32)
        self.assertEqual(self.wallet.unpaid_debt(first.public_hex), 2 * self.cost - 1)
        connection = self.connect(40020)
        request = _blob_request(self.blobs[0], RATE)
        request[CHEQUE_QUERY] = issue_cheque(
            first, self.wallet.public_key, 2 * self.cost, 2
        ).to_wire()
        response, _ = connection.ask(request)
        self.assertEqual(response["incoming_blob"]["blob_hash"], self.blobs[0])

    def test_throwaway_keys_share_host_limit(self) -> None:
        """
        A cheque of one micro-point from a throwaway key moves what the host
        owed without a key to that key, but the key still counts for the
        host: its clients without a key get no more than the host limit.
        """
        served = 0
        for seed in range(1, 6):
            served += self.take("192.0.2.1", 40000 + seed)
            self.connect(40100 + seed).ask(
                {"requested_blobs": [],
                 CHEQUE_QUERY: issue_cheque(NodeKey.from_seed(bytes([seed]) * 32),
                                            self.wallet.public_key, 1, 1).to_wire()})
        self.assertEqual(served, 5)
        self.assertEqual(self.take("192.0.2.7", 40000), 2)

    def test_host_keys_survive_restart(self) -> None:
        """
        The keys seen from a host are kept beside the ledger: after the
        server restarts, a new key from a host over its limit is refused.
        """
        for seed in range(1, 4):
            self.take("192.0.2.1", 40000 + seed, seed)
        self.wallet.stop()
        wallet = make_wallet(self, self.clock, SEED_B, self.wallet.ledger_path.parent,
                             grant=0, debt_limit=self.cost)
        self.factory = make_server_factory(
            self.store, self.clock, "addr", 65536, 30.0, 8,
            wallet=wallet, rates=PaymentRateManager(RATE),
        )
        self.wallet = wallet
        self.assertEqual(self.take("192.0.2.1", 40010, 10), 0)
        self.assertEqual(self.take("192.0.2.1", 40011), 0)
        self.assertEqual(self.take("192.0.2.7", 40012, 12), 2)

    def test_ipv6_clients_owe_per_network(self) -> None:
        """
        An IPv6 client of unknown key owes under its /64 network, so taking
        another address in it does not reset its debt; another network is
        served.
        """
        first = self.connect(40000, host="2001:db8:1:2::1")
        for blob_hash in self.blobs[:2]:
            first.ask(_blob_request(blob_hash, RATE))
        self.assertEqual(self.wallet.unpaid_debt("2001:db8:1:2::/64"), 2 * self.cost)
        moved = self.connect(40000, host="2001:db8:1:2:ffff::9")
        response, _ = moved.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        elsewhere = self.connect(40000, host="2001:db8:1:3::1")
        response, _ = elsewhere.ask(_blob_request(self.blobs[2], RATE))
        self.assertEqual(response["incoming_blob"]["blob_hash"], self.blobs[2])

    def test_forged_cheque_rejected(self) -> None:
        """
        A cheque whose signature is not its payer's credits nothing and is
        answered with C{FORGED_CHEQUE}; the connection stays open.
        """
        connection = self.connect()
        forged = self.cheque(5 * MICRO, 1)
        forged["total"] = 50 * MICRO
        response, _ = connection.ask({"requested_blobs": [], CHEQUE_QUERY: forged})
        self.assertEqual(response[CHEQUE_QUERY]["error"], FORGED_CHEQUE)
        self.assertEqual(response[CHEQUE_QUERY]["sequence"], 0)
        self.assertEqual(self.wallet.ledger.balance(), 0)
        self.assertFalse(connection.transport.disconnecting)

    def test_replayed_cheque_rejected(self) -> None:
        """
        An old cheque sent again (even on a new connection) credits nothing
        and is answered with C{STALE_CHEQUE} and the last accepted sequence.
        """
        first = self.connect(40000)
        old, new = self.cheque(1 * MICRO, 1), self.cheque(3 * MICRO, 2)
        first.ask({"requested_blobs": [], CHEQUE_QUERY: old})
        first.ask({"requested_blobs": [], CHEQUE_QUERY: new})
        self.assertEqual(self.wallet.ledger.balance(), 3 * MICRO)
        second = self.connect(40001)
        for replay in (old, new):
            response, _ = second.ask({"requested_blobs": [], CHEQUE_QUERY: replay})
            self.assertEqual(response[CHEQUE_QUERY]["error"], STALE_CHEQUE)
            self.assertEqual(response[CHEQUE_QUERY]["sequence"], 2)
        self.assertEqual(self.wallet.ledger.balance(), 3 * MICRO)

    def test_rate_too_low(self) -> None:
        """
        An offer under the minimum (an LBRY client's 0.0) is answered
        C{RATE_TOO_LOW}; no blob is sent, and nothing but LBRY's keys.
        """
        connection = self.connect()
        response, body = connection.ask(_blob_request(self.blobs[0], 0.0))
        self.assertEqual(set(response), LBRY_KEYS)
        self.assertEqual(response["blob_data_payment_rate"], "RATE_TOO_LOW")
        self.assertEqual(response["incoming_blob"], {"error": "RATE_UNSET"})
        self.assertEqual(body, b"")

    def test_lbry_client_sees_no_extension_keys(self) -> None:
        """
        A request with only LBRY's keys gets only LBRY's keys back from a
        paid server; the payment key is given only to a peer that asks.
        """
        connection = self.connect()
        response, _ = connection.ask(_blob_request(self.blobs[0], RATE))
        self.assertEqual(set(response), LBRY_KEYS)
        request = _blob_request(self.blobs[1], RATE)
        request[PAYMENT_KEY_QUERY] = True
        response, _ = connection.ask(request)
        self.assertEqual(set(response), LBRY_KEYS | {PAYMENT_KEY_QUERY})
        self.assertEqual(response[PAYMENT_KEY_QUERY], self.wallet.public_hex)


class FreeServerTests(SynchronousTestCase):
    def test_free_server_answers_as_lbry(self) -> None:
        """
        In free mode (the default) a node with a wallet answers exactly as
        without one, and ignores extension keys (their answers are LBRY's
        keys only), so it never asks to be paid.
        """
        clock = Clock()
        store = MemoryBlobStore()
        blob_hash = _put(store, b"x" * 1000)
        wallet = make_wallet(self, clock, SEED_B)
        plain = make_server_factory(store, clock, "addr", 65536, 30.0, 8)
        free = make_server_factory(store, clock, "addr", 65536, 30.0, 8,
                                   wallet=wallet, rates=PaymentRateManager(0))
        request = _blob_request(blob_hash, 0.0)
        answers = []
        for factory in (plain, free):
            connection = _Connection(factory)
            answers.append(connection.ask(request))
            connection.close()
        self.assertEqual(answers[0], answers[1])
        connection = _Connection(free)
        request[PAYMENT_KEY_QUERY] = True
        request[CHEQUE_QUERY] = {"payer": "00"}
        response, _ = connection.ask(request)
        connection.close()
        self.assertEqual(set(response), LBRY_KEYS)
