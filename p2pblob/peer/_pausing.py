"""
Pausing a transport's reading for more than one reason at a time.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer

__all__ = ["ReadingPauses"]


class ReadingPauses:
    """
    Pauses a connection's reading (its transport, as a push producer) while
    at least one reason to pause holds, and resumes it when the last one is
    lifted: two parties that pause the same transport (the rate limiter and,
    say, a consumer that is full) never resume each other.

    @ivar producer: the transport's reading; L{None} until the connection
        is made.  Reasons given before then apply once it is set with
        L{attach}.
    """

    def __init__(self) -> None:
        self.producer: IPushProducer | None = None
        self._reasons: set[str] = set()

    @property
    def paused(self) -> bool:
        """
        Whether any reason to pause holds.
        """
        return bool(self._reasons)

    def attach(self, producer: IPushProducer | None) -> None:
        """
        Pause and resume C{producer} from now on (pausing it at once if a
        reason holds).
        """
        self.producer = producer
        if producer is not None and self._reasons:
            producer.pauseProducing()

    def pause(self, reason: str) -> None:
        """
        Stop reading for C{reason} (no effect if C{reason} holds already).
        """
        if reason in self._reasons:
            return
        self._reasons.add(reason)
        if len(self._reasons) == 1 and self.producer is not None:
            self.producer.pauseProducing()

    def resume(self, reason: str) -> None:
        """
        C{reason} no longer holds; read again if no other reason does.
        """
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons and self.producer is not None:
            self.producer.resumeProducing()

    def detach(self) -> None:
        """
        Leave the producer alone from now on (the connection is closing).
        """
        self.producer = None
