"""
How the files of a transfer end when they are not published: cancelled
(asked for, or refused for their MD5), or swept when their transfer key
expires; their blobs are removed either way.  L{TransferLifetime} keeps the
keys' expiry, sweeps the transfers expired when the first is due (and when
the node starts, with the cancellations a crash interrupted), and cancels
files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from p2pblob.blob.noted import remove_unused_blobs
from p2pblob.errors import StorageError
from p2pblob.interfaces import IBlobStore
from p2pblob.publish._manifest_state import CANCELLED, PENDING, ManifestState, Upload
from p2pblob.publish._upload import UploadSession

__all__ = ["TransferLifetime"]

_log = Logger()

_File = tuple[str, int]
"""
A file of a transfer: its transfer key and number.
"""


@dataclass
class _Timer:
    """
    The next expiry sweep: when, and its delayed call.
    """

    when: float
    call: IDelayedCall


class TransferLifetime:
    """
    The expiry of transfer keys, and the cancelling of files.

    A key expires C{ttl} seconds after it was issued or after the last
    upload of it ended (L{extend}), whichever is later, and never while one
    of its files is being uploaded.

    @param clock: the clock of the expiry.
    @param store: the blob store the blobs of files cancelled are removed
        from.
    @param ttl: seconds a transfer key stays valid.
    @param state: gives the publisher's state while it is open, else
        L{None}.
    @param sessions: the sessions taking bytes, by file (their transfers do
        not expire meanwhile; cancelling a file stops its session).
    @param ended: the last session of each file that ended, which still
        saves the blobs that land after it; a file cancelled or expired is
        forgotten there.
    @ivar ttl: seconds a transfer key stays valid.
    """

    def __init__(self, clock: IReactorTime, store: IBlobStore, ttl: float,
                 state: Callable[[], ManifestState | None],
                 sessions: Mapping[_File, UploadSession],
                 ended: MutableMapping[_File, UploadSession]) -> None:
        self.ttl = ttl
        self._clock = clock
        self._store = store
        self._state = state
        self._sessions = sessions
        self._ended = ended
        self._running = False
        self._timer: _Timer | None = None
        self._sweeping: Deferred[None] | None = None

    def start(self) -> None:
        """
        Sweep the expired transfers when they are due, from now on.
        """
        self._running = True

    def stop(self) -> Deferred[None] | None:
        """
        Sweep no more.

        @return: a sweep under way, which fires once it ended, or L{None}.
        """
        self._running = False
        if self._timer is not None:
            if self._timer.call.active():
                self._timer.call.cancel()
            self._timer = None
        sweeping, self._sweeping = self._sweeping, None
        return sweeping

    def extend(self, key: str) -> None:
        """
        An upload of transfer C{key} ended, however: the key stays valid
        C{ttl} seconds from now.
        """
        state = self._state()
        if state is None:
            return
        transfer = state.transfer(key)
        if transfer is not None:
            expires = max(transfer.expires, self._clock.seconds() + self.ttl)
            state.set_expiry(transfer.key, expires)
        self.schedule()

    # cancelling

    async def cancel(self, state: ManifestState, uploads: Sequence[Upload],
                     why: str) -> list[Upload]:
        """
        Cancel C{uploads} (pending files), stop their sessions and remove
        their blobs.

        @param state: the publisher's state, open.
        @param why: how the log tells it (C{"cancelled"}, or why they were
            refused).
        @return: C{uploads}, once their blobs are gone.
        """
        for upload in uploads:
            state.cancel(upload.transfer_key, upload.number)
            _log.info("Upload of {name} into {prefix} {why} (transfer {key}, file {number})",
                      name=upload.name, prefix=upload.prefix, why=why, key=upload.transfer_key,
                      number=upload.number)
        for upload in uploads:
            self._ended.pop((upload.transfer_key, upload.number), None)
            session = self._sessions.get((upload.transfer_key, upload.number))
            if session is not None:
                await session.cancel(why)
            await self.remove_blobs(upload)
        return list(uploads)

    async def remove_blobs(self, upload: Upload) -> None:
        """
        Remove the blobs noted for a cancelled upload, then forget them.
        """
        state = self._state()
        if state is None:
            return
        hashes = state.blobs_of(upload.transfer_key, upload.number)
        await remove_unused_blobs(self._store, hashes)
        state = self._state()
        if state is not None:
            state.forget_blobs(upload.transfer_key, upload.number)

    # expiry

    def schedule(self) -> None:
        """
        Have the next expiry swept when it is due.
        """
        state = self._state()
        if state is None or not self._running:
            return
        busy = {key for key, _ in self._sessions}
        times = [t.expires for t in state.transfers() if t.key not in busy]
        when = min(times, default=None)
        timer = self._timer
        if timer is not None and (when is None or timer.when != when):
            if timer.call.active():
                timer.call.cancel()
            self._timer = timer = None
        if when is not None and timer is None:
            delay = max(when - self._clock.seconds(), 0.0)
            self._timer = _Timer(when, self._clock.callLater(delay, self._due))

    def _due(self) -> None:
        self._timer = None
        Deferred.fromCoroutine(self.sweep()).addErrback(
            lambda f: _log.failure("Sweeping expired transfers failed", f))

    async def sweep(self, start: bool = False) -> None:
        """
        Cancel the pending files of the transfers expired (and at start,
        finish removing the blobs of uploads cancelled before a crash).
        """
        if self._sweeping is not None:
            return
        done: Deferred[None] = Deferred()
        self._sweeping = done
        try:
            await self._sweep_now(start)
        except StorageError as e:
            _log.error("Could not sweep expired transfers: {error}", error=e)
        finally:
            self._sweeping = None
            done.callback(None)
        self.schedule()

    async def _sweep_now(self, start: bool) -> None:
        state = self._state()
        if state is None:
            return
        if start:
            for upload in state.uploads(state=CANCELLED):
                await self.remove_blobs(upload)
        now = self._clock.seconds()
        busy = {key for key, _ in self._sessions}
        for transfer in list(state.transfers()):
            if transfer.expires > now or transfer.key in busy:
                continue
            pending = [u for u in transfer.uploads if u.state == PENDING]
            for upload in pending:
                state.cancel(upload.transfer_key, upload.number)
                self._ended.pop((upload.transfer_key, upload.number), None)
            for upload in pending:
                _log.info("Transfer {key} expired: {name} was never uploaded into {prefix}; "
                          "its entry and blobs are removed", key=transfer.key,
                          name=upload.name, prefix=upload.prefix)
                await self.remove_blobs(upload)
                if self._state() is None:
                    return
            state.drop_transfer(transfer.key)
