"""
Launching a tor of the node's own with C{txtorcon.launch}: finding the
program, turning torrc options into the configuration C{launch} takes,
choosing the control socket, keeping the end of what tor prints, watching
the process, and connecting to the control socket however late tor opens it.

These work around two faults of C{txtorcon} 26.6 (see section B of the
project's Tor testing notes):

  - C{launch} connects to the control socket once, as soon as tor I{says}
    it opens it, which may be before the socket exists; the attempt then
    fails, is never retried, and C{launch} hangs (txtorcon issues #349 and
    #226).  L{ControlConnector} keeps trying.
  - Whenever a launched tor exits, even when asked to, C{txtorcon} logs
    C{RuntimeError("Tor exited with error-code 0")} as an error.
    L{SpawnWatcher} hands the process protocol over before tor starts, so
    that its C{processEnded} can be replaced by one that says what happened
    in words instead.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from p2pblob.errors import TorUnavailableError

__all__ = [
    "RETRY_SECONDS",
    "ControlConnector",
    "SpawnWatcher",
    "Transcript",
    "control_socket",
    "exit_words",
    "find_tor",
    "tor_config",
]

# how often the control socket is tried again while tor has not opened it
RETRY_SECONDS = 0.05

# the longest control socket path used: sun_path holds 108 bytes on Linux
# and 104 on the BSDs, the terminating NUL included
_SOCKET_PATH_MAX = 100

# "May 04 12:00:00.000 [notice] Bootstrapped 5% ..." -> "[notice] Bootstrapped 5% ..."
_TIMESTAMP = re.compile(r"^[A-Z][a-z]{2} +\d{1,2} [\d:.]+ (?=\[)")


def find_tor(txtorcon: ModuleType, tor_binary: str | None) -> str:
    """
    The tor program to launch.

    @param txtorcon: the C{txtorcon} module, whose finder also looks where
        tor is installed but not on C{PATH} (C{/usr/sbin}, for instance).
    @param tor_binary: the program the user named (a path, or a name looked
        for on C{PATH}), or C{None} to look for C{tor}.

    @raise TorUnavailableError: there is no such program.
    """
    if tor_binary is not None:
        found = shutil.which(tor_binary)
        if found is None:
            raise TorUnavailableError(
                f"the tor program {tor_binary} does not exist or cannot be run"
            )
        return found
    found = shutil.which("tor")
    if found is None:
        found = txtorcon.util.find_tor_binary()
        if isinstance(found, bytes):
            found = os.fsdecode(found)
    if not found:
        raise TorUnavailableError(
            "no tor program was found (looked on PATH, in /usr/sbin and in"
            " /usr/bin): install tor (apt-get install tor) or give its path"
        )
    return str(found)


def tor_config(txtorcon: ModuleType, options: Sequence[tuple[str, str]]) -> Any:
    """
    A C{txtorcon.TorConfig} holding torrc options, for C{launch(...,
    _tor_config=...)}, which passes each on tor's command line.

    @param options: C{(key, value)} pairs, in order; a key given more than
        once becomes a list, which C{launch} passes as a repeated option
        (its values keep their order; they come where the key first came).
    """
    grouped: dict[str, list[str]] = {}
    for key, value in options:
        grouped.setdefault(key, []).append(value)
    config = txtorcon.TorConfig()
    for key, values in grouped.items():
        setattr(config, key, values[0] if len(values) == 1 else values)
    return config


def control_socket(data_dir: Path) -> tuple[Path, Path | None]:
    """
    Where a launched tor's control socket goes: in its data directory when
    that path is short enough for a Unix socket, else in a private
    temporary directory (mode 0700, as tor requires).

    @param data_dir: tor's data directory, an absolute path.

    @return: the socket's path, and the temporary directory to remove once
        tor has exited (or C{None}).
    """
    path = data_dir / "control.socket"
    if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
        return path, None
    private = Path(tempfile.mkdtemp(prefix="p2pblob-tor-"))
    return private / "control.socket", private


def exit_words(reason: Failure) -> str:
    """
    How a process ended, in words, from the reason given to
    C{processEnded}.
    """
    signal = getattr(reason.value, "signal", None)
    code = getattr(reason.value, "exitCode", None)
    if signal is not None:
        return f"tor was killed by signal {signal}"
    if code == 0:
        return "tor exited"
    if code is not None:
        return f"tor exited with status {code}"
    return f"tor ended: {reason.getErrorMessage()}"


class Transcript:
    """
    The last lines a launched tor printed (C{launch} writes its standard
    output and error here), to say why it failed.
    """

    def __init__(self, keep: int = 20) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, data: str | bytes) -> None:
        """
        Take more of what tor printed (C{launch} gives its standard output
        as C{str}, its standard error as C{bytes}).
        """
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        *lines, self._partial = (self._partial + data).split("\n")
        for line in lines:
            self._add(line)

    def _add(self, line: str) -> None:
        line = _TIMESTAMP.sub("", line.strip())
        if line:
            self._lines.append(line)

    def last_words(self, count: int = 3) -> str | None:
        """
        The last few warnings or errors tor printed, or failing those its
        last few lines, joined; C{None} if it printed nothing.
        """
        lines = list(self._lines)
        if self._partial.strip():
            lines.append(_TIMESTAMP.sub("", self._partial.strip()))
        complaints = [line for line in lines if "[warn]" in line or "[err]" in line]
        chosen = (complaints or lines)[-count:]
        return " / ".join(chosen) or None


class SpawnWatcher:
    """
    The reactor as C{txtorcon.launch} sees it: the same reactor, providing
    the same interfaces, except that the protocol of the process it spawns
    is first handed to C{spawned}.
    """

    def __init__(self, reactor: Any, spawned: Callable[[Any], None]) -> None:
        self._reactor = reactor
        self._spawned = spawned
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_reactor", "_spawned"):
            raise AttributeError(name)
        return getattr(self._reactor, name)

    def spawnProcess(self, processProtocol: Any, *args: Any, **kwargs: Any) -> Any:
        self._spawned(processProtocol)
        return self._reactor.spawnProcess(processProtocol, *args, **kwargs)


class ControlConnector:
    """
    The C{connection_creator} given to C{txtorcon.launch}: connects to the
    launched tor's control socket, trying again every L{RETRY_SECONDS}
    while there is nothing listening there yet, until L{give_up} is called.

    After giving up, the Deferred of an attempt under way never fires: the
    launch it served has already failed or been stopped, and a failure
    would only make C{txtorcon} log an error.
    """

    def __init__(
        self,
        clock: Any,
        endpoint: IStreamClientEndpoint,
        factory: Callable[[], IProtocolFactory],
        connected: Callable[[Any], None],
    ) -> None:
        """
        @param clock: the L{twisted.internet.interfaces.IReactorTime} that
            spaces the attempts.
        @param endpoint: where the control socket is.
        @param factory: makes the control protocol's factory
            (C{txtorcon.TorProtocolFactory}).
        @param connected: called with the protocol once connected.
        """
        self._clock = clock
        self._endpoint = endpoint
        self._factory = factory
        self._connected = connected
        self._given_up = False
        self.attempts = 0

    def give_up(self) -> None:
        """
        Stop trying.
        """
        self._given_up = True

    def __call__(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect())

    async def _connect(self) -> Any:
        while not self._given_up:
            self.attempts += 1
            try:
                protocol = await self._endpoint.connect(self._factory())
            except ConnectError:
                await deferLater(self._clock, RETRY_SECONDS)
                continue
            self._connected(protocol)
            return protocol
        never: Deferred[Any] = Deferred()
        return await never
