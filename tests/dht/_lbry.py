"""
A DHT node that answers as an LBRY node does, for the tests of p2pblob's
extension of the protocol: it reads only what lbry-sdk reads of a request's
version dictionary (C{protocolVersion} and C{p}), and its C{findValue}
results carry no p2pblob entry.
"""

from __future__ import annotations

from p2pblob.dht.messages import (
    P2PBLOB_KEY,
    PAGE_KEY,
    PROTOCOL_VERSION_KEY,
    Request,
)
from p2pblob.dht.protocol import Address, KademliaProtocol

__all__ = ["LBRYLikeProtocol", "lbry_form"]


def lbry_form(request: Request) -> Request:
    """
    C{request} as lbry-sdk reads it: its version dictionary without the
    keys lbry-sdk never looks at.
    """
    if request.version is None:
        return request
    kept = {k: v for k, v in request.version.items() if k in (PAGE_KEY, PROTOCOL_VERSION_KEY)}
    return Request(request.rpc_id, request.node_id, request.method, request.args, kept)


class LBRYLikeProtocol(KademliaProtocol):
    """
    A L{KademliaProtocol} that knows nothing of p2pblob's extension: it
    records a C{store}'s IP address whatever the request says, and its
    C{findValue} results are LBRY's.
    """

    def _lbry_find_value(self, request: Request, address: Address) -> object:
        result = KademliaProtocol._find_value_request(self, lbry_form(request), address)
        assert isinstance(result, dict)
        del result[P2PBLOB_KEY]
        return result

    def _lbry_store(self, request: Request, address: Address) -> object:
        return KademliaProtocol._store_request(self, lbry_form(request), address)

    _handlers = {
        **KademliaProtocol._handlers,
        b"findValue": _lbry_find_value,
        b"store": _lbry_store,
    }
