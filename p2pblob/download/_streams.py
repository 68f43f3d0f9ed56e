"""
The pieces of the download service (L{p2pblob.download.service}): the
states of a download and the moves between them, what the service holds
for each download and for each attempt at it, and how a download is shown
(L{StreamInfo}).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.download._records import StreamRecord
from p2pblob.download.downloader import FileStreamDownloader
from p2pblob.download.output import PartialOutput
from p2pblob.errors import (
    ConfigError,
    DescriptorError,
    NoPeersError,
    P2PBlobError,
    PaymentError,
    PeerError,
    StorageError,
    StreamError,
)
from p2pblob.stream.descriptor import StreamDescriptor, parse_sd_blob
from p2pblob.stream.names import safe_file_name
from p2pblob.wallet.paying import DownloadPayments

__all__ = [
    "CANCELLED", "FAILED", "FINISHED", "PAUSED", "RUNNING", "WAITING",
    "Attempt", "Download", "RateMeter", "StreamInfo",
    "describe_failure", "failure_kind", "file_size", "read_source", "remove_partial",
]

_log = Logger()

WAITING = "waiting"
RUNNING = "running"
PAUSED = "paused"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"

# the moves the module docstring of p2pblob.download.service draws
MOVES: dict[str, frozenset[str]] = {
    WAITING: frozenset({RUNNING, FAILED, PAUSED, CANCELLED, FINISHED}),
    RUNNING: frozenset({FINISHED, FAILED, PAUSED, CANCELLED}),
    PAUSED: frozenset({WAITING, CANCELLED, FINISHED}),
    FAILED: frozenset({WAITING, CANCELLED, FINISHED}),
    CANCELLED: frozenset({WAITING, FINISHED}),
    FINISHED: frozenset(),
}

RATE_WINDOW = 5.0
"""
The seconds over which a download's rate is measured.
"""


@dataclass(frozen=True)
class StreamInfo:
    """
    Where one download stands.

    @ivar name: the file name the stream suggests, once its descriptor is
        known.
    @ivar state: C{"waiting"} (for a slot, or for its descriptor),
        C{"running"}, C{"paused"}, C{"finished"}, C{"failed"} or
        C{"cancelled"}.
    @ivar done_bytes: the bytes of the stream's blobs that are done.
    @ivar total_bytes: the bytes of all its blobs, once its descriptor is
        known (a little more than the file's size: the blobs are padded).
    @ivar rate: bytes per second received over the last few seconds.
    @ivar peers: the connections to peers open for it.
    @ivar output: the finished file.
    @ivar error: why it failed, in words.
    @ivar added: when it was asked for (clock seconds).
    """

    sd_hash: str
    name: str | None
    state: str
    done_bytes: int
    total_bytes: int | None
    rate: float
    peers: int
    output: str | None
    error: str | None
    added: float

    def to_json(self) -> dict[str, Any]:
        """
        The fields as a dictionary ready for C{json.dumps}.
        """
        return asdict(self)


class RateMeter:
    """
    Bytes per second over the last L{RATE_WINDOW} seconds, from samples of
    a growing count.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self._samples.append((now, count))
        while self._samples[0][0] < now - RATE_WINDOW:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return max(0.0, (last - first) / (end - start)) if end > start else 0.0


class Attempt:
    """
    One attempt at a download, from leaving the queue to its end.

    @ivar task: fires (with L{None}) once the attempt is over and its
        outcome recorded.
    @ivar halted: whether it was told to stop (its failure then is not the
        download's).
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.task: Deferred[None] | None = None
        self.downloader: FileStreamDownloader | None = None
        self.payments: DownloadPayments | None = None
        self.halted = False
        self.meter = RateMeter()

    def over(self) -> Deferred[None]:
        """
        A Deferred that fires once the attempt is over.
        """
        over: Deferred[None] = Deferred()
        assert self.task is not None

        def passed(result: object) -> object:
            over.callback(None)
            return result

        self.task.addBoth(passed)
        return over


class Download:
    """
    A stream the service knows: its record, and its attempt, if one runs.
    """

    def __init__(self, record: StreamRecord) -> None:
        self.record = record
        self.attempt: Attempt | None = None

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def label(self) -> str:
        return self.record.name or f"stream {self.record.sd_hash[:16]}…"

    def move(self, state: str) -> None:
        if state not in MOVES[self.record.state]:
            raise AssertionError(f"a download cannot go from {self.record.state} to {state}")
        self.record.state = state

    def learned(self, descriptor: StreamDescriptor) -> None:
        """
        Note what the stream's descriptor says: its name and size.
        """
        self.record.name = safe_file_name(descriptor.suggested_file_name)
        self.record.total_bytes = sum(info.length for info in descriptor.data_blobs)

    def refresh(self) -> int:
        """
        Note how far the attempt running, if any, got; return its
        connections to peers.
        """
        downloader = None if self.attempt is None else self.attempt.downloader
        if downloader is None or downloader.manager is None:
            return 0
        status = downloader.status()
        self.record.done_bytes = status.done_bytes
        self.record.total_bytes = status.total_bytes
        return status.peers

    def info(self) -> StreamInfo:
        """
        Where the download stands now.
        """
        peers = self.refresh()
        record, attempt = self.record, self.attempt
        running = attempt is not None and record.state == RUNNING
        return StreamInfo(
            sd_hash=record.sd_hash,
            name=record.name,
            state=record.state,
            done_bytes=record.done_bytes,
            total_bytes=record.total_bytes,
            rate=attempt.meter.rate() if running and attempt is not None else 0.0,
            peers=peers,
            output=record.output,
            error=record.error,
            added=record.added,
        )


def read_source(source: object) -> tuple[str, bytes | None, StreamDescriptor | None]:
    """
    The sd hash of the stream named by C{source} (an sd hash, or the bytes
    of its sd blob), and the sd blob and descriptor if it is the bytes.

    @raise DescriptorError: if C{source} is neither.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > MAX_BLOB_SIZE:
            raise DescriptorError(
                f"the descriptor given is {len(data)} bytes long, more than a blob "
                f"holds ({MAX_BLOB_SIZE})"
            )
        return blob_hash(data), data, parse_sd_blob(data)
    if isinstance(source, str):
        sd_hash = source.strip().lower()
        if is_blob_hash(sd_hash):
            return sd_hash, None, None
        raise DescriptorError(
            f"{source!r:.110} is not an sd hash (96 hexadecimal characters)"
        )
    raise DescriptorError(
        f"a stream is named by its sd hash or its sd blob, not a {type(source).__name__}"
    )


def describe_failure(failure: Failure) -> str:
    """
    Why a download failed, in a sentence for its user.
    """
    error = failure.value
    if isinstance(error, P2PBlobError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    if isinstance(error, CancelledError):
        return "the download was interrupted"
    _log.failure("A download failed unexpectedly", failure)
    return f"unexpected error ({type(error).__name__}: {error}); the node's log has the details"


def failure_kind(failure: Failure) -> str:
    """
    A short word for why a download failed, from a small fixed set (for
    the metrics): C{no_peers}, C{peer}, C{descriptor}, C{disk}, C{funds},
    C{config}, C{stream} or C{other}.
    """
    kinds: list[tuple[type[BaseException], str]] = [
        (NoPeersError, "no_peers"), (PeerError, "peer"), (DescriptorError, "descriptor"),
        (StorageError, "disk"), (OSError, "disk"), (PaymentError, "funds"),
        (ConfigError, "config"), (StreamError, "stream"),
    ]
    for kind, word in kinds:
        if failure.check(kind):
            return word
    return "other"


def remove_partial(record: StreamRecord) -> None:
    """
    Remove the part file of a download, and its state file.
    """
    output = PartialOutput(Path(record.output_dir), record.sd_hash, record.name or "")
    for path in (output.part_path, output.state_path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            _log.warn("Could not remove {path}: {error}", path=str(path), error=e)


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
