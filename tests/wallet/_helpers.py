"""
What the wallet tests share: fixed keys, wallets on a clock, and peers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.peer.peer import Peer
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.units import MICRO
from p2pblob.wallet.wallet import Wallet

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
SEED_C = bytes(range(64, 96))

# where each node listens, and where its connections to others come from
SERVER = Peer("192.0.2.2", 3333)
CLIENT = Peer("192.0.2.1", 50123)


def make_wallet(
    case: SynchronousTestCase,
    clock: Clock,
    seed: bytes,
    directory: Path | None = None,
    grant: int = 100 * MICRO,
    debt_limit: int | None = 10 * MICRO,
) -> Wallet:
    """
    A started wallet with the key of C{seed} and a ledger in C{directory}
    (a new temporary one by default), stopped at the end of the test.
    """
    if directory is None:
        directory = Path(case.mktemp())
    wallet = Wallet(
        clock,
        NodeKey.from_seed(seed),
        directory / "ledger.sqlite",
        initial_grant=grant,
        debt_limit=debt_limit,
    )
    wallet.start()
    case.addCleanup(wallet.stop)
    return wallet


class HeldWorker:
    """
    A stand-in for the wallet's sync thread (L{p2pblob._threads.ThreadWorker}):
    it holds each call until the test runs it.
    """

    def __init__(self) -> None:
        self.running = False
        self.calls: list[tuple[Callable[..., Any], Deferred[Any]]] = []

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((lambda: f(*args), d))
        return d

    def run_all(self) -> None:
        while self.calls:
            f, d = self.calls.pop(0)
            maybeDeferred(f).chainDeferred(d)
