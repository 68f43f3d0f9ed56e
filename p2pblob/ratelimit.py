"""
The node's rate limiter: how many bytes a second it may upload and download,
in all and on each connection; and what it has moved, per peer and per
stream.

How it throttles
================
Each direction (upload, download) is a token bucket filled at the configured
rate.  It is filled lazily: each report of bytes first adds C{rate * elapsed}
tokens (keeping at most L{BURST} seconds' worth), then takes the bytes away.
A bucket may go into debt, because bytes already read or written cannot be
taken back; the debt is paid before anything moves again.  Over any period,
then, the bytes moved are the rate times the period, give or take what the
bucket held at either end: at most L{BURST} seconds' worth plus one read or
write (p2pblob's protocols move at most 256 KiB at a time).

The moment the node's bucket is in debt, every connection is throttled (a
download by pausing its transport's reading, an upload by no longer feeding
the blob to the transport), and one timer is set for the moment the debt is
paid.  Connections are then released from the line as many at a time as
the tokens cover, reckoning that each will move as much as it did at its
last report, the one that has moved the fewest bytes first (its turn comes
as often as its share of bytes needs, however much it reads at a time; a
connection that was idle or new gets no credit for it).  So each busy
connection gets an equal share, a slower one all it can take, and none
starves.  While connections wait in line, a timer wakes up as the tokens
for the next one come in (never more often than every L{MIN_INTERVAL});
while nothing is throttled (traffic under the limit, no traffic, no limit)
there is no timer at all.  Reports cost a counter update,
plus a clock reading and some arithmetic when a limit is set.

A per-connection limit is a bucket of its own for each connection, with the
same rules; a connection moves data only while neither its own bucket nor
the node's holds it.

LBRY's 2015 limiter instead counted the bytes of each second (later, of each
0.1 s), throttled every connection once that budget was spent and released
them all at the next tick: traffic came in bursts, every connection resumed
at once, and what the last reads overshot was forgotten at each tick, so the
rate ran above the setting; the setting was removed in 2017 as not working
(lbry-sdk #798).

What is counted
===============
The limiter counts into a L{TrafficCounters} (see L{p2pblob.traffic}):
every byte the peer protocols read from or write to their connections, in
all and per peer; and the body bytes of blobs, per stream.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from p2pblob._throttling import BURST, MIN_INTERVAL, Direction, Lane
from p2pblob.interfaces import IConnectionRateLimiter, IRateLimited, IRateLimiter
from p2pblob.traffic import Traffic, TrafficCounters

__all__ = [
    "BURST",
    "MIN_INTERVAL",
    "ConnectionMeter",
    "RateLimiter",
    "Traffic",
    "TrafficCounters",
]


class _Connection:
    __slots__ = ("peer", "upload", "download")

    def __init__(self, protocol: IRateLimited, peer: str | None) -> None:
        self.peer = peer
        self.upload = Lane(protocol.throttle_upload, protocol.unthrottle_upload)
        self.download = Lane(protocol.throttle_download, protocol.unthrottle_download)


def _rate(value: float | None, option: str) -> float | None:
    if value is None:
        return None
    if not value > 0:
        raise ValueError(f"{option} must be positive, or None for no limit (got {value!r})")
    return float(value)


@implementer(IConnectionRateLimiter)
class RateLimiter(Service):
    """
    Keeps the node's uploads and downloads within their rates, in all and
    per connection, and counts the bytes moved (see the module docstring).

    Every limit is in bytes per second, or L{None} for no limit, and can be
    changed at any time by setting the attribute of the same name.  Without
    any limit in a direction, the limiter only counts.

    As a service of the node it only cancels its timers when stopped; it
    works whether it runs or not.

    @ivar counters: the L{TrafficCounters} the bytes are counted in.
    """

    name = "rate-limiter"

    def __init__(
        self,
        clock: IReactorTime,
        max_upload: float | None = None,
        max_download: float | None = None,
        max_upload_per_connection: float | None = None,
        max_download_per_connection: float | None = None,
        counters: TrafficCounters | None = None,
    ) -> None:
        self.counters = counters if counters is not None else TrafficCounters()
        self._upload = Direction(clock, "upload")
        self._download = Direction(clock, "download")
        self._connections: dict[IRateLimited, _Connection] = {}
        self.max_upload = max_upload
        self.max_download = max_download
        self.max_upload_per_connection = max_upload_per_connection
        self.max_download_per_connection = max_download_per_connection

    # limits

    @property
    def max_upload(self) -> float | None:
        """
        Bytes per second the node may upload, in all.
        """
        return self._upload.rate

    @max_upload.setter
    def max_upload(self, value: float | None) -> None:
        self._upload.set_rate(_rate(value, "max_upload"))

    @property
    def max_download(self) -> float | None:
        """
        Bytes per second the node may download, in all.
        """
        return self._download.rate

    @max_download.setter
    def max_download(self, value: float | None) -> None:
        self._download.set_rate(_rate(value, "max_download"))

    @property
    def max_upload_per_connection(self) -> float | None:
        """
        Bytes per second each connection may upload.
        """
        return self._upload.per_connection

    @max_upload_per_connection.setter
    def max_upload_per_connection(self, value: float | None) -> None:
        self._upload.set_per_connection(_rate(value, "max_upload_per_connection"))

    @property
    def max_download_per_connection(self) -> float | None:
        """
        Bytes per second each connection may download.
        """
        return self._download.per_connection

    @max_download_per_connection.setter
    def max_download_per_connection(self, value: float | None) -> None:
        self._download.set_per_connection(_rate(value, "max_download_per_connection"))

    # status

    @property
    def uploaded(self) -> int:
        """
        Bytes sent since the limiter was made.
        """
        return self.counters.total.up

    @property
    def downloaded(self) -> int:
        """
        Bytes received since the limiter was made.
        """
        return self.counters.total.down

    @property
    def connections(self) -> int:
        """
        How many connections are registered.
        """
        return len(self._connections)

    @property
    def throttled_uploads(self) -> int:
        """
        How many connections may not upload at the moment.
        """
        return self._upload.throttled

    @property
    def throttled_downloads(self) -> int:
        """
        How many connections may not download at the moment.
        """
        return self._download.throttled

    # IRateLimiter

    def report_dl_bytes(self, num_bytes: int) -> None:
        self.counters.add(None, None, down=num_bytes)
        if self._download.limited:
            self._download.consume(None, num_bytes)

    def report_ul_bytes(self, num_bytes: int) -> None:
        self.counters.add(None, None, up=num_bytes)
        if self._upload.limited:
            self._upload.consume(None, num_bytes)

    def register_protocol(self, protocol: IRateLimited) -> None:
        self._register(protocol, None)

    def unregister_protocol(self, protocol: IRateLimited) -> None:
        connection = self._connections.pop(protocol, None)
        if connection is not None:
            self._upload.remove(connection.upload)
            self._download.remove(connection.download)

    # IConnectionRateLimiter

    def register_connection(self, protocol: IRateLimited, peer: str) -> None:
        self._register(protocol, peer)

    def report_dl_bytes_from(self, protocol: IRateLimited, num_bytes: int) -> None:
        connection = self._connections.get(protocol)
        if connection is None:
            self.report_dl_bytes(num_bytes)
            return
        self.counters.add(connection.peer, None, down=num_bytes)
        if self._download.limited:
            self._download.consume(connection.download, num_bytes)

    def report_ul_bytes_to(self, protocol: IRateLimited, num_bytes: int) -> None:
        connection = self._connections.get(protocol)
        if connection is None:
            self.report_ul_bytes(num_bytes)
            return
        self.counters.add(connection.peer, None, up=num_bytes)
        if self._upload.limited:
            self._upload.consume(connection.upload, num_bytes)

    def report_blob_bytes(
        self, protocol: IRateLimited, blob_hash: str, sent: int, received: int
    ) -> None:
        self.counters.add_blob(blob_hash, sent, received)

    # IService

    def stopService(self) -> None:
        super().stopService()
        self._upload.stop()
        self._download.stop()

    def _register(self, protocol: IRateLimited, peer: str | None) -> None:
        if protocol in self._connections:
            raise ValueError(f"{protocol!r} is already registered")
        connection = self._connections[protocol] = _Connection(protocol, peer)
        self._upload.add(connection.upload)
        self._download.add(connection.download)


class ConnectionMeter:
    """
    What a connection reports its traffic through, whichever kind of
    limiter it was given: an L{IConnectionRateLimiter} learns which
    connection (and peer) moved the bytes; a plain L{IRateLimiter} gets the
    2015 interface's anonymous reports.

    Making one registers the connection; L{close} unregisters it.

    @ivar received: call with the size of every read.
    @ivar sent: call with the size of every write.
    """

    def __init__(self, limiter: IRateLimiter, protocol: IRateLimited, peer: str) -> None:
        self._limiter = limiter
        self._protocol = protocol
        self._open = True
        self.received: Callable[[int], None]
        self.sent: Callable[[int], None]
        self._blob: Callable[[str, int, int], None] | None
        if IConnectionRateLimiter.providedBy(limiter):
            limiter.register_connection(protocol, peer)
            self.received = partial(limiter.report_dl_bytes_from, protocol)
            self.sent = partial(limiter.report_ul_bytes_to, protocol)
            self._blob = partial(limiter.report_blob_bytes, protocol)
        else:
            limiter.register_protocol(protocol)
            self.received = limiter.report_dl_bytes
            self.sent = limiter.report_ul_bytes
            self._blob = None

    def blob(self, blob_hash: str, sent: int = 0, received: int = 0) -> None:
        """
        A transfer of blob C{blob_hash} ended after C{sent} or C{received}
        body bytes (already reported).
        """
        if self._blob is not None and (sent or received):
            self._blob(blob_hash, sent, received)

    def close(self) -> None:
        """
        Unregister the connection (once; later calls do nothing).
        """
        if self._open:
            self._open = False
            self._limiter.unregister_protocol(self._protocol)

