"""
Being paid for the blobs a paid-mode server sends: the cheque query handler
and the charges the blob request handler applies.

Cheques travel as an extension key of the blob exchange
(L{p2pblob.wallet.exchange.CHEQUE_QUERY}), always beside a standard key in
the same request, so an LBRY server ignores them.  A p2pblob server answers
each with a receipt under the same key, saying what it holds from that
payer after reading it::

    request:  {..., "p2pblob_cheque": {"payer": ..., "total": 7, "sequence": 3, ...}}
    response: {..., "p2pblob_cheque": {"total": 7, "sequence": 3}}
    refused:  {..., "p2pblob_cheque": {"error": "FORGED_CHEQUE", "detail": "...",
                                       "total": 5, "sequence": 2}}

C{total} and C{sequence} are those of the last cheque accepted from the
payer (0 and 0 before any).  The payer takes a receipt whose sequence is at
least its cheque's as proof of delivery.  The errors are C{BAD_CHEQUE} (not
a cheque's wire form), C{WRONG_PAYEE}, C{FORGED_CHEQUE} (bad signature) and
C{STALE_CHEQUE} (a cheque not newer than the last one accepted: a replay,
which credits nothing).  A refused cheque does not close the connection: a
payer's latest cheque, sent again on a new connection to say who it is, is
stale but harmless.

The cheque handler must be registered before the blob request handler, so
that a cheque and a blob request in one message are read in that order (the
server asks its handlers in registration order): a peer over its debt limit
that pays in the same request is served at once.

Debts are limited per client as well as per client host: see L{BlobCharges}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from p2pblob.errors import (
    BadChequeError,
    DebtLimitError,
    ForgedChequeError,
    MalformedChequeError,
    WrongPayeeError,
)
from p2pblob.interfaces import IQueryHandler, IQueryHandlerFactory, IRequestHandler
from p2pblob.peer.server import IReleasable
from p2pblob.wallet.accounts import client_host, is_key_name
from p2pblob.wallet.cheques import check_cheque, parse_cheque
from p2pblob.wallet.exchange import CHEQUE_QUERY
from p2pblob.wallet.hosts import HOSTS_FILE, HostKeys, host_debt, unpaid
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.wallet import Wallet

__all__ = [
    "BAD_CHEQUE",
    "FORGED_CHEQUE",
    "HOST_DEBT_FACTOR",
    "STALE_CHEQUE",
    "WRONG_PAYEE",
    "BlobCharges",
    "ChequeHandler",
    "ChequeHandlerFactory",
    "host_keys",
]

_log = Logger()

BAD_CHEQUE = "BAD_CHEQUE"
WRONG_PAYEE = "WRONG_PAYEE"
FORGED_CHEQUE = "FORGED_CHEQUE"
STALE_CHEQUE = "STALE_CHEQUE"

HOST_DEBT_FACTOR = 4
"""
What a client host may owe in all, in debt limits (L{BlobCharges}).
"""

_host_keys: WeakKeyDictionary[Wallet, HostKeys] = WeakKeyDictionary()


def host_keys(wallet: Wallet) -> HostKeys:
    """
    The keys seen from each client host of C{wallet}'s server, kept beside
    its ledger (in memory for an in-memory ledger); the same for the cheque
    handlers and the charges of one wallet.
    """
    hosts = _host_keys.get(wallet)
    if hosts is None:
        path: Path | None = wallet.ledger_path.parent / HOSTS_FILE
        if str(wallet.ledger_path) == ":memory:":
            path = None
        hosts = _host_keys[wallet] = HostKeys(
            path, lambda key: unpaid(wallet.ledger, key) > 0
        )
    return hosts


def _error_code(error: BadChequeError) -> str:
    if isinstance(error, ForgedChequeError):
        return FORGED_CHEQUE
    if isinstance(error, WrongPayeeError):
        return WRONG_PAYEE
    return BAD_CHEQUE


@implementer(IQueryHandlerFactory)
class ChequeHandlerFactory:
    """
    Makes the handlers that take the cheques peers pay C{wallet} with.
    """

    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet

    def build_query_handler(self) -> ChequeHandler:
        return ChequeHandler(self.wallet)


@implementer(IQueryHandler, IReleasable)
class ChequeHandler:
    """
    Credits the cheques received on one connection and answers each with a
    receipt; forgets the key learnt for the connection's address when it
    closes.
    """

    IDENTIFIERS = (CHEQUE_QUERY,)

    def __init__(self, wallet: Wallet) -> None:
        self._wallet = wallet
        self._peer: Any = None

    def register_with_request_handler(self, request_handler: IRequestHandler, peer: Any) -> None:
        self._peer = peer
        request_handler.register_query_handler(self, list(self.IDENTIFIERS))

    def handle_queries(self, queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        wire = queries[CHEQUE_QUERY]
        receipt: dict[str, Any] = {}
        try:
            cheque = parse_cheque(wire)
            if self._peer is not None:
                # counted for its host before it can take the host's debt
                check_cheque(cheque, self._wallet.public_key)
                host_keys(self._wallet).add(client_host(self._peer), cheque.payer.hex())
            last = self._wallet.ledger.payer(cheque.payer)
            credit = self._wallet.receive_cheque(self._peer, cheque)
        except BadChequeError as e:
            _log.info("Refused a cheque from {peer}: {error}", peer=str(self._peer), error=e)
            receipt = {"error": _error_code(e), "detail": str(e)[:200]}
            payer = None if isinstance(e, MalformedChequeError) else _payer_of(wire)
        else:
            payer = cheque.payer
            if last is not None and cheque.sequence <= last.sequence:
                _log.info(
                    "Cheque {sequence} from {peer} is not newer than cheque {last}: "
                    "nothing credited",
                    sequence=cheque.sequence, peer=str(self._peer), last=last.sequence,
                )
                receipt = {"error": STALE_CHEQUE, "detail": "not newer than the last accepted"}
            else:
                _log.debug("Cheque {sequence} from {peer} credits {credit} micro-points",
                           sequence=cheque.sequence, peer=str(self._peer), credit=credit)
        state = None if payer is None else self._wallet.ledger.payer(payer)
        receipt["total"] = 0 if state is None else state.total
        receipt["sequence"] = 0 if state is None else state.sequence
        return succeed({CHEQUE_QUERY: receipt})

    def release(self) -> None:
        if self._peer is not None:
            self._wallet.forget_peer_key(self._peer)


def _payer_of(wire: Any) -> bytes | None:
    try:
        return parse_cheque(wire).payer
    except BadChequeError:
        return None


class BlobCharges:
    """
    What a paid-mode blob server charges: it refuses a blob to a peer over
    its debt limit, and records what each blob sent costs at the rate the
    peer offered.  Given to L{p2pblob.peer.handlers.BlobRequestHandlerFactory}.

    A client is charged under its payment key once a cheque on its
    connection has named it, and under its host (L{client_host}) before,
    never under its address: the port changes with each connection, and a
    client that never pays would get a fresh debt limit with each one.  So
    what a host's nameless clients owe adds up across their connections and
    the node's restarts until a cheque from that host moves it to the
    payer's key (L{Wallet.receive_cheque}).  Honest nodes behind one NAT
    address share that debt until each has sent its first cheque; see
    L{p2pblob.wallet.accounts} for that trade-off.

    Since a client makes its own payment keys, one that means not to pay
    could name itself with a new key on each connection (or move its
    host's debt to a throwaway key with a tiny cheque) and owe up to the
    debt limit under each.  So a host's debt is limited too: what it owes
    without a key plus what every key that paid or was served from it owes
    (L{p2pblob.wallet.hosts.host_debt}) may not pass C{host_debt_limit}
    (by default L{HOST_DEBT_FACTOR} debt limits), and a host with
    L{p2pblob.wallet.hosts.MAX_KEYS_PER_HOST} keys in debt is served no
    more until some pay.  Over either, every client of the host is refused
    blobs, as one over its own limit is; a cheque that brings the total
    under the limit lets them all be served again.  The price: honest
    clients behind one NAT address share one host limit, so a few
    downloading at once without paying promptly may be refused until
    their cheques come.

    @ivar host_debt_limit: micro-points a client host may owe in all, or
        L{None} for L{HOST_DEBT_FACTOR} times the wallet's debt limit
        (no limit if the wallet has none).
    """

    def __init__(
        self, wallet: Wallet, rates: PaymentRateManager, host_debt_limit: int | None = None
    ) -> None:
        self.wallet = wallet
        self.rates = rates
        self.host_debt_limit = host_debt_limit
        self.hosts = host_keys(wallet)

    def host_limit(self) -> int | None:
        """
        The micro-points a client host may owe in all, or L{None} for no
        limit.
        """
        if self.host_debt_limit is not None:
            return self.host_debt_limit
        limit = self.wallet.debt_limit
        return None if limit is None else limit * HOST_DEBT_FACTOR

    def host_debt(self, peer: Any) -> int:
        """
        What C{peer}'s host owes in all (L{p2pblob.wallet.hosts.host_debt}).
        """
        return host_debt(self.wallet.ledger, self.hosts, client_host(peer))

    def account(self, peer: Any) -> str:
        """
        The name C{peer} is charged under: its key in hex if a cheque on
        its connection named it, else its host.
        """
        account = self.wallet.account_of(peer)
        return account if is_key_name(account) else client_host(peer)

    def check(self, peer: Any) -> None:
        """
        @raise p2pblob.errors.DebtLimitError: C{peer}, or its host in all,
            owes too much to be sent another blob (a host with too many
            keys in debt is reported as owing just over its limit).
        """
        account = self.account(peer)
        self.wallet.check_may_serve(account)
        limit = self.host_limit()
        if limit is None:
            return
        host = client_host(peer)
        counted = not is_key_name(account) or self.hosts.add(host, account)
        debt = self.host_debt(peer)
        if not counted or self.hosts.full(host):
            _log.info("Client host {host} has too many payment keys in debt", host=host)
            raise DebtLimitError(f"host {host}", max(debt, limit + 1), limit)
        if debt > limit:
            raise DebtLimitError(f"host {host}", debt, limit)

    def served(self, peer: Any, length: int, rate: object) -> int:
        """
        Record that C{peer} was sent C{length} bytes at the C{rate} it
        offered; return what it owes for them, in micro-points.
        """
        cost = self.rates.cost(length, rate)
        account = self.account(peer)
        if is_key_name(account):
            self.hosts.add(client_host(peer), account)
        self.wallet.expect_micro(account, cost)
        return cost
