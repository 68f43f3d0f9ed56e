"""
Tests for L{p2pblob.discovery._requests}: the requests of
C{immediate_announce} waiting for their blobs, on their own (the tests of
the announcer cover them in use).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.discovery._requests import AnnounceRequests
from p2pblob.errors import NotAnnouncingError


class AnnounceRequestsTests(SynchronousTestCase):
    def test_fires_once_all_announced(self) -> None:
        """
        A request fires once the announcement of each of its blobs ended,
        with the number of nodes that stored each; blobs nobody waits for
        change nothing.
        """
        requests = AnnounceRequests()
        d = requests.add(["a", "b", "a"])
        self.assertIn("a", requests)
        requests.notify("c", 9)
        requests.notify("a", 3)
        self.assertNoResult(d)
        self.assertNotIn("a", requests)
        requests.notify("b", 0)
        self.assertEqual(self.successResultOf(d), {"a": 3, "b": 0})
        self.assertNotIn("b", requests)

    def test_empty(self) -> None:
        """
        A request for no blob fires at once with an empty dict.
        """
        self.assertEqual(self.successResultOf(AnnounceRequests().add([])), {})

    def test_shared_blob(self) -> None:
        """
        Requests waiting for the same blob are each told of its
        announcement; each fires once it has all of its own.
        """
        requests = AnnounceRequests()
        first = requests.add(["a"])
        second = requests.add(["a", "b"])
        requests.notify("a", 5)
        self.assertEqual(self.successResultOf(first), {"a": 5})
        self.assertNoResult(second)
        requests.notify("b", 2)
        self.assertEqual(self.successResultOf(second), {"a": 5, "b": 2})

    def test_cancel(self) -> None:
        """
        A cancelled request fails with L{CancelledError} and is forgotten;
        another waiting for the same blob waits on.
        """
        requests = AnnounceRequests()
        cancelled = requests.add(["a", "b"])
        other = requests.add(["b"])
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertNotIn("a", requests)
        self.assertIn("b", requests)
        requests.notify("b", 1)
        self.assertEqual(self.successResultOf(other), {"b": 1})
        self.assertNotIn("b", requests)

    def test_fail_all(self) -> None:
        """
        L{AnnounceRequests.fail_all} fails each request once, with
        L{NotAnnouncingError} giving the reason, and forgets them all.
        """
        requests = AnnounceRequests()
        both = requests.add(["a", "b"])
        one = requests.add(["b"])
        errbacks: list[Failure] = []
        both.addErrback(errbacks.append)
        requests.fail_all("announcing is stopped")
        self.assertEqual(len(errbacks), 1)
        error = errbacks[0].value
        assert isinstance(error, NotAnnouncingError)
        self.assertEqual(error.reason, "announcing is stopped")
        self.failureResultOf(one, NotAnnouncingError)
        self.assertNotIn("a", requests)
        self.assertNotIn("b", requests)
        requests.fail_all("again")  # nothing waits: nothing happens

    def test_added_while_firing(self) -> None:
        """
        A request added by the callback or errback of another, for the same
        blob, waits for the next announcement of it.
        """
        requests = AnnounceRequests()
        later: list[Deferred[dict[str, int]]] = []

        def again(result: object) -> None:
            later.append(requests.add(["a"]))

        requests.add(["a"]).addCallback(again)
        requests.notify("a", 1)
        self.assertNoResult(later[0])
        requests.add(["a"]).addErrback(again)
        requests.fail_all("unreachable")
        self.failureResultOf(later[0], NotAnnouncingError)
        self.assertNoResult(later[1])
        requests.notify("a", 2)
        self.assertEqual(self.successResultOf(later[1]), {"a": 2})
