"""
Running blocking work (disk I/O, hashing, encryption) off the reactor thread.

Code that must block takes a L{BlockingRunner}: a callable that runs
C{f(*args)} somewhere and returns a Deferred of its result.  Services use a
L{ThreadWorker} (a bounded thread pool of their own); unit tests pass
L{run_inline}, so they stay synchronous and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = ["BlockingRunner", "ThreadWorker", "one_at_a_time", "run_inline"]

_T = TypeVar("_T")


class BlockingRunner(Protocol):
    def __call__(
        self, f: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> Deferred[_T]: ...


def run_inline(f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
    """
    Run C{f} right away in the calling thread (for tests and tools that have
    nothing else to do meanwhile).
    """
    return maybeDeferred(f, *args, **kwargs)


def one_at_a_time(run: BlockingRunner) -> BlockingRunner:
    """
    A runner that passes its jobs to C{run} one at a time, in the order they
    were given: each starts once the one before it is done, whatever its
    outcome.  (A L{ThreadWorker} of one thread keeps that order by itself,
    and faster: the next job does not wait for the reactor.)
    """
    previous: Deferred[None] = succeed(None)

    def serial(f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        nonlocal previous
        result: Deferred[_T] = Deferred()

        def start(_: object) -> Deferred[None]:
            job = run(f, *args, **kwargs)
            job.chainDeferred(result)
            return job  # type: ignore[return-value]  # fires None once passed on

        previous = previous.addCallback(start)
        return result

    return serial


class ThreadWorker:
    """
    A bounded pool of threads for blocking work, started and stopped with the
    service that owns it.
    """

    def __init__(
        self, reactor: IReactorThreads, name: str, max_threads: int = 4
    ) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)
        self._running = False

    def start(self) -> None:
        self._pool.start()
        self._running = True

    def stop(self) -> None:
        """
        Stop the threads once the work queued so far is done (at most once).
        """
        if self._running:
            self._running = False
            self._pool.stop()

    def __call__(
        self, f: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
