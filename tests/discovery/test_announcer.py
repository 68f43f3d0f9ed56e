"""
Tests for L{p2pblob.discovery.announcer}: the schedule, its limits and its
timing, on a L{Clock} with a fake DHT whose announcements take simulated
time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.dht.constants import DATA_EXPIRATION
from p2pblob.discovery._gate import ONION_ONLY, UNREACHABLE
from p2pblob.discovery.announcer import ANNOUNCE_TIMEOUT, BLOCKED_POLL, Announcer
from p2pblob.errors import (
    ConfigError,
    InvalidBlobHashError,
    NotAnnouncingError,
    RPCTimeoutError,
    StorageError,
)
from p2pblob.interfaces import IHashAnnouncer
from tests.dht._lbry import LBRYLikeProtocol
from tests.dht._onions import onion_address
from tests.dht._simnet import TCP_PORT, build_network

HOUR = 3600.0

Streams = list[tuple[str, list[str]]]


def h(i: int) -> str:
    """
    A blob hash, cheaply: 96 hex digits that count.
    """
    return f"{i:096x}"


def make_streams(count: int, blobs: int, first: int = 0) -> Streams:
    """
    C{count} streams of C{blobs} blobs each, the sd blob included, with
    hashes numbered from C{first}.
    """
    streams = []
    for s in range(count):
        base = first + s * blobs
        streams.append((h(base), [h(base + j) for j in range(1, blobs)]))
    return streams


def run(clock: Clock, duration: float) -> None:
    """
    Move C{clock} on by C{duration}, stopping at every delayed call on the
    way, so that each runs at its own time (C{Clock.advance} runs them all
    at the end time).
    """
    end = clock.seconds() + duration
    while True:
        calls = clock.getDelayedCalls()
        if not calls:
            break
        when = min(call.getTime() for call in calls)
        if when > end:
            break
        clock.advance(max(0.0, when - clock.seconds()))
    clock.advance(end - clock.seconds())


class FakeDHT:
    """
    A DHT whose announcements each take C{delay} seconds of the clock and
    then store us at C{outcome(blob_hash)} nodes (or raise what it raises).
    Announcements that end at the same moment end with one delayed call;
    while C{hang} is set, announcements started never end.

    @ivar calls: C{(time started, blob hash, TCP port)} of every
        announcement, in order.
    @ivar onions: C{(onion endpoint, onion only)} of every announcement,
        in order.
    @ivar stored: C{(time started, blob hash)} of the successful ones.
    """

    def __init__(self, clock: Clock, delay: float = 0.5) -> None:
        self.clock = clock
        self.delay = delay
        self.joined = True
        self.hang = False
        self.outcome: Callable[[str], int] = lambda blob: 3
        self.calls: list[tuple[float, str, int]] = []
        self.onions: list[tuple[str | None, bool]] = []
        self.stored: list[tuple[float, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ending: dict[float, list[Deferred[None]]] = {}

    async def announce(
        self, blob_hash: bytes, tcp_port: int, onion: str | None = None, onion_only: bool = False
    ) -> int:
        assert len(blob_hash) == 48
        name = blob_hash.hex()
        started = self.clock.seconds()
        self.calls.append((started, name, tcp_port))
        self.onions.append((onion, onion_only))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        d: Deferred[None] = Deferred()
        if not self.hang:
            when = started + self.delay
            ending = self._ending.get(when)
            if ending is None:
                ending = self._ending[when] = []
                self.clock.callLater(self.delay, self._end, when)
            ending.append(d)
        try:
            await d
        finally:
            self.in_flight -= 1
        count = self.outcome(name)
        if count > 0:
            self.stored.append((started, name))
        return count

    def _end(self, when: float) -> None:
        for d in self._ending.pop(when):
            d.callback(None)

    def announced(self) -> list[str]:
        return [name for _, name, _ in self.calls]


class AnnouncerTestsMixin:
    """
    Builds an announcer on a L{Clock}, a L{FakeDHT}, and holdings, port and
    reachability the test can change.
    """

    def make(self, streams: Streams, delay: float = 0.5, **kwargs: Any) -> Announcer:
        self.clock = Clock()
        self.dht = FakeDHT(self.clock, delay)
        self.streams = streams
        self.port: int | None = 3333
        self.reachable = True
        self.onion: str | None = None
        kwargs.setdefault("rng", random.Random(7))
        self.announcer = Announcer(
            clock=self.clock,
            dht=self.dht,
            holdings=lambda: self.streams,
            tcp_port=lambda: self.port,
            reachable=lambda: self.reachable,
            onion=lambda: self.onion,
            **kwargs,
        )
        return self.announcer

    def start(self, streams: Streams, delay: float = 0.5, **kwargs: Any) -> Announcer:
        announcer = self.make(streams, delay, **kwargs)
        announcer.startService()
        self.addCleanup(self.stop)  # type: ignore[attr-defined]
        return announcer

    def stop(self) -> None:
        if self.announcer.running:
            self.announcer.stopService()

    def own_calls(self) -> list[Any]:
        """
        The delayed calls of the announcer, not of the fake DHT.
        """
        return [c for c in self.clock.getDelayedCalls() if c.func != self.dht._end]


class InterfaceTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_provides(self) -> None:
        """
        The announcer provides L{IHashAnnouncer}, and is a named service.
        """
        announcer = self.make([])
        self.assertTrue(verifyObject(IHashAnnouncer, announcer))
        self.assertEqual(announcer.name, "announcer")

    def test_bad_policy(self) -> None:
        """
        A policy other than C{"all"} or C{"head"} is a configuration error
        naming the C{announce} option.
        """
        with self.assertRaises(ConfigError) as caught:
            self.make([], policy="some")
        self.assertTrue(str(caught.exception).startswith("announce: 'some'"))

    def test_bad_limits(self) -> None:
        """
        Limits out of range are configuration errors naming the option; a
        re-announcement interval as long as the DHT's expiry is out of range.
        """
        for kwargs, option in [
            ({"rate": 0}, "announce-rate"),
            ({"max_concurrent": 0}, "announce-concurrency"),
            ({"reannounce_interval": DATA_EXPIRATION}, "reannounce-interval"),
            ({"reannounce_interval": 0}, "reannounce-interval"),
            ({"scan_interval": 0}, "scan-interval"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                self.make([], **kwargs)
            self.assertIn(option, str(caught.exception))


class LimitTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_hundred_thousand_blobs(self) -> None:
        """
        With 100,000 blobs held, never more than C{max_concurrent}
        announcements are in flight, never more than C{rate} per second
        (plus a burst of C{max_concurrent}) start in any 10 seconds, and
        every blob is announced once within about n / rate seconds.
        """
        streams = make_streams(1000, 100)
        rate, concurrent = 50.0, 8
        self.start(
            streams, delay=0.1, rate=rate, max_concurrent=concurrent, scan_interval=HOUR
        )
        n = 100_000
        run(self.clock, n / rate + 10)

        self.assertEqual(self.dht.max_in_flight, concurrent)
        names = self.dht.announced()
        self.assertEqual(len(names), n)
        self.assertEqual(len(set(names)), n)
        starts = [t for t, _, _ in self.dht.calls]
        self.assertLessEqual(starts[-1], n / rate + 1)
        most = 0
        j = 0
        for i, t in enumerate(starts):
            while starts[j] <= t - 10:
                j += 1
            most = max(most, i - j + 1)
        self.assertLessEqual(most, rate * 10 + concurrent)
        self.assertGreaterEqual(most, rate * 10)  # the rate is what limited it
        self.assertEqual(self.announcer.announced, n)
        self.assertEqual(self.announcer.hash_queue_size(), 0)

    def test_concurrency_bound(self) -> None:
        """
        When announcements are slow, the number in flight is what limits the
        pace: C{max_concurrent} every C{delay} seconds.
        """
        self.start(make_streams(10, 100), delay=2.0, rate=100.0, max_concurrent=4)
        run(self.clock, 99)
        self.assertEqual(self.dht.max_in_flight, 4)
        self.assertEqual(len(self.dht.calls), 4 * 50)

    def test_reannounced_before_expiry(self) -> None:
        """
        Over 30 hours, every blob is announced again before 24 hours have
        passed since it was last stored, about every 11 to 12 hours, and the
        re-announcements are spread rather than bunched.
        """
        self.start(make_streams(20, 100), scan_interval=600.0)
        run(self.clock, 30 * HOUR)

        stored: dict[str, list[float]] = {}
        for t, name in self.dht.stored:
            stored.setdefault(name, []).append(t)
        self.assertEqual(len(stored), 2000)
        end = self.clock.seconds()
        gaps = []
        for times in stored.values():
            self.assertGreaterEqual(len(times), 3)
            for before, after in pairwise(times):
                gaps.append(after - before)
            self.assertLess(end - times[-1], DATA_EXPIRATION)
        self.assertLess(max(gaps), DATA_EXPIRATION - HOUR)
        self.assertLessEqual(max(gaps), 12 * HOUR + 60)
        self.assertGreaterEqual(min(gaps), 0.9 * 12 * HOUR)
        self.assertGreater(max(gaps) - min(gaps), HOUR)  # jitter spreads them
        self.assertEqual(self.announcer.failed, 0)

    def test_report(self) -> None:
        """
        Once every blob due is announced, the log says how many were, at
        most once an hour.
        """
        streams = make_streams(1, 10)
        with capturedLogs() as events:
            self.start(streams, reannounce_interval=2 * HOUR)
            run(self.clock, 20)
            streams.append((h(100), [h(101)]))
            run(self.clock, 1.5 * HOUR)
            reports = [formatEvent(e) for e in events if e["log_level"] == LogLevel.info]
            self.assertEqual(reports, ["Announced 10 blob(s) on the DHT (0 failed, to be "
                                       "retried); none is waiting"])
            run(self.clock, 1.5 * HOUR)
        reports = [e for e in events if e["log_level"] == LogLevel.info]
        self.assertEqual(len(reports), 2)
        # the 2 blobs added, and at least the first re-announced
        self.assertGreaterEqual(reports[1]["count"], 3)

    def test_hash_queue_size(self) -> None:
        """
        L{Announcer.hash_queue_size} counts announcements due and not yet
        sent: not those in flight, not those due later.
        """
        announcer = self.start(make_streams(1, 100), delay=5.0, rate=1.0, max_concurrent=2)
        self.assertEqual(len(self.dht.calls), 2)
        self.assertEqual(announcer.hash_queue_size(), 98)
        run(self.clock, 100)
        # 2 every 5 s, as the concurrency allows
        self.assertEqual(announcer.hash_queue_size(), 100 - 2 * 21)
        run(self.clock, 200)
        self.assertEqual(announcer.hash_queue_size(), 0)
        self.assertEqual(len(announcer._due), 100)  # all due again later

    def test_status(self) -> None:
        """
        L{Announcer.status} says what the announcer is doing.
        """
        announcer = self.make(make_streams(1, 10), delay=1.0)
        self.assertEqual(announcer.status()["blocked"], "announcing is stopped")
        announcer.startService()
        self.addCleanup(self.stop)
        run(self.clock, 0.5)
        status = announcer.status()
        self.assertEqual(status["policy"], "all")
        self.assertIs(status["announcing"], True)
        self.assertIsNone(status["blocked"])
        self.assertEqual(status["held"], 10)
        self.assertEqual(status["in_flight"], 4)
        self.assertEqual(status["due"], 6)
        self.assertIsNone(status["last_announce"])
        run(self.clock, 10)
        status = announcer.status()
        self.assertEqual((status["announced"], status["failed"]), (10, 0))
        self.assertEqual(status["last_announce"], self.dht.calls[-1][0] + 1.0)
        self.reachable = False
        self.assertIn("unreachable", announcer.status()["blocked"])


class PolicyTests(AnnouncerTestsMixin, SynchronousTestCase):
    def sample_streams(self) -> Streams:
        streams = make_streams(5, 6)
        # published streams list their sd blob first
        sd, data = streams[1]
        streams[1] = (sd, [sd, *data])
        streams.append((h(1000), []))  # a stream with no data blob
        return streams

    def test_all(self) -> None:
        """
        Policy C{"all"} announces every blob once, sd blobs and first data
        blobs before the rest, which follow in stream order; an sd hash
        listed among the data blobs is not announced twice.
        """
        streams = self.sample_streams()
        self.start(streams, rate=1000.0, max_concurrent=1000)
        run(self.clock, 5)
        names = self.dht.announced()
        self.assertEqual(len(names), len(set(names)))
        expected_heads = []
        for sd, data in streams:
            expected_heads.append(sd)
            rest = [b for b in data if b != sd]
            if rest:
                expected_heads.append(rest[0])
        self.assertEqual(names[: len(expected_heads)], expected_heads)
        expected_rest = [b for sd, data in streams for b in [x for x in data if x != sd][1:]]
        self.assertEqual(names[len(expected_heads) :], expected_rest)
        self.assertIn(h(1000), names)

    def test_head(self) -> None:
        """
        Policy C{"head"} announces exactly the sd blob and the first data
        blob of each stream.
        """
        streams = self.sample_streams()
        self.start(streams, policy="head")
        run(self.clock, 3 * HOUR)
        expected = {h(s * 6) for s in range(5)} | {h(s * 6 + 1) for s in range(5)} | {h(1000)}
        self.assertEqual(set(self.dht.announced()), expected)
        self.assertEqual(len(self.dht.calls), len(expected))


class BlockedTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_unreachable(self) -> None:
        """
        An unreachable node announces nothing, and says why once; once it
        is reachable it announces.
        """
        announcer = self.make(make_streams(2, 10))
        self.reachable = False
        with capturedLogs() as events:
            announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, 2 * HOUR)
        self.assertEqual(self.dht.calls, [])
        self.assertEqual(announcer.hash_queue_size(), 20)
        infos = [
            formatEvent(e) for e in events
            if e["log_level"] == LogLevel.info and "Not announcing" in formatEvent(e)
        ]
        self.assertEqual(len(infos), 1)
        self.assertIn("unreachable", infos[0])
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

        self.reachable = True
        run(self.clock, 1)
        self.assertEqual(len(self.dht.calls), 4)
        run(self.clock, 60)
        self.assertEqual(len(set(self.dht.announced())), 20)

    def test_unreachable_immediate(self) -> None:
        """
        C{immediate_announce} fails with L{NotAnnouncingError} on an
        unreachable node, and a request that waits fails when the node
        becomes unreachable.
        """
        announcer = self.start([])
        self.dht.joined = False
        waiting = announcer.immediate_announce([h(1)])
        self.reachable = False
        error = self.failureResultOf(announcer.immediate_announce([h(2)]), NotAnnouncingError)
        self.assertIn("unreachable", str(error.value))
        self.assertNoResult(waiting)
        run(self.clock, 1)
        self.failureResultOf(waiting, NotAnnouncingError)
        self.assertEqual(self.dht.calls, [])

    def test_waits_for_join_and_port(self) -> None:
        """
        Nothing is announced while the DHT is not joined or while the peer
        server is not listening; then announcements use the server's port.
        """
        self.make(make_streams(1, 5), delay=1.0)
        self.dht.joined = False
        self.port = None
        self.announcer.startService()
        self.addCleanup(self.stop)
        run(self.clock, 600)
        self.assertEqual(self.dht.calls, [])
        self.dht.joined = True
        run(self.clock, 600)
        self.assertEqual(self.dht.calls, [])
        self.port = 4567
        run(self.clock, 1)
        self.assertEqual(len(self.dht.calls), 4)
        self.dht.joined = False
        run(self.clock, 600)
        self.assertEqual(len(self.dht.calls), 4)
        self.dht.joined = True
        run(self.clock, 2)
        self.assertEqual(len(self.dht.calls), 5)
        self.assertEqual({port for _, _, port in self.dht.calls}, {4567})


class FailureTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_backoff(self) -> None:
        """
        A failed announcement (an error, or no node storing us) is retried
        after 60 seconds, then after twice as long each time up to an hour;
        the others go on, and once it succeeds it is announced again at the
        usual interval.  Nothing is logged above debug.
        """
        bad, empty = h(3), h(5)
        failing = {bad, empty}

        def outcome(name: str) -> int:
            if name == bad and name in failing:
                raise RPCTimeoutError("no answer")
            return 0 if name in failing else 3

        self.make(make_streams(1, 10), delay=1.0)
        self.dht.outcome = outcome
        with capturedLogs() as events:
            self.announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, 5 * HOUR)
            failing.clear()
            run(self.clock, 3 * HOUR)
        for name in (bad, empty):
            starts = [t for t, n, _ in self.dht.calls if n == name]
            gaps = [b - a - 1.0 for a, b in pairwise(starts)]
            # 60, 120, ..., 1920, then 3600 until 5 h; then success and
            # the re-announcement is 12 h away
            self.assertEqual(
                [round(g) for g in gaps[:7]], [60, 120, 240, 480, 960, 1920, 3600]
            )
            self.assertEqual(set(round(g) for g in gaps[6:]), {3600})
            self.assertLess(starts[-1], 6 * HOUR)
        others = {n for _, n in self.dht.stored} - {bad, empty}
        self.assertEqual(len(others), 8)
        self.assertEqual(self.announcer.announced, 10)
        self.assertEqual(self.announcer.failed, len(self.dht.calls) - 10)
        retries = [e for e in events if "retrying in" in formatEvent(e)]
        self.assertEqual(len(retries), self.announcer.failed)
        self.assertEqual({e["log_level"] for e in retries}, {LogLevel.debug})
        self.assertTrue(any("RPCTimeoutError: no answer" in formatEvent(e) for e in retries))
        self.assertTrue(any("No DHT node stored" in formatEvent(e) for e in retries))
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_timeout(self) -> None:
        """
        An announcement that does not end within L{ANNOUNCE_TIMEOUT} is
        given up, freeing its slot, and retried like a failed one.
        """
        self.make(make_streams(1, 3), delay=1.0, max_concurrent=1)
        self.dht.hang = True
        with capturedLogs() as events:
            self.announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, ANNOUNCE_TIMEOUT - 1)
            self.assertEqual(len(self.dht.calls), 1)
            self.dht.hang = False
            run(self.clock, 2.5)
        self.assertEqual([t for t, _, _ in self.dht.calls], [0, ANNOUNCE_TIMEOUT, ANNOUNCE_TIMEOUT + 1])
        self.assertEqual(self.announcer.failed, 1)
        self.assertTrue(any("TimeoutError" in formatEvent(e) for e in events))
        run(self.clock, 120)
        self.assertEqual([n for _, n, _ in self.dht.calls], [h(0), h(1), h(2), h(0)])
        self.assertEqual(self.dht.calls[-1][0], ANNOUNCE_TIMEOUT + 60)
        self.assertEqual(self.dht.in_flight, 0)
        self.assertEqual(self.announcer.announced, 3)

    def test_holdings_error(self) -> None:
        """
        While the holdings cannot be read (the store is not started), the
        schedule is kept and the next scan tries again.
        """
        streams = make_streams(1, 3)
        readable = [False]

        def holdings() -> Streams:
            if not readable[0]:
                raise StorageError("the blob store is not started")
            return streams

        self.make([], scan_interval=60.0)
        self.announcer._holdings = holdings
        with capturedLogs() as events:
            self.announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, 90)
        cannot = [e for e in events if "Cannot list" in formatEvent(e)]
        self.assertEqual(len(cannot), 1)  # two scans failed, one message
        self.assertEqual(self.dht.calls, [])
        readable[0] = True
        run(self.clock, 31)
        self.assertEqual(len(self.dht.calls), 3)
        readable[0] = False
        run(self.clock, 60)
        self.assertEqual(len(self.announcer._due), 3)  # not dropped

    def test_scan_now(self) -> None:
        """
        C{scan} reads the holdings at once, for instance when the blob store
        opens after the announcer started.
        """
        streams: Streams = []
        self.start(streams, scan_interval=600.0)
        run(self.clock, 10)
        streams.extend(make_streams(1, 3))
        self.announcer.scan()
        run(self.clock, 1)
        self.assertEqual(len(self.dht.calls), 3)

    def test_overdue_warning(self) -> None:
        """
        When the oldest due blob has waited more than an hour, a warning says
        how many are overdue and what to change, at most once an hour.
        """
        self.make(make_streams(1, 5000), delay=0.5, rate=0.5, max_concurrent=1)
        with capturedLogs() as events:
            self.announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, HOUR + 30)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(warnings, [])
            run(self.clock, 60)
            run(self.clock, HOUR - 120)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1)
            run(self.clock, 120)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        first = warnings[0]
        self.assertGreater(first["count"], 1000)
        text = formatEvent(first)
        self.assertIn(f"{first['count']} blob announcements are overdue", text)
        self.assertIn("--announce head", text)
        self.assertIn("--announce-rate", text)


class ScheduleTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_streams_added_and_removed(self) -> None:
        """
        A stream added to the holdings is announced after the next scan; a
        stream removed is no longer announced again.
        """
        first, second = make_streams(2, 5)
        streams = [first]
        self.start(streams, scan_interval=60.0, reannounce_interval=600.0)
        run(self.clock, 30)
        streams.append(second)
        run(self.clock, 20)
        second_hashes = {second[0], *second[1]}
        self.assertFalse(second_hashes & set(self.dht.announced()))
        run(self.clock, 15)
        self.assertEqual(set(self.dht.announced()), {first[0], *first[1]} | second_hashes)

        streams.remove(first)
        removed_at = self.clock.seconds()
        run(self.clock, 3000)
        first_hashes = {first[0], *first[1]}
        late = {n for t, n, _ in self.dht.calls if t > removed_at + 60 and n in first_hashes}
        self.assertEqual(late, set())
        still = {n for t, n, _ in self.dht.calls if t > removed_at + 2000}
        self.assertEqual(still, second_hashes)

    def test_removed_while_in_flight(self) -> None:
        """
        Blobs of a stream removed while their announcements are in flight
        are not scheduled again when those end.
        """
        streams = make_streams(1, 6)
        self.start(streams, delay=100.0, reannounce_interval=600.0, scan_interval=60.0)
        streams.pop()
        run(self.clock, 3000)
        self.assertEqual(len(self.dht.calls), 4)
        self.assertEqual(self.announcer.announced, 4)
        self.assertEqual(self.announcer._due, {})

    def test_announce_soon(self) -> None:
        """
        C{announce_soon} puts blobs ahead of everything already due; a blob
        no stream lists is announced too, and again for one re-announcement
        interval, then dropped.
        """
        stray = h(99_999)
        streams = make_streams(1, 1000)
        self.start(streams, rate=1.0, max_concurrent=1, reannounce_interval=3000.0)
        run(self.clock, 10)
        before = len(self.dht.calls)
        self.announcer.announce_soon([streams[0][1][-1], stray])
        run(self.clock, 2.5)
        self.assertEqual(
            self.dht.announced()[before : before + 2], [streams[0][1][-1], stray]
        )
        run(self.clock, 3 * 3000.0)
        stray_starts = [t for t, n, _ in self.dht.calls if n == stray]
        self.assertGreaterEqual(len(stray_starts), 1)
        self.assertLess(stray_starts[-1], 3000.0 + 3000.0)
        with self.assertRaises(InvalidBlobHashError):
            self.announcer.announce_soon(["not a hash"])

    def test_immediate_announce(self) -> None:
        """
        C{immediate_announce} goes ahead of the blobs already due and fires,
        once they are announced, with the number of nodes that stored each.
        """
        streams = make_streams(1, 1000)
        self.start(streams, delay=2.0, rate=1.0, max_concurrent=1)
        run(self.clock, 10)
        self.dht.outcome = lambda name: 0 if name == h(50_001) else 5
        d = self.announcer.immediate_announce([h(50_000), h(50_001), h(50_000)])
        self.assertNoResult(d)
        run(self.clock, 5)
        self.assertNoResult(d)
        run(self.clock, 10)
        self.assertEqual(self.successResultOf(d), {h(50_000): 5, h(50_001): 0})
        names = self.dht.announced()
        self.assertEqual(names.index(h(50_001)), names.index(h(50_000)) + 1)
        self.assertLess(names.index(h(50_000)), 10)
        self.assertEqual(self.successResultOf(self.announcer.immediate_announce([])), {})
        self.failureResultOf(
            self.announcer.immediate_announce(["nope"]), InvalidBlobHashError
        )

    def test_immediate_announce_cancel_and_stop(self) -> None:
        """
        A request can be cancelled; one still waiting when the announcer
        stops fails with L{NotAnnouncingError}, as does any later one.
        """
        self.start([])
        self.dht.joined = False
        cancelled = self.announcer.immediate_announce([h(1)])
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        waiting = self.announcer.immediate_announce([h(2)])
        self.announcer.stopService()
        self.failureResultOf(waiting, NotAnnouncingError)
        self.failureResultOf(self.announcer.immediate_announce([h(3)]), NotAnnouncingError)


class StopTests(AnnouncerTestsMixin, SynchronousTestCase):
    def test_stop(self) -> None:
        """
        C{stopService} leaves no delayed call of the announcer; the
        announcements in flight end later, failing or not, without starting
        others or raising.
        """
        announcer = self.start(make_streams(1, 100), delay=5.0)
        run(self.clock, 1)
        self.assertEqual(self.dht.in_flight, 4)
        self.dht.outcome = lambda name: 3 if name == h(0) else int("bad")
        announcer.stopService()
        self.assertEqual(self.own_calls(), [])
        calls = len(self.dht.calls)
        run(self.clock, 3 * HOUR)
        self.assertEqual(self.dht.in_flight, 0)
        self.assertEqual(len(self.dht.calls), calls)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((announcer.announced, announcer.failed), (0, 0))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stop_while_waiting(self) -> None:
        """
        C{stopService} also cancels the wake-up set while waiting for the
        rate limit or for the DHT.
        """
        announcer = self.start(make_streams(1, 100), delay=0.5, rate=0.1)
        run(self.clock, 2)
        self.assertEqual(len(self.dht.calls), 4)
        self.assertEqual(len(self.own_calls()), 2)  # the scan, the next start
        announcer.stopService()
        self.assertEqual(self.own_calls(), [])

        self.dht.joined = False
        announcer.startService()
        run(self.clock, 2)
        self.assertEqual(len(self.own_calls()), 2)  # the scan, the next check
        announcer.stopService()
        self.assertEqual(self.own_calls(), [])
        self.assertEqual(len(self.dht.calls), 4)

    def test_restart_keeps_bound(self) -> None:
        """
        Started again while announcements of the first run are still in
        flight, the announcer counts them against its limit, and announces
        every blob.
        """
        announcer = self.start(make_streams(1, 20), delay=5.0)
        run(self.clock, 1)
        announcer.stopService()
        announcer.startService()
        run(self.clock, 1)
        self.assertEqual(self.dht.in_flight, 4)
        run(self.clock, 60)
        self.assertEqual(self.dht.max_in_flight, 4)
        self.assertEqual(len(set(self.dht.announced())), 20)


ONION = f"{onion_address(1)}:3333"


class OnionTests(AnnouncerTestsMixin, SynchronousTestCase):
    """
    A node with an onion service announces it with every blob; while its
    IP address is unreachable, it announces it only (to p2pblob nodes).
    """

    def test_reachable_with_onion(self) -> None:
        announcer = self.make(make_streams(1, 3))
        self.onion = ONION
        announcer.startService()
        self.addCleanup(self.stop)
        run(self.clock, 10)
        self.assertEqual(len(self.dht.calls), 3)
        self.assertEqual(self.dht.onions, [(ONION, False)] * 3)
        self.assertIsNone(announcer.status()["onion_only"])
        self.assertEqual(announcer.status()["onion"], ONION)

    def test_without_onion(self) -> None:
        """
        Without an onion service, announcements name none.
        """
        self.start(make_streams(1, 2))
        run(self.clock, 10)
        self.assertEqual(self.dht.onions, [(None, False)] * 2)

    def test_unreachable_with_onion(self) -> None:
        """
        Unreachable with an onion service: every blob is announced, onion
        only; the log and the status say so.
        """
        announcer = self.make(make_streams(2, 3))
        self.reachable, self.onion = False, ONION
        with capturedLogs() as events:
            announcer.startService()
            self.addCleanup(self.stop)
            run(self.clock, 10)
        self.assertEqual(len(set(self.dht.announced())), 6)
        self.assertEqual(set(self.dht.onions), {(ONION, True)})
        self.assertEqual(announcer.announced, 6)
        status = announcer.status()
        self.assertEqual((status["announcing"], status["blocked"], status["onion_only"]),
                         (True, None, ONION_ONLY))
        said = [formatEvent(e) for e in events if e["log_level"] == LogLevel.info]
        self.assertIn(f"Announcing blobs on the DHT by onion service only: {ONION_ONLY}", said)
        self.assertFalse([line for line in said if "Not announcing" in line])

    def test_unreachable_until_onion(self) -> None:
        """
        Unreachable and without an onion service, nothing is announced and
        the status says why; once the onion service is published, the
        blobs are announced, onion only.
        """
        announcer = self.make(make_streams(1, 2))
        self.reachable = False
        announcer.startService()
        self.addCleanup(self.stop)
        run(self.clock, HOUR)
        self.assertEqual(self.dht.calls, [])
        self.assertEqual(announcer.status()["blocked"], UNREACHABLE)
        self.assertIn("no onion service", announcer.status()["blocked"])
        self.failureResultOf(announcer.immediate_announce([h(0)]), NotAnnouncingError)
        self.onion = ONION
        run(self.clock, BLOCKED_POLL + 1)
        self.assertEqual(sorted(self.dht.announced()), [h(0), h(1)])
        self.assertEqual(set(self.dht.onions), {(ONION, True)})

    def test_immediate_announce_onion_only(self) -> None:
        announcer = self.start([])
        self.reachable, self.onion = False, ONION
        d = announcer.immediate_announce([h(5)])
        run(self.clock, 1)
        self.assertEqual(self.successResultOf(d), {h(5): 3})
        self.assertEqual(self.dht.onions, [(ONION, True)])


class RealDHTTests(SynchronousTestCase):
    def test_simulated_network(self) -> None:
        """
        On a real L{p2pblob.dht.node.DHTNode} (in a simulated network of 30
        nodes), the announcer's blobs are found by other nodes' lookups,
        and C{immediate_announce} reports how many nodes stored each.
        """
        network = build_network(30)
        nodes = list(network.nodes.values())
        ours, other = nodes[7], nodes[21]
        streams = make_streams(2, 3)
        announcer = Announcer(
            clock=network.clock, dht=ours, holdings=lambda: streams,
            tcp_port=lambda: TCP_PORT, rng=random.Random(3),
        )
        announcer.startService()
        self.addCleanup(announcer.stopService)
        network.run(30)
        self.assertEqual((announcer.announced, announcer.failed), (6, 0))
        lookup = other.find_value(bytes.fromhex(h(4)))
        network.run(30)
        self.assertIn(ours.node_id, [peer[6:] for peer in lookup.peers])

        d = announcer.immediate_announce([h(1)])
        network.run(30)
        self.assertGreaterEqual(self.successResultOf(d)[h(1)], 1)

    def test_onion_only_on_a_mixed_network(self) -> None:
        """
        On a simulated network where half the nodes answer as LBRY nodes
        do, an unreachable node with an onion service announces it to
        p2pblob nodes only: no node records its IP address, no LBRY node
        hears of it, and another p2pblob node's lookup finds the onion.
        Reachable, it is stored at the closest nodes, LBRY's included.
        """
        network = build_network(30, lbry=lambda number: number % 2 == 0)
        nodes = list(network.nodes.values())
        ours, other = nodes[7], nodes[21]
        reachable = [False]
        announcer = Announcer(
            clock=network.clock, dht=ours, holdings=lambda: make_streams(1, 3),
            tcp_port=lambda: TCP_PORT, reachable=lambda: reachable[0], onion=lambda: ONION,
            rng=random.Random(3),
        )
        announcer.startService()
        self.addCleanup(announcer.stopService)
        network.run(30)
        self.assertEqual((announcer.announced, announcer.failed), (3, 0))
        self.assertEqual(announcer.status()["onion_only"], ONION_ONLY)
        key = bytes.fromhex(h(1))
        holders = [node for node in nodes if node.protocol.onions.onions_for(key)]
        self.assertTrue(holders)
        self.assertFalse([n for n in holders if isinstance(n.protocol, LBRYLikeProtocol)])
        self.assertFalse([n for n in nodes if n.protocol.peers.peers_for(key)])
        found: list[bytes] = []
        other.find_value(key, on_onions=found.extend)
        network.run(30)
        self.assertEqual(found, [ONION.encode()])

        reachable[0] = True
        d = announcer.immediate_announce([h(1)])
        network.run(30)
        self.assertGreaterEqual(self.successResultOf(d)[h(1)], 1)
        listing = [n for n in nodes if n.protocol.peers.peers_for(key)]
        self.assertTrue([n for n in listing if isinstance(n.protocol, LBRYLikeProtocol)])
        self.assertEqual({p[6:] for n in listing for p in n.protocol.peers.peers_for(key)},
                         {ours.node_id})
