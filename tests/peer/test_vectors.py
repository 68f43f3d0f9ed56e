"""
Our server against the blob exchanges captured from lbry-sdk 0.113.0's
server (C{vectors/blob_exchange/exchanges.json}): for every exchange, the
same request bytes get the same response bytes, blob included, and the
connection is closed exactly when lbry-sdk closed it.

The blobs served are the case-b data blob and case-e sd blob shipped with
the vectors, and case e's third data blob, which is not shipped: it is made
again from the vectors' plaintext generator, key and IV, and checked
against its hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.peer.handlers import (
    BlobAvailabilityHandlerFactory,
    BlobRequestHandlerFactory,
    WalletInfoHandlerFactory,
)
from p2pblob.peer.server import BlobServerFactory
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE, encrypt_blob
from p2pblob.testing import MemoryBlobStore
from tests._vectors import generate_plaintext, load_case, load_json, vector_path

ADDRESS = "bQEaw42GXsgCAGio1nxFncJSyRmnztSCjP"
VECTORS = load_json("blob_exchange", "exchanges.json")

# Every exchange in the file, with what it shows.  An exchange missing here
# fails test_every_exchange_known, so a new vector cannot go untested.
EXCHANGES = {
    "i_client_downloads_blobs": "three blobs over one reused connection",
    "iii_client_requests_missing_blob": "a missing blob: no incoming_blob, no bytes",
    "ii_availability_only_as_lbry_serializes_it": "availability with the address",
    "ii_availability_only_bare": "availability alone: the address is a literal true",
    "iii_missing_blob_then_present_blob_same_connection": "a miss does not end the connection",
    "iv_request_of_1199_bytes": "the largest request answered",
    "iv_request_of_1200_bytes": "the smallest request refused",
    "iv_oversized_12_hash_availability_request": "an oversized request refused",
    "iv_unknown_keys_only": "no known key: closed",
    "iv_known_plus_unknown_key": "unknown keys beside known ones are ignored",
    "iv_invalid_json": "invalid JSON: closed",
    "iv_json_array": "an array: closed",
    "iv_two_requests_pipelined_in_one_write": "pipelining: closed",
    "request_split_across_two_writes": "a request over two reads",
}

_OPEN = "still open (client closed it later)"
_CLOSED = "closed by server (EOF/FIN)"


def _case_e_blob(blob_hash: str) -> bytes:
    """
    A data blob of case e, encrypted again from the generated plaintext.
    """
    case = load_case("e_5MiB_plus_123")
    key = bytes.fromhex(case["key_hex"])
    for k, blob in enumerate(case["blobs"]):
        if blob.get("blob_hash") == blob_hash:
            start = k * PLAINTEXT_CHUNK_SIZE
            length = min(PLAINTEXT_CHUNK_SIZE, case["input"]["length"] - start)
            plaintext = generate_plaintext(length, start)
            return encrypt_blob(key, bytes.fromhex(case["ivs_hex"][k]), plaintext)
    raise LookupError(blob_hash)


def served_blobs() -> dict[str, bytes]:
    """
    The bytes of every blob in C{blobs_served}, each checked against its
    hash and length.
    """
    blobs = {}
    for entry in VECTORS["blobs_served"].values():
        if "file" not in entry:
            continue  # the missing blob
        path = vector_path(*entry["file"].split("/"))
        data = path.read_bytes() if path.exists() else _case_e_blob(entry["hash"])
        assert hashlib.sha384(data).hexdigest() == entry["hash"], entry
        assert len(data) == entry["length"], entry
        blobs[entry["hash"]] = data
    return blobs


_BLOBS = served_blobs()


def _steps(exchange: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """
    The exchange as (request and response, whether the server then closed
    the connection) steps, in order.
    """
    if "messages" in exchange:
        # the client closed first: the server never did
        assert exchange["connection_events_in_order"] == ["c2s:EOF", "s2c:EOF"]
        return [(message, False) for message in exchange["messages"]]
    steps = exchange.get("steps", [exchange])
    result = []
    for step in steps:
        after = step.get("connection_after")
        if after is None and "connection_events_in_order" in step:
            assert step["connection_events_in_order"] == ["c2s:EOF", "s2c:EOF"]
            after = _OPEN
        if after is None and "first_write_length" in step:
            after = _OPEN  # "served normally"
        if after not in (_OPEN, _CLOSED):
            raise AssertionError(f"unknown connection outcome {after!r}")
        result.append((step, after == _CLOSED))
    return result


def _expected_bytes(response: dict[str, Any] | None) -> bytes:
    if response is None:
        return b""
    json_part = bytes.fromhex(response["json_hex"])
    assert json_part == response["json_text"].encode("utf-8")
    assert len(json_part) == response["json_length"]
    following = b""
    if response["following_bytes_length"]:
        following = _BLOBS[response["following_bytes_sha384"]]
        assert len(following) == response["following_bytes_length"]
        if "following_bytes_hex" in response:
            assert following == bytes.fromhex(response["following_bytes_hex"])
    return json_part + following


class ExchangeVectorTests(SynchronousTestCase):
    """
    One test per captured exchange; see L{EXCHANGES}.
    """

    def test_every_exchange_known(self) -> None:
        """
        The tests cover exactly the exchanges in the file.
        """
        self.assertEqual(sorted(VECTORS["exchanges"]), sorted(EXCHANGES))

    def test_blobs_served(self) -> None:
        """
        The three blobs are there, case e's third data blob made again.
        """
        self.assertEqual(sorted(len(b) for b in _BLOBS.values()), [16, 971, 1048704])

    def replay(self, name: str) -> None:
        exchange = VECTORS["exchanges"][name]
        store = MemoryBlobStore()
        for data in _BLOBS.values():
            self.successResultOf(store.put_blob(data))
        factory = BlobServerFactory(
            [BlobAvailabilityHandlerFactory(store), BlobRequestHandlerFactory(store),
             WalletInfoHandlerFactory(ADDRESS)],
            Clock(),
            max_request_size=VECTORS["server_max_request_size"],
        )
        address = IPv4Address("TCP", "127.0.0.1", 50123)
        protocol = factory.buildProtocol(address)
        assert protocol is not None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        for number, (step, closes) in enumerate(_steps(exchange)):
            request = bytes.fromhex(step["request_hex"])
            if "request_length" in step:
                self.assertEqual(len(request), step["request_length"])
            first = step.get("first_write_length", len(request))
            transport.clear()
            protocol.dataReceived(request[:first])
            if first < len(request):
                self.assertEqual(transport.value(), b"")
                protocol.dataReceived(request[first:])
            sent = transport.value()
            response = step["response"]
            expected = _expected_bytes(response)
            json_length = response["json_length"] if response else 0
            # the JSON part first, for a readable failure
            self.assertEqual(sent[:json_length], expected[:json_length], f"step {number}")
            self.assertEqual(len(sent), len(expected), f"step {number}")
            self.assertTrue(sent == expected, f"step {number}: the blob bytes differ")
            if response and response["following_bytes_length"]:
                self.assertEqual(hashlib.sha384(sent[json_length:]).hexdigest(),
                                 response["following_bytes_sha384"])
            self.assertEqual(transport.disconnecting, closes, f"step {number}")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.open_connections, 0)


def _make_test(name: str) -> Any:
    def test(self: ExchangeVectorTests) -> None:
        self.replay(name)

    test.__name__ = f"test_{name}"
    test.__doc__ = EXCHANGES[name]
    return test


for _name in EXCHANGES:
    setattr(ExchangeVectorTests, f"test_{_name}", _make_test(_name))
