"""
The scheduling machinery of the announcer: a queue of due times
(L{DueQueue}) and a rate limiter (L{TokenBucket}).

Both are pure bookkeeping: they never read a clock (the caller passes the
time) and never call anything back.  What is scheduled, when, and what
happens once it is due is the caller's business
(L{p2pblob.discovery.announcer}).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Due", "DueQueue", "TokenBucket"]

_T = TypeVar("_T", bound=Hashable)

# heap keys are (rank, due time, sequence number): urgent entries first
_URGENT = 0
_NORMAL = 1

_Key = tuple[int, float, int]

# a token count this close to 1 is 1 (sums of float time steps are inexact)
_ALMOST_ONE = 1 - 1e-6


@dataclass(frozen=True)
class Due(Generic[_T]):
    """
    The first entry of a L{DueQueue}.

    @ivar item: what is due.
    @ivar when: when it is (or was) due.
    @ivar urgent: whether it was scheduled as urgent.
    """

    item: _T
    when: float
    urgent: bool


class DueQueue(Mapping[_T, float]):
    """
    Items, each due at some time, in the order they fall due: urgent ones
    first, then by due time, then in the order they were scheduled.

    As a mapping it gives each scheduled item's due time.  An item is
    scheduled at most once: scheduling it again replaces its due time.

    Inside, a heap holds an entry for each time an item was scheduled; the
    entries of items since rescheduled or discarded are stale, skipped when
    they reach the top, and all dropped at once when they outnumber the live
    ones (plus a margin).  So scheduling, discarding and taking the first
    item each cost O(log n) amortized.
    """

    def __init__(self) -> None:
        self._keys: dict[_T, _Key] = {}
        self._heap: list[tuple[int, float, int, _T]] = []
        self._order = itertools.count()

    def __getitem__(self, item: _T) -> float:
        return self._keys[item][1]

    def __iter__(self) -> Iterator[_T]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, item: object) -> bool:
        return item in self._keys

    def schedule(self, item: _T, when: float, urgent: bool = False) -> None:
        """
        Make C{item} due at C{when}, whether or not it was scheduled before.

        @param urgent: whether it goes before every item that is not
            urgent, whatever their due times.
        """
        key = (_URGENT if urgent else _NORMAL, when, next(self._order))
        self._keys[item] = key
        heapq.heappush(self._heap, (*key, item))
        if len(self._heap) > 2 * len(self._keys) + 1024:
            # too many stale entries: rebuild, O(n) once per n pushes at most
            self._heap = [(*k, i) for i, k in self._keys.items()]
            heapq.heapify(self._heap)

    def discard(self, item: _T) -> None:
        """
        Unschedule C{item}, if it is scheduled.
        """
        self._keys.pop(item, None)

    def first(self) -> Due[_T] | None:
        """
        @return: the first item in order, due or not, or L{None} if there
            is none.
        """
        entry = self._peek()
        if entry is None:
            return None
        rank, when, _, item = entry
        return Due(item, when, rank == _URGENT)

    def pop_due(self, now: float) -> _T | None:
        """
        Take out the first item if it is due at C{now}.

        @return: that item, or L{None} if there is none or it is not due.
        """
        entry = self._peek()
        if entry is None or entry[1] > now:
            return None
        heapq.heappop(self._heap)
        item = entry[3]
        del self._keys[item]
        return item

    def count_due(self, now: float) -> int:
        """
        @return: how many items are due at C{now} (O(n)).
        """
        return sum(1 for _, when, _ in self._keys.values() if when <= now)

    def _peek(self) -> tuple[int, float, int, _T] | None:
        """
        The first live entry of the heap, stale ones dropped on the way.
        """
        heap = self._heap
        while heap:
            entry = heap[0]
            if self._keys.get(entry[3]) == entry[:3]:
                return entry
            heapq.heappop(heap)
        return None


class TokenBucket:
    """
    A rate limiter: at most C{rate} starts per second on average, and at
    most C{burst} at once after a quiet spell.

    It holds up to C{burst} tokens, earns C{rate} a second, and each start
    takes one.  It starts full.

    @ivar rate: tokens earned per second; positive.
    @ivar burst: the most tokens it holds.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._refilled = 0.0

    @property
    def tokens(self) -> float:
        """
        The tokens held as of the last L{fill} or L{refill}.
        """
        return self._tokens

    def fill(self, now: float) -> None:
        """
        Make it full, as of C{now}.
        """
        self._tokens = self.burst
        self._refilled = now

    def refill(self, now: float) -> None:
        """
        Add the tokens earned since the last L{fill} or L{refill}, up to
        C{burst}.
        """
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now

    def has_token(self) -> bool:
        """
        @return: whether it holds a whole token (within rounding), so that
            a start may take one.
        """
        return self._tokens > _ALMOST_ONE

    def take(self) -> None:
        """
        Take one token, for a start; call it only after L{has_token} said
        so.
        """
        self._tokens -= 1

    def seconds_until(self, tokens: float) -> float:
        """
        @return: how long after the last L{fill} or L{refill} it holds
            C{tokens} (if no token is taken meanwhile); negative if it
            held them then.
        """
        return (tokens - self._tokens) / self.rate
