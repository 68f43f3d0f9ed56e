"""
One start of the Tor provider (L{TorRun}): the tor it launched or connected
to, until the service stops; launching a tor of the node's own for it
(L{launch_tor}) and leaving that tor again (L{close_run}).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.errors import TorError, TorStartError
from p2pblob.reach._tor_process import (
    ControlConnector,
    SpawnWatcher,
    Transcript,
    control_socket,
    find_tor,
    tor_config,
)

__all__ = ["QUIT_TIMEOUT", "TorRun", "close_run", "launch_tor"]

_log = Logger()

# how long tor may take to exit (or to close the control connection) when
# asked to; a launched tor still running then is killed
QUIT_TIMEOUT = 10.0


class TorRun:
    """
    One start of the service, and the tor it started or connected to, until
    it stops.

    @ivar phase: what the start waits for: C{"connecting"} (tor's control
        port), C{"bootstrapping"} (tor joining the network), C{"asking"}
        (tor's answers about itself) or C{"done"}.
    @ivar error: why the start was cancelled, set by whoever cancels it.
    @ivar tor: the C{txtorcon.Tor}, once launched or connected, until it
        is lost.
    @ivar disconnected: whether the control connection to tor has closed.
    @ivar quitting: whether tor was asked to go (its going is then no news).
    @ivar closed: whether the run is over, its tor left.
    """

    def __init__(self) -> None:
        self.phase = "connecting"
        self.progress: int | None = None
        self.summary: str | None = None
        self.error: TorError | None = None
        self.starting: Deferred[None] | None = None
        self.watchdog: IDelayedCall | None = None
        self.tor: Any = None
        self.transcript = Transcript()
        self.connector: ControlConnector | None = None
        self.socket_dir: Path | None = None
        self.process: Any = None
        self.exited: str | None = None
        self.disconnected = False
        self.quitting = False
        self.closed = False
        self._gone: list[Deferred[None]] | None = None

    def spawned(self, process: Any) -> None:
        """
        tor was spawned, with this C{txtorcon.TorProcessProtocol}.
        """
        self.process = process
        self._gone = []

    def ended(self, words: str) -> None:
        """
        The launched tor has exited, as C{words} say.
        """
        self.exited = words
        waiting, self._gone = self._gone or [], None
        for waiter in waiting:
            waiter.callback(None)

    def when_gone(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once the launched tor has exited (at
            once if there is none, or it has).
        """
        if self._gone is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._gone.append(waiter)
        return waiter

    def last_words(self) -> str | None:
        """
        The last complaints of a launched tor, if any (see L{Transcript}).
        """
        return self.transcript.last_words()


async def launch_tor(
    reactor: Any,
    txtorcon: ModuleType,
    run: TorRun,
    tor_binary: str | None,
    data_dir: Path,
    options: Sequence[tuple[str, str]],
    exited: Callable[[Failure], None],
) -> Any:
    """
    Launch a tor with C{txtorcon.launch}, its control socket connected to
    however late tor opens it; the process is kept in C{run}.

    @param tor_binary: the program, or C{None} to look for it.
    @param data_dir: tor's data directory (made, mode 0700, if need be).
    @param options: more torrc options.
    @param exited: called with the reason when the process ends, in place
        of C{txtorcon}'s C{processEnded}.

    @return: the C{txtorcon.Tor}, once tor has bootstrapped.

    @raise TorUnavailableError: there is no tor program.
    @raise TorStartError: the data directory cannot be made.
    """
    binary = find_tor(txtorcon, tor_binary)
    data_dir = data_dir.absolute()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as e:
        raise TorStartError(f"cannot use {data_dir} for tor's data: {e}") from e
    socket, run.socket_dir = control_socket(data_dir)

    def opened(protocol: Any) -> None:
        run.phase = "bootstrapping"

    connector = run.connector = ControlConnector(
        reactor,
        UNIXClientEndpoint(reactor, str(socket)),
        txtorcon.TorProtocolFactory,
        opened,
    )

    def spawned(process: Any) -> None:
        run.spawned(process)

        # what txtorcon's processEnded does, without logging an error
        # each time tor exits, even when asked to
        def ended(reason: Failure) -> None:
            process.cleanup()
            exited(reason)

        process.processEnded = ended

    def progress(percent: float, tag: str, summary: str) -> None:
        run.progress, run.summary = int(percent), summary

    try:
        return await txtorcon.launch(
            SpawnWatcher(reactor, spawned),
            progress_updates=progress,
            control_port=f"unix:{socket}",
            data_directory=str(data_dir),
            stdout=run.transcript,
            stderr=run.transcript,
            tor_binary=binary,
            connection_creator=connector,
            kill_on_stderr=False,
            _tor_config=tor_config(txtorcon, options),
        )
    finally:
        connector.give_up()


async def close_run(reactor: Any, run: TorRun) -> None:
    """
    Leave the run's tor: close the control connection and, for a
    launched tor, have it exit (killing it if it will not) and wait
    for it.  Never fails.
    """
    run.quitting = True
    run.closed = True
    if run.connector is not None:
        run.connector.give_up()
    if run.tor is not None and not run.disconnected:
        quit = run.tor.quit
    elif run.process is not None and run.exited is None:
        quit = run.process.quit
    else:
        quit = None
    quitted = quit is None or await _within(reactor, _call(quit), "tor did not quit")
    if run.process is not None and run.exited is None and quitted:
        await _within(reactor, run.when_gone(), "tor did not exit")
    if run.process is not None and run.exited is None:
        _log.warn("Killing tor (process {pid}): it did not exit when asked to",
                  pid=getattr(run.process.transport, "pid", None))
        _kill(run.process)
        await _within(reactor, run.when_gone(), "tor did not exit when killed")
    if run.socket_dir is not None:
        shutil.rmtree(run.socket_dir, ignore_errors=True)


async def _within(reactor: Any, waiting: Any, what: str) -> bool:
    """
    Wait for C{waiting} (a coroutine or Deferred) for L{QUIT_TIMEOUT}
    seconds at most.

    @return: whether it succeeded in time (if not, C{what} is logged).
    """
    if not isinstance(waiting, Deferred):
        waiting = Deferred.fromCoroutine(waiting)
    waiting.addTimeout(QUIT_TIMEOUT, reactor)
    try:
        await waiting
    except Exception as e:
        _log.warn("{what}: {error}", what=what, error=str(e) or type(e).__name__)
        return False
    return True


async def _call(function: Callable[[], Any]) -> Any:
    """
    Call C{function} and wait for its result if it is a Deferred.
    """
    result = function()
    if isinstance(result, Deferred):
        return await result
    return result


def _kill(process: Any) -> None:
    try:
        process.transport.signalProcess("KILL")
    except Exception as e:
        _log.warn("Could not kill tor: {error}", error=str(e) or type(e).__name__)
