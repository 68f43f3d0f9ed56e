"""
What a service of the node does when it cannot start at all (its port is
taken, its files cannot be opened): say why, and stop the node.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["give_up"]


def give_up(
    log: Logger, reactor: Any, ready: Deferred[Any], failure: Failure, message: str,
    **fields: object,
) -> None:
    """
    Log C{message} as critical (with C{error} and C{fields}), fail the
    service's C{ready} Deferred (nobody needs to handle that failure), and
    stop the reactor: now, or as soon as it runs (twistd starts the
    services before it runs the reactor).
    """
    log.critical(message, error=failure.value, **fields)
    ready.errback(failure)
    ready.addErrback(lambda _: None)
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)
