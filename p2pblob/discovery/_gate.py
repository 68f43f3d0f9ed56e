"""
Whether the announcer can announce now, and whether it keeps up.

Announcing waits while the node is unreachable (peers could not connect to
it, and it has no onion service), while its peer server is not listening
and while it has not joined the DHT: L{Gate.check} says which, and says so
in the log when that changes.  A node whose IP address peers cannot reach
but that has an onion service announces that only, to p2pblob nodes
(L{Gate.onion_only}); the gate says so in the log too.
Once announcing can go ahead, an announcement that stays due too long means
the node holds more blobs than it can announce: L{Gate.overdue} says when
the announcer should warn.

What the gate says in the log, it says for the announcer, in the
announcer's log.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

__all__ = ["NOT_JOINED", "NOT_LISTENING", "ONION_ONLY", "UNREACHABLE", "Gate"]

_NO_ADDRESS = (
    "peers cannot connect to this node's address (configured as unreachable, "
    "or its ports are not forwarded or mapped)"
)
UNREACHABLE = f"{_NO_ADDRESS}, and it has no onion service to announce instead"
ONION_ONLY = (
    f"{_NO_ADDRESS}: only its onion service is announced, to p2pblob nodes that "
    "use Tor"
)
NOT_LISTENING = "the peer server is not listening yet"
NOT_JOINED = "the node has not joined the DHT yet"


class Gate:
    """
    Whether announcing can go ahead, and since when it could.

    @param reachable: says whether peers can connect to this node's IP
        address.
    @param tcp_port: gives the TCP port of our peer server, or L{None}
        while it is not listening.
    @param joined: says whether the node has joined the DHT.
    @param log: where to say when announcing stops or goes ahead again.
    @param overdue: seconds after which an announcement due is overdue,
        and at most once per which L{overdue} says to warn.
    @param onion: gives the node's onion endpoint, or L{None} while it has
        no onion service: an unreachable node that has one announces it
        (only).

    @ivar blocked: why announcing could not go ahead at the last check
        (L{UNREACHABLE}, L{NOT_LISTENING} or L{NOT_JOINED}), or L{None}.
    """

    def __init__(
        self,
        *,
        reachable: Callable[[], bool],
        tcp_port: Callable[[], int | None],
        joined: Callable[[], bool],
        log: Logger,
        overdue: float,
        onion: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._reachable = reachable
        self._tcp_port = tcp_port
        self._joined = joined
        self._log = log
        self._overdue = overdue
        self._onion = onion
        self.blocked: str | None = None
        # what the log last said: a reason, ONION_ONLY, or None (announcing
        # at the node's address)
        self._said: str | None = None
        self._open_since = 0.0
        self._warned_at: float | None = None

    def open(self, now: float) -> None:
        """
        Announcing starts at C{now}: until a check says otherwise, nothing
        blocks it, and nothing was due before.
        """
        self._open_since = now
        self.blocked = None
        self._said = None

    def reason(self) -> str | None:
        """
        Why announcing cannot go ahead now, or L{None}.
        """
        if not self._reachable() and self._onion() is None:
            return UNREACHABLE
        if self._tcp_port() is None:
            return NOT_LISTENING
        if not self._joined():
            return NOT_JOINED
        return None

    def onion_only(self) -> bool:
        """
        Whether announcements name the node's onion service only (to
        p2pblob nodes only): peers cannot reach its IP address, but it has
        an onion service.
        """
        return not self._reachable() and self._onion() is not None

    def check(self, now: float) -> str | None:
        """
        Why announcing cannot go ahead now, or L{None}; says so in the log
        when that changes, and when announcing turns to the onion service
        only or back.
        """
        reason = self.reason()
        said = reason if reason is not None or not self.onion_only() else ONION_ONLY
        if said != self._said:
            if said == UNREACHABLE:
                self._log.info("Not announcing blobs on the DHT: {reason}", reason=said)
            elif said == ONION_ONLY:
                self._log.info("Announcing blobs on the DHT by onion service only: {reason}",
                               reason=said)
            elif said is not None:
                self._log.debug("Announcing waits: {reason}", reason=said)
            elif self._said == UNREACHABLE:
                self._log.info("Announcing blobs on the DHT again")
            elif self._said == ONION_ONLY:
                self._log.info("Announcing blobs on the DHT at this node's address again")
            self._said = said
        if reason != self.blocked:
            if reason is None:
                self._open_since = now
            self.blocked = reason
        return reason

    def overdue(self, now: float, due: float) -> float | None:
        """
        Whether to warn now that the announcement due since C{due} is
        overdue: if it has waited longer than C{overdue} seconds while
        announcing could go ahead, and no warning was called for within the
        last C{overdue} seconds, how long it waited (and the caller warns);
        otherwise, and while announcing is blocked, L{None}.
        """
        if self.blocked is not None:
            return None
        waited = now - max(due, self._open_since)
        if waited <= self._overdue:
            return None
        if self._warned_at is not None and now - self._warned_at < self._overdue:
            return None
        self._warned_at = now
        return waited
