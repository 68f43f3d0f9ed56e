"""
What a client connection is asked to send: plain requests, and requests for
a blob whose bytes follow the response.

Request creators build these and give them to an L{IRequestSender}
(L{p2pblob.peer.client.BlobExchangeClient}); every request queued before the
connection's next message goes out together in that message, as one JSON
object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from p2pblob.errors import BlobWriteCancelledError
from p2pblob.interfaces import IBlob, IBlobWriter

__all__ = ["ClientBlobRequest", "ClientRequest"]


class ClientRequest:
    """
    A request: the keys to put in the message, and the response key that
    answers it.

    @ivar request_dict: the keys and values this request adds to the message.
    @ivar response_identifier: the response key the answer must carry, or
        L{None} if any response will do.
    """

    def __init__(self, request_dict: dict[str, Any], response_identifier: str | None) -> None:
        self.request_dict = request_dict
        self.response_identifier = response_identifier


class ClientBlobRequest(ClientRequest):
    """
    A request that a peer send blob C{blob_hash}.

    The connection calls L{start} with the length the peer announced, then
    L{write} with exactly that many bytes; if the exchange breaks off first,
    it calls L{fail}.  C{finished_deferred} fires with the stored L{IBlob}
    once the bytes are verified, or fails (with a peer error, the reason the
    connection was lost, or the writer's verdict on the bytes).

    @ivar blob_hash: the blob asked for.
    @ivar length: its length if known (a data blob), else L{None} (an sd blob).
    """

    def __init__(
        self,
        request_dict: dict[str, Any],
        response_identifier: str | None,
        blob_hash: str,
        length: int | None,
        open_writer: Callable[[int], IBlobWriter],
    ) -> None:
        super().__init__(request_dict, response_identifier)
        self.blob_hash = blob_hash
        self.length = length
        self.finished_deferred: Deferred[IBlob] = Deferred()
        self._open_writer = open_writer
        self._writer: IBlobWriter | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def start(self, length: int) -> None:
        """
        The peer is about to send C{length} bytes of the blob.
        """
        if self._cancelled or self.finished_deferred.called:
            return
        writer = self._open_writer(length)
        self._writer = writer
        writer.finished.addBoth(self._writer_finished)

    def _writer_finished(self, result: IBlob | Failure) -> None:
        if not self.finished_deferred.called:
            if isinstance(result, Failure):
                self.finished_deferred.errback(result)
            else:
                self.finished_deferred.callback(result)

    def write(self, data: bytes) -> None:
        """
        Bytes of the blob (discarded once the request is cancelled).
        """
        if self._writer is not None and not self._cancelled:
            self._writer.write(data)

    def fail(self, reason: Failure | BaseException) -> None:
        """
        The exchange broke off before the whole blob arrived.
        """
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        if not self.finished_deferred.called:
            self.finished_deferred.errback(failure)
        if self._writer is not None:
            self._writer.cancel()

    def cancel(self) -> None:
        """
        The blob is no longer wanted (another peer delivered it first); the
        connection goes on reading and dropping its bytes.
        """
        if self._cancelled:
            return
        self._cancelled = True
        if self._writer is not None:
            self._writer.cancel()
        if not self.finished_deferred.called:
            self.finished_deferred.errback(
                BlobWriteCancelledError(self.blob_hash, f"download of {self.blob_hash[:16]}… cancelled")
            )
