"""
How every C{p2pblob} command runs: on the reactor, with the data
directory's blob store open, and with its errors turned into one line for
the user and an exit status, in this one place: a L{P2PBlobError} exits 1
with its message; anything else is a bug, reported as such (with the
traceback under C{--debug}), and exits 2.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from p2pblob._threads import ThreadWorker
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.errors import P2PBlobError
from p2pblob.tap import config_from

__all__ = ["ClientCommand", "Command", "Options", "run", "run_client"]


@dataclass
class Options:
    data_dir: str | None
    disk_limit: str | None
    debug: bool


Command = Callable[[Any, BlobStore, ThreadWorker, Config], Awaitable[int]]
ClientCommand = Callable[[Any, Config], Awaitable[int]]


def report(error: BaseException, debug: bool) -> int:
    if isinstance(error, P2PBlobError):
        click.echo(f"p2pblob: error: {error}", err=True)
        if debug:
            traceback.print_exception(error)
        return 1
    if isinstance(error, KeyboardInterrupt | CancelledError):
        click.echo("p2pblob: interrupted", err=True)
        return 130
    click.echo(
        f"p2pblob: internal error: {type(error).__name__}: {error}"
        + ("" if debug else " (run with --debug for the details)"),
        err=True,
    )
    if debug:
        traceback.print_exception(error)
    return 2


def run(options: Options, command: Command) -> None:
    """
    Open the store of the configured data directory, run C{command} on the
    reactor, close everything and exit with the command's status.
    """
    _begin_logging(options)

    async def main(reactor: Any) -> None:
        try:
            config = config_from(options.data_dir, options.disk_limit)
            worker = ThreadWorker(reactor, "p2pblob-cli", max_threads=4)
            worker.start()
            # however the command ends, its threads must not keep the
            # process alive
            reactor.addSystemEventTrigger("after", "shutdown", worker.stop)
            store = BlobStore(reactor, worker, config.blob_dir, config.index_path, config.disk_limit)
            try:
                await store.start()
                status = await command(reactor, store, worker, config)
            finally:
                store.stop()
                worker.stop()
        except BaseException as e:
            status = report(e, options.debug)
        raise SystemExit(status)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))


def _begin_logging(options: Options) -> None:
    level = LogLevel.debug if options.debug else LogLevel.warn
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr, timeFormat=None if not options.debug else "%H:%M:%S"),
                [LogLevelFilterPredicate(defaultLogLevel=level)],
            )
        ],
        redirectStandardIO=False,
    )


def run_client(options: Options, command: ClientCommand) -> None:
    """
    Run C{command}, which talks to a running node through its API, on the
    reactor, and exit with its status; the data directory's store is left
    to the node (opening it here would reconcile it under the node).
    """
    _begin_logging(options)

    async def main(reactor: Any) -> None:
        try:
            status = await command(reactor, config_from(options.data_dir, options.disk_limit))
        except BaseException as e:
            status = report(e, options.debug)
        raise SystemExit(status)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
