"""
Which blobs a download still needs, and handing finished blobs on in order.

Blobs may arrive in any order, from several peers at once; the output must
be written strictly in stream order.  L{StreamProgressManager} keeps the
position of the next blob to output and, whenever that blob is verified,
asks the download manager to handle it.  Up to L{HANDLING_DEPTH} blobs are
handed on before the first of them is handled, in order, so that a handler
working in another thread is never idle waiting for the reactor to give it
the next blob; the handler deals with them in the order given (see
L{p2pblob.interfaces.IBlobHandler}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.interfaces import IBlob, IProgressManager
from p2pblob.stream.descriptor import BlobInfo

__all__ = ["HANDLING_DEPTH", "StreamProgressManager"]

HANDLING_DEPTH = 4
"""
How many blobs may be handed on and not yet handled at once.
"""


class _Handles(Protocol):
    def handle_blob(self, blob_num: int) -> Deferred[object]: ...


@implementer(IProgressManager)
class StreamProgressManager:
    """
    Tracks the data blobs of one stream.

    @ivar finished: fires with L{None} once every blob has been handled, or
        fails with the first handling failure.
    """

    def __init__(
        self, download_manager: _Handles, blob_infos: Iterable[BlobInfo], position: int = 0
    ) -> None:
        self._manager = download_manager
        self._infos = sorted(blob_infos, key=lambda info: info.blob_num)
        self._by_num = {info.blob_num: info for info in self._infos}
        self._end = self._infos[-1].blob_num + 1 if self._infos else 0
        self._position = position
        self._verified: set[int] = set()
        # in blob_num order; kept up to date rather than rebuilt per call
        self._needed = {info.blob_num: info for info in self._infos if info.blob_num >= position}
        # the next blob to hand on; of blobs _position.._next-1, those not
        # in _handled_early are being handled
        self._next = position
        self._handled_early: set[int] = set()
        self._outstanding = 0
        self._in_output = False
        self._running = False
        self._idle: list[Deferred[None]] = []
        self.finished: Deferred[None] = Deferred()
        if self._position >= self._end:
            self.finished.callback(None)

    def __repr__(self) -> str:
        return f"<StreamProgressManager {self._position}/{self._end}>"

    @property
    def total(self) -> int:
        return len(self._infos)

    @property
    def done(self) -> bool:
        return self.finished.called

    def start(self) -> None:
        self._running = True
        self._output()

    def stop(self) -> Deferred[None]:
        """
        Hand no more blobs on; the Deferred fires once the blobs being
        handled, if any, are done.
        """
        self._running = False
        if not self._outstanding:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle

    def _now_idle(self) -> None:
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def stream_position(self) -> int:
        return self._position

    def needed_blobs(self) -> list[BlobInfo]:
        return list(self._needed.values())

    def is_needed(self, blob_hash: str) -> bool:
        return any(info.blob_hash == blob_hash for info in self.needed_blobs())

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> None:
        if blob_info.blob_num in self._needed:
            del self._needed[blob_info.blob_num]
            self._verified.add(blob_info.blob_num)
            self._output()

    def _output(self) -> None:
        """
        Hand on every blob that is next in order, up to L{HANDLING_DEPTH}
        ahead of the last one handled.  A loop, not recursion: a handler may
        finish synchronously (its callback then re-enters here and returns
        at once, and the loop goes on), and hundreds of blobs may be waiting
        for the one before them.
        """
        if self._in_output:
            return
        self._in_output = True
        try:
            while (
                self._next - self._position < HANDLING_DEPTH
                and self._running
                and not self.finished.called
                and self._next in self._verified
            ):
                blob_num = self._next
                self._next += 1
                self._outstanding += 1
                handled = self._manager.handle_blob(blob_num)
                handled.addCallbacks(self._handled, self._failed, callbackArgs=(blob_num,))
        finally:
            self._in_output = False

    def _handled(self, _: object, blob_num: int) -> None:
        self._outstanding -= 1
        if self.finished.called:
            self._settle()
            return
        self._handled_early.add(blob_num)
        while self._position in self._handled_early:
            self._handled_early.discard(self._position)
            self._verified.discard(self._position)
            self._position += 1
        if self._position >= self._end:
            self.finished.callback(None)
        self._settle()
        self._output()

    def _failed(self, failure: Failure) -> None:
        self._outstanding -= 1
        if not self.finished.called:
            self.finished.errback(failure)
        self._settle()

    def _settle(self) -> None:
        """
        After a blob was dealt with: tell those waiting once no blob is
        being handled.
        """
        if not self._outstanding:
            self._now_idle()
