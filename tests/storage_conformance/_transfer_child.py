"""
The process the conformance kit kills in the middle of a transfer: it
uploads a local file through L{p2pblob.storage.transfer.Transfers}, with
the real reactor and the host's own threads, and kills itself with SIGKILL
right after a number of chunks are stored and journaled.

    python -m tests.storage_conformance._transfer_child --plugin NAME \\
        --options JSON --journal PATH --target NAME --source PATH --key KEY \\
        --crash-after CHUNKS

The plugin is found among the dropins of this checkout's C{plugins/}, as
the node finds it.  If the upload ends before the crash, the process
prints the result and exits with 0; if it fails, with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

import twisted.plugins
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from p2pblob._threads import ThreadWorker
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.host import StorageHost
from p2pblob.storage.journal import TransferJournal
from p2pblob.storage.transfer import (
    FileSource,
    ITransferSource,
    TransferProgress,
    Transfers,
    open_file_source,
)
from tests._process import PLUGINS


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="_transfer_child")
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--options", required=True, help="the host's options, as JSON")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--crash-after", type=int, required=True, metavar="CHUNKS")
    return parser.parse_args(argv)


async def upload(reactor: Any, options: argparse.Namespace) -> None:
    if str(PLUGINS) not in twisted.plugins.__path__:
        twisted.plugins.__path__.insert(0, str(PLUGINS))
    host = StorageHost(
        find_plugin(options.plugin), json.loads(options.options), reactor, reactor
    )
    host.startService()
    await host.negotiate_chunk_size()
    reads = ThreadWorker(reactor, "source", 1)
    reads.start()
    journal = TransferJournal(options.journal)
    crash_at = options.crash_after * host.chunk_size

    def progress(now: TransferProgress) -> None:
        if now.done >= crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def open_source(description: str) -> ITransferSource | None:
        return open_file_source(description, reads)

    transfers = Transfers(host, journal, options.target, reactor, open_source, on_progress=progress)
    result = await transfers.upload(FileSource(options.source, reads), options.key)
    print(json.dumps({"outcome": result.outcome.value, "sha384": result.sha384}))
    reads.stop()
    host.stopService()


def main(argv: list[str]) -> None:
    options = arguments(argv)
    react(lambda reactor: Deferred.fromCoroutine(upload(reactor, options)))


if __name__ == "__main__":
    main(sys.argv[1:])
