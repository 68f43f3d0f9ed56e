"""
Manifest publishing: several files published over HTTP at once, each
declared up front (name, size, MD5), admitted all or none, uploaded, checked
and published as a stream under its name.  (AccessGrid's TransferServer
flow, with its holes fixed; L{p2pblob.http.publishing} is its HTTP face.)

A node publishes into I{prefixes}: namespaces of names, each name naming one
stream (C{files} by default; more with C{--publish-prefix}).  The flow:

  1. A manifest lists files.  L{ManifestPublisher.admit} checks every one
     (its name, see L{check_name}; its size; the prefix's quota and the
     room in the blob store: L{p2pblob.publish._admission}).  All pass and
     the manifest is admitted under a new I{transfer key}, its files
     I{pending} (listed, not downloadable); or none is, and the refusal
     names each file refused and why.

  2. Each file is uploaded (L{ManifestPublisher.begin}: an L{UploadSession})
     into a L{StreamCreator} as its bytes arrive, and is published when the
     last byte is in and its MD5 matches: the sd blob is written, the
     stream recorded as published and announced, and the name names it.
     On an MD5 mismatch the stream is removed again, blobs and all, and
     the pending entry is cancelled (the name is free again).

  3. An upload cut off halfway resumes: the blobs stored so far stay, the
     creator's checkpoint is saved after each blob stored, and a new upload
     of the rest of the file (from L{UploadSession.offset}, a multiple of
     the 2,097,151 bytes of plaintext of a blob) goes on from there, after
     a restart of the node too.  The stream key is chosen at admission and
     the IVs derive from it, so a resumed upload gives the stream a
     one-shot upload would have given.  An upload of the whole file starts
     again from its first byte.

  4. A transfer key expires C{ttl} seconds after it was issued or after
     the last upload of it ended (L{p2pblob.publish._lifetime}).  Then its
     files still pending are cancelled and their blobs removed, as
     cancelling the transfer (or one of its files) does at once; the files
     it published stay published.  Transfers still valid survive a restart
     of the node, so that their uploads can resume.

Every blob an upload stores is noted (by name, before it is written) in the
state file, so that cancelling or expiring it removes them all, even after
a crash, except any blob a recorded stream uses.

A name, once published, always names the same stream: names are neither
replaced nor removed here.  Names are local to this node: only the sd hash
travels to other nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import BlockingRunner
from p2pblob.blob.noted import NotingStore, remove_unused_blobs
from p2pblob.errors import (
    PublisherNotReadyError,
    StorageError,
    UnknownNameError,
    UnknownPrefixError,
    UnknownUploadError,
    UploadBusyError,
    UploadCompleteError,
)
from p2pblob.interfaces import IBlobStore
from p2pblob.publish._admission import admit, check_pending, check_range
from p2pblob.publish._lifetime import TransferLifetime
from p2pblob.publish._manifest_checks import (
    FileSpec,
    check_name,
    check_prefix,
    parse_manifest,
    store_room,
)
from p2pblob.publish._manifest_state import (
    CANCELLED,
    COMPLETE,
    PENDING,
    ManifestState,
    PublishedName,
    Transfer,
    Upload,
)
from p2pblob.publish._upload import SessionHooks, UploadSession

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TTL",
    "IDLE_TAKEOVER",
    "FileSpec",
    "ManifestPublisher",
    "PublishedName",
    "Transfer",
    "Upload",
    "UploadSession",
    "check_prefix",
    "parse_manifest",
    "store_room",
]

_log = Logger()

DEFAULT_PREFIX = "files"
"""
The prefix every node publishes into.
"""

DEFAULT_TTL = 3600.0
"""
Seconds a transfer key stays valid (see the module's docstring).
"""

IDLE_TAKEOVER = 30.0
"""
Seconds an upload must have received nothing before another upload of the
same file may take its place (its client most likely vanished without
closing the connection).
"""


class ManifestPublisher(Service):
    """
    Admits manifests, takes uploads, publishes them under their names.

    @param clock: the clock of the transfer keys' expiry.
    @param store: the blob store the streams go in.
    @param run: where the blobs are encrypted (threads).
    @param state_path: the SQLite file of names, transfers and uploads.
    @param prefixes: the prefixes published into.
    @param ttl: seconds a transfer key stays valid.
    @param quota: bytes each prefix may hold (published and pending), or
        L{None} for no quota.
    @param room: tells how many more bytes the store can take with its
        headroom kept (L{p2pblob.publish._manifest_checks.store_room}), or
        L{None} for no bound.
    @param announce: called after each publish, so that the new stream is
        announced at once.
    @param store_ready: fires once C{store} is open (L{None}: it is).
    @param workers: blobs of one upload encrypted and stored at once.
    @ivar ready: fires once the publisher serves (after its start-up
        sweep).
    """

    name = "manifest-publisher"

    def __init__(
        self,
        clock: IReactorTime,
        store: IBlobStore,
        run: BlockingRunner,
        state_path: Path,
        *,
        prefixes: Sequence[str] = (DEFAULT_PREFIX,),
        ttl: float = DEFAULT_TTL,
        quota: int | None = None,
        room: Callable[[], int | None] = lambda: None,
        announce: Callable[[], None] = lambda: None,
        store_ready: Deferred[Any] | None = None,
        workers: int = 4,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the ttl must be positive")
        self._clock = clock
        self._store = store
        self._run = run
        self._state_path = state_path
        self._prefixes: dict[str, None] = {}
        for prefix in prefixes:
            self.register_prefix(prefix)
        self.quota = quota
        self._room = room
        self._announce = announce
        self._store_ready = store_ready
        self._workers = workers
        self._state: ManifestState | None = None
        self._serving = False
        self._sessions: dict[tuple[str, int], UploadSession] = {}
        self._ended_sessions: dict[tuple[str, int], UploadSession] = {}
        self._lifetime = TransferLifetime(clock, store, ttl, lambda: self._state,
                                          self._sessions, self._ended_sessions)
        self._broken: str | None = None
        self.ready: Deferred[None] = Deferred()

    @property
    def ttl(self) -> float:
        """
        Seconds a transfer key stays valid.
        """
        return self._lifetime.ttl

    # prefixes

    def register_prefix(self, prefix: str) -> None:
        """
        Publish into C{prefix} too (AccessGrid's C{RegisterPrefix}).

        @raise ValueError: it is not a valid prefix name.
        """
        self._prefixes[check_prefix(prefix)] = None

    @property
    def prefixes(self) -> list[str]:
        return list(self._prefixes)

    def require_prefix(self, prefix: str) -> None:
        """
        @raise PublisherNotReadyError: the publisher does not serve yet.
        @raise UnknownPrefixError: it publishes into no C{prefix}.
        """
        self.state  # noqa: B018  (raises while not ready)
        self._check_prefix(prefix)

    def _check_prefix(self, prefix: str) -> None:
        if prefix not in self._prefixes:
            known = ", ".join(self._prefixes)
            raise UnknownPrefixError(f"this node publishes into no prefix {prefix[:70]!r} "
                                     f"(its prefixes: {known})")

    # life cycle

    def startService(self) -> None:
        super().startService()
        self._lifetime.start()
        try:
            self._state = ManifestState(self._state_path)
        except StorageError as e:
            self._broken = str(e)
            _log.critical("Manifest publishing is unavailable: {error}", error=e)
            return
        started = Deferred.fromCoroutine(self._start())
        started.addErrback(lambda f: _log.failure("Manifest publishing could not start", f))

    async def _start(self) -> None:
        if self._store_ready is not None:
            try:
                await _when(self._store_ready)
            except Exception:
                return  # (the store logged why; the node stops)
        if not self.running:
            return
        await self._lifetime.sweep(start=True)
        if not self.running:
            return
        self._serving = True
        _log.info("Manifest publishing into {prefixes} (transfer keys valid {ttl} s)",
                  prefixes=", ".join(self._prefixes), ttl=self.ttl)
        self.ready.callback(None)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._serving = False
        sweeping = self._lifetime.stop()
        for session in list(self._sessions.values()):
            session.abandon("the node stops")
        if sweeping is None:
            self._close()
            return None
        done: Deferred[None] = Deferred()

        def close(_: object) -> None:
            self._close()
            done.callback(None)

        sweeping.addBoth(close)
        return done

    def _close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None

    @property
    def state(self) -> ManifestState:
        if self._broken is not None:
            raise PublisherNotReadyError(f"manifest publishing is unavailable: {self._broken}")
        if self._state is None or not self._serving:
            raise PublisherNotReadyError("the node is starting or stopping: its blob store is not "
                                         "open; try again in a moment")
        return self._state

    # admission

    def admit(self, prefix: str, files: Sequence[FileSpec]) -> Transfer:
        """
        Admit a manifest's files into C{prefix}, all or none.

        @return: the transfer, its files pending.
        @raise UnknownPrefixError: no such prefix.
        @raise ManifestRefusedError: a file was refused (then none is
            admitted).
        """
        self._check_prefix(prefix)
        transfer = admit(self.state, prefix, files, now=self._clock.seconds(), ttl=self.ttl,
                         quota=self.quota, room=self._room)
        _log.info("Manifest of {count} file(s) admitted into {prefix} under transfer key {key}",
                  count=len(transfer.uploads), prefix=prefix, key=transfer.key)
        self._lifetime.schedule()
        return transfer

    # looking up

    def transfer(self, prefix: str, key: str) -> Transfer:
        """
        @raise UnknownUploadError: no such transfer in C{prefix}.
        """
        self._check_prefix(prefix)
        transfer = self.state.transfer(key)
        if transfer is None or transfer.prefix != prefix:
            raise UnknownUploadError(f"no transfer key {key[:40]!r} in {prefix!r} (it may have "
                                     f"expired: keys are valid {self.ttl:g} s)")
        return transfer

    def upload(self, prefix: str, key: str, number: int) -> Upload:
        """
        @raise UnknownUploadError: no such transfer in C{prefix}, or no such
            file in it.
        """
        transfer = self.transfer(prefix, key)
        if not 0 <= number < len(transfer.uploads):
            raise UnknownUploadError(f"transfer {key} has no file {number} (it has "
                                     f"{len(transfer.uploads)}, numbered from 0)")
        return transfer.uploads[number]

    def offset(self, upload: Upload) -> int:
        """
        Where an upload of C{upload} goes on from: the bytes stored so far
        (all of them once complete).
        """
        session = self._sessions.get((upload.transfer_key, upload.number))
        if session is not None:
            return session.offset
        return upload.size if upload.state == COMPLETE else upload.stored

    def expires(self, upload: Upload) -> float | None:
        transfer = self.state.transfer(upload.transfer_key)
        return None if transfer is None else transfer.expires

    def uploading(self, upload: Upload) -> bool:
        return (upload.transfer_key, upload.number) in self._sessions

    def names(self, prefix: str) -> list[PublishedName]:
        self._check_prefix(prefix)
        return self.state.names(prefix)

    def pending(self, prefix: str) -> list[Upload]:
        self._check_prefix(prefix)
        return self.state.uploads(prefix, PENDING)

    def lookup(self, prefix: str, name: str) -> PublishedName:
        """
        The stream published under C{name} in C{prefix}.

        @raise UnknownNameError: none is (the name may be pending).
        """
        self._check_prefix(prefix)
        try:
            name = check_name(name)
        except ValueError:
            pass
        state = self.state
        published = state.name(prefix, name)
        if published is None:
            pending = state.name_taken(prefix, name)
            raise UnknownNameError(
                f"{name[:100]!r} is pending in {prefix!r}: it is not uploaded yet" if pending
                else f"nothing is published under {name[:100]!r} in {prefix!r}", pending)
        return published

    # uploading

    def begin(self, prefix: str, key: str, number: int, *, start: int = 0,
              length: int | None = None) -> UploadSession:
        """
        Start taking the bytes of a file of a transfer, from byte C{start}
        (0: the whole file, from scratch; else where the node holds it up
        to, L{offset}).

        @param length: the bytes the request carries, if it says.
        @return: the session to write the bytes to; its C{ready} fires once
            it takes them (a resumed upload reads back what it holds
            first).
        @raise UnknownUploadError: no such file.
        @raise UploadCompleteError: it is already published.
        @raise UploadCancelledError: it was cancelled.
        @raise UploadBusyError: it is being uploaded right now.
        @raise OffsetMismatchError: C{start} is not where the node can go on.
        @raise WrongLengthError: C{length} is not the rest of the file.
        """
        upload = self.upload(prefix, key, number)
        check_pending(upload)
        ended = self._ended_sessions.pop((key, number), None)
        if ended is not None:
            ended.superseded = True
        session = self._sessions.get((key, number))
        if session is not None:
            idle = self._clock.seconds() - session.active
            if idle < IDLE_TAKEOVER:
                raise UploadBusyError(f"{upload.name!r} is being uploaded by another request "
                                      "right now")
            session.abandon(f"another request took over after {idle:.0f} s of silence")
            upload = self.upload(prefix, key, number)
        check_range(upload, start, length)
        session = UploadSession(upload, start, self._hooks(upload))
        if not session.ended:
            self._sessions[(key, number)] = session
        return session

    def _hooks(self, upload: Upload) -> SessionHooks:
        """
        What a session of C{upload} needs of this publisher.
        """

        def save(stored: int, checkpoint: dict[str, object]) -> None:
            if self._state is not None:
                self._state.save_checkpoint(upload.transfer_key, upload.number, stored,
                                            checkpoint)

        async def refused(upload: Upload, sd_hash: str) -> None:
            await self._store.remove_stream(sd_hash, True)
            await self._lifetime.cancel(self.state, [upload],
                                        "refused: its MD5 is not the one declared")

        return SessionHooks(self._clock, self._recording_store(upload), self._run, self._workers,
                            save, self._ended, self._published, refused)

    def _ended(self, session: UploadSession) -> None:
        """
        A session ended, however: the transfer's key stays valid C{ttl}
        seconds from now.
        """
        upload = session.upload
        if self._sessions.get((upload.transfer_key, upload.number)) is session:
            del self._sessions[(upload.transfer_key, upload.number)]
            # (its blobs still being stored are saved in its checkpoint as
            # they land, until another session of the file begins)
            self._ended_sessions[(upload.transfer_key, upload.number)] = session
        self._lifetime.extend(upload.transfer_key)

    def _published(self, upload: Upload, sd_hash: str) -> PublishedName:
        self._ended_sessions.pop((upload.transfer_key, upload.number), None)
        published = self.state.complete(upload, sd_hash, self._clock.seconds())
        _log.info("Published {name} in {prefix} as stream {sd_hash} (transfer {key}, file "
                  "{number})", name=upload.name, prefix=upload.prefix, sd_hash=sd_hash,
                  key=upload.transfer_key, number=upload.number)
        try:
            self._announce()
        except Exception:
            _log.failure("Could not announce stream {sd_hash}", sd_hash=sd_hash)
        return published

    def _blob_stored(self, upload: Upload, blob_hash: str) -> None:
        """
        A blob of C{upload} landed in the store: if the upload was cancelled
        meanwhile, it goes at once.
        """
        state = self._state
        if state is None:
            return  # (stopped: the next start sweeps what must go)
        current = state.upload(upload.transfer_key, upload.number)
        if current is None or current.state == CANCELLED:
            Deferred.fromCoroutine(remove_unused_blobs(self._store, [blob_hash])).addErrback(
                lambda f: _log.failure("Could not remove a blob of a cancelled upload", f))
            return
        ended = self._ended_sessions.get((upload.transfer_key, upload.number))
        if ended is not None and current.state == PENDING:
            # (once the creator has counted it)
            self._clock.callLater(0, ended.save_late)

    def _recording_store(self, upload: Upload) -> NotingStore:
        def record(blob_hash: str) -> None:
            # (a blob that cannot be noted is not written: once the state is
            # closed, blobs still being made for the upload are dropped
            # rather than left in the store unaccounted for)
            if self._state is None:
                raise StorageError(
                    f"the publisher stopped: blob {blob_hash[:16]} of {upload.name!r:.100} "
                    "is not stored (the upload resumes from its last checkpoint)"
                )
            self._state.record_blob(upload.transfer_key, upload.number, blob_hash)

        return NotingStore(self._store, record,
                           lambda blob_hash: self._blob_stored(upload, blob_hash))

    # cancelling

    def cancel_transfer(self, prefix: str, key: str) -> Deferred[list[Upload]]:
        """
        Cancel the files of a transfer still pending (those published stay
        published); their blobs are removed.

        @return: fires with the files cancelled, once their blobs are gone.
        @raise UnknownUploadError: no such transfer.
        """
        transfer = self.transfer(prefix, key)
        pending = [u for u in transfer.uploads if u.state == PENDING]
        return Deferred.fromCoroutine(self._lifetime.cancel(self.state, pending, "cancelled"))

    def cancel_upload(self, prefix: str, key: str, number: int) -> Deferred[list[Upload]]:
        """
        Cancel one file of a transfer, if it is pending.

        @raise UnknownUploadError: no such file.
        @raise UploadCompleteError: it is already published.
        """
        upload = self.upload(prefix, key, number)
        if upload.state == COMPLETE:
            raise UploadCompleteError(upload)
        pending = [upload] if upload.state == PENDING else []
        return Deferred.fromCoroutine(self._lifetime.cancel(self.state, pending, "cancelled"))

    # reporting

    def summary(self) -> dict[str, Any]:
        """
        Per prefix: the names published, the files pending and the bytes
        both take (for the node's status).
        """
        if self._state is None or not self._serving:
            return {"ready": False, "prefixes": {}}
        state = self._state
        return {
            "ready": True,
            "ttl": self.ttl,
            "quota": self.quota,
            "prefixes": {
                prefix: {"published": len(state.names(prefix)),
                         "pending": len(state.uploads(prefix, PENDING)),
                         "bytes": state.prefix_usage(prefix)}
                for prefix in self._prefixes
            },
        }



def _when(d: Deferred[Any]) -> Deferred[Any]:
    """
    A Deferred that fires as C{d} does, leaving C{d}'s result alone.
    """
    out: Deferred[Any] = Deferred()

    def pass_on(result: object) -> object:
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)
        return result

    d.addBoth(pass_on)
    return out
