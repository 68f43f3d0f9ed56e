"""
What the tests on the private Tor network (L{tests.reach._tornet}) share:
the rule for when they run, and a protocol that collects what it receives.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.reach import _tornet

__all__ = ["ATTEMPT_SECONDS", "Collector", "connect_with_retries", "echo_round_trip", "need_tor"]

_log = Logger()

# The first connections to a fresh onion service may fail while its
# descriptor and the circuits settle: each attempt may take this long, and
# they are retried a second apart until CONNECT_SECONDS have passed.
CONNECT_SECONDS = 90.0
ATTEMPT_SECONDS = 30.0
RETRY_SECONDS = 1.0


def need_tor(case: SynchronousTestCase) -> None:
    """
    Skip C{case} when the private Tor network cannot be built here, saying
    why; fail it instead when C{P2PBLOB_REQUIRE_TOR} is set (as C{.ci/run}
    sets it).
    """
    reason = _tornet.cannot_run()
    if reason is None:
        return
    if os.environ.get("P2PBLOB_REQUIRE_TOR"):
        case.fail(f"the private Tor network cannot run ({reason}) but P2PBLOB_REQUIRE_TOR is set")
    raise case.skipTest(f"the private Tor network cannot run: {reason}")


class Collector(Protocol):
    """
    Collects what the peer sends; L{expect} says how much to wait for, and
    L{closed} fires once the connection is gone.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()
        self._wanted = 0
        self._waiting: Deferred[bytes] | None = None

    def expect(self, count: int) -> Deferred[bytes]:
        """
        @return: a L{Deferred} firing with all bytes received so far once
            there are at least C{count}, or failing if the connection ends.
        """
        self._wanted = count
        self._waiting = waiting = Deferred()
        self._check()
        return waiting

    def _check(self) -> None:
        if self._waiting is not None and len(self.received) >= self._wanted:
            waiting, self._waiting = self._waiting, None
            waiting.callback(bytes(self.received))

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(reason)
        self.closed.callback(None)


async def connect_with_retries(reactor: Any, endpoint: Any) -> tuple[Collector, int]:
    """
    Connect a L{Collector} through C{endpoint}, retrying failures (SOCKS
    errors, lost or refused connections, slow attempts) until
    L{CONNECT_SECONDS} have passed.

    @return: the connected collector and the number of attempts made.
    """
    from txtorcon.socks import SocksError

    deadline = time.monotonic() + CONNECT_SECONDS
    attempts = 0
    while True:
        attempts += 1
        try:
            collector = await connectProtocol(endpoint, Collector()).addTimeout(
                ATTEMPT_SECONDS, reactor
            )
        except (SocksError, ConnectError, ConnectionClosed, TimeoutError) as error:
            if time.monotonic() + RETRY_SECONDS >= deadline:
                raise
            _log.info("connection attempt {attempts} failed: {error!r}",
                      attempts=attempts, error=error)
            await deferLater(reactor, RETRY_SECONDS, lambda: None)
            continue
        assert isinstance(collector, Collector)
        return collector, attempts


async def echo_round_trip(case: SynchronousTestCase, reactor: Any, collector: Collector) -> None:
    """
    Send 1, 1,000 and 100,000 random bytes through C{collector}'s
    connection to an echo server, check each comes back whole, and close
    the connection.
    """
    transport = collector.transport
    assert transport is not None
    try:
        sent = b""
        for size in (1, 1000, 100_000):
            chunk = os.urandom(size)
            transport.write(chunk)
            sent += chunk
            echoed = await collector.expect(len(sent)).addTimeout(ATTEMPT_SECONDS, reactor)
            case.assertEqual(echoed, sent)
    finally:
        transport.loseConnection()
