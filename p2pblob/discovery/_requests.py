"""
The requests of L{p2pblob.discovery.announcer.Announcer.immediate_announce},
waiting for the announcements of their blobs.

Pure bookkeeping, like L{p2pblob.discovery._schedule}: L{AnnounceRequests}
never reads a clock and starts nothing.  The announcer tells it when an
announcement ends (L{AnnounceRequests.notify}) and when announcing stops
(L{AnnounceRequests.fail_all}); the requests' L{Deferred}s fire then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, succeed

from p2pblob.errors import NotAnnouncingError

__all__ = ["AnnounceRequests"]


class _Request:
    """
    One request, waiting for its blobs.

    @ivar pending: the blobs whose announcement has not ended yet.
    @ivar results: for each blob whose announcement ended, at how many DHT
        nodes it was stored.
    @ivar deferred: fires with C{results} once nothing is pending.
    """

    def __init__(self, blob_hashes: list[str], forget: Callable[[_Request], None]) -> None:
        self.pending = set(blob_hashes)
        self.results: dict[str, int] = {}
        # cancelling it forgets the request (and fails it with CancelledError)
        self.deferred: Deferred[dict[str, int]] = Deferred(lambda _: forget(self))


class AnnounceRequests:
    """
    The requests waiting for announcements, by the blobs they wait for.
    """

    def __init__(self) -> None:
        self._waiters: dict[str, list[_Request]] = {}

    def __contains__(self, blob_hash: object) -> bool:
        """
        Whether some request waits for the announcement of C{blob_hash}.
        """
        return blob_hash in self._waiters

    def add(self, blob_hashes: Iterable[str]) -> Deferred[dict[str, int]]:
        """
        Wait for the announcements of C{blob_hashes}.

        @return: a L{Deferred} that fires, once L{notify} was called for
            each of the blobs, with a dict giving at how many DHT nodes each
            was stored (0 if its announcement failed).  It fails with
            L{NotAnnouncingError} if L{fail_all} is called first.
            Cancelling it forgets the request (and fails it with
            L{twisted.internet.defer.CancelledError}).
        """
        hashes = list(dict.fromkeys(blob_hashes))
        if not hashes:
            return succeed({})
        request = _Request(hashes, self._forget)
        for h in hashes:
            self._waiters.setdefault(h, []).append(request)
        return request.deferred

    def notify(self, blob_hash: str, stored: int) -> None:
        """
        The announcement of C{blob_hash} ended, stored at C{stored} DHT
        nodes: fire the requests that waited for nothing else.  A request
        added from their callbacks waits for the next announcement.
        """
        done = []
        for request in self._waiters.pop(blob_hash, []):
            request.results[blob_hash] = stored
            request.pending.discard(blob_hash)
            if not request.pending:
                done.append(request)
        for request in done:
            request.deferred.callback(request.results)

    def fail_all(self, reason: str) -> None:
        """
        Fail every request waiting with L{NotAnnouncingError}C{(reason)}.
        A request added from their errbacks waits on.
        """
        if not self._waiters:
            return
        requests = dict.fromkeys(r for waiting in self._waiters.values() for r in waiting)
        self._waiters.clear()
        for request in requests:
            request.deferred.errback(NotAnnouncingError(reason))

    def _forget(self, request: _Request) -> None:
        for h in request.pending:
            waiting = self._waiters.get(h, [])
            if request in waiting:
                waiting.remove(request)
            if not waiting:
                self._waiters.pop(h, None)
