"""
Tests for L{p2pblob.dht.messages} and L{p2pblob.dht.peers}: every datagram
captured between lbry-sdk nodes (C{vectors/dht/datagrams.json}) decodes to
the recorded fields and is rebuilt byte for byte, requests with our
constructors and replies from their meaning; lbry-sdk's request builders
(C{request_constructors.json}) and compact addresses
(C{token_and_compact_address.json}) are matched; anything malformed raises
L{DatagramError} and nothing else.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.bencode import bencode
from p2pblob.dht.constants import MAX_DATAGRAM_SIZE
from p2pblob.dht.messages import (
    ErrorResponse,
    Request,
    Response,
    decode_datagram,
    encode_datagram,
    find_node,
    find_value,
    ping,
    store,
)
from p2pblob.dht.peers import compact_ip, compact_peer, decode_compact_peer
from p2pblob.dht.results import FindValueResult, decode_contacts, encode_contacts
from p2pblob.dht.tokens import make_token
from p2pblob.errors import DatagramError, DHTError
from tests._vectors import load_json, typed_value
from tests.dht.test_bencode import _mutate

DATAGRAMS = load_json("dht", "datagrams.json")
CONSTRUCTORS = load_json("dht", "request_constructors.json")
ADDRESSES = load_json("dht", "token_and_compact_address.json")

NODES = {letter: bytes.fromhex(node["node_id_hex"]) for letter, node in DATAGRAMS["nodes"].items()}
A, B, C, D = NODES["A"], NODES["B"], NODES["C"], NODES["D"]
KEY = bytes.fromhex(DATAGRAMS["blob_key_hex"])
TARGET = bytes.fromhex(DATAGRAMS["find_node_target_hex"])
SECRET_B = bytes.fromhex(DATAGRAMS["token_secret_of_B_hex"])
LOCALHOST = "127.0.0.1"
VERSION = {b"protocolVersion": 1}


def contact(letter: str) -> tuple[bytes, str, int]:
    """
    The contact triple other nodes give for node C{letter}.
    """
    node = DATAGRAMS["nodes"][letter]
    return NODES[letter], node["ip"], node["udp_port"]


def rpc_id(n: int) -> bytes:
    """
    The id of the C{n}th request sent in the capture (the vectors' recipe).
    """
    return hashlib.sha384(b"lbry-vectors/rpc/%d" % n).digest()[:20]


def step(number: int) -> dict[str, Any]:
    """
    Step C{number} of the capture, counting from 1 as the README does.
    """
    result: dict[str, Any] = DATAGRAMS["steps"][number - 1]
    return result


def datagram_bytes(number: int, index: int) -> bytes:
    """
    The bytes of datagram C{index} of step C{number}.
    """
    return bytes.fromhex(step(number)["datagrams"][index]["hex"])


def all_datagrams() -> list[dict[str, Any]]:
    return [datagram for s in DATAGRAMS["steps"] for datagram in s["datagrams"]]


def node_letter(endpoint: str) -> str:
    """
    The node letter in a C{from}/C{to} field such as C{"node A (udp 44501)"}.
    """
    return endpoint.split()[1]


class VectorRecipeTests(SynchronousTestCase):
    """
    The vectors' fixed values follow their stated recipes, so the tests
    below build replies from first principles.
    """

    def test_node_ids(self) -> None:
        for letter, node_id in NODES.items():
            self.assertEqual(
                node_id, hashlib.sha384(f"lbry-vectors/node-{letter}".encode()).digest()
            )

    def test_secret(self) -> None:
        self.assertEqual(SECRET_B, hashlib.sha384(b"lbry-vectors/token-secret-B").digest())

    def test_rpc_ids(self) -> None:
        """
        Requests carry the recipe's rpc ids in sending order.
        """
        requests = [d for d in all_datagrams() if d["summary"]["packet_type"] == 0]
        for n, datagram in enumerate(requests, start=1):
            self.assertEqual(datagram["summary"]["rpc_id_hex"], rpc_id(n).hex())


class DecodeCapturedTests(SynchronousTestCase):
    """
    Every captured datagram decodes to the recorded fields.
    """

    def test_fields(self) -> None:
        for datagram in all_datagrams():
            summary = datagram["summary"]
            message = decode_datagram(bytes.fromhex(datagram["hex"]))
            self.assertEqual(message.rpc_id.hex(), summary["rpc_id_hex"])
            self.assertEqual(message.node_id.hex(), summary["node_id_hex"])
            self.assertEqual(message.node_id, NODES[node_letter(datagram["from"])])
            kind = {0: Request, 1: Response, 2: ErrorResponse}[summary["packet_type"]]
            self.assertIsInstance(message, kind)
            if isinstance(message, Request):
                self.assertEqual(message.method, summary["method"].encode())
                args = typed_value(summary["args"])
                self.assertEqual(list(message.args), args[:-1])
                self.assertEqual(message.version, args[-1])
            elif isinstance(message, Response):
                self.assertEqual(message.result, typed_value(summary["result"]))
            else:
                assert isinstance(message, ErrorResponse)
                self.assertEqual(message.exception_type, summary["exception_type"].encode())
                self.assertEqual(message.message, summary["message"].encode())

    def test_reencode(self) -> None:
        """
        Each decoded datagram encodes back to the captured bytes.
        """
        for datagram in all_datagrams() + CONSTRUCTORS["datagrams"]:
            data = bytes.fromhex(datagram["hex"])
            self.assertEqual(encode_datagram(decode_datagram(data)), data)

    def test_versions(self) -> None:
        """
        Every request ends with C{protocolVersion: 1}; C{findValue} also
        carries its page there.
        """
        pages = {3: 0, 4: 0, 5: 0, 6: 1}
        for number, s in enumerate(DATAGRAMS["steps"], start=1):
            message = decode_datagram(bytes.fromhex(s["datagrams"][0]["hex"]))
            assert isinstance(message, Request)
            expected = dict(VERSION)
            if number in pages:
                expected = {b"p": pages[number], **VERSION}
            self.assertEqual(message.version, expected)


class RebuildCapturedTests(SynchronousTestCase):
    """
    Our constructors and result encoders produce the captured bytes from
    the meaning of each message alone.
    """

    def assertBytes(
        self, message: Request | Response | ErrorResponse, number: int, index: int
    ) -> None:
        self.assertEqual(encode_datagram(message).hex(), datagram_bytes(number, index).hex())

    def test_ping(self) -> None:
        self.assertBytes(ping(rpc_id(1), A), 1, 0)
        self.assertBytes(Response(rpc_id(1), B, b"pong"), 1, 1)

    def test_find_node(self) -> None:
        self.assertBytes(find_node(rpc_id(2), A, TARGET), 2, 0)
        reply = Response(rpc_id(2), B, encode_contacts([contact("C"), contact("D")]))
        self.assertBytes(reply, 2, 1)

    def test_find_node_result(self) -> None:
        """
        The C{findNode} result reads as the contact triples lbry's caller
        got.
        """
        message = decode_datagram(datagram_bytes(2, 1))
        assert isinstance(message, Response)
        expected = [
            (bytes.fromhex(node["hex"]), host, port)
            for node, host, port in step(2)["lbry_caller_result"]
        ]
        self.assertEqual(decode_contacts(message.result), expected)
        self.assertEqual(expected, [contact("C"), contact("D")])

    def token(self) -> bytes:
        return make_token(SECRET_B, LOCALHOST)

    def test_find_value_before_store(self) -> None:
        self.assertBytes(find_value(rpc_id(3), A, KEY), 3, 0)
        result = FindValueResult(self.token(), [contact("C"), contact("D")], [], 0)
        self.assertBytes(Response(rpc_id(3), B, result.encode(KEY)), 3, 1)

    def test_announce(self) -> None:
        """
        C's announcement: a C{findValue} for a token, then the C{store}.
        """
        self.assertBytes(find_value(rpc_id(4), C, KEY), 4, 0)
        result = FindValueResult(self.token(), [contact("A"), contact("D")], [], 0)
        self.assertBytes(Response(rpc_id(4), B, result.encode(KEY)), 4, 1)
        tcp_port = DATAGRAMS["nodes"]["C"]["tcp_port"]
        self.assertBytes(store(rpc_id(5), C, KEY, self.token(), tcp_port, C), 4, 2)
        self.assertBytes(Response(rpc_id(5), B, b"OK"), 4, 3)

    def test_find_value_after_store(self) -> None:
        """
        After the store, page 0 lists C as a peer under the raw key.
        """
        self.assertBytes(find_value(rpc_id(6), A, KEY), 5, 0)
        peer = compact_peer(LOCALHOST, DATAGRAMS["nodes"]["C"]["tcp_port"], C)
        result = FindValueResult(self.token(), [contact("C"), contact("D")], [peer], 1)
        self.assertBytes(Response(rpc_id(6), B, result.encode(KEY)), 5, 1)

    def test_find_value_page_1(self) -> None:
        """
        Page 1 has no contacts entry and no peers.
        """
        self.assertBytes(find_value(rpc_id(7), A, KEY, page=1), 6, 0)
        result = FindValueResult(self.token(), None, [], 1)
        self.assertBytes(Response(rpc_id(7), B, result.encode(KEY)), 6, 1)

    def test_unknown_method_error(self) -> None:
        self.assertBytes(Request(rpc_id(8), A, b"foo", (), dict(VERSION)), 7, 0)
        error = ErrorResponse(rpc_id(8), B, b"<class 'AttributeError'>", b"Invalid method: foo")
        self.assertBytes(error, 7, 1)

    def test_bad_key_error(self) -> None:
        """
        lbry lets a 20-byte C{findNode} key out (its constructor is not the
        path used here); ours refuses to build one, but can encode it.
        """
        short_key = b"\x01" * 20
        self.assertRaises(DatagramError, find_node, rpc_id(9), A, short_key)
        self.assertBytes(Request(rpc_id(9), A, b"findNode", (short_key,), dict(VERSION)), 8, 0)
        error = ErrorResponse(
            rpc_id(9), B, b"<class 'ValueError'>", b"invalid contact node_id length: 20"
        )
        self.assertBytes(error, 8, 1)


class FindValueResultCapturedTests(SynchronousTestCase):
    """
    The captured C{findValue} results read as what they mean.
    """

    def result(self, number: int, index: int = 1) -> FindValueResult:
        message = decode_datagram(datagram_bytes(number, index))
        assert isinstance(message, Response)
        return FindValueResult.decode(message.result, KEY)

    def test_before_store(self) -> None:
        result = self.result(3)
        self.assertEqual(result.token, make_token(SECRET_B, LOCALHOST))
        self.assertEqual(result.contacts, [contact("C"), contact("D")])
        self.assertEqual(list(result.peers), [])
        self.assertEqual(result.pages, 0)

    def test_after_store(self) -> None:
        result = self.result(5)
        self.assertEqual(result.contacts, [contact("C"), contact("D")])
        self.assertEqual(result.pages, 1)
        self.assertEqual(
            result.peer_addresses(), [(LOCALHOST, DATAGRAMS["nodes"]["C"]["tcp_port"], C)]
        )
        self.assertEqual(
            list(result.peers),
            [bytes.fromhex(ADDRESSES["compact_peer_addresses"][0]["compact_hex"])],
        )

    def test_page_1(self) -> None:
        result = self.result(6)
        self.assertIsNone(result.contacts)
        self.assertEqual(list(result.peers), [])
        self.assertEqual(result.pages, 1)

    def test_round_trip(self) -> None:
        """
        Each result encodes back to the captured result value.
        """
        for number in (3, 4, 5, 6):
            message = decode_datagram(datagram_bytes(number, 1))
            assert isinstance(message, Response)
            result = FindValueResult.decode(message.result, KEY)
            self.assertEqual(result.encode(KEY), message.result)

    def test_matches_lbry_caller(self) -> None:
        """
        What lbry's caller got is the result dictionary we decode.
        """
        for number in (3, 5, 6):
            message = decode_datagram(datagram_bytes(number, 1))
            assert isinstance(message, Response)
            self.assertEqual(message.result, typed_value(step(number)["lbry_caller_result"]))


class RequestConstructorVectorTests(SynchronousTestCase):
    """
    Our request constructors give the bytes of lbry-sdk's.
    """

    def test_all(self) -> None:
        rpc = bytes.fromhex(CONSTRUCTORS["rpc_id_hex"])
        token = make_token(SECRET_B, LOCALHOST)
        ours = {
            "make_ping": ping(rpc, A),
            "make_find_node": find_node(rpc, A, TARGET),
            "make_find_value page 0": find_value(rpc, A, KEY),
            "make_find_value page 2": find_value(rpc, A, KEY, page=2),
            "make_store": store(rpc, C, KEY, token, DATAGRAMS["nodes"]["C"]["tcp_port"], C),
        }
        names = [datagram["constructor"] for datagram in CONSTRUCTORS["datagrams"]]
        self.assertEqual(sorted(names), sorted(ours))
        for datagram in CONSTRUCTORS["datagrams"]:
            encoded = encode_datagram(ours[datagram["constructor"]])
            self.assertEqual(encoded.hex(), datagram["hex"], datagram["constructor"])
            self.assertEqual(len(encoded), datagram["length"])

    def test_fields(self) -> None:
        rpc = b"\x00" * 20
        self.assertEqual(ping(rpc, A), Request(rpc, A, b"ping", (), VERSION))
        self.assertEqual(
            find_value(rpc, A, KEY, 3), Request(rpc, A, b"findValue", (KEY,), {b"p": 3, **VERSION})
        )
        self.assertEqual(
            store(rpc, A, KEY, KEY, 3333, C, 7),
            Request(rpc, A, b"store", (KEY, KEY, 3333, C, 7), VERSION),
        )

    def test_refusals(self) -> None:
        """
        Malformed arguments are refused as lbry-sdk's builders refuse them.
        """
        rpc = b"\x00" * 20
        for call in [
            lambda: ping(b"\x00" * 48, A),
            lambda: ping(rpc, A[:47]),
            lambda: ping(rpc, "A" * 48),  # type: ignore[arg-type]
            lambda: find_node(rpc, A, KEY[:20]),
            lambda: find_value(rpc, A, KEY, -1),
            lambda: find_value(rpc, A, KEY, True),
            lambda: find_value(rpc, A, KEY[1:]),
            lambda: store(rpc, A, KEY[1:], KEY, 3333, A),
            lambda: store(rpc, A, KEY, KEY[:20], 3333, A),
            lambda: store(rpc, A, KEY, KEY, 0, A),
            lambda: store(rpc, A, KEY, KEY, 65536, A),
            lambda: store(rpc, A, KEY, KEY, 3333, A[1:]),
            lambda: store(rpc, A, KEY, KEY, 3333, A, -1),
        ]:
            self.assertRaises(DatagramError, call)


def request_fields(**changes: Any) -> dict[int, Any]:
    """
    The fields of a valid ping, with C{changes} (C{f0} to C{f9}) applied;
    a change to L{None} removes the field.
    """
    fields: dict[int, Any] = {0: 0, 1: b"r" * 20, 2: A, 3: b"ping", 4: [dict(VERSION)]}
    for name, value in changes.items():
        key = int(name[1:])
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return fields


class DecodeRefusalTests(SynchronousTestCase):
    """
    L{decode_datagram} refuses anything but a well-formed message, with
    L{DatagramError} and a reason.
    """

    def assertRefused(self, data: bytes, fragment: str) -> None:
        with self.assertRaises(DatagramError) as caught:
            decode_datagram(data)
        self.assertIn(fragment, caught.exception.reason)
        self.assertTrue(str(caught.exception).startswith("invalid DHT datagram: "))

    def test_error_family(self) -> None:
        self.assertTrue(issubclass(DatagramError, DHTError))

    def test_valid_baseline(self) -> None:
        message = decode_datagram(bencode(request_fields()))
        self.assertEqual(message, Request(b"r" * 20, A, b"ping", (), VERSION))

    def test_not_bencode(self) -> None:
        self.assertRefused(b"", "not bencoded")
        self.assertRefused(b"{}", "not bencoded")
        self.assertRefused(datagram_bytes(1, 0) + b"x", "not bencoded")
        self.assertRefused(datagram_bytes(1, 0)[:-1], "not bencoded")

    def test_not_dictionary(self) -> None:
        self.assertRefused(b"le", "not a list")
        self.assertRefused(b"i0e", "not a int")

    def test_packet_type(self) -> None:
        for bad in [3, -1, b"0", [0]]:
            self.assertRefused(bencode(request_fields(f0=bad)), "packet type")
        self.assertRefused(bencode(request_fields(f0=None)), "packet type")
        self.assertRefused(b"de", "packet type")
        self.assertRefused(bencode({b"0": 0}), "packet type")

    def test_fields_exact(self) -> None:
        """
        Missing and extra fields are refused; extra ones because lbry never
        sends them and we could not send them back.
        """
        self.assertRefused(bencode(request_fields(f4=None)), "exactly the fields 0 to 4")
        self.assertRefused(bencode(request_fields(f5=b"x")), "exactly the fields 0 to 4")
        self.assertRefused(bencode(request_fields(f100=b"x")), "exactly the fields")
        self.assertRefused(
            bencode({0: 1, 1: b"r" * 20, 2: A, 3: b"pong", 4: b"x"}), "exactly the fields 0 to 3"
        )
        self.assertRefused(
            bencode({0: 2, 1: b"r" * 20, 2: A, 3: b"x"}), "exactly the fields 0 to 4"
        )

    def test_rpc_id(self) -> None:
        """
        A 48-byte rpc id (2015 lbrynet) is refused, as modern lbry refuses it.
        """
        self.assertRefused(bencode(request_fields(f1=b"r" * 48)), "rpc id is 48 bytes")
        self.assertRefused(bencode(request_fields(f1=b"")), "rpc id is 0 bytes")
        self.assertRefused(bencode(request_fields(f1=1)), "rpc id is a int")

    def test_node_id(self) -> None:
        self.assertRefused(bencode(request_fields(f2=A[:47])), "node id is 47 bytes")
        self.assertRefused(bencode(request_fields(f2=[A])), "node id is a list")

    def test_method_and_args(self) -> None:
        self.assertRefused(bencode(request_fields(f3=1)), "method")
        self.assertRefused(bencode(request_fields(f4=b"x")), "arguments")
        self.assertRefused(bencode(request_fields(f4=dict(VERSION))), "arguments")

    def test_error_fields(self) -> None:
        fields = {0: 2, 1: b"r" * 20, 2: A, 3: b"<class 'ValueError'>", 4: [b"x"]}
        self.assertRefused(bencode(fields), "byte strings")
        fields = {0: 2, 1: b"r" * 20, 2: A, 3: 1, 4: b"x"}
        self.assertRefused(bencode(fields), "byte strings")

    def test_error_text_not_checked(self) -> None:
        """
        An error's type and message are kept as bytes, UTF-8 or not.
        """
        fields = {0: 2, 1: b"r" * 20, 2: A, 3: b"\xff", 4: b""}
        self.assertEqual(
            decode_datagram(bencode(fields)), ErrorResponse(b"r" * 20, A, b"\xff", b"")
        )

    def test_any_result(self) -> None:
        """
        A response's result is any value; its meaning is checked by the
        result readers.
        """
        for result in [b"pong", 0, [], {b"x": [1]}, {1: b"y"}]:
            fields = {0: 1, 1: b"r" * 20, 2: A, 3: result}
            self.assertEqual(decode_datagram(bencode(fields)), Response(b"r" * 20, A, result))


class VersionSplitTests(SynchronousTestCase):
    """
    The trailing version dictionary is split off when lbry-sdk would see
    one: a last argument that is a dictionary holding C{protocolVersion}.
    """

    def decode(self, args: list[Any]) -> Request:
        message = decode_datagram(bencode(request_fields(f4=args)))
        assert isinstance(message, Request)
        return message

    def test_old_style_requests(self) -> None:
        """
        Requests without a version dictionary keep all their arguments.
        """
        self.assertEqual(self.decode([]), Request(b"r" * 20, A, b"ping", (), None))
        message = self.decode([KEY, {b"token": b"t", b"port": 3333}])
        self.assertEqual(message.args, (KEY, {b"token": b"t", b"port": 3333}))
        self.assertIsNone(message.version)

    def test_page(self) -> None:
        message = self.decode([KEY, {b"p": 2, b"protocolVersion": 1}])
        self.assertEqual(message.args, (KEY,))
        self.assertEqual(message.version, {b"p": 2, b"protocolVersion": 1})

    def test_round_trips(self) -> None:
        for args in [
            [],
            [KEY, {b"a": 1}],
            [KEY, {b"p": 2, b"protocolVersion": 1}],
            [{b"protocolVersion": 0}],
        ]:
            data = bencode(request_fields(f4=args))
            self.assertEqual(encode_datagram(decode_datagram(data)), data)

    def test_ambiguous_request_refused(self) -> None:
        """
        A request without a version whose last argument looks like one
        could not be read back the same, so it is refused; so is a version
        without C{protocolVersion}.
        """
        rpc = b"r" * 20
        self.assertRaises(
            DatagramError, encode_datagram, Request(rpc, A, b"x", (dict(VERSION),), None)
        )
        self.assertRaises(DatagramError, encode_datagram, Request(rpc, A, b"x", (), {b"p": 0}))


class EncodeRefusalTests(SynchronousTestCase):
    """
    L{encode_datagram} refuses what LBRY nodes could not read.
    """

    rpc = b"r" * 20

    def test_bad_ids(self) -> None:
        for message in [
            Response(b"r" * 48, B, b"pong"),
            Response(self.rpc, B[:20], b"pong"),
            ErrorResponse(self.rpc, "B" * 48, b"x", b"y"),  # type: ignore[arg-type]
        ]:
            self.assertRaises(DatagramError, encode_datagram, message)

    def test_bad_values(self) -> None:
        for message in [
            Response(self.rpc, B, "pong"),
            Response(self.rpc, B, [None]),
            Response(self.rpc, B, {b"a": 1, 2: 3}),
            ErrorResponse(self.rpc, B, "ValueError", b"y"),  # type: ignore[arg-type]
            Request(self.rpc, A, "ping", (), dict(VERSION)),  # type: ignore[arg-type]
            Request(self.rpc, A, b"ping", (1.5,), dict(VERSION)),
        ]:
            self.assertRaises(DatagramError, encode_datagram, message)

    def test_dictionary_not_last(self) -> None:
        """
        lbry-sdk's decoder loses what follows a nested dictionary (the
        quirks file's first two cases), so a dictionary may only come last.
        """
        messages: list[Request | Response | ErrorResponse] = [
            Request(self.rpc, A, b"store", (KEY, {b"token": KEY}, 3333), dict(VERSION)),
            Request(self.rpc, A, b"x", ([{b"a": 1}], b"after"), dict(VERSION)),
            Response(self.rpc, B, [{b"a": 1}, 5]),
            Response(self.rpc, B, {b"a": {b"b": 1}, b"c": 2}),
            Response(self.rpc, B, {b"a": [[{b"b": 1}], 1]}),
        ]
        for message in messages:
            with self.assertRaises(DatagramError) as caught:
                encode_datagram(message)
            self.assertIn("would lose", caught.exception.reason)

    def test_dictionary_last_allowed(self) -> None:
        """
        Dictionaries at the very end are what lbry sends, and read fine.
        """
        messages: list[Request | Response | ErrorResponse] = [
            Response(self.rpc, B, [5, {b"a": 1}]),
            Response(self.rpc, B, {b"a": 1, b"c": [1, {b"b": {b"x": 1}}]}),
            Request(self.rpc, A, b"x", ([1, [2]],), {b"p": 1, **VERSION}),
        ]
        for message in messages:
            self.assertEqual(decode_datagram(encode_datagram(message)), message)

    def test_size_limit(self) -> None:
        """
        A datagram of L{MAX_DATAGRAM_SIZE} bytes is sent; one more is not.
        """
        overhead = len(encode_datagram(Response(self.rpc, B, b"")))
        filler = MAX_DATAGRAM_SIZE - overhead - 3  # "4:" becomes "1234:"
        largest = Response(self.rpc, B, b"x" * filler)
        self.assertEqual(len(encode_datagram(largest)), MAX_DATAGRAM_SIZE)
        with self.assertRaises(DatagramError) as caught:
            encode_datagram(Response(self.rpc, B, b"x" * (filler + 1)))
        self.assertIn("1401 bytes", caught.exception.reason)


class ContactTests(SynchronousTestCase):
    """
    Contact triples to and from their wire form.
    """

    def test_encode(self) -> None:
        self.assertEqual(encode_contacts([(A, "1.2.3.4", 4444)]), [[A, b"1.2.3.4", 4444]])

    def test_encode_refusals(self) -> None:
        for triple in [
            (A[:47], "1.2.3.4", 4444),
            (A, "::1", 4444),
            (A, "localhost", 4444),
            (A, "1.2.3.4", 0),
            (A, "1.2.3.4", 65536),
        ]:
            self.assertRaises(DatagramError, encode_contacts, [triple])

    def test_decode_refusals(self) -> None:
        for value in [
            b"x",
            {b"a": 1},
            [[A, b"1.2.3.4"]],
            [[A, b"1.2.3.4", 4444, 1]],
            [(A, b"1.2.3.4", 4444)],
            [[A[:20], b"1.2.3.4", 4444]],
            [[A, "1.2.3.4", 4444]],
            [[A, b"1.2.3.\xff", 4444]],
            [[A, b"01.2.3.4", 4444]],
            [[A, b"1.2.3.4 ", 4444]],
            [[A, b"1.2.3.256", 4444]],
            [[A, b"1.2.3.4", 0]],
            [[A, b"1.2.3.4", b"4444"]],
            [[A, b"1.2.3.4", 70000]],
        ]:
            self.assertRaises(DatagramError, decode_contacts, value)

    def test_empty(self) -> None:
        self.assertEqual(decode_contacts([]), [])
        self.assertEqual(encode_contacts([]), [])


class FindValueResultTests(SynchronousTestCase):
    """
    L{FindValueResult} reads any shape and refuses bad ones with
    L{DatagramError}.
    """

    token = b"t" * 48
    peer = compact_peer("1.2.3.4", 3333, A)

    def test_minimal(self) -> None:
        """
        Only the token is required; missing entries read as lbry reads them.
        """
        result = FindValueResult.decode({b"token": self.token}, KEY)
        self.assertEqual(result, FindValueResult(self.token, None, [], 0))

    def test_unknown_entries_ignored(self) -> None:
        result = FindValueResult.decode({b"token": self.token, b"zzz": [1], A: [b"x"]}, KEY)
        self.assertEqual(result, FindValueResult(self.token, None, [], 0))

    def test_refusals(self) -> None:
        good: dict[bytes, Any] = {b"token": self.token, b"p": 1, KEY: [self.peer]}
        changes: list[dict[bytes, Any]] = [
            {b"token": self.token[:20]},
            {b"token": 5},
            {b"contacts": b"x"},
            {b"contacts": [[A, b"1.2.3.4"]]},
            {KEY: self.peer},
            {KEY: [self.peer[:53]]},
            {KEY: [self.peer[:4] + b"\x00\x00" + self.peer[6:]]},
            {b"p": -1},
            {b"p": b"1"},
            {b"protocolVersion": b"1"},
        ]
        for change in changes:
            self.assertRaises(DatagramError, FindValueResult.decode, {**good, **change}, KEY)
        self.assertRaises(DatagramError, FindValueResult.decode, {b"p": 1}, KEY)
        self.assertRaises(DatagramError, FindValueResult.decode, [self.token], KEY)
        self.assertRaises(DatagramError, FindValueResult.decode, {0: self.token}, KEY)
        self.assertRaises(DatagramError, FindValueResult.decode, good, KEY[:20])

    def test_encode_refusals(self) -> None:
        for result in [
            FindValueResult(self.token[:20]),
            FindValueResult(self.token, pages=-1),
            FindValueResult(self.token, peers=[self.peer[1:]]),
            FindValueResult(self.token, contacts=[(A, "1.2.3", 1)]),
        ]:
            self.assertRaises(DatagramError, result.encode, KEY)
        self.assertRaises(DatagramError, FindValueResult(self.token).encode, KEY[:47])


class CompactAddressVectorTests(SynchronousTestCase):
    """
    Compact addresses as lbry-sdk makes them.
    """

    def test_compact_ips(self) -> None:
        for case in ADDRESSES["tokens"]:
            self.assertEqual(compact_ip(case["ip"]).hex(), case["compact_ip_hex"])

    def test_compact_peers(self) -> None:
        cases = [*ADDRESSES["compact_peer_addresses"]]
        own = ADDRESSES["own_compact_address_example"]
        cases.append(
            {
                "ip": own["external_ip"],
                "tcp_port": own["peer_port"],
                "node_id_hex": own["node_id_hex"],
                "compact_hex": own["compact_hex"],
            }
        )
        for case in cases:
            node_id = bytes.fromhex(case["node_id_hex"])
            compact = compact_peer(case["ip"], case["tcp_port"], node_id)
            self.assertEqual(compact.hex(), case["compact_hex"])
            self.assertEqual(decode_compact_peer(compact), (case["ip"], case["tcp_port"], node_id))

    def test_refusals(self) -> None:
        for call in [
            lambda: compact_ip("::1"),
            lambda: compact_ip("1.2.3"),
            lambda: compact_ip("1.2.3.04"),
            lambda: compact_ip(16909060),  # type: ignore[arg-type]
            lambda: compact_peer("1.2.3.4", 0, A),
            lambda: compact_peer("1.2.3.4", 65536, A),
            lambda: compact_peer("1.2.3.4", True, A),
            lambda: compact_peer("1.2.3.4", 3333, A[:47]),
            lambda: decode_compact_peer(b"\x01" * 53),
            lambda: decode_compact_peer(b"\x01" * 55),
            lambda: decode_compact_peer(b"\x01\x02\x03\x04\x00\x00" + A),
            lambda: decode_compact_peer("x" * 54),  # type: ignore[arg-type]
        ]:
            self.assertRaises(DatagramError, call)


_ids = st.binary(min_size=20, max_size=20)
_node_ids = st.binary(min_size=48, max_size=48)
_flat = st.recursive(
    st.integers(min_value=-(10**12), max_value=10**12) | st.binary(max_size=30),
    lambda children: st.lists(children, max_size=4),
    max_leaves=10,
)
_version_dicts = st.dictionaries(st.binary(max_size=8), _flat, max_size=3).map(
    lambda extra: {**extra, b"protocolVersion": 1}
)
_requests = st.builds(
    Request,
    _ids,
    _node_ids,
    st.binary(max_size=12),
    st.lists(_flat, max_size=4).map(tuple),
    _version_dicts,
)
_old_requests = st.builds(
    Request,
    _ids,
    _node_ids,
    st.binary(max_size=12),
    st.lists(_flat, max_size=4).map(tuple),
    st.none(),
)
_responses = st.builds(
    Response,
    _ids,
    _node_ids,
    _flat
    | st.dictionaries(st.binary(max_size=10), _flat, max_size=4)
    | st.dictionaries(st.integers(min_value=0, max_value=99), _flat, max_size=4),
)
_errors = st.builds(ErrorResponse, _ids, _node_ids, st.binary(max_size=40), st.binary(max_size=80))
_contacts = st.lists(
    st.tuples(_node_ids, st.ip_addresses(v=4).map(str), st.integers(min_value=1, max_value=65535)),
    max_size=4,
)
_peers = st.lists(
    st.builds(
        compact_peer,
        st.ip_addresses(v=4).map(str),
        st.integers(min_value=1, max_value=65535),
        _node_ids,
    ),
    max_size=4,
)
_find_value_results = st.builds(
    FindValueResult,
    _node_ids,
    st.none() | _contacts,
    _peers,
    st.integers(min_value=0, max_value=1000),
)
_captured = [bytes.fromhex(d["hex"]) for d in all_datagrams() + CONSTRUCTORS["datagrams"]]


_edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0),
        st.integers(min_value=0, max_value=255) | st.sampled_from(b"ilde0123456789:"),
    ),
    min_size=1,
    max_size=4,
)


class PropertyTests(SynchronousTestCase):
    """
    Decoding is total; encoding then decoding gives the message back.
    """

    def check_total(self, data: bytes) -> None:
        """
        C{data} decodes or raises L{DatagramError}; a message that decodes
        encodes back to C{data} or is refused with L{DatagramError}, and
        its result reads or is refused with L{DatagramError}.
        """
        try:
            message = decode_datagram(data)
        except DatagramError:
            return
        try:
            self.assertEqual(encode_datagram(message), data)
        except DatagramError:
            pass
        if isinstance(message, Response):
            for reader in [
                lambda: decode_contacts(message.result),
                lambda: FindValueResult.decode(message.result, KEY),
                lambda: FindValueResult.decode(message.result, KEY).peer_addresses(),
            ]:
                try:
                    reader()
                except DatagramError:
                    pass

    @settings(max_examples=1000, deadline=None, database=None)
    @given(st.binary(max_size=300))
    def test_random_bytes(self, data: bytes) -> None:
        self.check_total(data)

    @settings(max_examples=2000, deadline=None, database=None)
    @given(st.sampled_from(_captured), _edits)
    def test_mutated_datagrams(self, data: bytes, edits: list[tuple[int, int, int]]) -> None:
        self.check_total(_mutate(data, edits))

    @settings(max_examples=500, deadline=None, database=None)
    @given(_requests | _old_requests | _responses | _errors)
    def test_round_trip(self, message: Request | Response | ErrorResponse) -> None:
        """
        A message that encodes decodes back equal; only oversized ones and
        old-style requests ending in a version-like dictionary are refused.
        """
        try:
            data = encode_datagram(message)
        except DatagramError as e:
            assume(False)
            raise AssertionError("unreachable") from e
        self.assertEqual(decode_datagram(data), message)
        self.assertLessEqual(len(data), MAX_DATAGRAM_SIZE)

    @settings(max_examples=300, deadline=None, database=None)
    @given(_requests | _old_requests | _responses | _errors)
    def test_refusals_explained(self, message: Request | Response | ErrorResponse) -> None:
        """
        The generated messages are only refused for their size.
        """
        try:
            encode_datagram(message)
        except DatagramError as e:
            self.assertIn("more than the 1400", e.reason)

    @settings(max_examples=300, deadline=None, database=None)
    @given(_find_value_results, _node_ids)
    def test_find_value_round_trip(self, result: FindValueResult, key: bytes) -> None:
        encoded = result.encode(key)
        self.assertEqual(FindValueResult.decode(encoded, key), result)
        self.assertEqual(FindValueResult.decode(bencode_round_trip(encoded), key), result)

    @settings(max_examples=300, deadline=None, database=None)
    @given(_contacts)
    def test_contacts_round_trip(self, contacts: list[tuple[bytes, str, int]]) -> None:
        self.assertEqual(decode_contacts(encode_contacts(contacts)), contacts)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.ip_addresses(v=4).map(str), st.integers(min_value=1, max_value=65535), _node_ids)
    def test_compact_peer_round_trip(self, host: str, port: int, node_id: bytes) -> None:
        self.assertEqual(
            decode_compact_peer(compact_peer(host, port, node_id)), (host, port, node_id)
        )

    @settings(max_examples=500, deadline=None, database=None)
    @given(st.binary(max_size=60))
    def test_compact_peer_total(self, data: bytes) -> None:
        try:
            host, port, node_id = decode_compact_peer(data)
        except DatagramError:
            return
        self.assertEqual(compact_peer(host, port, node_id), data)


def bencode_round_trip(value: Any) -> Any:
    """
    C{value} as it comes back from the wire.
    """
    message = decode_datagram(encode_datagram(Response(b"r" * 20, A, value)))
    assert isinstance(message, Response)
    return message.result
