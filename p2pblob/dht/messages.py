"""
DHT datagrams: LBRY's three kinds of message, to and from bytes, without
any I/O.

Every datagram is one bencoded dictionary with integer keys
(C{spec/lbry-wire.md} section 7.2)::

    request   {0: 0, 1: rpc_id, 2: sender_id,    3: method,         4: args}
    response  {0: 1, 1: rpc_id, 2: responder_id, 3: result}
    error     {0: 2, 1: rpc_id, 2: responder_id, 3: exception_type, 4: message}

An rpc id is 20 bytes and a node id 48; modern lbry-sdk drops anything
else.  A modern request's last argument is a dictionary holding
C{protocolVersion: 1} (and, for C{findValue}, the page C{p}); L{Request}
keeps it apart from the positional arguments, as L{Request.version}.

lbry-sdk's decoder loses everything that follows a nested dictionary, so
L{encode_datagram} refuses a message with a dictionary anywhere but at its
very end, rather than send something LBRY nodes would silently misread.

p2pblob extends the protocol where LBRY nodes do not look (lbry-sdk reads
only C{protocolVersion} and C{p} of a request's version dictionary, and
only C{token}, C{contacts}, C{p} and the key of a C{findValue} result):

  - every C{findValue} result a p2pblob node sends holds L{P2PBLOB_KEY}
    C{: 1}, which tells an announcer that the node is a p2pblob node;
  - a C{store}'s version dictionary may hold L{ONION_KEY}, the onion
    endpoint (L{p2pblob.dht.peers.onion_endpoint}) the announcer also
    serves the blob at, and L{ONION_ONLY_KEY} C{: 1}, which asks the node
    to record that onion endpoint only, not the announcer's IP address;
  - a C{findValue}'s version dictionary may hold L{ONIONS_KEY} C{: 1},
    which asks for the onion endpoints of the blob: the result then lists
    them under L{ONIONS_KEY}.

Requests and results without those keys are LBRY's, unchanged; our
readers ignore keys they do not know, in requests and results alike.

Decoding is total: whatever the bytes, L{decode_datagram} and the result
readers (L{decode_contacts}, L{FindValueResult.decode}) return a value or
raise L{DatagramError}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from p2pblob.dht.bencode import bdecode, bencode
from p2pblob.dht.constants import (
    MAX_DATAGRAM_SIZE,
    PROTOCOL_VERSION,
    RPC_ID_LENGTH,
)
from p2pblob.dht.peers import (
    check_hash,
    check_port,
    decode_onion_endpoint,
)
from p2pblob.errors import BencodeError, DatagramError

__all__ = [
    "CONTACTS_KEY",
    "Contact",
    "ErrorResponse",
    "Message",
    "ONIONS_KEY",
    "ONION_KEY",
    "ONION_ONLY_KEY",
    "P2PBLOB_KEY",
    "PAGE_KEY",
    "PROTOCOL_VERSION_KEY",
    "Request",
    "Response",
    "TOKEN_KEY",
    "decode_datagram",
    "encode_datagram",
    "find_node",
    "find_value",
    "ping",
    "store",
]

PROTOCOL_VERSION_KEY = b"protocolVersion"
"""
The key of the protocol version in a request's last argument and in a
C{findValue} result.
"""

PAGE_KEY = b"p"
"""
The key of the page number in a C{findValue} request's last argument, and
of the number of pages in its result.
"""

TOKEN_KEY = b"token"
"""
The key of the store token in a C{findValue} result.
"""

CONTACTS_KEY = b"contacts"
"""
The key of the closest contacts in a C{findValue} result.
"""

P2PBLOB_KEY = b"p2pblob"
"""
The key, mapping to 1, that marks a C{findValue} result as a p2pblob
node's (an extension; LBRY nodes ignore it).
"""

ONION_KEY = b"p2pblob_onion"
"""
The key of the announcer's onion endpoint in a C{store}'s version
dictionary (an extension).
"""

ONION_ONLY_KEY = b"p2pblob_onion_only"
"""
The key, mapping to 1, that asks a node to record a C{store}'s onion
endpoint only, not the announcer's IP address (an extension).
"""

ONIONS_KEY = b"p2pblob_onions"
"""
In a C{findValue}'s version dictionary, mapping to 1: a request for the
onion endpoints of the blob; in its result, the list of those endpoints (an
extension).
"""

_REQUEST = 0
_RESPONSE = 1
_ERROR = 2
# how many fields (keys 0 to n - 1) each packet type has
_FIELD_COUNTS = {_REQUEST: 5, _RESPONSE: 4, _ERROR: 5}
_KIND_NAMES = {_REQUEST: "request", _RESPONSE: "response", _ERROR: "error"}

Contact: TypeAlias = tuple[bytes, str, int]
"""
A DHT node as replies list it: C{(node_id, host, udp_port)}, the host an
IPv4 dotted quad.
"""


@dataclass(frozen=True)
class Request:
    """
    A remote procedure call.

    @ivar rpc_id: 20 bytes chosen by the sender; the reply carries them back.
    @ivar node_id: the sender's 48-byte node id.
    @ivar method: C{b"ping"}, C{b"findNode"}, C{b"findValue"} or C{b"store"}
        for the methods LBRY nodes answer.
    @ivar args: the positional arguments, without the trailing version
        dictionary.
    @ivar version: the trailing argument dictionary, which holds
        C{protocolVersion} (and C{p}, the page, for C{findValue}); L{None}
        when the request has none, as in requests from old nodes.
    """

    rpc_id: bytes
    node_id: bytes
    method: bytes
    args: tuple[object, ...]
    version: Mapping[bytes, object] | None


@dataclass(frozen=True)
class Response:
    """
    The successful reply to a L{Request}.

    @ivar rpc_id: the request's rpc id.
    @ivar node_id: the responder's 48-byte node id.
    @ivar result: what the method returned: C{b"pong"}, C{b"OK"}, a list of
        contacts (see L{p2pblob.dht.results.encode_contacts}) or a
        C{findValue} dictionary (see L{p2pblob.dht.results.FindValueResult}).
    """

    rpc_id: bytes
    node_id: bytes
    result: object


@dataclass(frozen=True)
class ErrorResponse:
    """
    The reply to a L{Request} that failed on the remote node.

    @ivar rpc_id: the request's rpc id.
    @ivar node_id: the responder's 48-byte node id.
    @ivar exception_type: the remote exception's type as lbry-sdk writes it,
        for example C{b"<class 'ValueError'>"}.
    @ivar message: the remote exception's message, for example
        C{b"Invalid token"}.
    """

    rpc_id: bytes
    node_id: bytes
    exception_type: bytes
    message: bytes


Message: TypeAlias = Request | Response | ErrorResponse
"""
Any DHT datagram.
"""


def _check_header(rpc_id: object, node_id: object) -> None:
    """
    Refuse an rpc id that is not 20 bytes or a node id that is not 48.
    """
    if not isinstance(rpc_id, bytes):
        raise DatagramError(f"rpc id is a {type(rpc_id).__name__}, not bytes")
    if len(rpc_id) != RPC_ID_LENGTH:
        raise DatagramError(f"rpc id is {len(rpc_id)} bytes, not {RPC_ID_LENGTH}")
    check_hash(node_id, "node id")


def _request(
    rpc_id: bytes,
    node_id: bytes,
    method: bytes,
    args: tuple[object, ...],
    version: dict[bytes, object] | None = None,
) -> Request:
    """
    A modern request: C{version} completed with C{protocolVersion}.
    """
    _check_header(rpc_id, node_id)
    return Request(
        rpc_id, node_id, method, args, {**(version or {}), PROTOCOL_VERSION_KEY: PROTOCOL_VERSION}
    )


def ping(rpc_id: bytes, node_id: bytes) -> Request:
    """
    Ask whether a node is up; it answers C{b"pong"}.

    @param rpc_id: 20 bytes identifying this call.
    @param node_id: our node id.
    @raise DatagramError: if an id has the wrong length.
    """
    return _request(rpc_id, node_id, b"ping", ())


def find_node(rpc_id: bytes, node_id: bytes, key: bytes) -> Request:
    """
    Ask a node for the contacts it knows closest to C{key}.

    @param rpc_id: 20 bytes identifying this call.
    @param node_id: our node id.
    @param key: the 48-byte id looked up.
    @raise DatagramError: if an id or the key has the wrong length.
    """
    return _request(rpc_id, node_id, b"findNode", (check_hash(key, "key"),))


def find_value(
    rpc_id: bytes, node_id: bytes, key: bytes, page: int = 0, onions: bool = False
) -> Request:
    """
    Ask a node for the peers holding blob C{key} (page C{page} of them), a
    store token, and (on page 0) the contacts closest to C{key}.

    @param rpc_id: 20 bytes identifying this call.
    @param node_id: our node id.
    @param key: the 48-byte blob hash.
    @param page: which page of peers, from 0.
    @param onions: ask a p2pblob node for the onion endpoints of the blob
        too (L{ONIONS_KEY}); LBRY nodes ignore the request.
    @raise DatagramError: if an id or the key has the wrong length, or the
        page is negative.
    """
    if not isinstance(page, int) or isinstance(page, bool) or page < 0:
        raise DatagramError(f"page {page!r:.30} is not a non-negative integer")
    version: dict[bytes, object] = {PAGE_KEY: page}
    if onions:
        version[ONIONS_KEY] = 1
    return _request(rpc_id, node_id, b"findValue", (check_hash(key, "key"),), version)


def store(
    rpc_id: bytes,
    node_id: bytes,
    blob_hash: bytes,
    token: bytes,
    tcp_port: int,
    publisher_id: bytes,
    age: int = 0,
    onion: bytes | None = None,
    onion_only: bool = False,
) -> Request:
    """
    Announce that the peer at our address and C{tcp_port} holds blob
    C{blob_hash}.  lbry-sdk always sends its own node id as C{publisher_id}
    and 0 as C{age}.

    @param rpc_id: 20 bytes identifying this call.
    @param node_id: our node id.
    @param blob_hash: the 48-byte blob hash.
    @param token: the token the node gave us in a C{findValue} reply.
    @param tcp_port: the port we serve blobs on.
    @param publisher_id: the 48-byte node id of the announcer.
    @param age: seconds since the announcement was first made.
    @param onion: the onion endpoint we serve the blob at too, for p2pblob
        nodes (L{ONION_KEY}); LBRY nodes ignore it.
    @param onion_only: ask p2pblob nodes to record C{onion} only, not our
        IP address (L{ONION_ONLY_KEY}); LBRY nodes would record the IP
        address, so such a store is for p2pblob nodes only.
    @raise DatagramError: if a value is malformed, or C{onion_only} is set
        without an C{onion}.
    """
    if not isinstance(age, int) or isinstance(age, bool) or age < 0:
        raise DatagramError(f"age {age!r:.30} is not a non-negative integer")
    version: dict[bytes, object] = {}
    if onion is not None:
        decode_onion_endpoint(onion)
        version[ONION_KEY] = onion
    if onion_only:
        if onion is None:
            raise DatagramError("an onion-only store needs an onion endpoint")
        version[ONION_ONLY_KEY] = 1
    args = (
        check_hash(blob_hash, "blob hash"),
        check_hash(token, "token"),
        check_port(tcp_port, "TCP port"),
        check_hash(publisher_id, "publisher id"),
        age,
    )
    return _request(rpc_id, node_id, b"store", args, version)


def decode_datagram(data: bytes) -> Message:
    """
    Read one datagram.

    @raise DatagramError: if C{data} is not a bencoded dictionary with the
        fields of a request, response or error, an rpc id of 20 bytes and a
        node id of 48 bytes, a byte string method and a list of arguments
        (requests), and byte strings for the exception type and message
        (errors).  Extra fields are refused: LBRY nodes send none.
    """
    try:
        fields = bdecode(data)
    except BencodeError as e:
        raise DatagramError(f"not bencoded ({e.reason})") from None
    if not isinstance(fields, dict):
        raise DatagramError(f"a datagram is a dictionary, not a {type(fields).__name__}")
    packet_type = fields.get(0)
    if not isinstance(packet_type, int) or packet_type not in _FIELD_COUNTS:
        raise DatagramError("packet type (field 0) is missing or not 0, 1 or 2")
    count = _FIELD_COUNTS[packet_type]
    kind = _KIND_NAMES[packet_type]
    if fields.keys() != set(range(count)):
        raise DatagramError(
            f"a datagram of type {kind} must have exactly the fields 0 to {count - 1}"
        )
    rpc_id, node_id = fields[1], fields[2]
    _check_header(rpc_id, node_id)
    if packet_type == _RESPONSE:
        return Response(rpc_id, node_id, fields[3])
    first, second = fields[3], fields[4]
    if packet_type == _ERROR:
        if not isinstance(first, bytes) or not isinstance(second, bytes):
            raise DatagramError("an error's exception type and message must be byte strings")
        return ErrorResponse(rpc_id, node_id, first, second)
    if not isinstance(first, bytes):
        raise DatagramError(f"method is a {type(first).__name__}, not bytes")
    if not isinstance(second, list):
        raise DatagramError(f"arguments are a {type(second).__name__}, not a list")
    if second and _is_version(second[-1]):
        return Request(rpc_id, node_id, first, tuple(second[:-1]), second[-1])
    return Request(rpc_id, node_id, first, tuple(second), None)


def _is_version(argument: object) -> bool:
    """
    Whether C{argument} is a request's version dictionary, which modern
    lbry-sdk recognises by its C{protocolVersion} key.
    """
    return isinstance(argument, dict) and PROTOCOL_VERSION_KEY in argument


def encode_datagram(message: Message) -> bytes:
    """
    The bytes of C{message}, as lbry-sdk would write them.

    @raise DatagramError: if the message is malformed (ids of the wrong
        length, values bencode cannot carry, a request whose L{version
        <Request.version>} lacks C{protocolVersion} or that is L{None} while
        the last argument looks like one), holds a dictionary followed by
        more data (which lbry-sdk's decoder would lose), or takes more than
        L{MAX_DATAGRAM_SIZE} bytes.
    """
    fields = _fields(message)
    try:
        data = bencode(fields)
    except BencodeError as e:
        raise DatagramError(f"cannot be encoded ({e.reason})") from None
    _check_lbry_can_read(fields)
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramError(
            f"the datagram would be {len(data)} bytes, more than the "
            f"{MAX_DATAGRAM_SIZE} LBRY nodes send"
        )
    return data


def _fields(message: Message) -> dict[int, object]:
    """
    The dictionary that is C{message} on the wire.
    """
    _check_header(message.rpc_id, message.node_id)
    if isinstance(message, Response):
        return {0: _RESPONSE, 1: message.rpc_id, 2: message.node_id, 3: message.result}
    if isinstance(message, ErrorResponse):
        if not isinstance(message.exception_type, bytes) or not isinstance(message.message, bytes):
            raise DatagramError("an error's exception type and message must be byte strings")
        return {
            0: _ERROR,
            1: message.rpc_id,
            2: message.node_id,
            3: message.exception_type,
            4: message.message,
        }
    if not isinstance(message.method, bytes):
        raise DatagramError(f"method is a {type(message.method).__name__}, not bytes")
    args = list(message.args)
    if message.version is None:
        if args and _is_version(args[-1]):
            raise DatagramError(
                "the last argument holds protocolVersion: it would be read back as the version"
            )
    elif not isinstance(message.version, Mapping) or PROTOCOL_VERSION_KEY not in message.version:
        raise DatagramError("the version dictionary lacks protocolVersion")
    else:
        args.append(dict(message.version))
    return {0: _REQUEST, 1: message.rpc_id, 2: message.node_id, 3: message.method, 4: args}


def _check_lbry_can_read(fields: dict[int, object]) -> None:
    """
    Refuse a datagram that lbry-sdk's decoder would misread: it loses
    everything following a nested dictionary, so dictionaries may only come
    last, at every level.  C{fields} must be known to bencode.
    """
    value: Any = fields
    while isinstance(value, (dict, list, tuple)):
        if isinstance(value, dict):
            children = [value[key] for key in sorted(value)]
        else:
            children = list(value)
        if any(_holds_dictionary(child) for child in children[:-1]):
            raise DatagramError(
                "a dictionary is followed by more data, which lbry-sdk's decoder would lose"
            )
        if not children:
            return
        value = children[-1]


def _holds_dictionary(value: object) -> bool:
    """
    Whether C{value} is or contains a dictionary.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            return True
        if isinstance(item, (list, tuple)):
            pending.extend(item)
    return False
