"""
Tests for L{p2pblob._threads}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import one_at_a_time
from tests.blob.test_store import HeldRunner


class OneAtATimeTests(SynchronousTestCase):
    def test_in_order_one_at_a_time(self) -> None:
        """
        Each job reaches the runner only once the one before it is done,
        whether it succeeded or failed; each result goes to its own caller.
        """
        runner = HeldRunner()
        serial = one_at_a_time(runner)
        done: list[int] = []
        first = serial(done.append, 1)
        second = serial(done.append, 2)
        third = serial(lambda: 3)
        self.assertEqual(len(runner.calls), 1)
        runner.release(0, ValueError("the first fails"))
        self.failureResultOf(first, ValueError)
        self.assertEqual(len(runner.calls), 1)
        runner.release()
        self.assertIsNone(self.successResultOf(second))
        runner.release()
        self.assertEqual(self.successResultOf(third), 3)
        self.assertEqual(done, [2])
        self.assertEqual(runner.calls, [])

    def test_later_jobs_start_at_once_when_idle(self) -> None:
        runner = HeldRunner()
        serial = one_at_a_time(runner)
        runner_done = serial(lambda: "a")
        runner.release()
        self.assertEqual(self.successResultOf(runner_done), "a")
        serial(lambda: "b")
        self.assertEqual(len(runner.calls), 1)
