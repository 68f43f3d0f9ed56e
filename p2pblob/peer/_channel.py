"""
The consumer a server connection's blob senders write to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer, IReactorTime
from zope.interface import implementer

from p2pblob.ratelimit import ConnectionMeter

__all__ = ["UploadChannel"]


@implementer(IConsumer, IPushProducer)
class UploadChannel:
    """
    The consumer blob senders write to: it reports every byte to the rate
    limiter (through C{meter}, once the connection has one), and registers
    itself with the transport as the producer, so that the blob producer is
    resumed only when neither the transport nor the rate limiter wants it
    paused.

    The bytes written while a producer with a C{blob_hash} attribute (a
    L{p2pblob.peer.handlers.BlobUploadProducer}) is registered are that
    blob's body: when the producer goes, they are reported as such, for the
    per-stream figures.

    @ivar last_write: when bytes were last written, or the rate limiter
        last let the upload go on: a transfer timer measures the peer's
        silence from then.
    @ivar meter: what the bytes are reported to, if anything.
    """

    def __init__(
        self, transport: Any, clock: IReactorTime, meter: ConnectionMeter | None = None
    ) -> None:
        self._transport = transport
        self._clock = clock
        self.meter = meter
        self.last_write = clock.seconds()
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._throttled = False
        self._blob: str | None = None
        self._blob_sent = 0

    @property
    def busy(self) -> bool:
        """
        Whether a producer is uploading.
        """
        return self._producer is not None

    @property
    def throttled(self) -> bool:
        """
        Whether the rate limiter holds the upload.
        """
        return self._throttled

    # IConsumer, for the blob producer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not (streaming and IPushProducer.providedBy(producer)):
            raise ValueError("blobs are uploaded by push producers only")
        if self._producer is not None:
            raise RuntimeError("another upload is in progress")
        self._producer = push = IPushProducer(producer)
        blob = getattr(producer, "blob_hash", None)
        self._blob = blob if isinstance(blob, str) else None
        self._blob_sent = 0
        self._transport_paused = False
        self._transport.registerProducer(self, True)
        if self._throttled:
            push.pauseProducing()

    def unregisterProducer(self) -> None:
        if self._producer is not None:
            self._producer = None
            self._blob_ended()
            self._transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.last_write = self._clock.seconds()
        if self._producer is not None:
            self._blob_sent += len(data)
        if self.meter is not None:
            self.meter.sent(len(data))
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
            self._blob_ended()
            producer.stopProducing()

    # for the rate limiter

    def throttle(self) -> None:
        self._throttled = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def unthrottle(self) -> None:
        self._throttled = False
        # the time the upload was held is not the peer's silence
        self.last_write = self._clock.seconds()
        if self._producer is not None and not self._transport_paused:
            self._producer.resumeProducing()

    def _blob_ended(self) -> None:
        blob, self._blob = self._blob, None
        if blob is not None and self.meter is not None:
            self.meter.blob(blob, sent=self._blob_sent)
