"""
Unit tests of the download machinery, one piece at a time, with fakes for
its neighbours and a L{Clock} for time: the progress manager, the partial
output and its decrypting blob handler, the blob requester, the connection
manager, the descriptor-driven manager pieces, the file downloader and its
factory, the static peer finder and peers.

The whole machinery running together is tested in C{test_swarm}.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.staged import HeldBlobs, blob_buffers
from p2pblob.discovery.static import StaticPeerFinder, parse_peer
from p2pblob.download import output as output_module
from p2pblob.download.connections import ConnectionManager
from p2pblob.download.downloader import FileStreamDownloader, FileStreamDownloaderFactory
from p2pblob.download.manager import (
    DescriptorMetadataHandler,
    DownloadManager,
    StreamDescriptorValidator,
    Swarm,
)
from p2pblob.download.output import DecryptingBlobHandler, PartialOutput
from p2pblob.download.progress import HANDLING_DEPTH, StreamProgressManager
from p2pblob.download.requester import (
    AVAILABILITY_BATCH,
    MAX_BUFFERED_BLOBS,
    RACE_AFTER,
    BlobRequester,
)
from p2pblob.errors import (
    BlobHashMismatchError,
    BlobUnavailableError,
    ConfigError,
    DiskLimitError,
    InvalidBlobHashError,
    InvalidDescriptorError,
    P2PBlobError,
    ProtocolViolationError,
    StreamError,
)
from p2pblob.interfaces import (
    IBlob,
    IBlobHandler,
    IConnectionManager,
    IDownloadManager,
    IMetadataHandler,
    IPeerFinder,
    IProgressManager,
    IRequestCreator,
    IRequestSender,
    IStreamDescriptorValidator,
    IStreamDownloader,
    IStreamDownloaderFactory,
)
from p2pblob.peer.peer import MINOR_FAILURE_POINTS, Peer, PeerRegistry
from p2pblob.peer.requests import ClientBlobRequest, ClientRequest
from p2pblob.stream.crypt import encrypt_blob
from p2pblob.stream.descriptor import BlobInfo
from p2pblob.stream.names import safe_file_name
from p2pblob.testing import MemoryBlobStore
from tests._vectors import case_names, load_case, load_json, sd_blob_bytes, vector_bytes

# ---------------------------------------------------------------------------
# Helpers and fakes
# ---------------------------------------------------------------------------


def make_blobs(count: int, size: int = 32) -> tuple[list[BlobInfo], dict[str, bytes]]:
    """
    C{count} distinct blobs of C{size} bytes, and their descriptor entries.
    """
    infos, blobs = [], {}
    for num in range(count):
        data = bytes([num % 256]) * size
        name = blob_hash(data)
        blobs[name] = data
        infos.append(BlobInfo(num, size, f"{num:032x}", name))
    return infos, blobs


@implementer(IRequestSender)
class FakeSender:
    """
    A connection that records what it is asked to send; the test answers
    each request through the Deferred recorded with it.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[ClientRequest, Deferred[dict[str, Any]]]] = []
        self.blob_requests: list[tuple[ClientBlobRequest, Deferred[dict[str, Any]]]] = []

    def add_request(self, request: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.requests.append((request, d))
        return d

    def add_blob_request(self, blob_request: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.blob_requests.append((blob_request, d))
        return d

    def message(self) -> dict[str, Any]:
        """
        The JSON object the queued requests would go out as.
        """
        merged: dict[str, Any] = {}
        for request, _ in [*self.requests, *self.blob_requests]:
            merged.update(request.request_dict)
        return merged


verifyObject(IRequestSender, FakeSender())


class FakeTransport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class FakeProtocol(FakeSender):
    """
    A connected client protocol: a request sender with a transport.
    """

    def __init__(self, peer: Peer) -> None:
        super().__init__()
        self.peer = peer
        self.transport = FakeTransport()


verifyObject(IRequestSender, FakeProtocol(Peer("10.0.0.1", 1)))


class FakeConnector:
    """
    Connects to peers when the test says so.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Peer, Deferred[Any]]] = []
        self.cancelled: list[Peer] = []

    def __call__(self, peer: Peer, manager: IConnectionManager) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: self.cancelled.append(peer))
        self.attempts.append((peer, d))
        return d

    @property
    def peers(self) -> list[Peer]:
        return [peer for peer, _ in self.attempts]

    def connect(self, index: int) -> FakeProtocol:
        peer, d = self.attempts[index]
        protocol = FakeProtocol(peer)
        d.callback(protocol)
        return protocol

    def refuse(self, index: int) -> None:
        peer, d = self.attempts[index]
        d.errback(ConnectionRefusedError(peer.host, peer.port))


@implementer(IRequestCreator)
class FakeCreator:
    """
    Offers a fixed list of peers and says whether it has a request.
    """

    def __init__(self, peers: list[Peer], gives: bool = False) -> None:
        self.peers = peers
        self.gives = gives
        self.asked: list[tuple[Any, IRequestSender]] = []

    def get_new_peers(self) -> Deferred[list[Any]]:
        return succeed(list(self.peers))

    def send_next_request(self, peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        self.asked.append((peer, protocol))
        return succeed(self.gives)


verifyObject(IRequestCreator, FakeCreator([]))


@implementer(IPeerFinder)
class RecordingFinder:
    """
    Another finder's answers, noting which blobs were looked up; or a
    failure for every lookup.
    """

    def __init__(self, finder: IPeerFinder | None) -> None:
        self._finder = finder
        self.looked_up: list[str] = []

    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        self.looked_up.append(blob_hash)
        if self._finder is None:
            return fail(P2PBlobError("the DHT is unreachable"))
        return self._finder.find_peers_for_blob(blob_hash)


verifyObject(IPeerFinder, RecordingFinder(None))


class HandlingManager:
    """
    The part of a download manager a progress manager uses: each
    C{handle_blob} call is recorded, with a Deferred the test fires.
    """

    def __init__(self) -> None:
        self.handling: list[tuple[int, Deferred[object]]] = []

    @property
    def handled(self) -> list[int]:
        return [num for num, _ in self.handling]

    def handle_blob(self, blob_num: int) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        self.handling.append((blob_num, d))
        return d

    def finish(self, blob_num: int | None = None) -> None:
        """
        The blob C{blob_num} being handled is done (by default, the first
        of those still being handled).
        """
        for num, d in self.handling:
            if not d.called and blob_num in (None, num):
                d.callback(None)
                return
        raise AssertionError(f"blob {blob_num} is not being handled")


class SyncManager:
    """
    A download manager whose blob handling is over before it returns.
    """

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.results: list[Deferred[object]] = []

    def handle_blob(self, blob_num: int) -> Deferred[object]:
        self.handled.append(blob_num)
        d: Deferred[object] = succeed(None)
        self.results.append(d)
        return d

    def consume_errors(self) -> None:
        for d in self.results:
            d.addErrback(lambda f: None)


class Wanted:
    """
    The download a requester serves: needs every blob not yet received.
    """

    def __init__(self, infos: list[BlobInfo]) -> None:
        self.infos = infos
        self.received: list[tuple[IBlob, BlobInfo]] = []
        self.failures: list[Failure] = []

    def needed_blobs(self) -> list[BlobInfo]:
        got = {info.blob_num for _, info in self.received}
        return [info for info in self.infos if info.blob_num not in got]

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> None:
        self.received.append((blob, blob_info))

    def download_failed(self, failure: Failure) -> None:
        self.failures.append(failure)


# ---------------------------------------------------------------------------
# StreamProgressManager
# ---------------------------------------------------------------------------


class StreamProgressManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.infos, _ = make_blobs(4)
        self.manager = HandlingManager()

    def progress(self, position: int = 0, infos: list[BlobInfo] | None = None
                 ) -> StreamProgressManager:
        progress = StreamProgressManager(
            self.manager, self.infos if infos is None else infos, position
        )
        progress.start()
        return progress

    def verified(self, progress: StreamProgressManager, *nums: int) -> None:
        for num in nums:
            progress.blob_downloaded(None, self.infos[num])  # type: ignore[arg-type]

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IProgressManager, self.progress()))

    def test_handed_on_in_order(self) -> None:
        """
        Blobs verified out of order are handed on in stream order, none
        before the blobs ahead of it.
        """
        progress = self.progress()
        self.verified(progress, 2, 1)
        self.assertEqual(self.manager.handled, [])
        self.verified(progress, 0)
        self.assertEqual(self.manager.handled, [0, 1, 2])
        for _ in range(3):
            self.manager.finish()
        self.assertEqual(self.manager.handled, [0, 1, 2])  # 3 is not in yet
        self.verified(progress, 3)
        self.assertEqual(self.manager.handled, [0, 1, 2, 3])

    def test_a_few_at_a_time(self) -> None:
        """
        At most HANDLING_DEPTH blobs are being handled at once; the next is
        handed on as the first of them is done.
        """
        self.infos, _ = make_blobs(HANDLING_DEPTH + 2)
        progress = self.progress()
        self.verified(progress, *range(HANDLING_DEPTH + 2))
        self.assertEqual(self.manager.handled, list(range(HANDLING_DEPTH)))
        self.manager.finish(0)
        self.assertEqual(self.manager.handled, list(range(HANDLING_DEPTH + 1)))
        self.assertEqual(progress.stream_position(), 1)

    def test_position_moves_in_order(self) -> None:
        """
        A blob whose handling is over before the one ahead of it does not
        move the position past that one.
        """
        progress = self.progress()
        self.verified(progress, 0, 1, 2)
        self.manager.finish(1)
        self.manager.finish(2)
        self.assertEqual(progress.stream_position(), 0)
        self.manager.finish(0)
        self.assertEqual(progress.stream_position(), 3)

    def test_not_before_start(self) -> None:
        progress = StreamProgressManager(self.manager, self.infos)
        self.verified(progress, 0)
        self.assertEqual(self.manager.handled, [])
        progress.start()
        self.assertEqual(self.manager.handled, [0])

    def test_needed_blobs_and_position(self) -> None:
        progress = self.progress()
        self.assertEqual(progress.needed_blobs(), self.infos)
        self.assertEqual(progress.stream_position(), 0)
        self.verified(progress, 2)
        self.assertEqual(progress.needed_blobs(), [self.infos[i] for i in (0, 1, 3)])
        self.assertEqual(progress.stream_position(), 0)
        self.verified(progress, 0)
        self.assertEqual(progress.needed_blobs(), [self.infos[i] for i in (1, 3)])
        self.manager.finish()
        self.assertEqual(progress.stream_position(), 1)
        self.assertEqual(progress.needed_blobs(), [self.infos[i] for i in (1, 3)])

    def test_resume_skips_earlier_blobs(self) -> None:
        """
        Started at position 2, the blobs before it are neither needed nor
        handed on.
        """
        progress = self.progress(position=2)
        self.assertEqual(progress.stream_position(), 2)
        self.assertEqual(progress.needed_blobs(), self.infos[2:])
        self.verified(progress, 0, 1)
        self.assertEqual(self.manager.handled, [])
        self.verified(progress, 2)
        self.assertEqual(self.manager.handled, [2])

    def test_finished_after_last(self) -> None:
        progress = self.progress()
        self.verified(progress, 0, 1, 2, 3)
        for _ in range(3):
            self.manager.finish()
        self.assertNoResult(progress.finished)
        self.assertFalse(progress.done)
        self.manager.finish()
        self.assertIsNone(self.successResultOf(progress.finished))
        self.assertEqual(progress.stream_position(), 4)
        self.assertEqual(progress.needed_blobs(), [])

    def test_handling_failure_fails_finished(self) -> None:
        """
        The first failure fails the download; no blob is handed on after it,
        and blobs handed on before it may still end either way.
        """
        progress = self.progress()
        self.verified(progress, 0, 1)
        self.manager.handling[0][1].errback(StreamError("cannot decrypt"))
        self.failureResultOf(progress.finished, StreamError)
        self.assertEqual(self.manager.handled, [0, 1])
        self.verified(progress, 2)
        self.assertEqual(self.manager.handled, [0, 1])
        stopped = progress.stop()
        self.assertNoResult(stopped)
        self.manager.handling[1][1].errback(StreamError("not after a failure"))
        self.successResultOf(stopped)
        self.assertEqual(progress.stream_position(), 0)

    def test_stop_waits_for_blobs_being_handled(self) -> None:
        progress = self.progress()
        self.verified(progress, 0, 1)
        stopped = progress.stop()
        self.verified(progress, 2)
        self.assertNoResult(stopped)
        self.manager.finish()
        self.assertNoResult(stopped)
        self.manager.finish()
        self.successResultOf(stopped)
        self.assertEqual(self.manager.handled, [0, 1])  # 2 waits for a restart
        self.assertEqual(progress.stream_position(), 2)
        progress.start()
        self.assertEqual(self.manager.handled, [0, 1, 2])

    def test_stop_when_idle(self) -> None:
        progress = self.progress()
        self.successResultOf(progress.stop())
        self.verified(progress, 0)
        self.assertEqual(self.manager.handled, [])

    def test_stop_state_when_it_fires(self) -> None:
        """
        When the Deferred of C{stop} fires, the handled blob is counted: the
        position has moved past it, and after the last blob the manager is
        done.
        """
        infos = self.infos[:2]
        progress = self.progress(infos=infos)
        self.verified(progress, 0)
        seen: list[int] = []
        progress.stop().addCallback(lambda _: seen.append(progress.stream_position()))
        self.manager.finish()
        self.assertEqual(seen, [1])
        progress.start()
        self.verified(progress, 1)
        done: list[bool] = []
        progress.stop().addCallback(lambda _: done.append(progress.done))
        self.manager.finish()
        self.assertEqual(done, [True])

    def test_empty_stream(self) -> None:
        progress = StreamProgressManager(self.manager, [])
        self.successResultOf(progress.finished)
        self.assertEqual(progress.needed_blobs(), [])
        self.assertEqual(progress.stream_position(), 0)

    def test_position_past_end(self) -> None:
        progress = StreamProgressManager(self.manager, self.infos, 4)
        self.successResultOf(progress.finished)
        self.assertEqual(progress.needed_blobs(), [])

    def test_many_blobs_handled_synchronously(self) -> None:
        """
        A handler whose Deferreds have already fired gets a long run of
        blobs verified ahead of the first one without overflowing the stack.
        """
        infos, _ = make_blobs(600, size=16)
        manager = SyncManager()
        self.addCleanup(manager.consume_errors)
        progress = StreamProgressManager(manager, infos)
        progress.start()
        for info in infos[1:]:
            progress.blob_downloaded(None, info)  # type: ignore[arg-type]
        progress.blob_downloaded(None, infos[0])  # type: ignore[arg-type]
        self.assertEqual(manager.handled, list(range(600)))
        self.successResultOf(progress.finished)



# ---------------------------------------------------------------------------
# PartialOutput
# ---------------------------------------------------------------------------

SD = blob_hash(b"a stream")


class PartialOutputTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def output(self, sd_hash: str = SD, name: str = "movie.mp4") -> PartialOutput:
        return PartialOutput(self.directory, sd_hash, name)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def checkpointed(self, *pieces: bytes, extra: bytes = b"") -> None:
        """
        A run that appended C{pieces}, checkpointed, then appended C{extra}
        and died.
        """
        out = self.output()
        out.open()
        for num, piece in enumerate(pieces):
            out.append(piece, num)
        out.checkpoint()
        if extra:
            out.append(extra, len(pieces))
        out.close()

    def test_fresh(self) -> None:
        out = self.output()
        self.assertEqual(out.open(), 0)
        self.assertEqual((out.blobs_done, out.size), (0, 0))
        self.assertEqual(out.part_path.read_bytes(), b"")
        state = json.loads(out.state_path.read_bytes())
        self.assertEqual((state["sd_hash"], state["blobs"], state["size"]), (SD, 0, 0))
        self.assertEqual(self.files(), sorted([out.part_path.name, out.state_path.name]))
        self.assertTrue(out.part_path.name.startswith("."))
        out.close()

    def test_resume_from_checkpoint(self) -> None:
        """
        A new output for the same stream continues after the checkpointed
        blobs; what was written after the checkpoint is cut off.
        """
        self.checkpointed(b"a" * 10, memoryview(b"b" * 5), extra=b"c" * 7)
        out = self.output()
        self.assertEqual(out.open(), 2)
        self.assertEqual((out.blobs_done, out.size), (2, 15))
        self.assertEqual(out.part_path.read_bytes(), b"a" * 10 + b"b" * 5)
        out.append(b"d" * 3, 2)
        out.checkpoint()  # staged until then (the file may be written direct)
        self.assertEqual(out.part_path.read_bytes(), b"a" * 10 + b"b" * 5 + b"d" * 3)
        out.close()

    def test_checkpoint_every_few_megabytes(self) -> None:
        self.patch(output_module, "CHECKPOINT_BYTES", 8)
        out = self.output()
        out.open()
        out.append(b"x" * 5, 0)
        out.append(b"y" * 5, 1)
        out.append(b"z" * 2, 2)
        out.close()
        again = self.output()
        self.assertEqual(again.open(), 2)
        self.assertEqual(again.part_path.read_bytes(), b"x" * 5 + b"y" * 5)
        again.close()

    def test_state_of_another_stream(self) -> None:
        """
        A state file written for another stream (whose sd hash starts the
        same, so it has the same file names) is not trusted.
        """
        self.checkpointed(b"a" * 10)
        other = self.output(SD[:32] + "0" * 64)
        self.assertEqual(other.part_path, self.output().part_path)
        self.assertEqual(other.open(), 0)
        self.assertEqual(other.size, 0)
        self.assertEqual(other.part_path.read_bytes(), b"")
        other.close()

    def test_unreadable_state(self) -> None:
        garbage = [
            b"{not json",
            b"",
            b"[1, 2]",
            json.dumps({"sd_hash": SD, "blobs": 1}).encode(),
            json.dumps({"sd_hash": SD, "blobs": "1", "size": 10}).encode(),
            json.dumps({"sd_hash": SD, "blobs": -1, "size": 10}).encode(),
            json.dumps({"sd_hash": SD, "blobs": 1, "size": -10}).encode(),
        ]
        for data in garbage:
            self.checkpointed(b"a" * 10)
            self.output().state_path.write_bytes(data)
            out = self.output()
            self.assertEqual(out.open(), 0, data)
            self.assertEqual(out.part_path.read_bytes(), b"", data)
            out.close()

    def test_part_file_shorter_than_state(self) -> None:
        self.checkpointed(b"a" * 10, b"b" * 10)
        with open(self.output().part_path, "r+b") as f:
            f.truncate(15)
        out = self.output()
        self.assertEqual(out.open(), 0)
        self.assertEqual(out.part_path.read_bytes(), b"")
        out.close()

    def test_blobs_in_order_only(self) -> None:
        """
        A blob that is not the next one is refused and nothing is written:
        a handler given blob 2 after blob 1 failed leaves a file that the
        next run continues correctly.
        """
        out = self.output()
        out.open()
        out.append(b"zero", 0)
        for wrong in (0, 2, 5):
            error = self.assertRaises(StreamError, out.append, b"later", wrong)
            self.assertIn(f"blob {wrong} cannot be written before blob 1", str(error))
        self.assertEqual((out.blobs_done, out.size), (1, 4))
        out.append(b"one", 1)
        out.checkpoint()
        self.assertEqual(out.part_path.read_bytes(), b"zeroone")
        out.close()

    def test_finish(self) -> None:
        out = self.output()
        out.open()
        out.append(b"the film", 0)
        path = out.finish()
        self.assertEqual(path, self.directory / "movie.mp4")
        self.assertEqual(path.read_bytes(), b"the film")
        self.assertEqual(self.files(), ["movie.mp4"])

    def test_finish_never_replaces(self) -> None:
        (self.directory / "movie.mp4").write_bytes(b"someone else's")
        out = self.output()
        out.open()
        out.append(b"ours", 0)
        path = out.finish()
        self.assertEqual(path, self.directory / "movie_1.mp4")
        self.assertEqual(path.read_bytes(), b"ours")
        self.assertEqual((self.directory / "movie.mp4").read_bytes(), b"someone else's")
        self.assertEqual(self.files(), ["movie.mp4", "movie_1.mp4"])

    def test_discard_if_empty(self) -> None:
        out = self.output()
        out.open()
        out.discard_if_empty()
        self.assertEqual(self.files(), [])

    def test_discard_keeps_written(self) -> None:
        out = self.output()
        out.open()
        out.append(b"a blob", 0)
        out.checkpoint()
        out.discard_if_empty()
        self.assertEqual(self.files(), sorted([out.part_path.name, out.state_path.name]))
        self.assertEqual(self.output().open(), 1)


class DecryptingBlobHandlerTests(SynchronousTestCase):
    key = bytes(range(16))

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.output = PartialOutput(directory, SD, "out.bin")
        self.output.open()
        self.addCleanup(self.output.close)
        self.store = MemoryBlobStore()

    def stored(self, num: int, plaintext: bytes) -> tuple[IBlob, BlobInfo]:
        iv = bytes([num]) * 16
        data = encrypt_blob(self.key, iv, plaintext)
        blob = self.successResultOf(self.store.put_blob(data))
        return blob, BlobInfo(num, len(data), iv.hex(), blob.blob_hash)

    def test_provides_interface(self) -> None:
        handler = DecryptingBlobHandler(run_inline, self.key, self.output)
        self.assertTrue(verifyObject(IBlobHandler, handler))

    def test_decrypts_into_output(self) -> None:
        handler = DecryptingBlobHandler(run_inline, self.key, self.output)
        first, second = b"first blob " * 1000, b"and the second, unaligned"
        for num, plaintext in enumerate([first, second]):
            self.successResultOf(handler.blob_downloaded(*self.stored(num, plaintext)))
        self.output.checkpoint()
        self.assertEqual(self.output.part_path.read_bytes(), first + second)
        self.assertEqual(self.output.blobs_done, 2)

    def test_reverified_blob_damaged(self) -> None:
        """
        A blob to reverify whose stored bytes no longer match its name fails
        with L{BlobHashMismatchError} and writes nothing.
        """
        blob, info = self.stored(0, b"x" * 100)
        assert info.blob_hash is not None
        self.store.corrupt(info.blob_hash, bytes(info.length))
        handler = DecryptingBlobHandler(run_inline, self.key, self.output, {info.blob_hash})
        failure = self.failureResultOf(handler.blob_downloaded(blob, info), BlobHashMismatchError)
        self.assertEqual(failure.value.blob_hash, info.blob_hash)
        self.assertEqual((self.output.size, self.output.blobs_done), (0, 0))
        self.assertEqual(self.output.part_path.read_bytes(), b"")

    def test_only_reverify_blobs_hashed(self) -> None:
        """
        Blobs not listed for reverification (just verified by the store) are
        not hashed again; listed ones that are intact decrypt normally.
        """
        blob, info = self.stored(0, b"x" * 100)
        assert info.blob_hash is not None
        other = encrypt_blob(self.key, bytes.fromhex(info.iv), b"y" * 100)
        self.store.corrupt(info.blob_hash, other)
        handler = DecryptingBlobHandler(run_inline, self.key, self.output)
        self.successResultOf(handler.blob_downloaded(blob, info))
        self.output.checkpoint()
        self.assertEqual(self.output.part_path.read_bytes(), b"y" * 100)
        intact, intact_info = self.stored(1, b"z" * 50)
        handler = DecryptingBlobHandler(
            run_inline, self.key, self.output, {str(intact_info.blob_hash)}
        )
        self.successResultOf(handler.blob_downloaded(intact, intact_info))
        self.output.checkpoint()
        self.assertEqual(self.output.part_path.read_bytes(), b"y" * 100 + b"z" * 50)

    def test_held_blob_decrypted_from_memory(self) -> None:
        """
        A blob still held in the buffer it arrived in is decrypted from
        there, not read back from the store; the buffer then goes back to
        the pool.
        """
        blob, info = self.stored(0, b"x" * 100)
        assert info.blob_hash is not None
        arrived = self.successResultOf(self.store.read_blob(info.blob_hash))
        self.store.corrupt(info.blob_hash, encrypt_blob(self.key, bytes.fromhex(info.iv), b"y" * 100))
        pool = blob_buffers(keep=2)
        held = HeldBlobs(pool, limit=2)
        buffer = pool.acquire()
        buffer[: len(arrived)] = arrived
        held.hold(info.blob_hash, buffer, len(arrived))
        handler = DecryptingBlobHandler(run_inline, self.key, self.output, held=held)
        self.successResultOf(handler.blob_downloaded(blob, info))
        self.output.checkpoint()
        self.assertEqual(self.output.part_path.read_bytes(), b"x" * 100)
        self.assertEqual(len(held), 0)
        self.assertIs(pool.acquire(), buffer)

    def test_out_of_order_refused(self) -> None:
        """
        A blob given before the one ahead of it was written (that one
        failed) is not written.
        """
        handler = DecryptingBlobHandler(run_inline, self.key, self.output)
        self.stored(0, b"never written")
        self.failureResultOf(handler.blob_downloaded(*self.stored(1, b"later")), StreamError)
        self.assertEqual((self.output.size, self.output.blobs_done), (0, 0))


# ---------------------------------------------------------------------------
# BlobRequester
# ---------------------------------------------------------------------------

A, B, C, D = (("10.0.0.1", 3333), ("10.0.0.2", 3333), ("10.0.0.3", 3333), ("10.0.0.4", 3333))


class BlobRequesterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = PeerRegistry(self.clock)
        self.a, self.b, self.c, self.d = (self.registry.get(*address) for address in (A, B, C, D))
        self.infos, self.blobs = make_blobs(10)
        self.hashes = [str(info.blob_hash) for info in self.infos]
        self.requester = self.make_requester(self.infos)

    def make_requester(self, infos: list[BlobInfo], store: MemoryBlobStore | None = None,
                       finder: IPeerFinder | None = None) -> BlobRequester:
        self.store = store if store is not None else MemoryBlobStore()
        self.wanted = Wanted(infos)
        self.finder = finder or StaticPeerFinder(self.registry, [A, B, C])
        return BlobRequester(self.wanted, self.store, self.finder, self.clock, blob_buffers())

    def ask(self, peer: Peer) -> tuple[FakeSender, ClientBlobRequest | None]:
        """
        Offer the requester a free connection to C{peer}.
        """
        sender = FakeSender()
        sent = self.successResultOf(self.requester.send_next_request(peer, sender))
        self.assertEqual(sent, bool(sender.blob_requests))
        return sender, sender.blob_requests[0][0] if sent else None

    def asked(self, peer: Peer) -> ClientBlobRequest:
        _, request = self.ask(peer)
        assert request is not None
        return request

    def deliver(self, request: ClientBlobRequest, data: bytes | None = None) -> None:
        """
        The peer sends the blob's bytes (or C{data}) in two pieces.
        """
        if data is None:
            data = self.blobs[request.blob_hash]
        request.start(len(data))
        request.write(data[:10])
        request.write(data[10:])

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IRequestCreator, self.requester))

    def test_memory_is_bounded(self) -> None:
        """
        Once MAX_BUFFERED_BLOBS blobs are requested but not yet stored, a
        free connection waits (it is not closed) until one is stored; then
        it gets its request.
        """
        infos, self.blobs = make_blobs(MAX_BUFFERED_BLOBS + 3)
        self.requester = self.make_requester(infos)
        requests = [self.asked(self.a) for _ in range(MAX_BUFFERED_BLOBS)]
        sender = FakeSender()
        waiting = self.requester.send_next_request(self.b, sender)
        self.assertNoResult(waiting)
        self.assertEqual(sender.blob_requests, [])
        self.deliver(requests[0])
        self.assertTrue(self.successResultOf(waiting))
        self.assertEqual(len(sender.blob_requests), 1)

    def test_held_blobs_count_until_taken(self) -> None:
        """
        With the blobs stored kept in memory for the blob handler, a blob
        counts against MAX_BUFFERED_BLOBS until the handler takes it: the
        waiting connection gets its request then, not when the blob is
        stored.
        """
        infos, self.blobs = make_blobs(MAX_BUFFERED_BLOBS + 3)
        pool = blob_buffers()
        held = HeldBlobs(pool, MAX_BUFFERED_BLOBS)
        self.store = MemoryBlobStore()
        self.wanted = Wanted(infos)
        self.requester = BlobRequester(
            self.wanted, self.store, self.finder, self.clock, pool, held
        )
        requests = [self.asked(self.a) for _ in range(MAX_BUFFERED_BLOBS)]
        sender = FakeSender()
        waiting = self.requester.send_next_request(self.b, sender)
        self.deliver(requests[0])
        self.assertIn(requests[0].blob_hash, held)
        self.assertNoResult(waiting)
        taken = held.take(requests[0].blob_hash)
        assert taken is not None
        self.assertTrue(self.successResultOf(waiting))
        self.assertEqual(len(sender.blob_requests), 1)
        held.release(taken[0])

    def test_waiting_connections_released_on_cancel(self) -> None:
        """
        Connections waiting for room are told there is nothing to send when
        the download stops.
        """
        infos, self.blobs = make_blobs(MAX_BUFFERED_BLOBS + 1)
        self.requester = self.make_requester(infos)
        for _ in range(MAX_BUFFERED_BLOBS):
            self.asked(self.a)
        waiting = self.requester.send_next_request(self.b, FakeSender())
        self.requester.cancel_all()
        self.assertFalse(self.successResultOf(waiting))

    def test_request_as_lbry_sends_it(self) -> None:
        """
        The message has exactly the keys a modern LBRY client sends for one
        blob, asks about up to six more needed blobs, and fits in the
        request size lbry-sdk servers accept.
        """
        exchanges = load_json("blob_exchange", "exchanges.json")
        lbry_request = json.loads(
            exchanges["exchanges"]["i_client_downloads_blobs"]["messages"][0]["request_text"]
        )
        sender, request = self.ask(self.a)
        assert request is not None
        message = sender.message()
        self.assertEqual(sorted(message), sorted(lbry_request))
        self.assertEqual(message["requested_blob"], self.hashes[0])
        self.assertEqual(message["requested_blobs"], self.hashes[: 1 + AVAILABILITY_BATCH])
        self.assertEqual(AVAILABILITY_BATCH, 6)
        self.assertIs(message["lbrycrd_address"], True)
        self.assertEqual(message["blob_data_payment_rate"], 0.0)
        self.assertLess(len(json.dumps(message)), exchanges["server_max_request_size"])
        self.assertEqual(
            sorted(str(r.response_identifier) for r, _ in sender.requests),
            ["available_blobs", "blob_data_payment_rate"],
        )
        self.assertEqual(request.response_identifier, "incoming_blob")
        self.assertEqual((request.blob_hash, request.length), (self.hashes[0], 32))

    def test_served_blob(self) -> None:
        request = self.asked(self.a)
        self.deliver(request)
        ((blob, info),) = self.wanted.received
        self.assertEqual((blob.blob_hash, info), (self.hashes[0], self.infos[0]))
        self.assertEqual(self.successResultOf(blob.read()), self.blobs[self.hashes[0]])
        self.assertEqual((self.a.score, self.a.blobs_served), (5.0, 1))
        self.assertEqual(self.requester.bytes_received, 32)

    def test_connections_get_different_blobs(self) -> None:
        firsts = [self.asked(peer).blob_hash for peer in (self.a, self.b, self.a)]
        self.assertEqual(firsts, self.hashes[:3])

    def test_peer_lacking_blob(self) -> None:
        """
        A peer that lacks a blob is not asked for it again (nor about it),
        without being backed off; it is asked for others, and others are
        asked for that blob.
        """
        request = self.asked(self.a)
        request.fail(BlobUnavailableError(self.a, self.hashes[0]))
        self.assertEqual(self.a.score, MINOR_FAILURE_POINTS)
        self.assertEqual((self.a.failures, self.a.retry_at), (0, 0.0))
        sender, again = self.ask(self.a)
        assert again is not None
        self.assertEqual(again.blob_hash, self.hashes[1])
        self.assertNotIn(self.hashes[0], sender.message()["requested_blobs"])
        self.assertEqual(self.asked(self.b).blob_hash, self.hashes[0])

    def test_availability_answer(self) -> None:
        """
        Blobs a peer says it has are asked of it first; those it lacks, never.
        """
        sender, request = self.ask(self.a)
        assert request is not None
        sender.requests[0][1].callback({"available_blobs": [self.hashes[0], self.hashes[4]]})
        self.deliver(request)
        self.assertEqual(self.asked(self.a).blob_hash, self.hashes[4])
        self.assertEqual(self.asked(self.a).blob_hash, self.hashes[7])

    def test_bad_data_backs_peer_off(self) -> None:
        """
        Bytes that do not hash to the blob's name are not stored; the peer
        is backed off, scored down and not used again for this download.
        """
        request = self.asked(self.a)
        forged = os.urandom(32)
        self.deliver(request, forged)
        self.assertFalse(self.store.has_blob(self.hashes[0]))
        self.assertEqual(self.wanted.received, [])
        self.assertGreater(self.a.retry_at, self.clock.seconds())
        self.assertLess(self.a.score, 0)
        error = BlobHashMismatchError(self.hashes[0], blob_hash(forged))
        self.assertEqual(self.requester.last_error, f"10.0.0.1:3333: {error}")
        self.assertIsNone(self.ask(self.a)[1])
        self.assertFalse(self.requester.usable(self.a))
        self.assertEqual(self.asked(self.b).blob_hash, self.hashes[0])

    def test_protocol_violation_backs_peer_off(self) -> None:
        request = self.asked(self.a)
        request.fail(ProtocolViolationError(self.a, "sent a blob nobody asked for"))
        self.assertGreater(self.a.retry_at, self.clock.seconds())
        self.assertLess(self.a.score, 0)
        self.assertEqual(self.a.failures, 1)
        self.assertFalse(self.requester.usable(self.a))

    def test_end_game_race(self) -> None:
        """
        Once every needed blob is being fetched, another peer is given the
        blob only after it has been in flight for RACE_AFTER seconds; the
        first copy to arrive cancels the other request.
        """
        self.requester = self.make_requester(self.infos[:1])
        first = self.asked(self.a)
        self.assertIsNone(self.ask(self.b)[1])
        self.clock.advance(RACE_AFTER / 2)
        self.assertIsNone(self.ask(self.b)[1])
        self.clock.advance(RACE_AFTER / 2)
        second = self.asked(self.b)
        self.assertEqual(second.blob_hash, first.blob_hash)
        self.assertIsNone(self.ask(self.a)[1])  # a peer never races itself
        self.assertIsNone(self.ask(self.c)[1])  # two racers at most
        self.deliver(second)
        self.assertTrue(first.cancelled)
        self.assertFalse(second.cancelled)
        self.assertTrue(first.finished_deferred.called)
        self.assertEqual(len(self.wanted.received), 1)
        self.assertEqual((self.a.score, self.a.failures), (0.0, 0))
        self.deliver(first)  # its bytes still arrive, and are dropped
        self.assertEqual(len(self.wanted.received), 1)

    def test_end_game_races_oldest(self) -> None:
        self.requester = self.make_requester(self.infos[:2])
        self.asked(self.a)
        self.clock.advance(RACE_AFTER / 2)
        self.asked(self.b)
        self.clock.advance(RACE_AFTER / 2)
        self.assertEqual(self.asked(self.c).blob_hash, self.hashes[0])
        self.assertIsNone(self.ask(self.d)[1])
        self.clock.advance(RACE_AFTER / 2)
        self.assertEqual(self.asked(self.d).blob_hash, self.hashes[1])

    def test_storage_error_fails_download(self) -> None:
        self.requester = self.make_requester(self.infos, MemoryBlobStore(disk_limit=10))
        request = self.asked(self.a)
        self.deliver(request)
        (failure,) = self.wanted.failures
        self.assertIsInstance(failure.value, DiskLimitError)
        self.assertEqual((self.a.score, self.a.retry_at), (0.0, 0.0))

    def test_new_peers_exclude_exhausted(self) -> None:
        """
        Peers that lack every needed blob, or that sent bad data, are not
        offered.
        """
        self.requester = self.make_requester(self.infos[:2])
        sender, request = self.ask(self.a)
        sender.requests[0][1].callback({"available_blobs": []})
        assert request is not None
        request.fail(BlobUnavailableError(self.a, self.hashes[0]))
        self.assertEqual(self.successResultOf(self.requester.get_new_peers()), [self.b, self.c])
        self.deliver(self.asked(self.b), os.urandom(32))
        self.assertEqual(self.successResultOf(self.requester.get_new_peers()), [self.c])

    def test_new_peers_for_first_blob_nobody_has(self) -> None:
        finder = RecordingFinder(StaticPeerFinder(self.registry, [A, B]))
        self.requester = self.make_requester(self.infos, finder=finder)
        sender, _ = self.ask(self.a)
        sender.requests[0][1].callback({"available_blobs": self.hashes[:2]})
        self.successResultOf(self.requester.get_new_peers())
        self.assertEqual(finder.looked_up, [self.hashes[2]])

    def test_new_peers_when_nothing_needed(self) -> None:
        finder = RecordingFinder(StaticPeerFinder(self.registry, [A]))
        self.requester = self.make_requester([], finder=finder)
        self.assertEqual(self.successResultOf(self.requester.get_new_peers()), [])
        self.assertEqual(finder.looked_up, [])

    def test_new_peers_lookup_failure(self) -> None:
        self.requester = self.make_requester(self.infos, finder=RecordingFinder(None))
        self.assertEqual(self.successResultOf(self.requester.get_new_peers()), [])


# ---------------------------------------------------------------------------
# ConnectionManager
# ---------------------------------------------------------------------------


class ConnectionManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.peers = [Peer(f"10.0.0.{i}", 3333) for i in range(1, 6)]

    def manager(self, peers: list[Peer], max_connections: int = 8, per_peer: int = 2,
                creators: list[FakeCreator] | None = None) -> ConnectionManager:
        self.creators = creators if creators is not None else [FakeCreator(peers)]
        manager = ConnectionManager(
            self.clock, self.connector, self.creators, max_connections, per_peer  # type: ignore[arg-type]
        )
        return manager

    def started(self, *args: Any, **kwargs: Any) -> ConnectionManager:
        manager = self.manager(*args, **kwargs)
        manager.start()

        def stop() -> None:
            manager.stop()

        self.addCleanup(stop)
        return manager

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IConnectionManager, self.manager([])))

    def test_one_per_peer_first(self) -> None:
        self.started(self.peers[:4], max_connections=3)
        self.assertEqual(self.connector.peers, self.peers[:3])

    def test_per_peer_limit(self) -> None:
        a, b = self.peers[:2]
        manager = self.started([a, b], max_connections=8, per_peer=2)
        self.assertEqual(Counter(self.connector.peers), {a: 2, b: 2})
        for i in range(4):
            self.connector.connect(i)
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 4)
        self.assertEqual(manager.connection_count, 4)
        self.assertEqual(sorted(manager.peers, key=str), [a, b])

    def test_max_connections(self) -> None:
        manager = self.started(self.peers, max_connections=3)
        self.clock.advance(1)  # attempts in progress count
        self.assertEqual(len(self.connector.attempts), 3)
        for i in range(3):
            self.connector.connect(i)
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 3)
        self.assertEqual(manager.connection_count, 3)

    def test_best_peer_first(self) -> None:
        a, b = self.peers[:2]
        b.score = 10.0
        self.started([a, b], max_connections=1)
        self.assertEqual(self.connector.peers, [b])

    def test_backed_off_peer_skipped(self) -> None:
        a, b = self.peers[:2]
        a.retry_at = 5.0
        self.started([a, b], per_peer=1)
        self.assertEqual(self.connector.peers, [b])
        self.clock.advance(4)
        self.assertEqual(self.connector.peers, [b])
        self.clock.advance(1)
        self.assertEqual(self.connector.peers, [b, a])

    def test_failed_connection_backs_off(self) -> None:
        a = self.peers[0]
        self.started([a], per_peer=1)
        self.connector.refuse(0)
        self.assertEqual((a.failures, a.retry_at), (1, 1.0))
        self.assertLess(a.score, 0)
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 2)
        self.connector.refuse(1)
        self.assertEqual(a.retry_at, 5.0)  # 1 s + 2 ** 2
        self.clock.pump([1, 1, 1])
        self.assertEqual(len(self.connector.attempts), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.connector.attempts), 3)

    def test_disconnect_reconnects_at_once(self) -> None:
        a = self.peers[0]
        manager = self.started([a], max_connections=1)
        protocol = self.connector.connect(0)
        self.clock.advance(0.25)
        manager.protocol_disconnected(a, protocol)
        self.assertEqual(manager.connection_count, 0)
        self.clock.advance(0)
        self.assertEqual(len(self.connector.attempts), 2)
        self.assertEqual(self.clock.seconds(), 0.25)

    def test_stop_hangs_up_and_waits(self) -> None:
        a, b = self.peers[:2]
        manager = self.started([a, b], per_peer=1)
        pa, pb = self.connector.connect(0), self.connector.connect(1)
        stopped = manager.stop()
        self.assertTrue(pa.transport.lost and pb.transport.lost)
        self.assertNoResult(stopped)
        manager.protocol_disconnected(a, pa)
        self.assertNoResult(stopped)
        manager.protocol_disconnected(b, pb)
        self.successResultOf(stopped)
        self.assertEqual(manager.connection_count, 0)
        self.clock.advance(10)
        self.assertEqual(len(self.connector.attempts), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_cancels_attempts(self) -> None:
        """
        C{stop} stops connecting: attempts still in progress are cancelled.
        """
        manager = self.started(self.peers[:2], per_peer=1)
        self.successResultOf(manager.stop())
        self.assertEqual(Counter(self.connector.cancelled), Counter(self.peers[:2]))

    def test_start_twice_then_stop(self) -> None:
        manager = self.manager(self.peers[:1])
        manager.start()
        manager.start()
        manager.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_get_next_request(self) -> None:
        a = self.peers[0]
        quiet, busy = FakeCreator([a]), FakeCreator([a], gives=True)
        manager = self.manager([a], creators=[quiet, busy])
        protocol = FakeProtocol(a)
        self.assertIs(self.successResultOf(manager.get_next_request(a, protocol)), True)
        self.assertEqual(quiet.asked, [(a, protocol)])
        self.assertEqual(busy.asked, [(a, protocol)])
        busy.gives = False
        self.assertIs(self.successResultOf(manager.get_next_request(a, protocol)), False)

    def test_no_requests_once_stopped(self) -> None:
        a = self.peers[0]
        manager = self.started([a], creators=[FakeCreator([a], gives=True)])
        self.successResultOf(manager.stop())
        self.assertIs(self.successResultOf(manager.get_next_request(a, FakeProtocol(a))), False)


# ---------------------------------------------------------------------------
# manager.py and downloader.py
# ---------------------------------------------------------------------------


def swarm() -> Swarm:
    clock = Clock()
    finder = StaticPeerFinder(PeerRegistry(clock), [A])
    return Swarm(clock, MemoryBlobStore(), finder, FakeConnector())


def validator(case: str = "e_5MiB_plus_123") -> StreamDescriptorValidator:
    data = sd_blob_bytes(case)
    return StreamDescriptorValidator(data, blob_hash(data))


class DescriptorPiecesTests(SynchronousTestCase):
    def test_download_manager_provides_interface(self) -> None:
        descriptor = validator().descriptor
        manager = DownloadManager(
            swarm(), DescriptorMetadataHandler(descriptor),
            DecryptingBlobHandler(run_inline, descriptor.key, PartialOutput(Path("."), SD, "x")),
        )
        self.assertTrue(verifyObject(IDownloadManager, manager))

    def test_metadata_handler(self) -> None:
        descriptor = validator().descriptor
        handler = DescriptorMetadataHandler(descriptor)
        self.assertTrue(verifyObject(IMetadataHandler, handler))
        blobs = self.successResultOf(handler.get_initial_blobs())
        self.assertEqual(blobs, list(descriptor.data_blobs))
        self.assertEqual(len(blobs), 3)
        self.assertEqual(handler.final_blob_num(), 2)

    def test_validator_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IStreamDescriptorValidator, validator()))

    def test_validates_lbry_descriptors(self) -> None:
        index = {c["case"]: c for c in load_json("streams", "index.json")["cases"]}
        for case in case_names():
            checked = validator(case)
            self.assertIs(checked.validate(), True, case)
            self.assertEqual(checked.sd_hash, index[case]["sd_hash"], case)

    def test_rejects_invalid_descriptors(self) -> None:
        cases = load_json("invalid_sd", "index.json")["cases"]
        self.assertEqual(len(cases), 22)
        for case in cases:
            data = vector_bytes("invalid_sd", case["file"])
            checked = StreamDescriptorValidator(data, blob_hash(data))
            self.assertRaises(InvalidDescriptorError, checked.validate)

    def test_info_to_show(self) -> None:
        case = load_case("b_one_byte")
        checked = validator("b_one_byte")
        info = checked.info_to_show()
        self.assertEqual([label for label, _ in info], ["file name", "size", "blobs", "sd hash"])
        values = dict(info)
        self.assertEqual(values["file name"], case["suggested_file_name"])
        self.assertEqual(values["blobs"], "1")
        self.assertEqual(values["sd hash"], blob_hash(sd_blob_bytes("b_one_byte")))
        self.assertIn("bytes", values["size"])
        self.assertEqual(dict(validator("a_empty").info_to_show())["size"], "0 bytes")


class DownloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.factory = FileStreamDownloaderFactory(swarm(), run_inline, self.directory)

    def test_downloader_provides_interface(self) -> None:
        downloader = FileStreamDownloader(swarm(), run_inline, validator(), self.directory)
        self.assertTrue(verifyObject(IStreamDownloader, downloader))

    def test_factory_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IStreamDownloaderFactory, self.factory))

    def test_make_downloader_in_directory_option(self) -> None:
        elsewhere = Path(self.mktemp())
        made = self.successResultOf(
            self.factory.make_downloader(validator(), [str(elsewhere)], None)
        )
        self.assertIsInstance(made, FileStreamDownloader)
        assert isinstance(made, FileStreamDownloader)
        self.assertEqual(made.directory, elsewhere)
        self.assertEqual(made.output.directory, elsewhere)
        self.assertEqual(
            made.output.file_name, safe_file_name(made.descriptor.suggested_file_name)
        )

    def test_default_directory(self) -> None:
        made = self.successResultOf(self.factory.make_downloader(validator(), [], None))
        assert isinstance(made, FileStreamDownloader)
        self.assertEqual(made.directory, self.directory)
        options = self.factory.get_downloader_options(validator(), None)
        self.assertEqual([default for _, default in options], [str(self.directory)])

    def test_description(self) -> None:
        description = self.factory.get_description()
        self.assertIsInstance(description, str)
        self.assertTrue(description.strip())

    def test_stop_before_start(self) -> None:
        downloader = FileStreamDownloader(swarm(), run_inline, validator(), self.directory)
        self.successResultOf(downloader.stop())
        self.assertFalse(self.directory.exists())


# ---------------------------------------------------------------------------
# Static peers and peers
# ---------------------------------------------------------------------------


class ParsePeerTests(SynchronousTestCase):
    def test_host_port(self) -> None:
        self.assertEqual(parse_peer("example.com:3333"), ("example.com", 3333))
        self.assertEqual(parse_peer(" 127.0.0.1:1 "), ("127.0.0.1", 1))
        self.assertEqual(parse_peer("h:65535"), ("h", 65535))

    def test_ipv6(self) -> None:
        self.assertEqual(parse_peer("[::1]:3333"), ("::1", 3333))
        self.assertEqual(parse_peer("[2001:db8::7]:4444"), ("2001:db8::7", 4444))

    def test_rejected(self) -> None:
        for text in ["example.com", "example.com:", ":3333", "[]:3333", "h:0", "h:70000",
                     "h:65536", "h:-1", "h:33a", ""]:
            error = self.assertRaises(ConfigError, parse_peer, text)
            self.assertIn(repr(text), str(error))

    def test_non_ascii_digits_rejected(self) -> None:
        """
        A port of digits that C{int} does not read is a L{ConfigError}, not
        a L{ValueError}.
        """
        for text in ["h:3\u00b3", "h:\u00b2"]:
            error = self.assertRaises(ConfigError, parse_peer, text)
            self.assertIn(repr(text), str(error))



class StaticPeerFinderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = PeerRegistry(Clock())
        self.finder = StaticPeerFinder(self.registry, [A, B, A])

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IPeerFinder, self.finder))

    def test_same_peers_each_time(self) -> None:
        name = blob_hash(b"x")
        first = self.successResultOf(self.finder.find_peers_for_blob(name))
        self.assertEqual([p.address for p in first], [A, B])
        self.assertIs(first[0], self.registry.get(*A))
        second = self.successResultOf(self.finder.find_peers_for_blob(blob_hash(b"y")))
        self.assertEqual([id(p) for p in second], [id(p) for p in first])

    def test_bad_hash(self) -> None:
        for bad in ["abc", blob_hash(b"x").upper(), blob_hash(b"x") + "0"]:
            self.failureResultOf(self.finder.find_peers_for_blob(bad), InvalidBlobHashError)


class PeerTests(SynchronousTestCase):
    def test_backoff(self) -> None:
        peer = Peer("10.0.0.1", 3333)
        expected = [1.0, 4.0, 9.0, 16.0, 25.0, 30.0, 30.0]
        for failures, delay in enumerate(expected, 1):
            peer.report_failure(100.0)
            self.assertEqual((peer.failures, peer.retry_at), (failures, 100.0 + delay))
        self.assertFalse(peer.available(129.0))
        self.assertTrue(peer.available(130.0))

    def test_failure_points(self) -> None:
        peer = Peer("10.0.0.1", 3333)
        peer.report_failure(0.0)
        peer.report_failure(0.0, MINOR_FAILURE_POINTS)
        self.assertEqual(peer.score, -12.0)

    def test_success_resets(self) -> None:
        peer = Peer("10.0.0.1", 3333)
        peer.report_failure(50.0)
        peer.report_failure(50.0)
        peer.report_success(1000, 2.0)
        self.assertEqual((peer.failures, peer.retry_at), (0, 0.0))
        self.assertTrue(peer.available(0.0))
        self.assertEqual((peer.rate, peer.blobs_served, peer.bytes_served), (500.0, 1, 1000))
        peer.report_failure(60.0)
        self.assertEqual(peer.retry_at, 61.0)

    def test_registry_one_object_per_address(self) -> None:
        registry = PeerRegistry(Clock())
        a = registry.get("10.0.0.1", 3333)
        self.assertIs(registry.get("10.0.0.1", 3333), a)
        self.assertIsNot(registry.get("10.0.0.1", 3334), a)
        self.assertEqual(len(list(registry)), 2)

    def test_str(self) -> None:
        self.assertEqual(str(Peer("10.0.0.1", 3333)), "10.0.0.1:3333")
        self.assertEqual(str(Peer("::1", 3333)), "[::1]:3333")
        self.assertEqual(str(Peer("example.com", 80)), "example.com:80")
        self.assertEqual(Peer("::1", 3333).address, ("::1", 3333))

