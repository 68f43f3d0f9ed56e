"""
Tests for p2pblob's extension of LBRY's DHT, without a network: onion
endpoints (L{p2pblob.dht.peers}), the extension keys of requests and
C{findValue} results (L{p2pblob.dht.messages}), how onions are shared out
over the pages of an answer, and the store of onions
(L{p2pblob.dht.datastore.OnionStore}).
"""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.constants import DATA_EXPIRATION, HASH_LENGTH, MAX_DATAGRAM_SIZE, K
from p2pblob.dht.datastore import OnionStore
from p2pblob.dht.messages import (
    ONION_KEY,
    ONION_ONLY_KEY,
    ONIONS_KEY,
    P2PBLOB_KEY,
    PAGE_KEY,
    PROTOCOL_VERSION_KEY,
    Request,
    Response,
    decode_datagram,
    encode_datagram,
    find_value,
    store,
)
from p2pblob.dht.onion_pages import onion_pages
from p2pblob.dht.peers import compact_peer, decode_onion_endpoint, onion_endpoint
from p2pblob.dht.results import FindValueResult
from p2pblob.errors import DatagramError
from tests.dht._onions import onion, onion_address

KEY = hashlib.sha384(b"blob").digest()
NODE = hashlib.sha384(b"node").digest()
OTHER_NODE = hashlib.sha384(b"other node").digest()
TOKEN = hashlib.sha384(b"token").digest()
RPC_ID = b"r" * 20


def _with_version(address: str, version: int) -> str:
    """
    C{address} with its version byte replaced (and its checksum kept).
    """
    raw = bytearray(base64.b32decode(address[:56].upper()))
    raw[-1] = version
    return base64.b32encode(bytes(raw)).decode().lower() + ".onion"


class OnionEndpointTests(SynchronousTestCase):
    """
    L{decode_onion_endpoint} and L{onion_endpoint} accept a Tor v3 onion
    address with a port, and nothing else.
    """

    def test_decode(self) -> None:
        self.assertEqual(decode_onion_endpoint(onion(1, 3333)), (onion_address(1), 3333))
        self.assertEqual(decode_onion_endpoint(onion(2, 1)), (onion_address(2), 1))
        self.assertEqual(decode_onion_endpoint(onion(2, 65535)), (onion_address(2), 65535))

    def test_text(self) -> None:
        self.assertEqual(onion_endpoint(f"{onion_address(1)}:80"), onion(1, 80))
        for bad in ["café.onion:80", f"{onion_address(1)}:0", 5]:
            self.assertRaises(DatagramError, onion_endpoint, bad)

    def test_refusals(self) -> None:
        """
        Upper case, a short name, a bad checksum, another version, a port
        out of range or with a leading zero, no port, anything around the
        endpoint, a v2 address and a value that is not bytes are refused.
        """
        good = onion_address(1)
        flipped = ("b" if good[10] == "a" else "a") + ".onion"
        broken = good[:10] + flipped[0] + good[11:]
        bad: list[object] = [
            f"{good.upper()[:56]}.onion:3333".encode(),
            f"{good[1:]}:3333".encode(),
            f"{broken}:3333".encode(),
            f"{_with_version(good, 2)}:3333".encode(),
            f"{good}:0".encode(),
            f"{good}:65536".encode(),
            f"{good}:03333".encode(),
            f"{good}:".encode(),
            good.encode(),
            f" {good}:3333".encode(),
            f"{good}:3333\n".encode(),
            f"{good}:3333:1".encode(),
            b"expyuzz4wqqyqhjn.onion:80",
            f"{good}:3333",
            [f"{good}:3333".encode()],
            b"x" * 10_000,
        ]
        for value in bad:
            self.assertRaises(DatagramError, decode_onion_endpoint, value)

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=65535))
    def test_round_trip(self, seed: int, port: int) -> None:
        self.assertEqual(decode_onion_endpoint(onion(seed, port)), (onion_address(seed), port))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(max_size=80))
    def test_total(self, data: bytes) -> None:
        """
        Whatever the bytes, an endpoint or L{DatagramError}.
        """
        try:
            host, port = decode_onion_endpoint(data)
        except DatagramError:
            return
        self.assertEqual(f"{host}:{port}".encode(), data)


class ExtensionRequestTests(SynchronousTestCase):
    """
    The extension keys ride in the version dictionary of requests; without
    them, requests are LBRY's as before.
    """

    def test_find_value_lbry_form(self) -> None:
        request = find_value(RPC_ID, NODE, KEY, 2)
        self.assertEqual(request.version, {PAGE_KEY: 2, PROTOCOL_VERSION_KEY: 1})

    def test_find_value_asks_for_onions(self) -> None:
        request = find_value(RPC_ID, NODE, KEY, 1, onions=True)
        self.assertEqual(request.version, {PAGE_KEY: 1, ONIONS_KEY: 1, PROTOCOL_VERSION_KEY: 1})
        self.assertEqual(decode_datagram(encode_datagram(request)), request)

    def test_store_lbry_form(self) -> None:
        request = store(RPC_ID, NODE, KEY, TOKEN, 3333, NODE)
        self.assertEqual(request.version, {PROTOCOL_VERSION_KEY: 1})
        self.assertEqual(request.args, (KEY, TOKEN, 3333, NODE, 0))

    def test_store_with_onion(self) -> None:
        """
        The onion endpoint (and the onion-only flag) join the version
        dictionary; the positional arguments are LBRY's.
        """
        request = store(RPC_ID, NODE, KEY, TOKEN, 3333, NODE, onion=onion(1))
        self.assertEqual(request.version, {ONION_KEY: onion(1), PROTOCOL_VERSION_KEY: 1})
        only = store(RPC_ID, NODE, KEY, TOKEN, 3333, NODE, onion=onion(1), onion_only=True)
        self.assertEqual(only.args, (KEY, TOKEN, 3333, NODE, 0))
        self.assertEqual(
            only.version, {ONION_KEY: onion(1), ONION_ONLY_KEY: 1, PROTOCOL_VERSION_KEY: 1}
        )
        self.assertEqual(decode_datagram(encode_datagram(only)), only)

    def test_store_refusals(self) -> None:
        self.assertRaises(
            DatagramError, store, RPC_ID, NODE, KEY, TOKEN, 3333, NODE, onion=b"x.onion:1"
        )
        self.assertRaises(
            DatagramError, store, RPC_ID, NODE, KEY, TOKEN, 3333, NODE, onion_only=True
        )

    def test_unknown_keys_kept(self) -> None:
        """
        Our decoder keeps a request's version dictionary whole, keys it
        does not know included: readers pick what they know.
        """
        version = {PAGE_KEY: 0, PROTOCOL_VERSION_KEY: 1, b"zz_future": [b"x", 2]}
        request = Request(RPC_ID, NODE, b"findValue", (KEY,), version)
        self.assertEqual(decode_datagram(encode_datagram(request)).version, version)


class ExtensionResultTests(SynchronousTestCase):
    """
    A p2pblob node's C{findValue} result: LBRY's entries and the marker,
    and the onions when asked for.
    """

    def test_encode(self) -> None:
        peer = compact_peer("45.0.0.1", 3333, OTHER_NODE)
        result = FindValueResult(TOKEN, [], [peer], 1, marked=True, onions=[onion(1), onion(2)])
        self.assertEqual(result.encode(KEY), {
            b"token": TOKEN, b"contacts": [], PROTOCOL_VERSION_KEY: 1, PAGE_KEY: 1, KEY: [peer],
            P2PBLOB_KEY: 1, ONIONS_KEY: [onion(1), onion(2)],
        })
        self.assertEqual(FindValueResult.decode(result.encode(KEY), KEY),
                         FindValueResult(TOKEN, [], [peer], 1, True, (onion(1), onion(2))))
        self.assertEqual(result.onion_addresses(),
                         [(onion_address(1), 3333), (onion_address(2), 3333)])

    def test_lbry_form(self) -> None:
        """
        Without the marker and onions, the result is LBRY's, as before.
        """
        self.assertEqual(FindValueResult(TOKEN, None, [], 0).encode(KEY),
                         {b"token": TOKEN, PROTOCOL_VERSION_KEY: 1, PAGE_KEY: 0})

    def test_encode_refuses_bad_onion(self) -> None:
        result = FindValueResult(TOKEN, onions=[b"nope.onion:1"])
        self.assertRaises(DatagramError, result.encode, KEY)

    def test_lenient_decode(self) -> None:
        """
        A malformed extension entry never makes the result unreadable: a
        marker other than 1 reads as none, and malformed onions (or onions
        that are not a list) are left out.
        """
        base = {b"token": TOKEN, PAGE_KEY: 0}
        for marker in [0, 2, b"1", [1]]:
            self.assertFalse(FindValueResult.decode({**base, P2PBLOB_KEY: marker}, KEY).marked)
        mixed = [onion(1), b"bad", 7, [onion(2)], onion(3)]
        self.assertEqual(FindValueResult.decode({**base, ONIONS_KEY: mixed}, KEY).onions,
                         (onion(1), onion(3)))
        self.assertEqual(FindValueResult.decode({**base, ONIONS_KEY: onion(1)}, KEY).onions, ())

    def test_unknown_keys_ignored(self) -> None:
        result = FindValueResult.decode(
            {b"token": TOKEN, P2PBLOB_KEY: 1, b"zz_future": {b"a": 1}}, KEY
        )
        self.assertEqual(result, FindValueResult(TOKEN, None, [], 0, marked=True))


def _datagram_size(result: FindValueResult) -> int:
    return len(encode_datagram(Response(RPC_ID, NODE, result.encode(KEY))))


class OnionPagesTests(SynchronousTestCase):
    """
    L{onion_pages} shares the onions out over the pages of an answer so
    that every page fits in a datagram.
    """

    def peers(self, count: int) -> list[bytes]:
        return [compact_peer(f"45.0.{n // 250}.{n % 250 + 1}", 65535, NODE) for n in range(count)]

    def check(self, peers: list[bytes], onions: list[bytes]) -> list[list[bytes]]:
        """
        Share C{onions} out beside C{peers}; check that every page, with K
        contacts of the longest form on page 0, fits in a datagram, and
        that every onion is listed once, in order.
        """
        pages = onion_pages(KEY, peers, onions, K)
        self.assertEqual([o for page in pages for o in page], onions)
        longest = (NODE, "255.255.255.255", 65535)
        for number, page in enumerate(pages):
            self.assertLessEqual(len(page), K)
            result = FindValueResult(
                TOKEN, [longest] * K if number == 0 else None,
                peers[number * K : (number + 1) * K], 999_999, True, page,
            )
            self.assertLessEqual(_datagram_size(result), MAX_DATAGRAM_SIZE, (number, len(page)))
        return pages

    def test_none(self) -> None:
        self.assertEqual(onion_pages(KEY, self.peers(K), [], K), [])

    def test_few(self) -> None:
        """
        A few onions and no peers: all on page 0.
        """
        self.assertEqual(self.check([], [onion(1), onion(2)]), [[onion(1), onion(2)]])

    def test_beside_full_pages_of_peers(self) -> None:
        """
        Beside K peers and K contacts nothing fits on page 0: the onions
        start on page 1, K to a page from there.
        """
        onions = [onion(n, 65535) for n in range(2 * K + 3)]
        pages = self.check(self.peers(2 * K), onions)
        self.assertEqual(pages[0], [])
        self.assertEqual([len(page) for page in pages[1:]], [K, K, 3])

    def test_many(self) -> None:
        for peers in [0, 1, K - 1, K, K + 1, 3 * K]:
            for count in [1, K - 1, K, K + 1, 5 * K]:
                self.check(self.peers(peers), [onion(n, 65535) for n in range(count)])

    def test_page_zero_without_peers(self) -> None:
        """
        Page 0 keeps room for K contacts: fewer than K onions fit beside
        them.
        """
        pages = self.check([], [onion(n, 65535) for n in range(2 * K)])
        self.assertGreater(len(pages[0]), 0)
        self.assertLess(len(pages[0]), K)


class OnionStoreTests(SynchronousTestCase):
    """
    L{OnionStore} keeps the onion endpoints announced for a blob, the most
    recent first, as L{p2pblob.dht.datastore.PeerStore} keeps peers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = OnionStore(self.clock, max_per_blob=3, max_total=5)

    def test_newest_first(self) -> None:
        self.assertEqual(self.store.onions_for(KEY), [])
        self.assertTrue(self.store.add(KEY, onion(1), NODE))
        self.clock.advance(1)
        self.assertTrue(self.store.add(KEY, onion(2), OTHER_NODE))
        self.assertEqual(self.store.onions_for(KEY), [onion(2), onion(1)])
        self.assertEqual((len(self.store), self.store.blob_count()), (2, 1))

    def test_refresh(self) -> None:
        """
        Storing an endpoint again refreshes it (and takes the new node id).
        """
        self.store.add(KEY, onion(1), NODE)
        self.store.add(KEY, onion(2), NODE)
        self.assertFalse(self.store.add(KEY, onion(1), OTHER_NODE))
        self.assertEqual(self.store.onions_for(KEY), [onion(1), onion(2)])
        self.assertEqual(self.store.onions_for(KEY, exclude_node=OTHER_NODE), [onion(2)])
        self.assertEqual(len(self.store), 2)

    def test_exclude_node(self) -> None:
        self.store.add(KEY, onion(1), NODE)
        self.store.add(KEY, onion(2), OTHER_NODE)
        self.assertEqual(self.store.onions_for(KEY, exclude_node=NODE), [onion(2)])

    def test_expiry(self) -> None:
        self.store.add(KEY, onion(1), NODE)
        self.clock.advance(DATA_EXPIRATION - 1)
        self.store.add(KEY, onion(2), NODE)
        self.clock.advance(1)
        self.assertEqual(self.store.onions_for(KEY), [onion(2)])
        self.assertEqual(self.store.expire(), 1)
        self.assertEqual(len(self.store), 1)

    def test_bounds(self) -> None:
        """
        A blob keeps its 3 most recent onions, the store its 5 most recent.
        """
        for n in range(4):
            self.store.add(KEY, onion(n), NODE)
        self.assertEqual(self.store.onions_for(KEY), [onion(3), onion(2), onion(1)])
        other = bytes(HASH_LENGTH)
        for n in range(10, 13):
            self.store.add(other, onion(n), NODE)
        self.assertEqual(len(self.store), 5)
        self.assertEqual(self.store.onions_for(KEY), [onion(3), onion(2)])

    def test_invalid(self) -> None:
        for blob, endpoint, node in [
            (KEY, b"nope.onion:80", NODE), (KEY[:10], onion(1), NODE), (KEY, onion(1), b"x"),
        ]:
            self.assertRaises(ValueError, self.store.add, blob, endpoint, node)
        self.assertEqual(len(self.store), 0)


class LBRYReadabilityTests(SynchronousTestCase):
    """
    The extension never puts a dictionary anywhere but last, which
    lbry-sdk's decoder would misread: every extended message encodes.
    """

    def test_extended_messages_encode(self) -> None:
        messages = [
            store(RPC_ID, NODE, KEY, TOKEN, 3333, NODE, onion=onion(1), onion_only=True),
            find_value(RPC_ID, NODE, KEY, 3, onions=True),
            Response(RPC_ID, NODE, FindValueResult(
                TOKEN, [], [compact_peer("45.0.0.1", 3333, NODE)], 2, True, [onion(1)]
            ).encode(KEY)),
        ]
        for message in messages:
            # (encode_datagram refuses a dictionary followed by more data)
            self.assertEqual(decode_datagram(encode_datagram(message)), message)
