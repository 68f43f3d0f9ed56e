"""
Learning where to pay a peer: the payment-key exchange, an extension of the
blob-exchange protocol that LBRY peers never see.

A client asks with the request key C{p2pblob_payment_key} (value C{true},
like LBRY's C{lbrycrd_address}); a p2pblob server answers with the same key
and its payment public key, 64 lowercase hex characters::

    request:  {..., "p2pblob_payment_key": true}
    response: {..., "p2pblob_payment_key": "<64 hex>"}

L{PaymentKeyExchanger} is the client side, the request creator the seed's
C{get_info_exchanger} returns: it asks each peer once and hands the key to
the wallet.  A peer whose answer lacks the key (an LBRY peer, or a p2pblob
node without a wallet) is not asked again.  L{PaymentKeyHandlerFactory} is
the server side, the seed's C{get_wallet_info_query_handler_factory}: its
handlers answer only when asked, so an LBRY client never sees the key.

The key a server announces is not proof of anything; a server learns a
client's key only from a cheque the client signed
(L{p2pblob.wallet.wallet.Wallet.receive_cheque}).

Peers are named by their address (C{host:port}) until their key is known.
The keys below the exchange's are the ones the peer protocol uses to carry
cheques (C{CHEQUE_QUERY}, see L{p2pblob.wallet.serving} and
L{p2pblob.wallet.paying}) and to refuse a peer in debt
(C{DEBT_LIMIT_REACHED}, defined with the blob request handler).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.errors import NoResponseError
from p2pblob.interfaces import (
    IQueryHandler,
    IQueryHandlerFactory,
    IRequestCreator,
    IRequestHandler,
    IRequestSender,
)
from p2pblob.peer.handlers import DEBT_LIMIT_REACHED
from p2pblob.peer.requests import ClientRequest
from p2pblob.wallet.accounts import peer_address
from p2pblob.wallet.keys import parse_public_key

__all__ = [
    "CHEQUE_QUERY",
    "DEBT_LIMIT_REACHED",
    "PAYMENT_KEY_QUERY",
    "PaymentKeyExchanger",
    "PaymentKeyHandler",
    "PaymentKeyHandlerFactory",
    "PaymentKeys",
]

_log = Logger()

PAYMENT_KEY_QUERY = "p2pblob_payment_key"
"""
The request and response key of the payment-key exchange.
"""

CHEQUE_QUERY = "p2pblob_cheque"
"""
The request key that carries a cheque (L{p2pblob.wallet.cheques}) to its
payee, and the response key of the payee's receipt.
"""



class PaymentKeys(Protocol):
    """
    What the exchange needs of a wallet: our key, and the keys of peers.
    """

    @property
    def public_hex(self) -> str: ...

    def peer_key(self, peer: Any) -> bytes | None: ...

    def learn_peer_key(self, peer: Any, key: bytes) -> None: ...


@implementer(IRequestCreator)
class PaymentKeyExchanger:
    """
    Asks each peer, once, for its payment key, and tells C{keys} the answer.

    Its request is one key, meant to ride in a message with the other
    creators' requests: an LBRY server closes a connection whose request has
    none of the keys it knows, so the connection manager must ask this
    creator after those that ask for blobs.
    """

    def __init__(self, keys: PaymentKeys) -> None:
        self._keys = keys
        self._asking: set[str] = set()
        self._keyless: set[str] = set()

    def has_no_key(self, peer: Any) -> bool:
        """
        Whether C{peer} answered without a payment key: it takes no
        payments (an LBRY peer, say).
        """
        return peer_address(peer) in self._keyless

    # IRequestCreator

    def send_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        address = peer_address(peer)
        if (
            self._keys.peer_key(peer) is not None
            or address in self._asking
            or address in self._keyless
        ):
            return succeed(False)
        self._asking.add(address)
        answer = protocol.add_request(ClientRequest({PAYMENT_KEY_QUERY: True}, PAYMENT_KEY_QUERY))
        answer.addCallbacks(
            self._answered, self._failed,
            callbackArgs=(peer, address), errbackArgs=(peer, address),
        )
        return succeed(True)

    def get_new_peers(self) -> Deferred[list[Any]]:
        return succeed([])

    def _answered(self, response: dict[str, Any], peer: Any, address: str) -> None:
        self._asking.discard(address)
        try:
            key = parse_public_key(response.get(PAYMENT_KEY_QUERY))
        except ValueError as e:
            _log.info("Peer {peer} sent no usable payment key: {error}", peer=address, error=e)
            self._keyless.add(address)
            return
        self._keys.learn_peer_key(peer, key)

    def _failed(self, failure: Failure, peer: Any, address: str) -> None:
        self._asking.discard(address)
        if failure.check(NoResponseError):
            self._keyless.add(address)
        # otherwise the connection failed: ask again on the next one


@implementer(IQueryHandlerFactory)
class PaymentKeyHandlerFactory:
    """
    Makes the handlers that tell each connecting peer our payment key.
    """

    def __init__(self, keys: PaymentKeys) -> None:
        self.keys = keys

    def build_query_handler(self) -> PaymentKeyHandler:
        return PaymentKeyHandler(self.keys)


@implementer(IQueryHandler)
class PaymentKeyHandler:
    """
    Answers C{p2pblob_payment_key} with our public key, whatever value the
    peer sent with it.
    """

    IDENTIFIERS = (PAYMENT_KEY_QUERY,)

    def __init__(self, keys: PaymentKeys) -> None:
        self._keys = keys

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        request_handler.register_query_handler(self, list(self.IDENTIFIERS))

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        return succeed({PAYMENT_KEY_QUERY: self._keys.public_hex})
