"""
The token buckets behind L{p2pblob.ratelimit.RateLimiter}: one direction
(upload or download) of the node, and of each connection in it.  See
L{p2pblob.ratelimit} for how they throttle.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["BURST", "MIN_INTERVAL", "Direction", "Lane"]

_log = Logger()

# The most a bucket holds, in seconds of its rate: what may move at once
# after a quiet spell, and what makes up for a timer that fires late.
BURST = 0.1
# The shortest wait between two wake-ups of a timer.
MIN_INTERVAL = 0.005
# What a connection is reckoned to move when released before it has
# reported anything.
_FIRST_REPORT = 64 * 1024


def _refilled(tokens: float, since: float, now: float, rate: float) -> float:
    return min(tokens + (now - since) * rate, rate * BURST)


class Lane:
    """
    One connection in one direction: what holds it, and its own bucket.
    """

    __slots__ = (
        "throttle", "unthrottle", "held", "own_held", "paused", "gone", "last",
        "served", "tokens", "stamp", "call",
    )

    def __init__(self, throttle: Callable[[], None], unthrottle: Callable[[], None]) -> None:
        self.throttle = throttle
        self.unthrottle = unthrottle
        # held by the node's bucket; by its own bucket; what the protocol
        # was last told; unregistered
        self.held = False
        self.own_held = False
        self.paused = False
        self.gone = False
        # what it moved at its last report; what it has moved under the
        # node's limit (see _Line)
        self.last = _FIRST_REPORT
        self.served = 0.0
        # its own bucket, when there is a per-connection limit
        self.tokens = 0.0
        self.stamp = 0.0
        self.call: IDelayedCall | None = None


class _Line:
    """
    The lanes waiting for the node's tokens, least served first: the next
    one out is the one that has moved the fewest bytes under the limit, so
    that connections reading 64 KiB at a time get as many bytes as those
    reading 256 KiB.  A lane joining the line counts as having moved at
    least as much as the last one let out (the line's virtual time), so
    that a connection gets no credit for the time it was new or idle.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Lane]] = []
        self._order = itertools.count()
        self._time = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Lane]:
        return (lane for _, _, lane in self._heap)

    def push(self, lane: Lane) -> None:
        lane.served = max(lane.served, self._time)
        heapq.heappush(self._heap, (lane.served, next(self._order), lane))

    def next_served(self) -> float:
        """
        What the next lane out has served.
        """
        return self._heap[0][0]

    def pop(self) -> Lane:
        served, _, lane = heapq.heappop(self._heap)
        self._time = served
        return lane

    def remove(self, lane: Lane) -> None:
        self._heap = [entry for entry in self._heap if entry[2] is not lane]
        heapq.heapify(self._heap)

    def clear(self) -> list[Lane]:
        lanes = list(self)
        self._heap.clear()
        return lanes

    def restart(self, lanes: list[Lane]) -> None:
        """
        Forget what every lane has moved (the limit is new).
        """
        self._time = 0.0
        for lane in lanes:
            lane.served = 0.0
        self._heap = [(0.0, order, lane) for _, order, lane in self._heap]
        heapq.heapify(self._heap)


class Direction:
    """
    The buckets of one direction: the node's, and one per connection.

    Every lane is either held (waiting in C{_held}, a L{_Line}) or free (in
    C{_free}, in the order it was released).  Whenever a lane is held, the
    timer is set.
    """

    def __init__(self, clock: IReactorTime, what: str) -> None:
        self._clock = clock
        self._what = what
        self.rate: float | None = None
        self.per_connection: float | None = None
        self.limited = False
        self._tokens = 0.0
        self._stamp = clock.seconds()
        self._held = _Line()
        self._free: dict[Lane, None] = {}
        self._call: IDelayedCall | None = None

    @property
    def throttled(self) -> int:
        """
        How many connections are throttled.
        """
        return sum(1 for lane in self._lanes() if lane.paused)

    def _lanes(self) -> list[Lane]:
        return [*self._held, *self._free]

    # limits

    def set_rate(self, rate: float | None) -> None:
        now = self._clock.seconds()
        if self.rate is not None and rate is not None:
            self._tokens = min(_refilled(self._tokens, self._stamp, now, self.rate), rate * BURST)
        else:
            self._tokens = 0.0
        self._stamp = now
        if self.rate is None:
            self._held.restart(self._lanes())
        self.rate = rate
        self.limited = rate is not None or self.per_connection is not None
        self._cancel()
        if rate is None:
            released = self._held.clear()
            for lane in released:
                lane.held = False
                self._free[lane] = None
            for lane in released:
                self._apply(lane)
        elif self._held:
            self._wake()

    def set_per_connection(self, rate: float | None) -> None:
        now = self._clock.seconds()
        old, self.per_connection = self.per_connection, rate
        self.limited = rate is not None or self.rate is not None
        for lane in self._lanes():
            if old is not None and rate is not None:
                lane.tokens = min(_refilled(lane.tokens, lane.stamp, now, old), rate * BURST)
            else:
                lane.tokens = 0.0
            lane.stamp = now
            if lane.call is not None:
                lane.call.cancel()
                lane.call = None
            if lane.own_held:
                if rate is None:
                    lane.own_held = False
                    self._apply(lane)
                else:
                    self._own_wake(lane)

    # connections

    def add(self, lane: Lane) -> None:
        """
        A new connection: throttled at once if connections wait in line, or
        if the node's bucket is in debt.
        """
        now = self._clock.seconds()
        lane.stamp = now
        rate = self.rate
        if rate is None:
            self._free[lane] = None
            return
        self._tokens = _refilled(self._tokens, self._stamp, now, rate)
        self._stamp = now
        if not self._held and self._tokens >= 0:
            self._free[lane] = None
            return
        lane.held = True
        self._held.push(lane)
        if self._call is None:
            self._wake_in(-self._tokens / rate)
        self._apply(lane)

    def remove(self, lane: Lane) -> None:
        lane.gone = True
        if lane.held:
            self._held.remove(lane)
            if not self._held:
                self._cancel()
        else:
            self._free.pop(lane, None)
        if lane.call is not None:
            lane.call.cancel()
            lane.call = None

    def stop(self) -> None:
        """
        Cancel every timer (the node is stopping).
        """
        self._cancel()
        for lane in self._lanes():
            if lane.call is not None:
                lane.call.cancel()
                lane.call = None

    # traffic

    def consume(self, lane: Lane | None, num_bytes: int) -> None:
        """
        C{num_bytes} have moved, on C{lane} if it is known.
        """
        now = self._clock.seconds()
        if lane is not None:
            # before it may join the line, which orders by what it served
            lane.last = num_bytes
            lane.served += num_bytes
        rate = self.rate
        if rate is not None:
            tokens = _refilled(self._tokens, self._stamp, now, rate) - num_bytes
            self._tokens = tokens
            self._stamp = now
            if tokens < 0 and self._free:
                self._hold_all()
        if lane is None:
            return
        own = self.per_connection
        if own is not None:
            tokens = _refilled(lane.tokens, lane.stamp, now, own) - num_bytes
            lane.tokens = tokens
            lane.stamp = now
            if tokens < 0 and not lane.own_held:
                lane.own_held = True
                lane.call = self._clock.callLater(
                    max(-tokens / own, MIN_INTERVAL), self._own_wake, lane
                )
                self._apply(lane)

    def _hold_all(self) -> None:
        """
        The node's bucket is in debt: every connection joins the line.
        """
        assert self.rate is not None
        lanes = list(self._free)
        self._free.clear()
        for lane in lanes:
            lane.held = True
            self._held.push(lane)
        if self._call is None:
            self._wake_in(-self._tokens / self.rate)
        for lane in lanes:
            self._apply(lane)

    def _wake(self) -> None:
        """
        Release connections from the line, as many as the tokens cover.
        """
        self._call = None
        rate = self.rate
        if rate is None:
            return
        now = self._clock.seconds()
        self._tokens = _refilled(self._tokens, self._stamp, now, rate)
        self._stamp = now
        if self._tokens < 0:
            self._wake_in(-self._tokens / rate)
            return
        tokens = budget = self._tokens
        released = 0
        served = 0.0
        # a released upload may write (and report) at once, and so put the
        # bucket in debt again: then every lane is back in line
        while self._held and self._tokens >= 0:
            if released:
                # the tokens do not cover one more, or would not lift the
                # lanes let out up to the next one's level
                if budget < 0 or self._held.next_served() >= (tokens + served) / released:
                    break
            lane = self._held.pop()
            lane.held = False
            self._free[lane] = None
            if self._apply(lane):
                released += 1
                served += lane.served
                budget -= lane.last
        if self._held and self._call is None:
            # when the tokens cover what the lanes let out should move; but
            # no later than the bucket fills up, in case they move less
            self._wake_in(min(-budget / rate, BURST))

    def _own_wake(self, lane: Lane) -> None:
        lane.call = None
        own = self.per_connection
        if lane.gone or own is None:
            return
        now = self._clock.seconds()
        lane.tokens = _refilled(lane.tokens, lane.stamp, now, own)
        lane.stamp = now
        if lane.tokens < 0:
            lane.call = self._clock.callLater(
                max(-lane.tokens / own, MIN_INTERVAL), self._own_wake, lane
            )
            return
        lane.own_held = False
        self._apply(lane)

    def _apply(self, lane: Lane) -> bool:
        """
        Tell the connection whether it may move data, if that has changed;
        return whether it may.
        """
        hold = lane.held or lane.own_held
        if hold != lane.paused and not lane.gone:
            lane.paused = hold
            try:
                if hold:
                    lane.throttle()
                else:
                    lane.unthrottle()
            except Exception:
                _log.failure(
                    "A connection failed to {action} its {what}",
                    action="pause" if hold else "resume", what=self._what,
                )
        return not hold

    def _wake_in(self, delay: float) -> None:
        self._call = self._clock.callLater(max(delay, MIN_INTERVAL), self._wake)

    def _cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
