"""
Tests for L{p2pblob.discovery._flights}: announcements in flight, their
time limit, and what a stop does to them.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import TimeoutError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.discovery._flights import Flights

TIMEOUT = 300.0


class FlightsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pending: dict[str, Deferred[int]] = {}
        self.calls: list[tuple[str, int]] = []
        self.ended: list[tuple[str, int | Failure]] = []
        self.freed = 0
        self.flights = Flights(
            clock=self.clock, announce=self.announce, timeout=TIMEOUT,
            ended=lambda blob, result: self.ended.append((blob, result)),
            freed=self.free,
        )

    async def announce(self, blob_hash: str, port: int) -> int:
        self.calls.append((blob_hash, port))
        d = self.pending[blob_hash] = Deferred()
        return await d

    def free(self) -> None:
        self.freed += 1

    def test_ended(self) -> None:
        """
        An announcement is in flight until it ends; then its outcome is
        reported, success or failure.
        """
        self.flights.start("a", 3333)
        self.flights.start("b", 3333)
        self.assertEqual(self.calls, [("a", 3333), ("b", 3333)])
        self.assertIn("a", self.flights)
        self.assertEqual((len(self.flights), self.flights.running), (2, 2))
        self.pending["a"].callback(4)
        self.pending["b"].errback(ValueError("no"))
        self.assertNotIn("a", self.flights)
        self.assertEqual((len(self.flights), self.flights.running), (0, 0))
        self.assertEqual(self.ended[0], ("a", 4))
        blob, failure = self.ended[1]
        assert isinstance(failure, Failure)
        self.assertEqual(blob, "b")
        failure.trap(ValueError)
        self.assertEqual((self.freed, self.clock.getDelayedCalls()), (0, []))

    def test_timeout(self) -> None:
        """
        An announcement that takes longer than the time limit is given up:
        it ends with L{TimeoutError}.
        """
        self.flights.start("a", 3333)
        self.clock.advance(TIMEOUT - 1)
        self.assertEqual(self.ended, [])
        self.clock.advance(1)
        [(blob, failure)] = self.ended
        assert isinstance(failure, Failure)
        failure.trap(TimeoutError)
        self.assertIn(f"no result in {TIMEOUT:.0f} s", str(failure.value))
        self.assertEqual(self.flights.running, 0)

    def test_abandon(self) -> None:
        """
        Abandoned announcements are no longer in flight for the run and
        have no time limit, but count as running until they end; their
        outcome is not reported, only that their slot is free.
        """
        self.flights.start("a", 3333)
        self.flights.abandon()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn("a", self.flights)
        self.assertEqual((len(self.flights), self.flights.running), (0, 1))
        self.flights.start("b", 3333)
        self.assertEqual((len(self.flights), self.flights.running), (1, 2))
        self.clock.advance(TIMEOUT - 1)
        self.pending["a"].callback(5)
        self.assertEqual((self.freed, self.ended), (1, []))
        self.assertEqual((len(self.flights), self.flights.running), (1, 1))
        self.pending["b"].callback(3)
        self.assertEqual((self.freed, self.ended), (1, [("b", 3)]))
        self.assertEqual(self.flights.running, 0)
