"""
Announcing on the DHT the blobs this node holds, spread over time.

The DHT forgets a stored peer 24 hours after it was stored
(L{p2pblob.dht.constants.DATA_EXPIRATION}), so every blob a node serves must
be announced again before then.  A node may hold 100,000 blobs: announcing
them all at once would flood the network and starve the node's own
downloads (LBRY's announcer did both, and fell behind).  The L{Announcer}
keeps a schedule instead, a heap of due times, and starts only what is due,
with at most C{max_concurrent} announcements in flight and at most C{rate}
started per second on average (a token bucket whose burst is
C{max_concurrent}).  Each step costs O(log n) per announcement started,
whatever the number of blobs held.

Which blobs are held is read from C{holdings()} at start and every
C{scan_interval} seconds (O(n) each time, on the reactor thread).  Blobs
named through L{Announcer.announce_soon} or L{Announcer.immediate_announce}
are announced, and announced again, for one C{reannounce_interval} after the
request even if no stream lists them; after that they are kept only if a
stream lists them.

The schedule lives in memory: after a restart every blob is announced again,
the sd blob and first data blob of every stream before the rest.

A node that serves as an onion service too announces its onion endpoint
with every blob (p2pblob nodes record it; LBRY nodes ignore it).  While
peers cannot reach its IP address, such a node still announces, its onion
endpoint only and to p2pblob nodes only (L{p2pblob.dht.node.DHTNode.announce});
a node that peers cannot reach and that has no onion service announces
nothing.

This module decides what to announce, when, and what to say about it.  The
machinery is elsewhere: the queue of due times and the token bucket in
L{p2pblob.discovery._schedule}, the announcements in flight in
L{p2pblob.discovery._flights}, whether announcing can go ahead in
L{p2pblob.discovery._gate}, the requests of C{immediate_announce} in
L{p2pblob.discovery._requests}, and the policies and the holdings of a blob
store in L{p2pblob.discovery.holdings}.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.blob.hashing import check_blob_hash, is_blob_hash
from p2pblob.dht.constants import DATA_EXPIRATION
from p2pblob.discovery._flights import Flights
from p2pblob.discovery._gate import ONION_ONLY, UNREACHABLE, Gate
from p2pblob.discovery._requests import AnnounceRequests
from p2pblob.discovery._schedule import DueQueue, TokenBucket
from p2pblob.discovery.holdings import POLICIES, blobs_to_announce
from p2pblob.errors import (
    ConfigError,
    InvalidBlobHashError,
    NotAnnouncingError,
    P2PBlobError,
)
from p2pblob.interfaces import IHashAnnouncer

if TYPE_CHECKING:
    from p2pblob.dht.node import DHTNode

__all__ = ["POLICIES", "AnnouncingDHT", "Announcer"]

_log = Logger()

HOUR = 3600.0

JITTER = 0.1
"""
A successful announcement is due again after C{reannounce_interval} less a
random part of up to this fraction of it, so that blobs announced together
drift apart.
"""

FIRST_RETRY = 60.0
MAX_RETRY = HOUR
"""
A failed announcement is retried after L{FIRST_RETRY} seconds, doubling at
each further failure up to L{MAX_RETRY}.
"""

ANNOUNCE_TIMEOUT = 300.0
"""
Seconds an announcement may take before it is given up (and retried later
like any failed one), so that a DHT call that never ends cannot hold one of
the C{max_concurrent} slots for ever.
"""

BLOCKED_POLL = 1.0
"""
Seconds between checks of whether announcing can resume, while the node is
unreachable, not listening or not joined to the DHT.
"""

OVERDUE = HOUR
"""
An announcement due for longer than this is overdue: a warning says so, at
most once per L{OVERDUE}.
"""


class AnnouncingDHT(Protocol):
    """
    What the announcer needs of the DHT: the shape of
    L{p2pblob.dht.node.DHTNode}.
    """

    @property
    def joined(self) -> bool:
        """
        Whether the node has joined the DHT (announcing before that is
        pointless).
        """

    def announce(
        self, blob_hash: bytes, tcp_port: int, onion: str | None = None, onion_only: bool = False
    ) -> Awaitable[int]:
        """
        Store this node, listening on TCP C{tcp_port} (and at onion
        endpoint C{onion}, C{"<address>.onion:<port>"}, if given), as a
        peer of C{blob_hash} at the closest DHT nodes; give at how many it
        was stored.  With C{onion_only}, store the onion endpoint only,
        and only at p2pblob nodes.
        """


if TYPE_CHECKING:

    def _dht_node_fits(node: DHTNode) -> AnnouncingDHT:
        return node


@implementer(IHashAnnouncer)
class Announcer(Service):
    """
    Announces the blobs of the streams this node holds, and announces them
    again before the DHT forgets them.

    @param clock: the clock that times everything.
    @param dht: where to announce.
    @param holdings: gives, for each stream held, its sd hash and its data
        blob hashes in stream order (a list that starts with the sd hash
        itself is accepted too).
    @param tcp_port: gives the TCP port of our peer server, or L{None} while
        it is not listening (nothing is announced then).
    @param reachable: says whether peers can connect to this node's IP
        address; while it says C{False}, only the onion endpoint is
        announced, if there is one, and nothing otherwise.
    @param onion: gives this node's onion endpoint
        (C{"<address>.onion:<port>"}) while its onion service is published,
        else L{None}.
    @param policy: C{"all"} or C{"head"} (see L{POLICIES}).
    @param max_concurrent: most announcements in flight at once.
    @param rate: most announcements started per second, on average.
    @param reannounce_interval: seconds after which a blob is announced
        again; under L{DATA_EXPIRATION}.
    @param scan_interval: seconds between readings of C{holdings}.
    @param rng: the source of the re-announcement jitter.

    @ivar announced: announcements that succeeded (at least one DHT node
        stored us) since the start.
    @ivar failed: announcements that failed or that no node stored.
    @ivar last_announce: the time of the last successful announcement, or
        L{None}.
    @raise ConfigError: if an argument is out of range, naming the option.
    """

    name = "announcer"

    def __init__(
        self,
        *,
        clock: IReactorTime,
        dht: AnnouncingDHT,
        holdings: Callable[[], Iterable[tuple[str, Sequence[str]]]],
        tcp_port: Callable[[], int | None],
        reachable: Callable[[], bool] = lambda: True,
        onion: Callable[[], str | None] = lambda: None,
        policy: str = "all",
        max_concurrent: int = 4,
        rate: float = 5.0,
        reannounce_interval: float = 12 * HOUR,
        scan_interval: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(
                f"announce: {policy!r} is not a policy (all, or head: the sd blob "
                "and the first data blob)"
            )
        if not rate > 0:
            raise ConfigError("announce-rate must be positive")
        if max_concurrent < 1:
            raise ConfigError("announce-concurrency must be at least 1")
        if not 0 < reannounce_interval < DATA_EXPIRATION:
            raise ConfigError(
                f"reannounce-interval must be positive and under {DATA_EXPIRATION} "
                "seconds, when the DHT forgets an announcement"
            )
        if not scan_interval > 0:
            raise ConfigError("announce-scan-interval must be positive")
        self._clock = clock
        self._dht = dht
        self._holdings = holdings
        self._tcp_port = tcp_port
        self._reachable = reachable
        self._onion = onion
        self.policy = policy
        self.max_concurrent = max_concurrent
        self._bucket = TokenBucket(rate, float(max_concurrent))
        self.reannounce_interval = reannounce_interval
        self.scan_interval = scan_interval
        self._rng = rng or random.Random()

        self.announced = 0
        self.failed = 0
        self.last_announce: float | None = None

        # the schedule: when each blob is due; urgent ones (asked for by
        # announce_soon and immediate_announce) before the others
        self._due: DueQueue[str] = DueQueue()
        self._held: set[str] = set()
        self._sticky: dict[str, float] = {}  # asked-for blob -> kept until
        self._failures: dict[str, int] = {}  # blob -> failures in a row
        self._flights = Flights(
            clock=clock, announce=self._announce, timeout=ANNOUNCE_TIMEOUT,
            ended=self._finished, freed=self._pump,
        )
        self._requests = AnnounceRequests()  # of immediate_announce
        self._invalid: set[str] = set()

        self._gate = Gate(
            reachable=reachable, tcp_port=tcp_port, joined=lambda: dht.joined, log=_log,
            overdue=OVERDUE, onion=onion,
        )
        self._reported_at: float | None = None
        self._unreported_announced = 0
        self._unreported_failed = 0
        self._scan_failing = False
        self._scanner: LoopingCall | None = None
        self._wakeup: IDelayedCall | None = None
        self._pumping = False
        self._pump_again = False

    @property
    def rate(self) -> float:
        """
        Most announcements started per second, on average.
        """
        return self._bucket.rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._bucket.rate = rate

    # life cycle

    def startService(self) -> None:
        super().startService()
        now = self._clock.seconds()
        self._bucket.fill(now)
        self._gate.open(now)
        self._reported_at = None
        scanner = self._scanner = LoopingCall(self.scan)
        scanner.clock = self._clock
        scanner.start(self.scan_interval, now=True).addErrback(
            lambda f: _log.failure("The announcer stopped reading the blobs held", f)
        )

    def stopService(self) -> None:
        """
        Stop starting announcements.  Those in flight finish on their own;
        their outcome no longer changes the schedule.
        """
        super().stopService()
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()
        self._scanner = None
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        # the next start reads the holdings and schedules them anew
        self._flights.abandon()
        self._requests.fail_all("announcing is stopped")

    # IHashAnnouncer

    def hash_queue_size(self) -> int:
        return self._due.count_due(self._clock.seconds())

    def announce_soon(self, blob_hashes: Sequence[str]) -> None:
        hashes = [check_blob_hash(h) for h in dict.fromkeys(blob_hashes)]
        self._to_front(hashes)
        self._pump()

    def immediate_announce(self, blob_hashes: Sequence[str]) -> Deferred[dict[str, int]]:
        if not self.running:
            return fail(NotAnnouncingError("announcing is stopped"))
        if not self._reachable() and self._onion() is None:
            return fail(NotAnnouncingError(UNREACHABLE))
        try:
            hashes = [check_blob_hash(h) for h in dict.fromkeys(blob_hashes)]
        except InvalidBlobHashError as e:
            return fail(e)
        if not hashes:
            return succeed({})
        d = self._requests.add(hashes)
        self._to_front(hashes)
        self._pump()
        return d

    def status(self) -> dict[str, Any]:
        blocked = self._gate.reason() if self.running else "announcing is stopped"
        onion_only = blocked is None and self._gate.onion_only()
        return {
            "policy": self.policy,
            "announcing": blocked is None,
            "blocked": blocked,
            "onion": self._onion(),
            "onion_only": ONION_ONLY if onion_only else None,
            "held": len(self._held),
            "scheduled": len(self._due),
            "due": self.hash_queue_size(),
            "in_flight": len(self._flights),
            "announced": self.announced,
            "failed": self.failed,
            "last_announce": self.last_announce,
        }

    # the schedule

    def _to_front(self, blob_hashes: list[str]) -> None:
        now = self._clock.seconds()
        for h in blob_hashes:
            self._sticky[h] = now + self.reannounce_interval
            if h not in self._flights:
                self._due.schedule(h, now, urgent=True)

    def _wanted(self, blob_hash: str, now: float) -> bool:
        return blob_hash in self._held or self._sticky.get(blob_hash, now) > now

    def scan(self) -> None:
        """
        Read the holdings again now (this happens by itself every
        C{scan_interval} seconds): schedule the blobs that are new, drop
        those no longer held.  Call it, for instance, once the blob store is
        open, if the announcer started before it.
        """
        now = self._clock.seconds()
        try:
            heads, rest = blobs_to_announce(self._holdings(), self.policy)
        except P2PBlobError as e:
            # the store is not open yet, say: keep the schedule, try later
            if not self._scan_failing:
                _log.info("Cannot list the blobs to announce yet: {error}", error=e)
            self._scan_failing = True
            return
        except Exception:
            _log.failure("Could not list the blobs to announce")
            return
        self._scan_failing = False
        held = set(heads)
        held.update(rest)
        for h, until in list(self._sticky.items()):
            if until <= now:
                del self._sticky[h]
                if h not in held:
                    self._drop(h)
        for h in self._held - held:
            if h not in self._sticky:
                self._drop(h)
        self._held = held
        for h in itertools.chain(heads, rest):
            if h in self._due or h in self._flights:
                continue
            if not is_blob_hash(h):
                held.discard(h)
                if h not in self._invalid:
                    self._invalid.add(h)
                    _log.warn("Not announcing {blob!r}: it is not a blob hash", blob=h)
                continue
            self._due.schedule(h, now)
        self._gate.check(now)
        self._check_overdue(now)
        self._pump()

    def _drop(self, blob_hash: str) -> None:
        self._due.discard(blob_hash)
        self._failures.pop(blob_hash, None)

    def _check_overdue(self, now: float) -> None:
        entry = self._due.first()
        waited = None if entry is None else self._gate.overdue(now, entry.when)
        if waited is None:
            return
        _log.warn(
            "{count} blob announcements are overdue, the oldest by {minutes:.0f} "
            "minutes: this node holds more blobs than it can announce at {rate} per "
            "second with {concurrency} in flight, and the DHT forgets a blob 24 hours "
            "after it was announced.  Announce fewer (--announce head) or more at a "
            "time (a higher --announce-rate or --announce-concurrency).",
            count=self.hash_queue_size(), minutes=waited / 60, rate=self.rate,
            concurrency=self.max_concurrent,
        )

    # starting announcements

    def _pump(self) -> None:
        """
        Start what is due, as far as the limits allow, and set the next
        wake-up.  Re-entrant calls (an announcement that completes at once)
        are folded into the running one.
        """
        if not self.running:
            return
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        now = self._clock.seconds()
        reason = self._gate.check(now)
        if reason is not None:
            if reason == UNREACHABLE:
                self._requests.fail_all(reason)
            self._arm(now + BLOCKED_POLL)
            return
        port = self._tcp_port()
        assert port is not None
        bucket = self._bucket
        bucket.refill(now)
        while self._flights.running < self.max_concurrent and bucket.has_token() and self.running:
            blob_hash = self._due.pop_due(now)
            if blob_hash is None:
                break
            bucket.take()
            self._flights.start(blob_hash, port)
        if self._flights.running >= self.max_concurrent or not self.running:
            return  # the next completion pumps again
        entry = self._due.first()
        if entry is None:
            return  # the next scan or request pumps again
        when = entry.when
        if when <= now:
            # out of tokens: wait for enough to fill the free slots (or for
            # one, if an urgent request waits)
            need = 1.0 if entry.urgent else min(
                bucket.burst, float(self.max_concurrent - self._flights.running)
            )
            when = now + bucket.seconds_until(need)
        self._arm(when)

    def _arm(self, when: float) -> None:
        wakeup = self._wakeup
        if wakeup is not None and wakeup.active():
            if wakeup.getTime() <= when:
                return
            wakeup.cancel()
        self._wakeup = self._clock.callLater(
            max(0.0, when - self._clock.seconds()), self._wake
        )

    def _wake(self) -> None:
        self._wakeup = None
        self._pump()

    async def _announce(self, blob_hash: str, port: int) -> int:
        onion, onion_only = self._onion(), not self._reachable()
        if onion_only and onion is None:
            # (it became unreachable since the gate let it start)
            raise NotAnnouncingError(UNREACHABLE)
        stored = await self._dht.announce(bytes.fromhex(blob_hash), port, onion, onion_only)
        return int(stored)

    def _finished(self, blob_hash: str, result: int | Failure) -> None:
        now = self._clock.seconds()
        stored = 0 if isinstance(result, Failure) else result
        if stored > 0:
            self.announced += 1
            self._unreported_announced += 1
            self.last_announce = now
            self._failures.pop(blob_hash, None)
            jitter = self._rng.uniform(0, JITTER * self.reannounce_interval)
            due = now + self.reannounce_interval - jitter
        else:
            self.failed += 1
            self._unreported_failed += 1
            failures = self._failures[blob_hash] = self._failures.get(blob_hash, 0) + 1
            delay = min(FIRST_RETRY * 2 ** min(failures - 1, 32), MAX_RETRY)
            due = now + delay
            if isinstance(result, Failure):
                # debug, not failure(): a failure event counts as an error
                # for legacy observers whatever its level
                _log.debug(
                    "Announcing {blob} failed ({error_type}: {error}); retrying in "
                    "{delay:.0f} s", blob=blob_hash, error_type=type(result.value).__name__,
                    error=result.value, delay=delay,
                )
            else:
                _log.debug(
                    "No DHT node stored our announcement of {blob}; retrying in "
                    "{delay:.0f} s", blob=blob_hash, delay=delay,
                )
        if self._wanted(blob_hash, now):
            self._due.schedule(blob_hash, due)
        else:
            self._failures.pop(blob_hash, None)
        self._requests.notify(blob_hash, stored)
        self._report(now)
        self._pump()

    def _report(self, now: float) -> None:
        """
        Say, at most once an hour, how many blobs were announced, once
        none is in flight or due.
        """
        if self._unreported_announced == 0 or self._flights:
            return
        if self._reported_at is not None and now - self._reported_at < HOUR:
            return
        entry = self._due.first()
        if entry is not None and entry.when <= now:
            return
        _log.info(
            "Announced {count} blob(s) on the DHT ({failed} failed, to be retried); "
            "none is waiting", count=self._unreported_announced,
            failed=self._unreported_failed,
        )
        self._reported_at = now
        self._unreported_announced = self._unreported_failed = 0
