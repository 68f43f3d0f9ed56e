"""
One request's upload of one file of a manifest (L{UploadSession}): its bytes
go to a L{StreamCreator}, new or resumed from the file's checkpoint, the
checkpoint is saved after each blob stored, and the stream is published at
the end if its MD5 is the one declared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import BlockingRunner
from p2pblob.errors import (
    ChecksumMismatchError,
    OffsetMismatchError,
    UploadCancelledError,
    WrongLengthError,
)
from p2pblob.interfaces import IBlobStore
from p2pblob.publish._manifest_state import PublishedName, Upload
from p2pblob.stream.writer import StreamCreator

__all__ = ["SessionHooks", "UploadSession"]

_log = Logger()


@dataclass(frozen=True)
class SessionHooks:
    """
    What an L{UploadSession} needs of the publisher that made it.

    @ivar clock: tells the time of the last bytes taken.
    @ivar store: where the blobs go (noting each blob for the upload).
    @ivar run: where the blobs are encrypted.
    @ivar workers: blobs encrypted and stored at once.
    @ivar save: saves the upload's checkpoint, C{save(stored, checkpoint)}.
    @ivar ended: told once the session ended, however.
    @ivar published: records the upload published as the stream of the
        sd hash given; returns the name published.
    @ivar refused: removes the stream of the sd hash given and cancels the
        upload (its MD5 did not match).
    """

    clock: IReactorTime
    store: IBlobStore
    run: BlockingRunner
    workers: int
    save: Callable[[int, dict[str, object]], None]
    ended: Callable[[UploadSession], None]
    published: Callable[[Upload, str], PublishedName]
    refused: Callable[[Upload, str], Awaitable[None]]


class UploadSession:
    """
    One request's upload of one file, from byte C{start} (0, or where the
    file's checkpoint says its blobs end).

    @ivar upload: the file.
    @ivar received: the bytes it took, counted from the file's first.
    @ivar active: when it last took bytes (clock seconds).
    @ivar ready: fires (with L{None}) once it takes bytes, or once it ended
        without ever taking any.
    @ivar cut: called to drop the request's connection when the session is
        cancelled or taken over (the HTTP layer sets it).
    @ivar superseded: whether another session of the file began since this
        one ended (then this one saves nothing more).
    """

    def __init__(self, upload: Upload, start: int, hooks: SessionHooks) -> None:
        self.upload = upload
        self.start = start
        self.received = start
        self._hooks = hooks
        self.active = hooks.clock.seconds()
        self.cut: Callable[[], None] = lambda: None
        self.superseded = False
        self.ready: Deferred[None] = Deferred()
        self._creator: StreamCreator | None = None
        self._waiting: list[tuple[bytes, Deferred[None]]] = []
        self._saved = -1
        self._ended = False
        self._failure: Failure | None = None
        if start == 0:
            self._ready(StreamCreator(hooks.store, hooks.run, upload.name,
                                      key=upload.stream_key, workers=hooks.workers))
        else:
            resumed = StreamCreator.resume(hooks.store, hooks.run, upload.checkpoint or {},
                                           workers=hooks.workers)
            resumed.addCallbacks(self._ready, self._not_resumed)

    def __repr__(self) -> str:
        return (f"<UploadSession {self.upload.name!r} from {self.start}, {self.received} of "
                f"{self.upload.size} bytes>")

    @property
    def offset(self) -> int:
        """
        Where an upload of the file would go on from now.
        """
        return self._creator.stored if self._creator is not None else self.start

    @property
    def ended(self) -> bool:
        return self._ended

    def _ready(self, creator: StreamCreator) -> None:
        if self._ended:
            self._fail_waiting(self._stopped("it was stopped"))
            return
        self._creator = creator
        self._saved = creator.stored
        waiting, self._waiting = self._waiting, []
        for data, d in waiting:
            self._write(data).chainDeferred(d)
        self.ready.callback(None)

    def _not_resumed(self, failure: Failure) -> None:
        """
        The blobs the checkpoint lists are gone or damaged: the file must be
        sent again from its first byte.
        """
        reason = failure.getErrorMessage()
        _log.warn("Cannot resume the upload of {name}: {reason}; it must start again from "
                  "byte 0", name=self.upload.name, reason=reason)
        self._hooks.save(0, {"version": 0, "reset": reason})
        self._failure = Failure(OffsetMismatchError(
            0, f"the node lost what it held of {self.upload.name!r} ({reason}); send it again "
            "from its first byte"))
        self._end()
        self._fail_waiting(self._failure)

    def _stopped(self, why: str) -> Failure:
        return Failure(UploadCancelledError(f"the upload of {self.upload.name!r} stopped: {why}"))

    def _fail_waiting(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(failure)
        if not self.ready.called:
            self.ready.callback(None)

    # taking bytes

    def write(self, data: bytes) -> Deferred[None]:
        """
        Take the next bytes of the file.

        @return: fires once the caller may write more; fails with
            L{WrongLengthError} if they pass the declared size (the session
            then ends, resumable), or with the store's error.
        """
        if self._failure is not None:
            return _failed(self._failure)
        if self._ended:
            return _failed(self._stopped("it was stopped"))
        size = self.upload.size
        if self.received + len(data) > size:
            self._keep("more bytes than declared")
            self._failure = Failure(WrongLengthError(
                self.offset, f"{self.upload.name!r} is {size} bytes, and more were sent"))
            return _failed(self._failure)
        self.received += len(data)
        self.active = self._hooks.clock.seconds()
        if self._creator is None:
            waiting: Deferred[None] = Deferred()
            self._waiting.append((bytes(data), waiting))
            return waiting
        return self._write(data)

    def _write(self, data: bytes) -> Deferred[None]:
        assert self._creator is not None
        written = self._creator.write(data)
        written.addCallbacks(self._wrote, self._write_failed)
        return written

    def _wrote(self, result: None) -> None:
        """
        Save the checkpoint if one more blob is stored.
        """
        creator = self._creator
        self.active = self._hooks.clock.seconds()
        if creator is not None and not self._ended and creator.stored != self._saved:
            self._saved = creator.stored
            self._hooks.save(creator.stored, creator.checkpoint())

    def _write_failed(self, failure: Failure) -> Failure:
        """
        The creator failed (the store refused a blob): it removed its
        blobs, so the file must start again from byte 0.
        """
        if not self._ended:
            self._hooks.save(0, {"version": 0, "reset": failure.getErrorMessage()})
            self._failure = failure
            self._end()
        return failure

    # ending

    def finish(self) -> Deferred[PublishedName]:
        """
        The request's body is all in: publish the file.

        @return: fires with the name published.  Fails with
            L{WrongLengthError} if fewer bytes than declared came (the
            session ends, resumable), with L{ChecksumMismatchError} (the
            file is cancelled, its blobs removed), or with the store's
            error.
        """
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> PublishedName:
        if self._failure is not None:
            self._failure.raiseException()
        if self._ended:
            self._stopped("it was stopped").raiseException()
        if self.received != self.upload.size:
            self._keep("fewer bytes than declared")
            raise WrongLengthError(
                self.offset, f"{self.upload.name!r} is {self.upload.size} bytes, and the upload "
                f"ended after {self.received}")
        await self.ready
        if self._failure is not None:
            self._failure.raiseException()
        creator = self._creator
        if self._ended or creator is None:
            self._stopped("it was stopped").raiseException()
        assert creator is not None
        result = await creator.finish()
        if self._ended:
            self._stopped("it was stopped").raiseException()
        self._end()
        if result.md5 != self.upload.md5:
            await self._hooks.refused(self.upload, result.sd_hash)
            raise ChecksumMismatchError(self.upload, result.md5)
        return self._hooks.published(self.upload, result.sd_hash)

    def abandon(self, why: str) -> None:
        """
        End the session and keep what it stored for a resumed upload (the
        connection dropped, another request took over, or the node stops),
        and drop the request's connection.
        """
        if not self._ended:
            self._keep(why)
            self.cut()

    def _keep(self, why: str) -> None:
        """
        End the session and keep what it stored, for a resumed upload.
        """
        if self._ended:
            return
        creator = self._creator
        if creator is not None and creator.stored != self._saved:
            self._saved = creator.stored
            self._hooks.save(creator.stored, creator.checkpoint())
        _log.info("Upload of {name} stopped ({why}) after {received} of {size} bytes; it can go "
                  "on from byte {offset}", name=self.upload.name, why=why,
                  received=self.received, size=self.upload.size, offset=self.offset)
        self._end()
        self._fail_waiting(self._stopped(why))

    def save_late(self) -> None:
        """
        A blob this session's creator was storing when the session ended
        has landed: save the checkpoint that counts it, unless another
        session of the file began meanwhile.
        """
        creator = self._creator
        if (self._ended and not self.superseded and self._failure is None
                and creator is not None and creator.stored > self._saved):
            self._saved = creator.stored
            self._hooks.save(creator.stored, creator.checkpoint())

    async def cancel(self, why: str) -> None:
        """
        End the session and remove what its creator stored.
        """
        creator = self._creator
        if not self._ended:
            self._end()
            self._fail_waiting(self._stopped(why))
            self.cut()
        if creator is not None:
            await creator.cancel()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._hooks.ended(self)


def _failed(failure: Failure) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.errback(failure)
    return d
