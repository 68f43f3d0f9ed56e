"""
Tests for L{p2pblob.ratelimit}, L{p2pblob.traffic} and
L{p2pblob.peer._pausing}, on a L{Clock}.

The accuracy and fairness tests simulate the reactor: at every millisecond
each connection whose transport is reading, and whose socket holds bytes,
reads up to C{read_size} of them (all the ready connections are read in one
iteration, even if the limiter throttles one of them half-way through, as a
real reactor does), then the clock moves on and each peer tops its socket
up at the rate it can send.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import IService
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from p2pblob.config import Config, parse_rate
from p2pblob.errors import ConfigError
from p2pblob.interfaces import IConnectionRateLimiter, IRateLimited, IRateLimiter
from p2pblob.node import make_node
from p2pblob.peer._pausing import ReadingPauses
from p2pblob.ratelimit import BURST, ConnectionMeter, RateLimiter
from p2pblob.traffic import Traffic, TrafficCounters
from tests.integration._ratelimit import windows

MB = 1_000_000
KiB = 1024
BLOB = "b" * 96
SD = "5" * 96


@implementer(IRateLimited)
class FakeConnection:
    """
    A connection that records what the limiter tells it.  As a simulated
    download, it has a socket that its peer fills at C{supply} bytes a
    second (L{None}: as fast as it is read) up to C{buffer} bytes, and from
    which it reads C{read_size} bytes at a time.

    @ivar calls: the limiter's calls, in order.
    """

    def __init__(
        self, read_size: int = 256 * KiB, supply: float | None = None, buffer: int = 4 * 1024 * KiB
    ) -> None:
        self.calls: list[str] = []
        self.upload_paused = False
        self.download_paused = False
        self.read_size = read_size
        self.supply = supply
        self.buffer = buffer
        self.available = float(buffer if supply is None else 0)
        self.moved = 0

    def throttle_upload(self) -> None:
        self.calls.append("throttle_upload")
        self.upload_paused = True

    def unthrottle_upload(self) -> None:
        self.calls.append("unthrottle_upload")
        self.upload_paused = False

    def throttle_download(self) -> None:
        self.calls.append("throttle_download")
        self.download_paused = True

    def unthrottle_download(self) -> None:
        self.calls.append("unthrottle_download")
        self.download_paused = False

    def calls_for(self, direction: str) -> list[str]:
        return [call for call in self.calls if call.endswith(direction)]


verifyClass(IRateLimited, FakeConnection)


@implementer(IRateLimited)
class EagerUploader(FakeConnection):
    """
    An upload that writes a chunk the moment it is unthrottled, from
    inside the limiter's call (as an L{UploadChannel} resuming a blob
    producer does), until it is throttled again or has written C{burst}
    chunks.
    """

    def __init__(self, limiter: RateLimiter, chunk: int, burst: int = 4) -> None:
        super().__init__()
        self.limiter = limiter
        self.chunk = chunk
        self.burst = burst

    def unthrottle_upload(self) -> None:
        super().unthrottle_upload()
        for _ in range(self.burst):
            if self.upload_paused:
                break
            self.write()

    def write(self) -> None:
        self.moved += self.chunk
        self.limiter.report_ul_bytes_to(self, self.chunk)


verifyClass(IRateLimited, EagerUploader)


@implementer(IRateLimiter)
class SeedLimiter:
    """
    A limiter with only the 2015 interface.
    """

    def __init__(self) -> None:
        self.down: list[int] = []
        self.up: list[int] = []
        self.registered: list[IRateLimited] = []

    def report_dl_bytes(self, num_bytes: int) -> None:
        self.down.append(num_bytes)

    def report_ul_bytes(self, num_bytes: int) -> None:
        self.up.append(num_bytes)

    def register_protocol(self, protocol: IRateLimited) -> None:
        self.registered.append(protocol)

    def unregister_protocol(self, protocol: IRateLimited) -> None:
        self.registered.remove(protocol)


verifyClass(IRateLimiter, SeedLimiter)


def download(
    clock: Clock,
    limiter: RateLimiter,
    connections: list[FakeConnection],
    seconds: float,
    step: float = 0.001,
    sample_every: int = 10,
) -> list[tuple[float, list[int]]]:
    """
    Run simulated downloads for C{seconds}; return C{(time, bytes read by
    each connection)} samples.
    """
    samples = [(clock.seconds(), [c.moved for c in connections])]
    for i in range(1, round(seconds / step) + 1):
        ready = [c for c in connections if not c.download_paused and c.available >= 1]
        for c in ready:
            n = int(min(c.read_size, c.available))
            c.available -= n
            c.moved += n
            limiter.report_dl_bytes_from(c, n)
        clock.advance(step)
        for c in connections:
            supply = c.buffer if c.supply is None else c.supply * step
            c.available = min(float(c.buffer), c.available + supply)
        if i % sample_every == 0:
            samples.append((clock.seconds(), [c.moved for c in connections]))
    return samples


class _Near(SynchronousTestCase):
    def assertNear(
        self, first: float, second: float, delta: float, msg: str | None = None
    ) -> None:
        """
        Fail unless C{first} is within C{delta} of C{second}.
        """
        if not abs(first - second) <= delta:
            self.fail(f"{first!r} is not within {delta!r} of {second!r}" + (f": {msg}" if msg else ""))


def alternating(calls: list[str]) -> bool:
    """
    Whether C{calls} (of one direction) alternate throttle / unthrottle,
    beginning with throttle.
    """
    return all(call.startswith("un") == (i % 2 == 1) for i, call in enumerate(calls))


class InterfaceTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """
        L{RateLimiter} provides L{IConnectionRateLimiter} (and so
        L{IRateLimiter}) and L{IService}.
        """
        limiter = RateLimiter(Clock())
        self.assertTrue(verifyObject(IConnectionRateLimiter, limiter))
        self.assertTrue(verifyObject(IRateLimiter, limiter))
        self.assertTrue(verifyObject(IService, limiter))
        self.assertTrue(verifyObject(IRateLimited, FakeConnection()))

    def test_bad_limits(self) -> None:
        """
        A limit is positive, or L{None}.
        """
        limiter = RateLimiter(Clock())
        for bad in (0, -1, 0.0):
            with self.assertRaises(ValueError):
                limiter.max_download = bad
            with self.assertRaises(ValueError):
                limiter.max_upload_per_connection = bad
        with self.assertRaises(ValueError):
            RateLimiter(Clock(), max_upload=0)

    def test_register_twice(self) -> None:
        limiter = RateLimiter(Clock())
        connection = FakeConnection()
        limiter.register_protocol(connection)
        with self.assertRaises(ValueError):
            limiter.register_connection(connection, "192.0.2.1")
        self.assertEqual(limiter.connections, 1)


class UnlimitedTests(SynchronousTestCase):
    def test_counts_only(self) -> None:
        """
        Without limits the limiter counts, throttles nothing and sets no
        timer.
        """
        clock = Clock()
        limiter = RateLimiter(clock)
        connection = FakeConnection()
        limiter.register_connection(connection, "192.0.2.1")
        for _ in range(100):
            limiter.report_dl_bytes_from(connection, 10 * MB)
            limiter.report_ul_bytes_to(connection, 5 * MB)
        limiter.report_dl_bytes(7)
        limiter.report_ul_bytes(3)
        self.assertEqual(connection.calls, [])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((limiter.downloaded, limiter.uploaded), (1000 * MB + 7, 500 * MB + 3))
        self.assertEqual(limiter.counters.by_peer(), {"192.0.2.1": Traffic(500 * MB, 1000 * MB)})

    def test_limit_in_other_direction(self) -> None:
        """
        A limit on uploads leaves downloads alone.
        """
        clock = Clock()
        limiter = RateLimiter(clock, max_upload=1000)
        connection = FakeConnection()
        limiter.register_protocol(connection)
        limiter.report_dl_bytes_from(connection, 10 * MB)
        self.assertEqual(connection.calls, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class ThrottlingTests(_Near):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, max_download=1000)
        self.a = FakeConnection()
        self.limiter.register_connection(self.a, "192.0.2.1")

    def test_under_the_limit(self) -> None:
        """
        Traffic the tokens cover throttles nothing and sets no timer.
        """
        for _ in range(50):
            self.clock.advance(0.1)
            self.limiter.report_dl_bytes_from(self.a, 90)
        self.assertEqual(self.a.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_throttle_until_paid(self) -> None:
        """
        Bytes beyond the tokens throttle the connection until the debt is
        paid at the limit's rate, then it goes on; then no timer is left.
        """
        self.limiter.report_dl_bytes_from(self.a, 500)
        self.assertEqual(self.a.calls, ["throttle_download"])
        self.assertEqual(self.limiter.throttled_downloads, 1)
        self.clock.advance(0.499)
        self.assertTrue(self.a.download_paused)
        self.clock.advance(0.002)
        self.assertEqual(self.a.calls, ["throttle_download", "unthrottle_download"])
        self.assertEqual(self.limiter.throttled_downloads, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_anonymous_reports(self) -> None:
        """
        Bytes reported with the 2015 interface count against the node's
        rate and throttle every connection.
        """
        self.limiter.report_dl_bytes(2000)
        self.assertTrue(self.a.download_paused)
        self.clock.advance(2.01)
        self.assertFalse(self.a.download_paused)

    def test_unregistered_reports(self) -> None:
        """
        Bytes reported for a connection that is not registered count for
        the node, not for any peer.
        """
        stranger = FakeConnection()
        self.limiter.report_dl_bytes_from(stranger, 2000)
        self.limiter.report_ul_bytes_to(stranger, 20)
        self.assertEqual(stranger.calls, [])
        self.assertTrue(self.a.download_paused)
        self.assertEqual((self.limiter.downloaded, self.limiter.uploaded), (2000, 20))
        self.assertEqual(self.limiter.counters.by_peer(), {})

    def test_register_while_throttling(self) -> None:
        """
        A connection registered while others wait in line is throttled at
        once and waits its turn behind them.
        """
        self.limiter.max_download = 100_000
        self.limiter.report_dl_bytes_from(self.a, 50_000)
        b = FakeConnection()
        self.limiter.register_protocol(b)
        self.assertEqual(b.calls, ["throttle_download"])
        self.assertEqual(b.calls_for("upload"), [])
        # when the debt is paid, b goes first, having moved nothing; it is
        # reckoned to read 64 KiB, which the tokens do not cover: a waits
        # for them
        self.clock.advance(0.501)
        self.assertEqual((self.a.download_paused, b.download_paused), (True, False))
        self.clock.advance(64 * KiB / 100_000)
        self.assertFalse(self.a.download_paused)

    def test_register_in_debt(self) -> None:
        """
        A connection registered while the bucket is in debt (from
        anonymous reports, with nobody to throttle) is throttled at once.
        """
        limiter = RateLimiter(self.clock, max_upload=1000)
        limiter.report_ul_bytes(3000)
        b = FakeConnection()
        limiter.register_protocol(b)
        self.assertEqual(b.calls, ["throttle_upload"])
        self.clock.advance(3.01)
        self.assertEqual(b.calls, ["throttle_upload", "unthrottle_upload"])

    def test_unregister(self) -> None:
        """
        An unregistered connection is told nothing more, and the timer
        goes once nobody waits.
        """
        self.limiter.report_dl_bytes_from(self.a, 5000)
        self.limiter.unregister_protocol(self.a)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.a.calls, ["throttle_download"])
        self.limiter.unregister_protocol(self.a)  # twice: nothing
        self.assertEqual(self.limiter.connections, 0)

    def test_unregister_one_of_two(self) -> None:
        b = FakeConnection()
        self.limiter.register_protocol(b)
        self.limiter.report_dl_bytes_from(self.a, 1000)
        self.limiter.unregister_protocol(self.a)
        self.clock.advance(1.01)
        self.assertEqual(b.calls, ["throttle_download", "unthrottle_download"])
        self.assertEqual(self.a.calls, ["throttle_download"])

    def test_calls_alternate(self) -> None:
        """
        However the traffic and the limits go, each connection is told
        throttle and unthrottle alternately, throttle first.
        """
        b = FakeConnection(read_size=700)
        self.limiter.register_connection(b, "192.0.2.2")
        self.limiter.max_upload = 800
        self.limiter.max_download_per_connection = 600
        uploads = [EagerUploader(self.limiter, 300), EagerUploader(self.limiter, 2000)]
        for uploader in uploads:
            self.limiter.register_protocol(uploader)
        download(self.clock, self.limiter, [self.a, b], 5)
        self.limiter.max_download = 300
        self.limiter.max_upload_per_connection = 200
        for uploader in uploads:
            uploader.write()
        download(self.clock, self.limiter, [self.a, b], 5)
        self.limiter.max_download = None
        self.limiter.max_download_per_connection = None
        download(self.clock, self.limiter, [self.a, b], 1)
        for connection in [self.a, b, *uploads]:
            for direction in ("upload", "download"):
                calls = connection.calls_for(direction)
                self.assertTrue(alternating(calls), (connection, direction, calls))
        self.assertFalse(self.a.download_paused or b.download_paused)

    def test_failing_protocol(self) -> None:
        """
        A connection that raises when throttled is logged; the others are
        throttled all the same.
        """
        def broken() -> None:
            raise RuntimeError("no")

        b = FakeConnection()
        b.throttle_download = broken  # type: ignore[method-assign]
        self.limiter.register_protocol(b)
        with capturedLogs() as events:
            self.limiter.report_dl_bytes_from(b, 5000)
        self.assertTrue(self.a.download_paused)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.critical])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_service(self) -> None:
        """
        Stopping the service cancels its timers.
        """
        self.limiter.startService()
        self.limiter.max_download_per_connection = 100
        self.limiter.report_dl_bytes_from(self.a, 5000)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.limiter.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ChangingLimitsTests(_Near):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock)
        self.connections = [FakeConnection() for _ in range(3)]
        for c in self.connections:
            self.limiter.register_protocol(c)

    def rate(self, seconds: float) -> float:
        samples = download(self.clock, self.limiter, self.connections, seconds)
        return sum(samples[-1][1]) - sum(samples[0][1])

    def test_set_and_clear(self) -> None:
        """
        A limit set while running applies from then on; cleared, every
        connection goes on at once and no timer is left.
        """
        self.assertGreater(self.rate(1), 100 * MB)
        self.limiter.max_download = 1 * MB
        self.assertNear(self.rate(10) / 10, 1 * MB, delta=0.05 * MB)
        self.limiter.max_download = None
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(any(c.download_paused for c in self.connections))
        self.assertGreater(self.rate(1), 100 * MB)

    def test_lower_and_raise(self) -> None:
        """
        Lowering or raising a limit while connections are held takes
        effect at once.
        """
        self.limiter.max_download = 10 * MB
        self.rate(2)
        self.limiter.max_download = 1 * MB
        self.assertNear(self.rate(10) / 10, 1 * MB, delta=0.05 * MB)
        self.limiter.max_download = 20 * MB
        self.assertNear(self.rate(10) / 10, 20 * MB, delta=1 * MB)

    def test_per_connection_set_and_clear(self) -> None:
        self.limiter.max_download_per_connection = 1 * MB
        self.rate(1)
        self.assertNear(self.rate(10) / 10, 3 * MB, delta=0.15 * MB)
        self.limiter.max_download_per_connection = 2 * MB
        self.assertNear(self.rate(10) / 10, 6 * MB, delta=0.3 * MB)
        self.limiter.max_download_per_connection = None
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(any(c.download_paused for c in self.connections))


class AccuracyTests(_Near):
    """
    Every 10-second window after the first second moves the limit's bytes
    within 5%, with four connections reading 256 KiB at a time; and each
    connection gets at least 15% of the limit.
    """

    def check(self, limit: float, connections: list[FakeConnection], seconds: float = 21) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, max_download=limit)
        for c in connections:
            limiter.register_protocol(c)
        samples = download(clock, limiter, connections, seconds)
        checked = 0
        for start, rates in windows(samples):
            checked += 1
            total = sum(rates)
            self.assertNear(total / limit, 1.0, delta=0.05, msg=f"window at {start:.2f} s")
            for rate in rates:
                self.assertGreaterEqual(rate / limit, 0.15, f"window at {start:.2f} s")
        self.assertGreater(checked, 900)
        # and in the long run, no more than the limit, a burst and a read
        moved = sum(samples[-1][1])
        self.assertLessEqual(moved, limit * (seconds + BURST) + 256 * KiB)

    def test_1_MB(self) -> None:
        self.check(1 * MB, [FakeConnection() for _ in range(4)])

    def test_10_MB(self) -> None:
        self.check(10 * MB, [FakeConnection() for _ in range(4)])

    def test_50_MB(self) -> None:
        self.check(50 * MB, [FakeConnection() for _ in range(4)])

    def test_uneven_reads(self) -> None:
        """
        Connections reading 64 KiB and 256 KiB at a time.
        """
        self.check(10 * MB, [FakeConnection(read_size=s * KiB) for s in (64, 256, 64, 256)])

    def test_slow_peer_not_starved(self) -> None:
        """
        A peer that sends slower than its share gets all it sends; the
        others share the rest.
        """
        clock = Clock()
        limiter = RateLimiter(clock, max_download=1 * MB)
        slow = FakeConnection(supply=100_000)
        fast = [FakeConnection() for _ in range(3)]
        for c in [slow, *fast]:
            limiter.register_protocol(c)
        samples = download(clock, limiter, [slow, *fast], 21)
        for start, rates in windows(samples):
            self.assertGreaterEqual(rates[0], 90_000, f"window at {start:.2f} s")
            for rate in rates[1:]:
                self.assertGreaterEqual(rate, 250_000, f"window at {start:.2f} s")
            self.assertNear(sum(rates) / MB, 1.0, delta=0.05)

    def test_uploads_writing_at_once(self) -> None:
        """
        Uploads that write from inside the limiter's unthrottle call keep
        to the limit too.
        """
        clock = Clock()
        limiter = RateLimiter(clock, max_upload=10 * MB)
        uploads = [EagerUploader(limiter, 256 * KiB) for _ in range(4)]
        for u in uploads:
            limiter.register_protocol(u)
        samples = [(0.0, [0] * 4)]
        for i in range(1, 21001):
            for u in uploads:
                if not u.upload_paused:
                    u.write()
            clock.advance(0.001)
            if i % 10 == 0:
                samples.append((clock.seconds(), [u.moved for u in uploads]))
        for start, rates in windows(samples):
            self.assertNear(sum(rates) / (10 * MB), 1.0, delta=0.05, msg=f"at {start:.2f}")
            for rate in rates:
                self.assertGreaterEqual(rate / (10 * MB), 0.15)


class PerConnectionTests(_Near):
    def test_own_limit(self) -> None:
        """
        Each connection keeps to its own limit; with no node limit the
        others are not held.
        """
        clock = Clock()
        limiter = RateLimiter(clock, max_download_per_connection=100_000)
        connections = [FakeConnection(read_size=16 * KiB), FakeConnection(supply=50_000)]
        for c in connections:
            limiter.register_protocol(c)
        samples = download(clock, limiter, connections, 12)
        for _, rates in windows(samples):
            self.assertNear(rates[0] / 100_000, 1.0, delta=0.05)
            self.assertNear(rates[1] / 50_000, 1.0, delta=0.05)
        self.assertFalse(connections[1].calls)

    def test_both_limits(self) -> None:
        """
        A connection moves only when neither its own bucket nor the node's
        holds it: with a node limit of 1 MB/s and 300 kB/s per connection,
        four connections get 250 kB/s each, three get 300 kB/s each.
        """
        clock = Clock()
        limiter = RateLimiter(clock, max_download=1 * MB, max_download_per_connection=300_000)
        connections = [FakeConnection(read_size=32 * KiB) for _ in range(4)]
        for c in connections:
            limiter.register_protocol(c)
        samples = download(clock, limiter, connections, 12)
        for _, rates in windows(samples):
            self.assertNear(sum(rates) / MB, 1.0, delta=0.05)
            for rate in rates:
                self.assertGreaterEqual(rate, 200_000)
                self.assertLessEqual(rate, 300_000 * 1.05)
        limiter.unregister_protocol(connections[0])
        samples = download(clock, limiter, connections[1:], 12)
        for _, rates in windows(samples):
            for rate in rates:
                self.assertNear(rate / 300_000, 1.0, delta=0.05)
        for c in connections:
            self.assertTrue(alternating(c.calls_for("download")), c.calls)


class CountersTests(SynchronousTestCase):
    def test_peers_and_streams(self) -> None:
        """
        Bytes are counted per peer as they are reported, and per stream
        for the blobs C{stream_of} knows.
        """
        streams = {BLOB: SD, SD: SD}
        limiter = RateLimiter(Clock(), counters=TrafficCounters(streams.get))
        a, b = FakeConnection(), FakeConnection()
        limiter.register_connection(a, "192.0.2.1")
        limiter.register_connection(b, "192.0.2.2")
        limiter.report_dl_bytes_from(a, 1000)
        limiter.report_ul_bytes_to(a, 10)
        limiter.report_ul_bytes_to(b, 2000)
        limiter.report_blob_bytes(a, BLOB, 0, 900)
        limiter.report_blob_bytes(b, SD, 1900, 0)
        limiter.report_blob_bytes(b, "c" * 96, 5, 0)
        self.assertEqual(
            limiter.counters.by_peer(),
            {"192.0.2.1": Traffic(up=10, down=1000), "192.0.2.2": Traffic(up=2000, down=0)},
        )
        self.assertEqual(limiter.counters.by_stream(), {SD: Traffic(up=1900, down=900)})
        self.assertEqual(limiter.counters.total, Traffic(up=2010, down=1000))

    def test_copies(self) -> None:
        counters = TrafficCounters()
        counters.add("h", "s", up=1, down=2)
        counters.by_peer()["h"].up = 100
        counters.by_stream()["s"].down = 100
        self.assertEqual(counters.by_peer(), {"h": Traffic(1, 2)})
        self.assertEqual(counters.by_stream(), {"s": Traffic(1, 2)})

    def test_no_stream_lookup(self) -> None:
        """
        Without C{stream_of}, nothing is counted per stream.
        """
        counters = TrafficCounters()
        counters.add_blob(BLOB, up=5)
        self.assertEqual(counters.by_stream(), {})

    def test_stream_lookup_fails(self) -> None:
        def broken(blob_hash: str) -> str | None:
            raise OSError("index closed")

        counters = TrafficCounters(broken)
        counters.add_blob(BLOB, up=5)
        self.assertEqual(counters.by_stream(), {})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class MeterTests(SynchronousTestCase):
    def test_connection_limiter(self) -> None:
        """
        With an L{IConnectionRateLimiter}, the meter registers the
        connection under its peer and reports for it.
        """
        limiter = RateLimiter(Clock(), counters=TrafficCounters({BLOB: SD}.get))
        connection = FakeConnection()
        meter = ConnectionMeter(limiter, connection, "192.0.2.7")
        meter.received(100)
        meter.sent(7)
        meter.blob(BLOB, received=90)
        meter.blob(BLOB)
        self.assertEqual(limiter.counters.by_peer(), {"192.0.2.7": Traffic(7, 100)})
        self.assertEqual(limiter.counters.by_stream(), {SD: Traffic(0, 90)})
        meter.close()
        meter.close()
        self.assertEqual(limiter.connections, 0)

    def test_seed_limiter(self) -> None:
        """
        With a plain L{IRateLimiter}, the meter uses the 2015 calls.
        """
        limiter = SeedLimiter()
        connection = FakeConnection()
        meter = ConnectionMeter(limiter, connection, "192.0.2.7")
        self.assertEqual(limiter.registered, [connection])
        meter.received(100)
        meter.sent(7)
        meter.blob(BLOB, received=90)
        self.assertEqual((limiter.down, limiter.up), ([100], [7]))
        meter.close()
        meter.close()
        self.assertEqual(limiter.registered, [])


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


verifyClass(IPushProducer, _Producer)


class ReadingPausesTests(SynchronousTestCase):
    def test_two_reasons(self) -> None:
        """
        Reading resumes only when the last reason to pause is lifted.
        """
        producer = _Producer()
        pauses = ReadingPauses()
        pauses.attach(producer)
        pauses.pause("rate limit")
        pauses.pause("full")
        pauses.pause("full")
        pauses.resume("rate limit")
        self.assertEqual(producer.calls, ["pause"])
        self.assertTrue(pauses.paused)
        pauses.resume("full")
        pauses.resume("full")
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertFalse(pauses.paused)

    def test_attach_later_and_detach(self) -> None:
        """
        A reason given before the producer is attached applies when it is;
        once detached, the producer is left alone.
        """
        producer = _Producer()
        pauses = ReadingPauses()
        pauses.pause("rate limit")
        pauses.attach(producer)
        self.assertEqual(producer.calls, ["pause"])
        pauses.detach()
        pauses.resume("rate limit")
        self.assertEqual(producer.calls, ["pause"])


class ConfigTests(SynchronousTestCase):
    def test_parse_rate(self) -> None:
        self.assertEqual(parse_rate("10MB"), 10 * MB)
        self.assertEqual(parse_rate("1.5 MiB/s"), 1572864)
        for unlimited in ("0", "none", "unlimited", "0.0", "0MB/s"):
            self.assertIsNone(parse_rate(unlimited))
        for bad in ("fast", "-1", "0.5", "10 MB/min"):
            with self.assertRaises(ConfigError):
                parse_rate(bad, "max-upload")

    def test_positive(self) -> None:
        for field in (
            "max_upload", "max_download", "max_upload_per_connection",
            "max_download_per_connection",
        ):
            with self.assertRaises(ConfigError) as caught:
                Config(data_dir=Path(self.mktemp()), **{field: 0})  # type: ignore[arg-type]
            self.assertIn(field.replace("_", "-"), str(caught.exception))


class NodeTests(SynchronousTestCase):
    def test_node_limiter(self) -> None:
        """
        The node has one rate limiter, a child service with the configured
        limits, which its peer server's connections report to.
        """
        config = Config(
            data_dir=Path(self.mktemp()), dht=False, max_upload=2 * MB, max_download=3 * MB,
            max_upload_per_connection=400_000, max_download_per_connection=None,
        )
        node = make_node(MemoryReactorClock(), config)
        limiter = node.rate_limiter
        assert limiter is not None
        self.assertIs(node.getServiceNamed("rate-limiter"), limiter)
        self.assertEqual(
            (limiter.max_upload, limiter.max_download, limiter.max_upload_per_connection,
             limiter.max_download_per_connection),
            (2 * MB, 3 * MB, 400_000, None),
        )
        self.assertIs(node.peer_server.factory.rate_limiter, limiter)
