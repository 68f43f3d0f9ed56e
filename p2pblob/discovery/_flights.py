"""
The announcements in flight: each given up after a time limit, and each
counted against the announcer's limit until it ends, even after a stop.

L{Flights} is the mechanism under the announcer's policy
(L{p2pblob.discovery.announcer}): it starts what it is told to start and
reports each outcome; what to start, and what an outcome means, is the
announcer's business.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

__all__ = ["Flights"]


class Flights:
    """
    The announcements of blobs in flight.

    L{abandon} (when the announcer stops) forgets those of the run: they
    end on their own, without a time limit, and their outcome is not
    reported; but each counts in L{running} until it ends, so that a
    restart keeps to the limit.

    @param clock: times the time limit.
    @param announce: announces a blob (hash, TCP port), giving at how many
        DHT nodes it was stored.
    @param timeout: seconds after which an announcement is given up: it
        fails with L{TimeoutError}.
    @param ended: called with the blob hash and the outcome (the number of
        nodes that stored it, or the failure) of each announcement of the
        run, when it ends.
    @param freed: called when an abandoned announcement ends.

    @ivar running: the announcements in flight, abandoned ones included.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        announce: Callable[[str, int], Coroutine[Any, Any, int]],
        timeout: float,
        ended: Callable[[str, int | Failure], None],
        freed: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._announce = announce
        self._timeout = timeout
        self._ended = ended
        self._freed = freed
        self.running = 0
        self._blobs: set[str] = set()  # of this run
        self._timeouts: set[IDelayedCall] = set()  # of this run
        self._generation = 0

    def __contains__(self, blob_hash: object) -> bool:
        """
        Whether an announcement of C{blob_hash} of this run is in flight.
        """
        return blob_hash in self._blobs

    def __len__(self) -> int:
        """
        The announcements of this run in flight.
        """
        return len(self._blobs)

    def start(self, blob_hash: str, port: int) -> None:
        """
        Announce C{blob_hash}, reachable on TCP C{port}.
        """
        self.running += 1
        self._blobs.add(blob_hash)
        d = Deferred.fromCoroutine(self._announce(blob_hash, port))
        timeout = self._clock.callLater(self._timeout, d.cancel)
        self._timeouts.add(timeout)

        def timed(result: int | Failure) -> int | Failure:
            self._timeouts.discard(timeout)
            if timeout.active():
                timeout.cancel()
            elif isinstance(result, Failure) and result.check(CancelledError):
                return Failure(TimeoutError(f"no result in {self._timeout:.0f} s"))
            return result

        d.addBoth(timed)
        d.addBoth(self._finished, blob_hash, self._generation)

    def abandon(self) -> None:
        """
        Forget the announcements in flight: they are left to finish
        (without a time limit), and their outcomes are not reported.
        """
        self._generation += 1
        self._blobs.clear()
        for timeout in self._timeouts:
            timeout.cancel()
        self._timeouts.clear()

    def _finished(self, result: int | Failure, blob_hash: str, generation: int) -> None:
        self.running -= 1
        if generation != self._generation:
            # abandoned: the outcome changes nothing, but the slot is free
            self._freed()
            return
        self._blobs.discard(blob_hash)
        self._ended(blob_hash, result)
