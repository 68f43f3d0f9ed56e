"""
Tests for p2pblob's extension of LBRY's DHT on the wire: how
L{KademliaProtocol} answers and sends the extended requests, and how
L{DHTNode} announces an onion endpoint (to every node while its IP address
is reachable, to p2pblob nodes only otherwise) and finds the onion
endpoints of a blob, on fake clocks.

The LBRY nodes of these tests are L{LBRYLikeProtocol}s: they read requests
as lbry-sdk does and answer without p2pblob's entries.
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred

from p2pblob.dht.constants import MAX_DATAGRAM_SIZE, RPC_TIMEOUT, K
from p2pblob.dht.datastore import PeerStore
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
    find_value,
    store,
)
from p2pblob.dht.peers import compact_peer
from p2pblob.dht.protocol import Address, KademliaProtocol
from p2pblob.dht.results import FindValueResult
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from tests.dht._lbry import LBRYLikeProtocol
from tests.dht._onions import onion, onion_address
from tests.dht.test_node import OUR_ADDRESS, NodeTestCase, remote_id
from tests.dht.test_node import TCP_PORT as NODE_TCP_PORT
from tests.dht.test_node import address as node_address
from tests.dht.test_protocol import (
    BLOB,
    OTHER_ID,
    REMOTE,
    REMOTE_ID,
    TCP_PORT,
    ProtocolTestCase,
    address,
    rpc_id,
)

OURS = onion(99)
"""
This node's own onion endpoint, when it has one.
"""


class ExtendedAnswerTests(ProtocolTestCase):
    """
    How a p2pblob node answers C{findValue} and C{store}, with and without
    the extension keys.
    """

    def token(self, source: Address = REMOTE) -> bytes:
        return self.tokens.token_for(source[0])

    def raw_find_value(
        self, onions: bool = False, page: int = 0, source: Address = REMOTE,
        node_id: bytes = REMOTE_ID,
    ) -> dict[bytes, object]:
        request = find_value(rpc_id(page), node_id, BLOB, page, onions=onions)
        reply = self.ask(request, source)
        assert isinstance(reply, Response), reply
        assert isinstance(reply.result, dict)
        return reply.result

    def store_onion(
        self, endpoint: bytes | None, only: bool = False, source: Address = REMOTE,
        node_id: bytes = REMOTE_ID,
    ) -> object:
        request = store(rpc_id(1), node_id, BLOB, self.token(source), TCP_PORT, node_id,
                        onion=endpoint, onion_only=only)
        return self.ask(request, source)

    def store_raw(self, version: dict[bytes, object], source: Address = REMOTE) -> object:
        """
        A store whose version dictionary is C{version} (with
        C{protocolVersion}), whatever it holds.
        """
        request = Request(
            rpc_id(1), REMOTE_ID, b"store", (BLOB, self.token(source), TCP_PORT, REMOTE_ID, 0),
            {**version, PROTOCOL_VERSION_KEY: 1},
        )
        return self.ask(request, source)

    def test_marker(self) -> None:
        """
        Every C{findValue} answer carries the marker, whether the request
        is LBRY's, old-style or asks for onions, on every page.
        """
        self.assertEqual(self.raw_find_value()[P2PBLOB_KEY], 1)
        self.assertEqual(self.raw_find_value(onions=True, page=3)[P2PBLOB_KEY], 1)
        reply = self.ask(Request(rpc_id(9), REMOTE_ID, b"findValue", (BLOB,), None))
        assert isinstance(reply, Response) and isinstance(reply.result, dict)
        self.assertEqual(reply.result[P2PBLOB_KEY], 1)

    def test_lbry_request_gets_no_onions(self) -> None:
        """
        With onions stored and our own onion listed, an LBRY request gets
        LBRY's entries and the marker, nothing onion-related; its page
        count counts peers only.
        """
        self.protocol.own_onion = lambda key: onion_address(99) + ":3333"
        for n in range(3 * K):
            self.protocol.onions.add(BLOB, onion(n), OTHER_ID)
        peer = compact_peer("46.0.0.1", TCP_PORT, OTHER_ID)
        self.peers.add(BLOB, peer, OTHER_ID)
        result = self.raw_find_value()
        self.assertEqual(set(result), {b"token", b"contacts", PROTOCOL_VERSION_KEY, PAGE_KEY,
                                       BLOB, P2PBLOB_KEY})
        self.assertEqual((result[PAGE_KEY], result[BLOB]), (1, [peer]))

    def test_store_with_onion(self) -> None:
        """
        A store with an onion endpoint records the requester's IP address,
        as any store does, and the onion endpoint, with the requester's
        node id.
        """
        reply = self.store_onion(onion(1))
        self.assertEqual(reply, Response(rpc_id(1), bytes(48), b"OK"))
        self.assertEqual(self.peers.peers_for(BLOB), [compact_peer(REMOTE[0], TCP_PORT, REMOTE_ID)])
        self.assertEqual(self.protocol.onions.onions_for(BLOB), [onion(1)])
        self.assertEqual(self.protocol.onions.onions_for(BLOB, exclude_node=REMOTE_ID), [])

    def test_onion_only_records_no_address(self) -> None:
        """
        An onion-only store records the onion endpoint and no peer, even
        from a loopback or private address, which no store could name as a
        peer (the protocol refuses loopback here).
        """
        for n, source in enumerate([REMOTE, ("127.0.0.1", 4444), ("10.1.2.3", 4444)]):
            reply = self.store_onion(onion(n), only=True, source=source)
            self.assertEqual(reply, Response(rpc_id(1), bytes(48), b"OK"), source)
        self.assertEqual(len(self.peers), 0)
        self.assertEqual(self.protocol.onions.onions_for(BLOB), [onion(2), onion(1), onion(0)])

    def test_onion_only_needs_a_token(self) -> None:
        request = store(rpc_id(1), REMOTE_ID, BLOB, hashlib.sha384(b"x").digest(), TCP_PORT,
                        REMOTE_ID, onion=onion(1), onion_only=True)
        self.assertRefused(self.ask(request), "ValueError", b"Invalid token")
        self.assertEqual(len(self.protocol.onions), 0)

    def test_malformed_onion_refused(self) -> None:
        """
        A malformed onion endpoint, onion-only flag, or an onion-only
        store without an endpoint is refused as lbry-sdk refuses bad
        values; nothing is recorded, not even the peer.
        """
        good = onion(1)
        bad_onions: list[object] = [
            good.upper(), good[:-5] + b":0", good.replace(b".onion", b".onion."), 3333,
            [good],
        ]
        for endpoint in bad_onions:
            reply = self.store_raw({ONION_KEY: endpoint})
            self.assertRefused(reply, "ValueError", b"Invalid onion endpoint " +
                               repr(endpoint).encode()[:80])
        for flag in [0, 2, b"1"]:
            reply = self.store_raw({ONION_KEY: good, ONION_ONLY_KEY: flag})
            self.assertRefused(reply, "ValueError",
                               b"Invalid onion-only flag " + repr(flag).encode())
        self.assertRefused(self.store_raw({ONION_ONLY_KEY: 1}), "ValueError",
                           b"An onion-only store needs an onion endpoint")
        self.assertEqual((len(self.peers), len(self.protocol.onions)), (0, 0))

    def test_onion_store_from_loopback_without_only(self) -> None:
        """
        A store that is not onion-only names the requester's address: from
        loopback it is refused as before, and its onion is not recorded.
        """
        reply = self.store_onion(onion(1), source=("127.0.0.1", 4444))
        self.assertRefused(reply, "ValueError", b"Peers at 127.0.0.1 are not accepted")
        self.assertEqual(len(self.protocol.onions), 0)

    def test_onions_when_asked(self) -> None:
        """
        Asked for onions, the answer lists those stored, the most recent
        first, but not those the requester stored itself.
        """
        for n in range(3):
            self.protocol.onions.add(BLOB, onion(n), OTHER_ID)
            self.clock.advance(1)
        self.protocol.onions.add(BLOB, onion(7), REMOTE_ID)
        result = FindValueResult.decode(self.raw_find_value(onions=True), BLOB)
        self.assertEqual(result.onions, (onion(2), onion(1), onion(0)))
        self.assertTrue(result.marked)
        self.assertEqual(result.pages, 1)

    def test_own_onion(self) -> None:
        """
        A node that holds the blob and has an onion service lists its own
        onion endpoint after those stored while there are fewer than K,
        once, and only to requesters that ask for onions.
        """
        held = {BLOB: onion_address(99) + ":3333"}
        self.protocol.own_onion = held.get
        self.assertNotIn(ONIONS_KEY, self.raw_find_value())
        self.protocol.onions.add(BLOB, onion(1), OTHER_ID)
        self.assertEqual(self.raw_find_value(onions=True)[ONIONS_KEY], [onion(1), OURS])
        self.clock.advance(1)
        self.protocol.onions.add(BLOB, OURS, OTHER_ID)
        self.assertEqual(self.raw_find_value(onions=True)[ONIONS_KEY], [OURS, onion(1)])
        held.clear()
        self.assertEqual(self.raw_find_value(onions=True)[ONIONS_KEY], [OURS, onion(1)])

    def test_own_onion_only_below_k(self) -> None:
        self.protocol.own_onion = lambda key: onion_address(99) + ":3333"
        for n in range(K):
            self.protocol.onions.add(BLOB, onion(n), OTHER_ID)
        self.assertNotIn(OURS, self.raw_find_value(onions=True)[ONIONS_KEY])  # type: ignore[operator]

    def test_onion_pages(self) -> None:
        """
        Many onions beside K peers and K contacts: every answer fits in a
        datagram, the page count covers the onions' pages, and the pages
        together list every onion once.
        """
        for n in range(1, K + 1):
            self.admit(address(n), hashlib.sha384(b"contact %d" % n).digest())
        for n in range(K):
            self.peers.add(BLOB, compact_peer(f"46.0.0.{n + 1}", 65535, OTHER_ID), OTHER_ID)
        stored = [onion(n, 65535) for n in range(3 * K)]
        for endpoint in stored:
            self.protocol.onions.add(BLOB, endpoint, OTHER_ID)
            self.clock.advance(1)
        first = FindValueResult.decode(self.raw_find_value(onions=True), BLOB)
        self.assertEqual((len(first.peers), len(first.contacts or ()), first.onions), (K, K, ()))
        self.assertEqual(first.pages, 4)
        found = []
        for page in range(first.pages + 1):
            self.sent()
            self.receive(find_value(rpc_id(page), REMOTE_ID, BLOB, page, onions=True), REMOTE)
            [(data, _)] = self.transport.written
            self.assertLessEqual(len(data), MAX_DATAGRAM_SIZE)
            reply = decode_datagram(data)
            assert isinstance(reply, Response)
            found.extend(FindValueResult.decode(reply.result, BLOB).onions)
        self.assertEqual(found, stored[::-1])
        self.assertEqual(FindValueResult.decode(self.raw_find_value(), BLOB).pages, 1)


class ExtendedRequestTests(ProtocolTestCase):
    """
    What the protocol sends for the extended requests.
    """

    def test_find_value_asking_for_onions(self) -> None:
        d = self.protocol.find_value(REMOTE, BLOB, 1, onions=True)
        request = self.answer(FindValueResult(
            hashlib.sha384(b"t").digest(), None, [], 2, True, [onion(1)]
        ).encode(BLOB))
        self.assertEqual(request.version, {PAGE_KEY: 1, ONIONS_KEY: 1, PROTOCOL_VERSION_KEY: 1})
        result = self.successResultOf(d)
        self.assertEqual((result.onions, result.marked), ((onion(1),), True))

    def test_store_onion_only(self) -> None:
        token = hashlib.sha384(b"t").digest()
        d = self.protocol.store(REMOTE, BLOB, token, TCP_PORT, onion=onion(1), onion_only=True)
        request = self.answer(b"OK")
        self.assertEqual(request.args, (BLOB, token, TCP_PORT, bytes(48), 0))
        self.assertEqual(request.version,
                         {ONION_KEY: onion(1), ONION_ONLY_KEY: 1, PROTOCOL_VERSION_KEY: 1})
        self.assertEqual(self.successResultOf(d), b"OK")


class OnionAnnounceTests(NodeTestCase):
    """
    L{DHTNode.announce} with an onion endpoint: to every closest node while
    our IP address is reachable, to the p2pblob nodes among them only (and
    onion-only) otherwise.  Nodes 1 to 3 are p2pblob nodes, 4 and 5 LBRY
    nodes.
    """

    def setUp(self) -> None:
        super().setUp()
        self.remotes: dict[int, KademliaProtocol] = {}
        for n in range(1, 6):
            if n <= 3:
                self.remotes[n] = self.network.add_remote(node_address(n), remote_id(n))
            else:
                clock = self.network.remote_clock
                lbry = LBRYLikeProtocol(
                    clock, remote_id(n), RoutingTable(remote_id(n), clock), PeerStore(clock),
                    TokenKeeper(clock),
                )
                self.network.attach(node_address(n), lbry)
                self.remotes[n] = lbry
            self.know(node_address(n), remote_id(n))

    def announce(self, **kwargs: object) -> Deferred[int]:
        d = Deferred.fromCoroutine(
            self.make_node().announce(BLOB, NODE_TCP_PORT, **kwargs)  # type: ignore[arg-type]
        )
        self.run_until(RPC_TIMEOUT + 1)
        return d

    def stores(self) -> dict[Address, Request]:
        return {where: request for _, where, request in self.network.requests(b"store")}

    def test_reachable(self) -> None:
        """
        Reachable, with an onion: stored at all five, each store carrying
        the onion endpoint; every node records our address, the p2pblob
        nodes our onion too.
        """
        self.assertEqual(self.successResultOf(self.announce(onion=OURS.decode())), 5)
        stores = self.stores()
        self.assertEqual(set(stores), {node_address(n) for n in range(1, 6)})
        for request in stores.values():
            self.assertEqual(request.version, {ONION_KEY: OURS, PROTOCOL_VERSION_KEY: 1})
        us = compact_peer(OUR_ADDRESS[0], NODE_TCP_PORT, bytes(48))
        self.assertEqual([self.remotes[n].peers.peers_for(BLOB) for n in range(1, 6)], [[us]] * 5)
        self.assertEqual([self.remotes[n].onions.onions_for(BLOB) for n in range(1, 6)],
                         [[OURS]] * 3 + [[]] * 2)

    def test_onion_only(self) -> None:
        """
        Unreachable, with an onion: stored at the three p2pblob nodes only,
        onion-only; no node records our address.
        """
        self.assertEqual(self.successResultOf(self.announce(onion=OURS.decode(),
                                                            onion_only=True)), 3)
        stores = self.stores()
        self.assertEqual(set(stores), {node_address(n) for n in range(1, 4)})
        for request in stores.values():
            self.assertEqual(request.version,
                             {ONION_KEY: OURS, ONION_ONLY_KEY: 1, PROTOCOL_VERSION_KEY: 1})
        self.assertEqual([len(self.remotes[n].peers) for n in range(1, 6)], [0] * 5)
        self.assertEqual([self.remotes[n].onions.onions_for(BLOB) for n in range(1, 4)],
                         [[OURS]] * 3)
        # every node was asked for a token, LBRY's too
        self.assertEqual({where for _, where, _ in self.network.requests(b"findValue")},
                         {node_address(n) for n in range(1, 6)})

    def test_onion_only_among_lbry_nodes(self) -> None:
        """
        With only LBRY nodes about, an onion-only announcement stores
        nothing: it counts 0 (and is retried later, as any failed one).
        """
        for n in range(1, 4):
            self.network.lost.add(node_address(n))
        self.assertEqual(self.successResultOf(self.announce(onion=OURS.decode(),
                                                            onion_only=True)), 0)
        self.assertEqual(self.stores(), {})

    def test_lbry_form_without_onion(self) -> None:
        """
        Without an onion the stores are LBRY's, as before.
        """
        self.assertEqual(self.successResultOf(self.announce()), 5)
        for request in self.stores().values():
            self.assertEqual(request.version, {PROTOCOL_VERSION_KEY: 1})

    def test_refusals(self) -> None:
        self.failureResultOf(self.announce(onion_only=True), ValueError)
        self.assertEqual(self.network.sent, [])
        self.failureResultOf(self.announce(onion="nope.onion:1"))


class OnionLookupTests(NodeTestCase):
    """
    A value lookup given C{on_onions} asks for onions and collects them,
    from every page; without it, it asks nothing of the kind.
    """

    def setUp(self) -> None:
        super().setUp()
        self.remotes = [self.network.add_remote(node_address(n), remote_id(n)) for n in (1, 2)]
        for n in (1, 2):
            self.know(node_address(n), remote_id(n))

    def test_collects_onions(self) -> None:
        first, second = self.remotes
        many = [onion(n) for n in range(2 * K + 1)]
        for endpoint in many:
            first.onions.add(BLOB, endpoint, remote_id(9))
        second.onions.add(BLOB, onion(0), remote_id(9))
        second.onions.add(BLOB, onion(100), remote_id(9))
        got: list[list[bytes]] = []
        lookup = self.make_node().find_value(BLOB, on_onions=got.append)
        self.run_until(RPC_TIMEOUT + 1)
        self.assertTrue(lookup.result.called)
        self.assertEqual(sorted(lookup.onions), sorted([*many, onion(100)]))
        self.assertEqual([o for batch in got for o in batch], lookup.onions)
        self.assertEqual(lookup.marked, {remote_id(1), remote_id(2)})
        requests = [r for _, _, r in self.network.requests(b"findValue")]
        self.assertGreater(len(requests), 2)  # more pages of the first node's
        self.assertTrue(all(r.version and r.version.get(ONIONS_KEY) == 1 for r in requests))

    def test_without_on_onions(self) -> None:
        self.remotes[0].onions.add(BLOB, onion(1), remote_id(9))
        lookup = self.make_node().find_value(BLOB)
        self.run_until(RPC_TIMEOUT + 1)
        self.assertEqual(lookup.onions, [])
        for _, _, request in self.network.requests(b"findValue"):
            self.assertEqual(request.version, {PAGE_KEY: 0, PROTOCOL_VERSION_KEY: 1})
