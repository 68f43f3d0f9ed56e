"""
The host that runs a storage plugin's backend for the node.

Every call the node makes to a backend goes through a L{StorageHost}: it
wraps the call (so a backend may answer with a value or a L{Deferred}),
runs it in the plugin's own threads if the plugin blocks, tries it again
with growing pauses when the service fails (L{ServiceError}), and makes up
for the optional methods a backend does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import BlockingRunner, ThreadWorker, run_inline
from p2pblob.errors import DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.interfaces import IStorageBackend, IStoragePlugin
from p2pblob.storage.options import parse_options

__all__ = ["FIRST_RETRY_DELAY", "MAX_RETRY_DELAY", "THREADS", "StorageHost", "retry_delay"]

_log = Logger()

_T = TypeVar("_T")

FIRST_RETRY_DELAY = 0.5
"""
Seconds to wait before trying a failed call again the first time; each
further wait is twice as long, up to L{MAX_RETRY_DELAY}.
"""

MAX_RETRY_DELAY = 30.0
"""
The longest wait, in seconds, between two tries of a call.
"""

THREADS = 4
"""
How many threads a blocking plugin's calls may use at once.
"""


def retry_delay(attempt: int) -> float:
    """
    How long to wait before a retry.

    @param attempt: which retry this is, counted from 1.

    @return: the pause in seconds: 0.5, 1, 2, 4 and so on, at most 30.
    """
    return float(min(FIRST_RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY))


def _describe(arguments: tuple[object, ...]) -> str:
    """
    A call's arguments as text for a log, with data shown only by its size.
    """
    shown = [
        f"<{len(a)} bytes>" if isinstance(a, (bytes, bytearray, memoryview)) else repr(a)
        for a in arguments
    ]
    return ", ".join(shown)


class StorageHost(Service):
    """
    A storage plugin's backend, as the node uses it: every method has the
    name of the L{IStorageBackend} method it calls and returns a L{Deferred}.

    A call that fails with L{ServiceError} is tried again after
    L{retry_delay} seconds, at most C{options["retries"]} times, and the
    last failure is passed on; any other failure (L{DriverError} among them)
    is passed on at once.  Stopping the service cancels the pauses between
    tries: those calls then fail with L{twisted.internet.defer.CancelledError}.

    @ivar plugin: the plugin.
    @ivar options: every option's value, checked and converted.
    @ivar backend: the plugin's backend.
    @ivar chunk_size: the chunk size in bytes: the C{chunk_size} option's,
        then the one agreed with L{negotiate_chunk_size}.
    """

    def __init__(
        self,
        plugin: IStoragePlugin,
        options: Mapping[str, object],
        clock: IReactorTime,
        reactor_threads: IReactorThreads | None = None,
    ) -> None:
        """
        Check the options and make the backend.

        @param plugin: the storage plugin.
        @param options: the options given to it, as strings from a
            configuration or as values (see L{parse_options}).
        @param clock: the time source for the pauses between tries, also
            given to the backend.
        @param reactor_threads: the reactor that runs a blocking plugin's
            calls in a pool of L{THREADS} threads of its own (started and
            stopped with this service); C{None} runs them in the calling
            thread, for tests and tools.

        @raise p2pblob.errors.ConfigError: an option is wrong.
        @raise p2pblob.errors.DriverError: the backend cannot be made.
        """
        self.plugin = plugin
        self.options = parse_options(plugin, options)
        self.chunk_size: int = self.options["chunk_size"]
        self._retries: int = self.options["retries"]
        self._clock = clock
        self._worker: ThreadWorker | None = None
        self._run: BlockingRunner = run_inline
        if plugin.blocking and reactor_threads is not None:
            self._worker = ThreadWorker(reactor_threads, f"storage-{plugin.name}", THREADS)
            self._run = self._worker
        self._pauses: set[Deferred[None]] = set()
        self.backend: IStorageBackend = plugin.backend(self.options, clock)

    def startService(self) -> None:
        super().startService()
        if self._worker is not None:
            self._worker.start()

    def stopService(self) -> Deferred[None] | None:
        """
        Cancel the pauses between tries, stop the threads, and let the
        backend close its connections (L{IStorageBackend.close}).

        @return: a Deferred that fires once the backend is closed.
        """
        for pause in list(self._pauses):
            pause.cancel()
        if self._worker is not None:
            self._worker.stop()
        super().stopService()

        def closed(result: object) -> None:
            if isinstance(result, Failure) and not result.check(NotImplementedError):
                _log.failure("storage plugin {plugin}: could not close the backend",
                             result, plugin=self.plugin.name)

        return maybeDeferred(self.backend.close).addBoth(closed)

    # -- calling the backend ------------------------------------------------

    def _call(self, name: str, *arguments: Any) -> Deferred[Any]:
        """
        Call a backend method, trying again while the service fails.
        """
        return Deferred.fromCoroutine(self._tries(name, arguments))

    async def _tries(self, name: str, arguments: tuple[Any, ...]) -> Any:
        method: Callable[..., Any] = getattr(self.backend, name)
        attempt = 0
        while True:
            try:
                return await self._run(method, *arguments)
            except ServiceError as e:
                attempt += 1
                if attempt > self._retries:
                    raise
                delay = retry_delay(attempt)
                _log.warn(
                    "storage plugin {plugin}: {call}({arguments}) failed: {error}; "
                    "retry {attempt} of {retries} in {delay} s",
                    plugin=self.plugin.name,
                    call=name,
                    arguments=_describe(arguments),
                    error=e,
                    attempt=attempt,
                    retries=self._retries,
                    delay=delay,
                )
                await self._pause(delay)

    def _pause(self, seconds: float) -> Deferred[None]:
        pause: Deferred[None] = deferLater(self._clock, seconds, lambda: None)
        self._pauses.add(pause)

        def done(result: _T) -> _T:
            self._pauses.discard(pause)
            return result

        return pause.addBoth(done)

    def _cannot(self, what: str) -> DriverError:
        return DriverError(f"the {self.plugin.name!r} backend cannot {what}")

    # -- the backend's methods ---------------------------------------------

    def negotiate_chunk_size(self) -> Deferred[int]:
        """
        Agree on the chunk size with the backend (L{IStorageBackend.set_chunk_size}),
        asking for the C{chunk_size} option's; the answer becomes
        L{chunk_size}.  A backend without the method keeps the option's.

        @return: a Deferred that fires with the chunk size agreed; it fails
            with L{DriverError} if the backend answers something that is not
            a size at least as large as the one asked for.
        """
        return Deferred.fromCoroutine(self._negotiate_chunk_size())

    async def _negotiate_chunk_size(self) -> int:
        wanted: int = self.options["chunk_size"]
        try:
            size = await self._call("set_chunk_size", wanted)
        except NotImplementedError:
            size = wanted
        if not isinstance(size, int) or isinstance(size, bool) or size < wanted:
            raise DriverError(
                f"the {self.plugin.name!r} backend answered {size!r:.50} when asked "
                f"for chunks of {wanted} bytes"
            )
        self.chunk_size = size
        return size

    def get_chunk(self, key: str, offset: int, size: int) -> Deferred[bytes]:
        """
        Read part of a file (L{IStorageBackend.get_chunk}; with a backend that
        lacks it, from the whole file).
        """
        return Deferred.fromCoroutine(self._get_chunk(key, offset, size))

    async def _get_chunk(self, key: str, offset: int, size: int) -> bytes:
        try:
            return bytes(await self._call("get_chunk", key, offset, size))
        except NotImplementedError:
            pass
        try:
            whole = await self._call("get_file", key)
        except NotImplementedError:
            raise self._cannot("read files") from None
        return bytes(whole[offset : offset + size])

    def get_file(self, key: str) -> Deferred[bytes]:
        """
        Read a whole file (L{IStorageBackend.get_file}; with a backend that
        lacks it, chunk by chunk).
        """
        return Deferred.fromCoroutine(self._get_file(key))

    async def _get_file(self, key: str) -> bytes:
        try:
            return bytes(await self._call("get_file", key))
        except NotImplementedError:
            pass
        parts = []
        offset = 0
        while True:
            try:
                chunk = await self._call("get_chunk", key, offset, self.chunk_size)
            except NotImplementedError:
                raise self._cannot("read files") from None
            parts.append(bytes(chunk))
            offset += len(chunk)
            if len(chunk) < self.chunk_size:
                return b"".join(parts)

    def start_upload(self, key: str, size: int | None) -> Deferred[str | None]:
        """
        Begin an upload (L{IStorageBackend.start_upload}).

        @return: a Deferred that fires with the service's name for the
            upload, or C{None}.
        """
        return Deferred.fromCoroutine(self._start_upload(key, size))

    async def _start_upload(self, key: str, size: int | None) -> str | None:
        upload_id = await self._call("start_upload", key, size)
        if upload_id is not None and not isinstance(upload_id, str):
            raise DriverError(
                f"the {self.plugin.name!r} backend answered {upload_id!r:.50} as the "
                f"name of the upload of {key!r:.200}"
            )
        return upload_id

    def upload_chunk(self, key: str, offset: int, data: bytes) -> Deferred[None]:
        """
        Write a chunk of an upload (L{IStorageBackend.upload_chunk}).
        """
        return self._call("upload_chunk", key, offset, data)

    def end_upload(self, key: str) -> Deferred[None]:
        """
        Commit an upload (L{IStorageBackend.end_upload}).
        """
        return self._call("end_upload", key)

    def abort_upload(self, key: str) -> Deferred[None]:
        """
        Give up an upload (L{IStorageBackend.abort_upload}).
        """
        return self._call("abort_upload", key)

    def restart_upload(
        self, key: str, offset: int, upload_id: str | None = None
    ) -> Deferred[int]:
        """
        Resume an upload from what the service really holds
        (L{IStorageBackend.restart_upload}).

        @return: a Deferred that fires with the offset to continue from; it
            fails with L{DriverError} if the backend answers something that
            is not an offset.
        """
        return Deferred.fromCoroutine(self._restart_upload(key, offset, upload_id))

    async def _restart_upload(self, key: str, offset: int, upload_id: str | None) -> int:
        safe = await self._call("restart_upload", key, offset, upload_id)
        if not isinstance(safe, int) or isinstance(safe, bool) or safe < 0:
            raise DriverError(
                f"the {self.plugin.name!r} backend answered {safe!r:.50} when asked "
                f"where to resume {key!r:.200}"
            )
        return safe

    def upload_file(self, key: str, data: bytes) -> Deferred[None]:
        """
        Store a whole file (L{IStorageBackend.upload_file}; with a backend
        that lacks it, as an upload of L{chunk_size} chunks).
        """
        return Deferred.fromCoroutine(self._upload_file(key, data))

    async def _upload_file(self, key: str, data: bytes) -> None:
        try:
            await self._call("upload_file", key, data)
            return
        except NotImplementedError:
            pass
        await self._call("start_upload", key, len(data))
        try:
            view = memoryview(data)
            for offset in range(0, len(data), self.chunk_size):
                chunk = bytes(view[offset : offset + self.chunk_size])
                await self._call("upload_chunk", key, offset, chunk)
            await self._call("end_upload", key)
        except BaseException:
            await self._abort_quietly(key)
            raise

    async def _abort_quietly(self, key: str) -> None:
        """
        Abort an upload that failed; if even that fails, log it and go on
        (the caller passes on the first failure).
        """
        try:
            await self._call("abort_upload", key)
        except Exception:
            _log.failure(
                "storage plugin {plugin}: could not abort the upload of {key}",
                plugin=self.plugin.name,
                key=key,
            )

    def delete_file(self, key: str) -> Deferred[None]:
        """
        Remove a file (L{IStorageBackend.delete_file}).
        """
        return self._call("delete_file", key)

    def move_file(self, old_key: str, new_key: str) -> Deferred[None]:
        """
        Rename a file (L{IStorageBackend.move_file}; with a backend that
        lacks it, by copying it chunk by chunk under the new name, then
        deleting the old one).  Renaming a file to its own name does nothing.
        """
        return Deferred.fromCoroutine(self._move_file(old_key, new_key))

    async def _move_file(self, old_key: str, new_key: str) -> None:
        if old_key == new_key:
            return
        try:
            await self._call("move_file", old_key, new_key)
            return
        except NotImplementedError:
            pass
        size = await self._call("size", old_key)
        if size is None:
            raise StorageKeyNotFoundError(old_key)
        await self._call("start_upload", new_key, size)
        try:
            offset = 0
            while offset < size:
                chunk = await self._get_chunk(old_key, offset, self.chunk_size)
                if not chunk:
                    raise DriverError(f"{old_key!r:.200} shrank while it was being renamed")
                await self._call("upload_chunk", new_key, offset, chunk)
                offset += len(chunk)
            await self._call("end_upload", new_key)
        except BaseException:
            await self._abort_quietly(new_key)
            raise
        await self._call("delete_file", old_key)

    def exists(self, key: str) -> Deferred[bool]:
        """
        Say whether a file is stored (L{IStorageBackend.exists}).
        """
        return self._call("exists", key)

    def size(self, key: str) -> Deferred[int | None]:
        """
        Give a file's size, or C{None} (L{IStorageBackend.size}).
        """
        return self._call("size", key)
