"""
A contact: another DHT node, where to reach it, and how far it can be
trusted to answer (BEP-5's good, unknown and bad; spec section 7.4).

A contact only records what happened to it; the routing table
(L{p2pblob.dht.routing}) decides what to do about it.
"""

from __future__ import annotations

import enum

from p2pblob.dht.constants import CHECK_REFRESH_INTERVAL
from p2pblob.dht.ids import check_id, id_to_int

__all__ = ["BAD_AFTER_FAILURES", "Contact", "ContactState"]

BAD_AFTER_FAILURES = 2
"""
A contact that failed to answer this many of our requests in a row is
L{ContactState.BAD}.
"""


class ContactState(enum.Enum):
    """
    How much a contact can be trusted to answer, after BEP-5.

    @cvar GOOD: it answered us recently and has not failed since.
    @cvar UNKNOWN: it answered us at some time, but not recently, or it has
        just failed once; worth a ping before relying on it.
    @cvar BAD: it failed to answer several requests in a row; replace it
        as soon as there is someone else.
    """

    GOOD = "good"
    UNKNOWN = "unknown"
    BAD = "bad"


class Contact:
    """
    Another DHT node and what we know of its liveness.

    The rules of L{state}, after BEP-5 as LBRY applies it:
      - B{BAD} once it has failed L{BAD_AFTER_FAILURES} (two) of our
        requests in a row, i.e. without a reply in between;
      - B{GOOD} when it has not failed since its last reply and it either
        replied to us within the last L{CHECK_REFRESH_INTERVAL} seconds, or
        has replied at some time and sent us a request within that interval;
      - B{UNKNOWN} otherwise (never replied, replied long ago, or failed once
        since it last replied).

    @ivar host: its IPv4 address, dotted-quad.
    @ivar udp_port: its DHT port.
    @ivar last_replied: when it last answered one of our requests, or
        C{None} if it never has.
    @ivar last_requested: when it last sent us a request, or C{None}.
    @ivar last_failed: when one of our requests to it last failed, or
        C{None}.
    @ivar failures: how many of our requests it failed to answer since its
        last reply.
    """

    __slots__ = (
        "_node_id",
        "_node_int",
        "failures",
        "host",
        "last_failed",
        "last_replied",
        "last_requested",
        "udp_port",
    )

    def __init__(
        self,
        host: str,
        udp_port: int,
        node_id: bytes,
        *,
        last_replied: float | None = None,
        last_requested: float | None = None,
        failures: int = 0,
    ) -> None:
        """
        @raise ValueError: if C{node_id} is not a valid node id.
        """
        self._node_id = check_id(node_id)
        # the id as an integer, read by the routing table's buckets and sorts
        self._node_int = id_to_int(self._node_id)
        self.host = host
        self.udp_port = udp_port
        self.last_replied = last_replied
        self.last_requested = last_requested
        self.last_failed: float | None = None
        self.failures = failures

    @property
    def node_id(self) -> bytes:
        """
        Its 48-byte node id, which never changes.
        """
        return self._node_id

    @property
    def address(self) -> tuple[str, int]:
        """
        C{(host, udp_port)}, where to send it datagrams.
        """
        return (self.host, self.udp_port)

    @property
    def is_bad(self) -> bool:
        """
        Whether it is L{ContactState.BAD}, which does not depend on the time.
        """
        return self.failures >= BAD_AFTER_FAILURES

    def replied(self, now: float) -> None:
        """
        It answered one of our requests at C{now}.
        """
        self.last_replied = now
        self.failures = 0

    def failed(self, now: float) -> None:
        """
        One of our requests to it got no (valid) answer; noted at C{now}.
        """
        self.last_failed = now
        self.failures += 1

    def requested(self, now: float) -> None:
        """
        It sent I{us} a request at C{now} (not: we sent it one; our requests
        are reported by L{replied} or L{failed} when they end).
        """
        self.last_requested = now

    def state(self, now: float) -> ContactState:
        """
        @return: its L{ContactState} at time C{now}, by the rules in the
            class docstring.
        """
        if self.is_bad:
            return ContactState.BAD
        if self.failures == 0 and self.last_replied is not None:
            if now - self.last_replied < CHECK_REFRESH_INTERVAL:
                return ContactState.GOOD
            if (
                self.last_requested is not None
                and now - self.last_requested < CHECK_REFRESH_INTERVAL
            ):
                return ContactState.GOOD
        return ContactState.UNKNOWN

    def __repr__(self) -> str:
        return (
            f"<Contact {self.host}:{self.udp_port} {self._node_id.hex()[:12]}… "
            f"failures={self.failures}>"
        )
