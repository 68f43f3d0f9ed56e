"""
Reading what tor's control port says: how far tor has bootstrapped
(C{GETINFO status/bootstrap-phase}) and where its SOCKS port listens
(C{GETINFO net/listeners/socks}).  The parsing is pure.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["BootstrapPhase", "parse_bootstrap", "parse_listeners", "socks_endpoint"]


@dataclass(frozen=True)
class BootstrapPhase:
    """
    How far tor has got joining the Tor network.

    @ivar progress: in percent; 100 means ready.
    @ivar summary: what it is doing, in its words.
    @ivar warning: why it is stuck, when it says so.
    """

    progress: int
    summary: str | None = None
    warning: str | None = None

    @property
    def words(self) -> str | None:
        """
        What tor is doing or why it is stuck, for messages.
        """
        if self.warning and self.summary:
            return f"{self.summary}: {self.warning}"
        return self.warning or self.summary


def _keywords(text: str) -> dict[str, str]:
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    found = {}
    for word in words:
        key, equals, value = word.partition("=")
        if equals:
            found[key.upper()] = value
    return found


def parse_bootstrap(text: str) -> BootstrapPhase:
    """
    Read a bootstrap status line, such as C{'NOTICE BOOTSTRAP PROGRESS=100
    TAG=done SUMMARY="Done"'} (or the same as a C{WARN} with C{WARNING=}
    and C{REASON=}).  A line without a readable progress counts as 0%.
    """
    found = _keywords(text)
    try:
        progress = int(found.get("PROGRESS", "0"))
    except ValueError:
        progress = 0
    return BootstrapPhase(
        max(0, min(progress, 100)), found.get("SUMMARY"), found.get("WARNING")
    )


def parse_listeners(text: str) -> list[str]:
    """
    Read a listener list, such as C{'"127.0.0.1:9050" "unix:/run/tor/socks"'}.
    """
    try:
        return shlex.split(text)
    except ValueError:
        return [word.strip('"') for word in text.split()]


def socks_endpoint(reactor: Any, listener: str) -> IStreamClientEndpoint | None:
    """
    An endpoint that connects to a SOCKS listener tor reported (C{"HOST:PORT"},
    C{"[V6]:PORT"} or C{"unix:PATH"}); C{None} if it cannot be read.
    """
    if listener.startswith("unix:"):
        return UNIXClientEndpoint(reactor, listener[len("unix:"):])
    host, colon, port = listener.rpartition(":")
    if not colon or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        return TCP6ClientEndpoint(reactor, host[1:-1], int(port))
    return TCP4ClientEndpoint(reactor, host, int(port))
