"""
The consumer a server connection's blob senders write to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer, IReactorTime
from zope.interface import implementer

from p2pblob.interfaces import IRateLimiter

__all__ = ["UploadChannel"]


@implementer(IConsumer, IPushProducer)
class UploadChannel:
    """
    The consumer blob senders write to: it reports every byte to the rate
    limiter, and registers itself with the transport as the producer, so
    that the blob producer is resumed only when neither the transport nor
    the rate limiter wants it paused.
    """

    def __init__(
        self, transport: Any, rate_limiter: IRateLimiter | None, clock: IReactorTime
    ) -> None:
        self._transport = transport
        self._rate_limiter = rate_limiter
        self._clock = clock
        self.last_write = clock.seconds()
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._throttled = False

    @property
    def busy(self) -> bool:
        """
        Whether a producer is uploading.
        """
        return self._producer is not None

    # IConsumer, for the blob producer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not (streaming and IPushProducer.providedBy(producer)):
            raise ValueError("blobs are uploaded by push producers only")
        if self._producer is not None:
            raise RuntimeError("another upload is in progress")
        self._producer = push = IPushProducer(producer)
        self._transport_paused = False
        self._transport.registerProducer(self, True)
        if self._throttled:
            push.pauseProducing()

    def unregisterProducer(self) -> None:
        if self._producer is not None:
            self._producer = None
            self._transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.last_write = self._clock.seconds()
        if self._rate_limiter is not None:
            self._rate_limiter.report_ul_bytes(len(data))
        self._transport.write(data)

    # IPushProducer, for the transport

    def pauseProducing(self) -> None:
        self._transport_paused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport_paused = False
        if self._producer is not None and not self._throttled:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    # for the rate limiter

    def throttle(self) -> None:
        self._throttled = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def unthrottle(self) -> None:
        self._throttled = False
        if self._producer is not None and not self._transport_paused:
            self._producer.resumeProducing()
