"""
Tests for L{p2pblob.discovery._schedule}: the queue of due times and the
token bucket under the announcer.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.discovery._schedule import Due, DueQueue, TokenBucket


def drain(queue: DueQueue[str], now: float) -> list[str]:
    """
    Pop everything due at C{now}, in order.
    """
    items = []
    while (item := queue.pop_due(now)) is not None:
        items.append(item)
    return items


class DueQueueTests(SynchronousTestCase):
    """
    L{DueQueue} gives its items in order: urgent ones first, then by due
    time, then in the order they were scheduled.
    """

    def test_empty(self) -> None:
        """
        An empty queue has no first item, nothing due, and equals C{{}}.
        """
        queue: DueQueue[str] = DueQueue()
        self.assertIsNone(queue.first())
        self.assertIsNone(queue.pop_due(10.0))
        self.assertEqual((len(queue), queue.count_due(10.0)), (0, 0))
        self.assertEqual(queue, {})

    def test_order(self) -> None:
        """
        Urgent items come before the others whatever their due times; ties
        go in the order of scheduling.
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("late", 5.0)
        queue.schedule("early", 1.0)
        queue.schedule("early too", 1.0)
        queue.schedule("urgent", 3.0, urgent=True)
        queue.schedule("urgent too", 2.0, urgent=True)
        self.assertEqual(queue.first(), Due("urgent too", 2.0, True))
        self.assertEqual(drain(queue, 10.0), ["urgent too", "urgent", "early", "early too", "late"])
        self.assertEqual(queue, {})

    def test_mapping(self) -> None:
        """
        As a mapping, the queue gives each scheduled item's due time.
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("a", 1.0)
        queue.schedule("b", 2.0, urgent=True)
        self.assertEqual(queue, {"a": 1.0, "b": 2.0})
        self.assertEqual((queue["a"], len(queue), sorted(queue)), (1.0, 2, ["a", "b"]))
        self.assertIn("b", queue)
        self.assertNotIn("c", queue)

    def test_reschedule(self) -> None:
        """
        Scheduling an item again replaces its due time and urgency: it is
        given once, at its new place.
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("a", 1.0)
        queue.schedule("b", 2.0)
        queue.schedule("a", 3.0)
        self.assertEqual(queue, {"a": 3.0, "b": 2.0})
        self.assertEqual(drain(queue, 10.0), ["b", "a"])
        queue.schedule("c", 1.0, urgent=True)
        queue.schedule("c", 1.0)
        queue.schedule("d", 0.5)
        self.assertEqual(drain(queue, 10.0), ["d", "c"])

    def test_discard(self) -> None:
        """
        A discarded item is no longer given; discarding an unknown item
        does nothing.
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("a", 1.0)
        queue.schedule("b", 2.0)
        queue.discard("a")
        queue.discard("nothing")
        self.assertEqual(queue.first(), Due("b", 2.0, False))
        self.assertEqual(drain(queue, 10.0), ["b"])

    def test_pop_due(self) -> None:
        """
        L{DueQueue.pop_due} takes out the first item only once it is due
        (at its due time itself, too).
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("a", 5.0)
        self.assertIsNone(queue.pop_due(4.9))
        self.assertEqual(queue.first(), Due("a", 5.0, False))
        self.assertEqual(queue.pop_due(5.0), "a")
        self.assertIsNone(queue.first())

    def test_count_due(self) -> None:
        """
        L{DueQueue.count_due} counts the items due at a time, urgent or
        not.
        """
        queue: DueQueue[str] = DueQueue()
        for i in range(10):
            queue.schedule(str(i), float(i), urgent=i % 3 == 0)
        self.assertEqual([queue.count_due(t) for t in (-1.0, 0.0, 4.5, 9.0)], [0, 1, 5, 10])

    def test_stale_entries_dropped(self) -> None:
        """
        Rescheduling one item over and over does not grow the queue's heap
        without bound (it is rebuilt once stale entries outnumber the live
        ones), and the order survives the rebuilds.
        """
        queue: DueQueue[str] = DueQueue()
        queue.schedule("other", 2.5)
        for i in range(5000):
            queue.schedule("busy", float(i))
            self.assertLessEqual(len(queue._heap), 2 * len(queue) + 1025)
        self.assertEqual(drain(queue, 10_000.0), ["other", "busy"])

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["schedule", "discard", "pop"]),
                st.integers(min_value=0, max_value=7),
                st.integers(min_value=0, max_value=5),
                st.booleans(),
            ),
            max_size=60,
        )
    )
    def test_model(self, operations: list[tuple[str, int, int, bool]]) -> None:
        """
        Any sequence of operations gives the items in the order of a plain
        sorted list of C{(not urgent, due time, scheduling order)}.
        """
        queue: DueQueue[int] = DueQueue()
        model: dict[int, tuple[bool, float, int]] = {}
        for order, (operation, item, when, urgent) in enumerate(operations):
            if operation == "schedule":
                queue.schedule(item, float(when), urgent)
                model[item] = (not urgent, float(when), order)
            elif operation == "discard":
                queue.discard(item)
                model.pop(item, None)
            else:
                now = float(when)
                ranked = sorted(model, key=model.__getitem__)
                expected = ranked[0] if ranked and model[ranked[0]][1] <= now else None
                self.assertEqual(queue.pop_due(now), expected)
                if expected is not None:
                    del model[expected]
            self.assertEqual(queue, {i: key[1] for i, key in model.items()})
        ranked = sorted(model, key=model.__getitem__)
        self.assertEqual(
            queue.first(),
            None if not ranked else Due(ranked[0], model[ranked[0]][1], not model[ranked[0]][0]),
        )


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} allows C{rate} takes a second on average and C{burst}
    at once.
    """

    def test_starts_full(self) -> None:
        """
        A new bucket holds C{burst} tokens: that many can be taken at once.
        """
        bucket = TokenBucket(rate=2.0, burst=3.0)
        taken = 0
        while bucket.has_token():
            bucket.take()
            taken += 1
        self.assertEqual((taken, bucket.tokens), (3, 0.0))

    def test_refill(self) -> None:
        """
        The bucket earns C{rate} tokens a second since its last (re)fill, up
        to C{burst}.
        """
        bucket = TokenBucket(rate=2.0, burst=3.0)
        bucket.fill(10.0)
        for _ in range(3):
            bucket.take()
        bucket.refill(10.25)
        self.assertEqual(bucket.tokens, 0.5)
        self.assertFalse(bucket.has_token())
        bucket.refill(10.5)
        self.assertTrue(bucket.has_token())
        bucket.refill(100.0)
        self.assertEqual(bucket.tokens, 3.0)

    def test_rounding(self) -> None:
        """
        A token earned in float time steps that add up to a hair under one
        token still counts as a whole one.
        """
        bucket = TokenBucket(rate=1.0, burst=1.0)
        bucket.fill(0.0)
        bucket.take()
        now = 0.0
        for _ in range(10):
            now += 0.1
            bucket.refill(now)
        self.assertLess(bucket.tokens, 1.0)
        self.assertTrue(bucket.has_token())

    def test_seconds_until(self) -> None:
        """
        L{TokenBucket.seconds_until} says how long after the last refill the
        bucket holds a number of tokens; negative if it did already.
        """
        bucket = TokenBucket(rate=4.0, burst=2.0)
        bucket.fill(0.0)
        self.assertEqual(bucket.seconds_until(1.0), -0.25)
        bucket.take()
        bucket.take()
        self.assertEqual(bucket.seconds_until(1.0), 0.25)
        self.assertEqual(bucket.seconds_until(2.0), 0.5)
        bucket.rate = 1.0
        self.assertEqual(bucket.seconds_until(2.0), 2.0)

    def test_fill(self) -> None:
        """
        L{TokenBucket.fill} makes it full again, counting time from then.
        """
        bucket = TokenBucket(rate=1.0, burst=2.0)
        bucket.take()
        bucket.take()
        bucket.fill(50.0)
        self.assertEqual(bucket.tokens, 2.0)
        bucket.take()
        bucket.refill(50.5)
        self.assertEqual(bucket.tokens, 1.5)
