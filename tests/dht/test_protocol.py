"""
Tests for L{p2pblob.dht.protocol}: L{KademliaProtocol} on a fake clock, over
a fake UDP port that records what the protocol sends.

The tests play the other nodes by hand: they build their datagrams with the
constructors of L{p2pblob.dht.messages}, hand them to C{datagramReceived},
and read what the protocol wrote with L{decode_datagram}.  Every host is a
public IPv4 address and the protocol refuses loopback, as on LBRY's DHT.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IUDPTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from p2pblob.dht.bencode import bencode
from p2pblob.dht.constants import (
    CHECK_REFRESH_INTERVAL,
    HASH_LENGTH,
    PROTOCOL_VERSION,
    RPC_ID_LENGTH,
    RPC_TIMEOUT,
    TOKEN_SECRET_REFRESH,
    K,
)
from p2pblob.dht.contact import Contact
from p2pblob.dht.datastore import PeerStore
from p2pblob.dht.ids import ID_SPACE, id_from_int
from p2pblob.dht.messages import (
    PAGE_KEY,
    PROTOCOL_VERSION_KEY,
    ErrorResponse,
    Message,
    Request,
    Response,
    decode_datagram,
    encode_datagram,
    find_node,
    find_value,
    ping,
    store,
)
from p2pblob.dht.peers import compact_peer
from p2pblob.dht.protocol import (
    MAYBE_PING_AGAIN,
    MAYBE_PING_INTERVAL,
    MAYBE_PING_QUEUE,
    Address,
    KademliaProtocol,
)
from p2pblob.dht.results import FindValueResult, encode_contacts
from p2pblob.dht.routing import RoutingTable
from p2pblob.dht.tokens import TokenKeeper
from p2pblob.errors import DatagramError, DHTError, RemoteDHTError, RPCTimeoutError
from tests.dht._udp import FakeUDPPort

OWN_ID = bytes(HASH_LENGTH)
"""
Our node id: 0, so that an id's distance to us is its value.
"""

OUR_ADDRESS: Address = ("45.0.0.1", 4444)
REMOTE: Address = ("45.0.0.2", 4444)
REMOTE_ID = hashlib.sha384(b"remote").digest()
OTHER: Address = ("45.0.0.3", 4444)
OTHER_ID = hashlib.sha384(b"other").digest()
BLOB = hashlib.sha384(b"blob").digest()
TCP_PORT = 3333

TOP = ID_SPACE // 2
"""
The first id of the upper half of the id space, the half without our id.
"""


def address(n: int) -> Address:
    """
    A public address of its own for remote node number C{n}.
    """
    return (f"45.1.{n // 250}.{n % 250 + 1}", 4444)


def rpc_id(n: int) -> bytes:
    """
    The rpc id of the C{n}th request a remote node sends us.
    """
    return b"remote-rpc" + n.to_bytes(RPC_ID_LENGTH - 10, "big")


def counting_bytes() -> Callable[[int], bytes]:
    """
    A C{random_bytes} for the protocol that gives 1, 2, 3 ... in as many
    bytes as asked: our rpc ids, predictable and all different.
    """
    counter = itertools.count(1)
    return lambda size: next(counter).to_bytes(size, "big")


def secrets() -> Iterator[bytes]:
    """
    Made-up token secrets, 48 bytes each, all different.
    """
    for n in itertools.count():
        yield hashlib.sha384(b"secret %d" % n).digest()


class FakeDatagramTransport(FakeUDPPort):
    """
    A UDP port that sends nothing: it records each datagram written to it.

    @ivar written: C{(data, address)} of each datagram, in order.
    @ivar error: when set, what C{write} raises instead (the network is
        unreachable).
    """

    def __init__(self, host: Address = OUR_ADDRESS) -> None:
        super().__init__(host)
        self.written: list[tuple[bytes, Address]] = []
        self.error: OSError | None = None

    def send(self, packet: bytes, address: Address) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((packet, address))


verifyClass(IUDPTransport, FakeDatagramTransport)


class ProtocolTestCase(SynchronousTestCase):
    """
    A L{KademliaProtocol} with a real routing table, peer store and token
    keeper, on a fake clock and a L{FakeDatagramTransport}.
    """

    allow_loopback = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.routing = self.make_routing()
        self.peers = PeerStore(self.clock)
        secret = secrets()
        self.tokens = TokenKeeper(self.clock, secret_source=lambda size: next(secret))
        self.transport = FakeDatagramTransport()
        self.protocol = KademliaProtocol(
            self.clock, OWN_ID, self.routing, self.peers, self.tokens,
            allow_loopback=self.allow_loopback, random_bytes=counting_bytes(),
        )
        self.protocol.makeConnection(self.transport)

    def make_routing(self) -> RoutingTable:
        return RoutingTable(OWN_ID, self.clock)

    def sent(self) -> list[tuple[Message, Address]]:
        """
        What the protocol sent since the last call, decoded, with where it
        went.
        """
        written, self.transport.written = self.transport.written, []
        return [(decode_datagram(data), where) for data, where in written]

    def sent_request(self) -> tuple[Request, Address]:
        """
        The one request the protocol sent since the last call.
        """
        [(message, where)] = self.sent()
        assert isinstance(message, Request), message
        return message, where

    def receive(self, message: Message, source: Address) -> None:
        self.protocol.datagramReceived(encode_datagram(message), source)

    def answer(self, result: object, node_id: bytes = REMOTE_ID) -> Request:
        """
        Answer the one request the protocol sent, from where it went.
        """
        request, where = self.sent_request()
        self.receive(Response(request.rpc_id, node_id, result), where)
        return request

    def ask(self, request: Request, source: Address = REMOTE) -> Response | ErrorResponse:
        """
        Send the protocol C{request} from C{source}; return its reply, which
        must be the only datagram it sends, back to C{source}.  (What it
        sent before, such as pings of requesters, is passed over.)
        """
        self.sent()
        self.receive(request, source)
        [(reply, where)] = self.sent()
        self.assertEqual(where, source)
        assert isinstance(reply, Response | ErrorResponse), reply
        self.assertEqual(reply.rpc_id, request.rpc_id)
        self.assertEqual(reply.node_id, OWN_ID)
        return reply

    def assertRefused(self, reply: Message, kind: str, text: bytes) -> None:
        """
        C{reply} is an error response as lbry-sdk writes them.
        """
        self.assertIsInstance(reply, ErrorResponse)
        assert isinstance(reply, ErrorResponse)
        self.assertEqual(reply.exception_type, f"<class '{kind}'>".encode())
        self.assertEqual(reply.message, text)

    def admit(self, host_port: Address, node_id: bytes) -> Contact:
        """
        Put a contact in the routing table as if it had answered us now.
        """
        contact = Contact(host_port[0], host_port[1], node_id)
        self.routing.add_contact(contact)
        return contact


class FakeTransportTests(SynchronousTestCase):
    def test_provides_interface(self) -> None:
        verifyObject(IUDPTransport, FakeDatagramTransport())


class RequestTimeoutTests(ProtocolTestCase):
    """
    A request that gets no answer fails after C{RPC_TIMEOUT}, and counts
    against the contact it went to.
    """

    def test_fails_after_exactly_rpc_timeout(self) -> None:
        """
        Nothing happens to an unanswered request for 5 s; at 5 s it fails
        with L{RPCTimeoutError} naming the node and the method, and no
        call is left on the clock.
        """
        self.assertEqual(RPC_TIMEOUT, 5.0)
        d = self.protocol.ping(REMOTE)
        request, where = self.sent_request()
        self.assertEqual((request.method, where), (b"ping", REMOTE))
        self.clock.advance(RPC_TIMEOUT - 0.001)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        failure = self.failureResultOf(d, RPCTimeoutError)
        self.assertIn("45.0.0.2:4444", str(failure.value))
        self.assertIn("ping", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_marks_contact_failed(self) -> None:
        """
        The contact at the address that did not answer is marked failed,
        once per timeout, and is bad after two.
        """
        contact = self.admit(REMOTE, REMOTE_ID)
        self.protocol.ping(REMOTE).addErrback(lambda f: None)
        self.clock.advance(RPC_TIMEOUT)
        self.assertEqual((contact.failures, contact.last_failed), (1, RPC_TIMEOUT))
        self.assertFalse(contact.is_bad)
        self.protocol.ping(REMOTE).addErrback(lambda f: None)
        self.clock.advance(RPC_TIMEOUT)
        self.assertEqual(contact.failures, 2)
        self.assertTrue(contact.is_bad)

    def test_timeout_of_unknown_node(self) -> None:
        """
        A node that is not in the routing table and does not answer stays
        out of it.
        """
        d = self.protocol.ping(REMOTE)
        self.clock.advance(RPC_TIMEOUT)
        self.failureResultOf(d, RPCTimeoutError)
        self.assertEqual(len(self.routing), 0)

    def test_late_answer_ignored(self) -> None:
        """
        An answer after the timeout is dropped (and counted): it neither
        raises nor touches the failed Deferred nor clears the contact's
        failure.
        """
        contact = self.admit(REMOTE, REMOTE_ID)
        d = self.protocol.ping(REMOTE)
        request, _ = self.sent_request()
        self.clock.advance(RPC_TIMEOUT)
        self.failureResultOf(d, RPCTimeoutError)
        self.receive(Response(request.rpc_id, REMOTE_ID, b"pong"), REMOTE)
        self.assertEqual(self.protocol.dropped, 1)
        self.assertEqual(contact.failures, 1)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_setting(self) -> None:
        """
        The timeout can be set per protocol.
        """
        protocol = KademliaProtocol(
            self.clock, OWN_ID, self.routing, self.peers, self.tokens, timeout=1.5
        )
        protocol.makeConnection(FakeDatagramTransport())
        d = protocol.ping(REMOTE)
        self.clock.advance(1.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, RPCTimeoutError)


class AnswerTests(ProtocolTestCase):
    """
    Answers are matched to our requests by rpc id and by the host the
    request went to; the node that answered joins the routing table.
    """

    def test_answer_fires_request(self) -> None:
        """
        The answer's result fires the request, the timeout is cancelled and
        the node that answered is admitted at its address.
        """
        d = self.protocol.ping(REMOTE)
        request = self.answer(b"pong")
        self.assertEqual(request.node_id, OWN_ID)
        self.assertEqual(self.successResultOf(d), b"pong")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        contact = self.routing.get(REMOTE_ID)
        assert contact is not None
        self.assertEqual((contact.address, contact.last_replied), (REMOTE, 0.0))

    def test_rpc_ids_differ(self) -> None:
        """
        Every request has an rpc id of its own, of 20 bytes.
        """
        for _ in range(3):
            self.protocol.ping(REMOTE)
        ids = [message.rpc_id for message, _ in self.sent()]
        self.assertEqual(len(set(ids)), 3)
        self.assertEqual({len(i) for i in ids}, {RPC_ID_LENGTH})

    def test_answer_from_other_host_ignored(self) -> None:
        """
        An answer carrying our rpc id but coming from another host is
        dropped: the request stays pending, the sender is not admitted, and
        the real answer is still taken.
        """
        d = self.protocol.ping(REMOTE)
        request, _ = self.sent_request()
        self.receive(Response(request.rpc_id, OTHER_ID, b"pong"), OTHER)
        self.assertNoResult(d)
        self.assertEqual(self.protocol.dropped, 1)
        self.assertNotIn(OTHER_ID, self.routing)
        self.receive(Response(request.rpc_id, REMOTE_ID, b"pong"), REMOTE)
        self.assertEqual(self.successResultOf(d), b"pong")

    def test_answer_from_other_port_of_same_host(self) -> None:
        """
        As in lbry-sdk, an answer must come from the I{IP} the request went
        to (spec 7.2); the port may differ (a NAT), and the node is admitted
        at the address it answered from.
        """
        d = self.protocol.ping(REMOTE)
        request, _ = self.sent_request()
        self.receive(Response(request.rpc_id, REMOTE_ID, b"pong"), (REMOTE[0], 5555))
        self.assertEqual(self.successResultOf(d), b"pong")
        contact = self.routing.get(REMOTE_ID)
        assert contact is not None
        self.assertEqual(contact.address, (REMOTE[0], 5555))

    def test_unknown_rpc_id_ignored(self) -> None:
        """
        An answer to no request of ours is dropped and its sender not
        admitted.
        """
        d = self.protocol.ping(REMOTE)
        self.receive(Response(rpc_id(1), REMOTE_ID, b"pong"), REMOTE)
        self.assertNoResult(d)
        self.assertEqual(self.protocol.dropped, 1)
        self.assertEqual(len(self.routing), 0)

    def test_error_response(self) -> None:
        """
        An error response fails the request with L{RemoteDHTError} carrying
        the error's type and text; the node did answer, so it is admitted.
        """
        d = self.protocol.store(REMOTE, BLOB, bytes(HASH_LENGTH), TCP_PORT)
        request, where = self.sent_request()
        self.receive(
            ErrorResponse(request.rpc_id, REMOTE_ID, b"<class 'ValueError'>", b"Invalid token"),
            where,
        )
        error = self.failureResultOf(d, RemoteDHTError).value
        self.assertEqual((error.kind, error.text), ("<class 'ValueError'>", "Invalid token"))
        self.assertIn(REMOTE_ID, self.routing)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_store_request(self) -> None:
        """
        C{store} sends the blob hash, the token, the TCP port, our id as the
        publisher and age 0, then the version dictionary, as lbry-sdk does;
        it fires with the node's answer.
        """
        token = hashlib.sha384(b"token").digest()
        d = self.protocol.store(REMOTE, BLOB, token, TCP_PORT)
        request = self.answer(b"OK")
        self.assertEqual(request.method, b"store")
        self.assertEqual(request.args, (BLOB, token, TCP_PORT, OWN_ID, 0))
        self.assertEqual(request.version, {PROTOCOL_VERSION_KEY: PROTOCOL_VERSION})
        self.assertEqual(self.successResultOf(d), b"OK")

    def test_find_node_result(self) -> None:
        """
        C{find_node} fires with the contacts named in the answer, leaving
        out our own id and contacts at addresses we do not accept
        (private, loopback, low port).
        """
        named = [
            (OTHER_ID, OTHER[0], OTHER[1]),
            (OWN_ID, OUR_ADDRESS[0], OUR_ADDRESS[1]),
            (id_from_int(1), "10.0.0.1", 4444),
            (id_from_int(2), "127.0.0.1", 4444),
            (id_from_int(3), "45.0.0.9", 80),
        ]
        d = self.protocol.find_node(REMOTE, BLOB)
        request = self.answer(encode_contacts(named))
        self.assertEqual((request.method, request.args), (b"findNode", (BLOB,)))
        found = self.successResultOf(d)
        self.assertEqual([(c.node_id, c.address) for c in found], [(OTHER_ID, OTHER)])

    def test_find_node_malformed_result(self) -> None:
        """
        An answer that is not a list of contacts fails the request with
        L{DatagramError}.
        """
        d = self.protocol.find_node(REMOTE, BLOB)
        self.answer(b"pong")
        self.failureResultOf(d, DatagramError)

    def test_find_value_result(self) -> None:
        """
        C{find_value} asks for the page given and fires with the answer
        read as a L{FindValueResult}.
        """
        token = hashlib.sha384(b"token").digest()
        peer = compact_peer("45.0.0.9", TCP_PORT, OTHER_ID)
        d = self.protocol.find_value(REMOTE, BLOB, page=2)
        request = self.answer(
            FindValueResult(token, None, [peer], pages=3).encode(BLOB)
        )
        self.assertEqual((request.method, request.args), (b"findValue", (BLOB,)))
        assert request.version is not None
        self.assertEqual(request.version[PAGE_KEY], 2)
        self.assertEqual(self.successResultOf(d), FindValueResult(token, None, [peer], 3))

    def test_not_listening(self) -> None:
        """
        A protocol without a port fails requests at once with L{DHTError}.
        """
        protocol = KademliaProtocol(self.clock, OWN_ID, self.routing, self.peers, self.tokens)
        self.failureResultOf(protocol.ping(REMOTE), DHTError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cannot_send(self) -> None:
        """
        A request the network refuses to send fails at once with
        L{DHTError} saying why; no timeout is left behind.
        """
        self.transport.error = OSError(errno.ENETUNREACH, "Network is unreachable")
        d = self.protocol.ping(REMOTE)
        failure = self.failureResultOf(d, DHTError)
        self.assertIn("Network is unreachable", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_fails_pending_requests(self) -> None:
        """
        When the port stops, requests in flight fail with L{DHTError}, and
        neither their timeouts nor a pending ping of a requester are left
        on the clock.
        """
        first = self.protocol.ping(REMOTE)
        second = self.protocol.find_node(OTHER, BLOB)
        self.receive(ping(rpc_id(1), id_from_int(7)), address(7))
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.protocol.doStop()
        self.failureResultOf(first, DHTError)
        self.failureResultOf(second, DHTError)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FullBucketTests(ProtocolTestCase):
    """
    A node that answers us when its bucket is full: the protocol pings the
    bucket's least recently seen contact that is not good, and the
    newcomer takes its place only if it fails to answer (BEP-5).
    """

    def make_routing(self) -> RoutingTable:
        # no bucket splits but the one holding our id: the upper half fills up
        return RoutingTable(OWN_ID, self.clock, split_under_index=0)

    def setUp(self) -> None:
        super().setUp()
        self.members = [self.admit(address(n), id_from_int(TOP + n)) for n in range(1, K + 1)]
        # after CHECK_REFRESH_INTERVAL without a reply, none is known to be good
        self.clock.advance(CHECK_REFRESH_INTERVAL)
        self.newcomer = id_from_int(TOP + K + 1)
        d = self.protocol.ping(address(K + 1))
        self.answer(b"pong", node_id=self.newcomer)
        self.successResultOf(d)

    def test_oldest_member_pinged(self) -> None:
        """
        The newcomer waits outside the table while the least recently seen
        member is pinged.
        """
        request, where = self.sent_request()
        self.assertEqual((request.method, where), (b"ping", self.members[0].address))
        self.assertNotIn(self.newcomer, self.routing)

    def test_silent_member_replaced(self) -> None:
        """
        If the member does not answer, the newcomer takes its place.
        """
        self.sent_request()
        self.clock.advance(RPC_TIMEOUT)
        self.assertNotIn(self.members[0].node_id, self.routing)
        self.assertIn(self.newcomer, self.routing)

    def test_answering_member_kept(self) -> None:
        """
        If the member answers, it stays and the newcomer stays out.
        """
        self.answer(b"pong", node_id=self.members[0].node_id)
        self.clock.advance(RPC_TIMEOUT)
        self.assertIn(self.members[0].node_id, self.routing)
        self.assertNotIn(self.newcomer, self.routing)


class AnsweringTests(ProtocolTestCase):
    """
    The protocol answers C{ping}, C{findNode} and C{findValue} as lbry-sdk
    does, and refuses malformed requests with error responses.
    """

    def test_ping(self) -> None:
        reply = self.ask(ping(rpc_id(1), REMOTE_ID))
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, b"pong"))
        self.assertEqual(self.protocol.requests_answered, 1)

    def test_old_style_ping(self) -> None:
        """
        A request without the trailing version dictionary (2015 nodes) is
        answered too.
        """
        reply = self.ask(Request(rpc_id(1), REMOTE_ID, b"ping", (), None))
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, b"pong"))

    def test_find_node(self) -> None:
        """
        C{findNode} lists the C{K} contacts closest to the key, closest
        first, leaving out the requester and contacts that went bad.
        """
        for n in range(1, 13):
            self.admit(address(n), id_from_int(n))
        bad = id_from_int(2)
        self.routing.contact_failed(bad)
        self.routing.contact_failed(bad)
        # key 16: the distance to id n is 16 + n, so closest means smallest n
        key = id_from_int(16)
        reply = self.ask(find_node(rpc_id(1), id_from_int(1), key), address(1))
        expected = [(id_from_int(n), *address(n)) for n in range(3, 3 + K)]
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, encode_contacts(expected)))

    def test_find_node_empty_table(self) -> None:
        reply = self.ask(find_node(rpc_id(1), REMOTE_ID, BLOB))
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, []))

    def test_find_node_bad_key(self) -> None:
        """
        A key that is not 48 bytes is refused as lbry-sdk refuses it.
        """
        request = Request(
            rpc_id(1), REMOTE_ID, b"findNode", (b"short",), {PROTOCOL_VERSION_KEY: 1}
        )
        self.assertRefused(self.ask(request), "ValueError", b"Invalid key")

    def test_unknown_method(self) -> None:
        request = Request(rpc_id(1), REMOTE_ID, b"foo", (), {PROTOCOL_VERSION_KEY: 1})
        self.assertRefused(self.ask(request), "AttributeError", b"Invalid method: foo")

    def store_peers(self, count: int) -> list[bytes]:
        """
        Store C{count} peers of L{BLOB}, one a second; return their compact
        addresses, the most recent first.
        """
        stored = []
        for n in range(len(self.peers), len(self.peers) + count):
            peer = compact_peer(f"46.0.0.{n + 1}", TCP_PORT, id_from_int(1000 + n))
            self.peers.add(BLOB, peer, id_from_int(1000 + n))
            stored.append(peer)
            self.clock.advance(1)
        return stored[::-1]

    def find_value_page(self, page: int, source: Address = REMOTE) -> FindValueResult:
        reply = self.ask(find_value(rpc_id(page), REMOTE_ID, BLOB, page), source)
        assert isinstance(reply, Response), reply
        return FindValueResult.decode(reply.result, BLOB)

    def test_find_value_pages(self) -> None:
        """
        With 2K + 1 peers stored there are 3 pages of K peers at most, the
        most recently stored first; only page 0 lists contacts.  (lbry-sdk
        would say 2 pages, C{17 // 9 + 1}, and never hand out the last
        peer.)
        """
        others = [self.admit(address(n), id_from_int(n)) for n in range(1, 4)]
        stored = self.store_peers(2 * K + 1)
        first = self.find_value_page(0)
        self.assertEqual(first.pages, 3)
        self.assertEqual(first.peers, stored[:K])
        self.assertEqual(
            sorted(first.contacts or []), sorted((c.node_id, c.host, c.udp_port) for c in others)
        )
        second = self.find_value_page(1)
        self.assertEqual((second.pages, second.peers, second.contacts), (3, stored[K : 2 * K], None))
        third = self.find_value_page(2)
        self.assertEqual((third.pages, third.peers, third.contacts), (3, stored[2 * K :], None))
        beyond = self.find_value_page(3)
        self.assertEqual((beyond.pages, beyond.peers), (3, []))

    def test_find_value_page_count(self) -> None:
        """
        The page count is the number of peers divided by K, rounded up.
        """
        for stored, pages in [(0, 0), (1, 1), (K - 1, 1), (1, 2), (K - 1, 2), (1, 3)]:
            self.store_peers(stored)
            self.assertEqual(self.find_value_page(0).pages, pages, (len(self.peers), pages))

    def test_find_value_without_peers(self) -> None:
        """
        Without peers the answer has a token, the closest contacts, 0 pages
        and no entry for the key.
        """
        self.admit(OTHER, OTHER_ID)
        reply = self.ask(find_value(rpc_id(1), REMOTE_ID, BLOB))
        assert isinstance(reply, Response)
        self.assertIsInstance(reply.result, dict)
        assert isinstance(reply.result, dict)
        self.assertNotIn(BLOB, reply.result)
        result = FindValueResult.decode(reply.result, BLOB)
        self.assertEqual(
            result,
            FindValueResult(
                self.tokens.token_for(REMOTE[0]), [(OTHER_ID, *OTHER)], [], 0, marked=True
            ),
        )

    def test_find_value_hides_requesters_own_peers(self) -> None:
        """
        Peers at the requester's own IP are not listed to it.
        """
        own = compact_peer(REMOTE[0], TCP_PORT, REMOTE_ID)
        other = compact_peer(OTHER[0], TCP_PORT, OTHER_ID)
        self.peers.add(BLOB, own, REMOTE_ID)
        self.peers.add(BLOB, other, OTHER_ID)
        self.assertEqual(self.find_value_page(0).peers, [other])
        self.assertEqual(self.find_value_page(0, source=OTHER).peers, [own])

    def test_find_value_lists_ourselves(self) -> None:
        """
        A node that holds the blob and knows where peers reach it lists
        itself after the stored peers while there are fewer than K (as
        lbry-sdk does), but not to a requester at that very address, not
        twice, and not for a blob it lacks.
        """
        held = {BLOB: ("46.1.2.3", TCP_PORT)}
        self.protocol.own_address = held.get
        ours = compact_peer("46.1.2.3", TCP_PORT, OWN_ID)
        stored = self.store_peers(2)
        self.assertEqual(self.find_value_page(0).peers, [*stored, ours])
        self.assertEqual(self.find_value_page(0, source=("46.1.2.3", 4444)).peers, stored)
        self.peers.add(BLOB, ours, OWN_ID)
        self.assertEqual(sorted(self.find_value_page(0).peers), sorted([*stored, ours]))
        held.clear()
        fresh = self.store_peers(1)
        self.assertEqual(self.find_value_page(0).peers, [*fresh, ours, *stored])

    def test_find_value_ourselves_only_below_k(self) -> None:
        """
        With K peers stored, the answer is full: the node does not add
        itself.
        """
        self.protocol.own_address = lambda key: ("46.1.2.3", TCP_PORT)
        stored = self.store_peers(K)
        self.assertEqual(self.find_value_page(0).peers, stored)

    def test_find_value_ourselves_ipv6(self) -> None:
        """
        An IPv6 external address has no compact form: the node is not
        listed, and the answer is still given.
        """
        self.protocol.own_address = lambda key: ("2001:db8::1", TCP_PORT)
        self.assertEqual(self.find_value_page(0).peers, [])

    def test_find_value_token_per_host(self) -> None:
        """
        The token is the one made for the requester's IP.
        """
        self.assertEqual(self.find_value_page(0).token, self.tokens.token_for(REMOTE[0]))
        self.assertEqual(
            self.find_value_page(0, source=OTHER).token, self.tokens.token_for(OTHER[0])
        )
        self.assertNotEqual(self.tokens.token_for(REMOTE[0]), self.tokens.token_for(OTHER[0]))

    def test_find_value_bad_page(self) -> None:
        """
        A page that is not a non-negative integer is refused.
        """
        for page in [-1, b"1"]:
            request = Request(
                rpc_id(1), REMOTE_ID, b"findValue", (BLOB,),
                {PAGE_KEY: page, PROTOCOL_VERSION_KEY: 1},
            )
            self.assertRefused(self.ask(request), "ValueError", b"invalid page")

    def test_old_style_find_value(self) -> None:
        """
        A C{findValue} without the version dictionary gets page 0.
        """
        self.admit(OTHER, OTHER_ID)
        stored = self.store_peers(1)
        reply = self.ask(Request(rpc_id(1), REMOTE_ID, b"findValue", (BLOB,), None))
        assert isinstance(reply, Response)
        result = FindValueResult.decode(reply.result, BLOB)
        self.assertEqual((result.peers, result.contacts), (stored, [(OTHER_ID, *OTHER)]))


class StoreTests(ProtocolTestCase):
    """
    C{store} records the requester as a peer of the blob if it echoes a
    token we gave its IP since the last rotation but one.
    """

    def fetch_token(self, source: Address = REMOTE) -> bytes:
        """
        Ask for the peers of L{BLOB} from C{source}, as an announcer does
        first; return the token of the answer.
        """
        reply = self.ask(find_value(rpc_id(0), REMOTE_ID, BLOB), source)
        assert isinstance(reply, Response)
        return FindValueResult.decode(reply.result, BLOB).token

    def store_with(self, token: bytes, port: int = TCP_PORT) -> Message:
        return self.ask(store(rpc_id(1), REMOTE_ID, BLOB, token, port, REMOTE_ID))

    def test_valid_token(self) -> None:
        """
        The peer is recorded at the request's IP, the TCP port it gave and
        its node id, and the store answered C{b"OK"}.
        """
        reply = self.store_with(self.fetch_token())
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, b"OK"))
        self.assertEqual(
            self.peers.peers_for(BLOB), [compact_peer(REMOTE[0], TCP_PORT, REMOTE_ID)]
        )

    def test_bad_token(self) -> None:
        """
        A token we never gave is refused with C{Invalid token}; nothing is
        stored.
        """
        self.fetch_token()
        reply = self.store_with(hashlib.sha384(b"made up").digest())
        self.assertRefused(reply, "ValueError", b"Invalid token")
        self.assertEqual(len(self.peers), 0)

    def test_token_of_other_host(self) -> None:
        """
        A token given to another IP is refused.
        """
        self.assertRefused(self.store_with(self.fetch_token(OTHER)), "ValueError", b"Invalid token")
        self.assertEqual(len(self.peers), 0)

    def test_token_survives_one_rotation(self) -> None:
        """
        A token made just before a rotation of the secret is still accepted
        after it.
        """
        self.tokens.start()
        self.clock.advance(TOKEN_SECRET_REFRESH - 1)
        token = self.fetch_token()
        self.clock.advance(1)
        self.assertNotEqual(self.fetch_token(), token, "the secret did not rotate")
        self.assertEqual(self.store_with(token), Response(rpc_id(1), OWN_ID, b"OK"))
        self.assertEqual(len(self.peers), 1)

    def test_token_expires_at_second_rotation(self) -> None:
        """
        A token made with the secret before the previous one is refused:
        it is at most two rotation intervals old.
        """
        self.tokens.start()
        token = self.fetch_token()
        self.clock.advance(2 * TOKEN_SECRET_REFRESH - 1)
        self.assertIsInstance(self.store_with(token), Response)
        self.clock.advance(1)
        self.assertRefused(self.store_with(token), "ValueError", b"Invalid token")

    def test_expired_token_stores_nothing(self) -> None:
        self.tokens.start()
        token = self.fetch_token()
        self.clock.advance(2 * TOKEN_SECRET_REFRESH)
        self.assertRefused(self.store_with(token), "ValueError", b"Invalid token")
        self.assertEqual(len(self.peers), 0)

    def test_bad_port(self) -> None:
        """
        A TCP port below 1024 is refused; nothing is stored.
        """
        self.assertRefused(self.store_with(self.fetch_token(), port=80), "ValueError", b"Invalid port 80")
        self.assertEqual(len(self.peers), 0)

    def test_old_style_store(self) -> None:
        """
        A 2015-style store (a dictionary value) is refused as lbry-sdk
        refuses it.
        """
        request = Request(
            rpc_id(1), REMOTE_ID, b"store",
            (BLOB, {b"token": self.fetch_token(), b"port": TCP_PORT, b"lbryid": REMOTE_ID}),
            None,
        )
        self.assertRefused(self.ask(request), "ValueError", b"not enough values to unpack")
        self.assertEqual(len(self.peers), 0)


class MaybePingTests(ProtocolTestCase):
    """
    A node that only sends us requests is pinged (at most one such ping a
    second, never twice within C{MAYBE_PING_AGAIN} seconds) and joins the
    routing table only if it answers.
    """

    def pings(self) -> list[Address]:
        """
        Where the pings the protocol sent since the last look went.
        """
        return [
            where for message, where in self.sent()
            if isinstance(message, Request) and message.method == b"ping"
        ]

    def request_from(self, source: Address, node_id: bytes) -> None:
        self.receive(find_node(rpc_id(1), node_id, BLOB), source)
        self.sent()  # the answer

    def test_pinged_after_a_second(self) -> None:
        """
        The requester is answered at once, pinged a second later, and not
        in the routing table until it answers the ping.
        """
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(MAYBE_PING_INTERVAL - 0.001)
        self.assertEqual(self.pings(), [])
        self.clock.advance(0.001)
        request, where = self.sent_request()
        self.assertEqual((request.method, where), (b"ping", REMOTE))
        self.assertNotIn(REMOTE_ID, self.routing)
        self.receive(Response(request.rpc_id, REMOTE_ID, b"pong"), REMOTE)
        self.assertIn(REMOTE_ID, self.routing)

    def test_silent_requester_not_admitted(self) -> None:
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [REMOTE])
        self.clock.advance(RPC_TIMEOUT)
        self.assertEqual(len(self.routing), 0)

    def test_one_ping_a_second(self) -> None:
        """
        Several requesters are pinged one a second, in the order they
        came.
        """
        for n in range(1, 4):
            self.request_from(address(n), id_from_int(n))
        pinged = []
        for _ in range(40):
            self.clock.advance(0.25)
            pinged += [(self.clock.seconds(), where) for where in self.pings()]
        self.assertEqual(pinged, [(1.0, address(1)), (2.0, address(2)), (3.0, address(3))])

    def test_repeated_requests_one_ping(self) -> None:
        """
        A requester that keeps asking while it waits is pinged once.
        """
        for _ in range(3):
            self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(10 * MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [REMOTE])

    def test_not_pinged_again_within_300_s(self) -> None:
        """
        A requester that did not answer is not pinged again for its
        requests in the C{MAYBE_PING_AGAIN} seconds after the one it was
        pinged for.
        """
        self.assertEqual((MAYBE_PING_INTERVAL, MAYBE_PING_AGAIN), (1.0, 300))
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [REMOTE])
        self.clock.advance(MAYBE_PING_AGAIN - MAYBE_PING_INTERVAL - 1)
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [])
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [REMOTE])

    def test_known_contact_not_pinged(self) -> None:
        """
        A contact already in the table is not pinged; its request is noted.
        """
        contact = self.admit(REMOTE, REMOTE_ID)
        self.clock.advance(10)
        self.request_from(REMOTE, REMOTE_ID)
        self.clock.advance(10 * MAYBE_PING_INTERVAL)
        self.assertEqual(self.pings(), [])
        self.assertEqual(contact.last_requested, 10)

    def test_waiting_list_bounded(self) -> None:
        """
        At most C{MAYBE_PING_QUEUE} requesters wait for their ping; those
        that come when the list is full are not pinged.
        """
        for n in range(MAYBE_PING_QUEUE + 6):
            self.request_from(address(n), id_from_int(n + 1))
        self.clock.pump([MAYBE_PING_INTERVAL] * (MAYBE_PING_QUEUE + 10))
        self.assertEqual(self.pings(), [address(n) for n in range(MAYBE_PING_QUEUE)])


class InvalidInputTests(ProtocolTestCase):
    """
    What the protocol cannot read is dropped and counted; nodes at
    addresses we do not accept are answered but never pinged or admitted.
    """

    def test_undecodable_dropped(self) -> None:
        datagrams = [
            b"",
            b"garbage",
            b"le",
            bencode({0: 0, 1: b"x" * 48, 2: REMOTE_ID, 3: b"ping", 4: []}),
            bencode({0: 3, 1: rpc_id(1), 2: REMOTE_ID, 3: b"pong"}),
            encode_datagram(ping(rpc_id(1), REMOTE_ID))[:-1],
        ]
        for data in datagrams:
            self.protocol.datagramReceived(data, REMOTE)
        self.assertEqual(self.protocol.dropped, len(datagrams))
        self.assertEqual(self.protocol.requests_answered, 0)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refused_addresses(self) -> None:
        """
        Requesters on loopback, private addresses or low ports are
        answered, never pinged, never admitted.
        """
        sources = [("127.0.0.1", 4444), ("10.1.2.3", 4444), ("192.168.1.2", 4444), (REMOTE[0], 80)]
        for n, source in enumerate(sources):
            reply = self.ask(ping(rpc_id(n), id_from_int(n + 1)), source)
            self.assertEqual(reply, Response(rpc_id(n), OWN_ID, b"pong"))
        self.clock.advance(10 * MAYBE_PING_INTERVAL)
        self.assertEqual(self.sent(), [])
        self.assertEqual(len(self.routing), 0)

    def test_refused_address_answering(self) -> None:
        """
        A node on loopback that answers our request (a bootstrap node
        configured as such) is not admitted.
        """
        d = self.protocol.ping(("127.0.0.1", 4444))
        self.answer(b"pong")
        self.assertEqual(self.successResultOf(d), b"pong")
        self.assertEqual(len(self.routing), 0)

    def test_store_from_loopback(self) -> None:
        """
        A peer on loopback is not stored, even with a good token.
        """
        source = ("127.0.0.1", 4444)
        token = self.tokens.token_for(source[0])
        reply = self.ask(store(rpc_id(1), REMOTE_ID, BLOB, token, TCP_PORT, REMOTE_ID), source)
        self.assertIsInstance(reply, ErrorResponse)
        self.assertEqual(len(self.peers), 0)

    def test_find_value_from_ipv6(self) -> None:
        """
        A requester whose host is not IPv4 (the port listens on IPv6) can
        be given no token: its C{findValue} is not answered with one, and
        nothing is raised out of C{datagramReceived}.
        """
        self.protocol.datagramReceived(
            encode_datagram(find_value(rpc_id(1), REMOTE_ID, BLOB)), ("::1", 4444)
        )
        self.assertEqual(
            [message for message, _ in self.sent() if isinstance(message, Response)], []
        )

    def test_cannot_answer(self) -> None:
        """
        An answer the network refuses to send is given up quietly.
        """
        self.transport.error = OSError(errno.EPERM, "Operation not permitted")
        self.receive(ping(rpc_id(1), REMOTE_ID), REMOTE)
        self.assertEqual(self.protocol.requests_answered, 1)


class LoopbackAllowedTests(ProtocolTestCase):
    """
    With C{allow_loopback} (local swarms), nodes on 127.0.0.0/8 are like any
    other.
    """

    allow_loopback = True

    def test_loopback_requester_pinged_and_admitted(self) -> None:
        source = ("127.0.0.2", 4444)
        self.ask(ping(rpc_id(1), REMOTE_ID), source)
        self.clock.advance(MAYBE_PING_INTERVAL)
        self.answer(b"pong")
        contact = self.routing.get(REMOTE_ID)
        assert contact is not None
        self.assertEqual(contact.address, source)

    def test_store_from_loopback(self) -> None:
        source = ("127.0.0.2", 4444)
        token = self.tokens.token_for(source[0])
        reply = self.ask(store(rpc_id(1), REMOTE_ID, BLOB, token, TCP_PORT, REMOTE_ID), source)
        self.assertEqual(reply, Response(rpc_id(1), OWN_ID, b"OK"))
        self.assertEqual(self.peers.peers_for(BLOB), [compact_peer(source[0], TCP_PORT, REMOTE_ID)])
