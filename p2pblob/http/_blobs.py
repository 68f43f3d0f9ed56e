"""
Reading a stream's plaintext blob by blob, for the HTTP gateways (the
stream gateway, L{p2pblob.http.streaming}, and the S3 gateway,
L{p2pblob.gateway}): L{load_descriptor} reads (or fetches) a stream's
descriptor, L{StreamBlobs} fetches, reads, checks and decrypts its blobs
one at a time, and L{Refusal} is what either refuses with, while no byte
of an answer is sent.

Every data blob of a stream but the last holds exactly
L{PLAINTEXT_CHUNK_SIZE} bytes of plaintext, so byte C{n} of the content is
in blob C{n // PLAINTEXT_CHUNK_SIZE}, and the total length needs only the
padding of the last blob (L{StreamBlobs.total_length}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.errors import BlobNotFoundError, DecryptionError, InvalidDescriptorError
from p2pblob.http._ranges import last_blob_plaintext_length
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.crypt import BLOCK_SIZE, PLAINTEXT_CHUNK_SIZE, decrypt_blob
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor, parse_sd_blob

__all__ = [
    "Fetcher",
    "RangeAnswer",
    "Refusal",
    "StreamBlobs",
    "blob_missing",
    "load_descriptor",
]

_log = Logger()

Fetcher = Callable[[str], Deferred[None]]
"""
Called as C{fetcher(blob_hash)} to bring a missing blob into the store: the
Deferred fires once the blob is there, or fails if it cannot be had.
"""


class Refusal(Exception):
    """
    An answer of C{status} with an error of C{code} and C{message} (and
    C{headers}), possible while no byte of the body is sent: each gateway
    words it its own way (JSON, or S3's XML).
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def blob_missing(info: BlobInfo) -> Refusal:
    return Refusal(503, "blob_missing",
                    f"blob {info.blob_num} of the stream ({info.blob_hash}) is not in the "
                    "local store, and this node has no way to fetch it")


async def load_descriptor(
    store: IBlobStore, sd_hash: str, fetcher: Fetcher | None = None
) -> StreamDescriptor:
    """
    The descriptor of a stream, from its sd blob in C{store}.

    @raise Refusal: for a malformed sd hash (400), an sd blob not held
        (404), a bad descriptor or one whose blobs are not all full but the
        last, so that ranges cannot be found by arithmetic (422).
    """
    if not is_blob_hash(sd_hash):
        raise Refusal(400, "bad_sd_hash",
                       f"{sd_hash[:100]!r} is not an sd hash (96 lowercase hex digits)")
    unknown = Refusal(404, "unknown_stream",
                       f"this node does not hold the descriptor of stream {sd_hash}")
    if not store.has_blob(sd_hash) and fetcher is not None:
        try:
            await fetcher(sd_hash)
        except Exception as e:
            raise Refusal(404, "unknown_stream",
                           f"no peer gave the descriptor of stream {sd_hash}: {e}"[:300]) from None
    if not store.has_blob(sd_hash):
        raise unknown
    try:
        descriptor = parse_sd_blob(await store.read_blob(sd_hash))
    except BlobNotFoundError:
        raise unknown from None
    except InvalidDescriptorError as e:
        raise Refusal(422, "bad_descriptor", str(e)) from None
    for info in descriptor.data_blobs[:-1]:
        if info.length != MAX_BLOB_SIZE:
            raise Refusal(422, "bad_stream",
                           f"blob {info.blob_num} is {info.length} bytes, not a full blob "
                           f"of {MAX_BLOB_SIZE}: ranges of this stream cannot be served")
    return descriptor


class StreamBlobs:
    """
    The data blobs of one stream, numbered from 0: fetched into the store
    if missing (given a fetcher), read, checked and decrypted one at a time.
    """

    def __init__(self, store: IBlobStore, fetcher: Fetcher | None,
                 descriptor: StreamDescriptor) -> None:
        self._store = store
        self._fetcher = fetcher
        self._descriptor = descriptor
        self._hashes = descriptor.blob_hashes
        self._count = len(self._hashes)
        # fetches started ahead of need, by blob number
        self._ahead: dict[int, Deferred[None]] = {}

    def first_missing(self, numbers: range) -> BlobInfo | None:
        for number in numbers:
            if not self._store.has_blob(self._hashes[number]):
                return self._descriptor.blobs[number]
        return None

    async def total_length(self) -> int:
        """
        The plaintext length of the stream, from the tail of its last blob.
        """
        if not self._count:
            return 0
        last = self._descriptor.blobs[self._count - 1]
        await self.obtain(last.blob_num)
        size = min(last.length, 2 * BLOCK_SIZE)
        try:
            # 32 bytes: reading them here blocks no longer than a thread would
            # (a blob kept by a storage backend is fetched first)
            with await self._store.get_blob(self._hashes[-1]).open() as f:
                f.seek(last.length - size)
                tail = f.read(size)
            length = last_blob_plaintext_length(
                self._descriptor.key, bytes.fromhex(last.iv), last.length, tail)
        except BlobNotFoundError:
            raise blob_missing(last) from None
        except DecryptionError as e:
            raise Refusal(422, "bad_stream", f"blob {last.blob_num}: {e}") from None
        return PLAINTEXT_CHUNK_SIZE * (self._count - 1) + length

    def fetch_ahead(self, number: int) -> None:
        """
        Start fetching blob C{number}, if it is missing, before it is needed
        (while the one before it is sent): L{obtain} then waits for it.
        """
        blob = self._hashes[number]
        if self._fetcher is None or number in self._ahead or self._store.has_blob(blob):
            return
        ahead = self._fetcher(blob)
        # (a failure is met again when the blob is needed: it is fetched anew)
        ahead.addErrback(lambda failure: None)
        self._ahead[number] = ahead

    async def obtain(self, number: int) -> None:
        """
        Make sure the store holds blob C{number}, fetching it if need be.
        """
        info, blob = self._descriptor.blobs[number], self._hashes[number]
        ahead = self._ahead.pop(number, None)
        if ahead is not None:
            await ahead
        if self._store.has_blob(blob):
            return
        if self._fetcher is None:
            raise blob_missing(info)
        try:
            await self._fetcher(blob)
        except Exception as e:
            raise Refusal(502, "fetch_failed",
                           f"blob {number} of the stream could not be fetched: {e}"[:300]) from None
        if not self._store.has_blob(blob):
            raise Refusal(502, "fetch_failed",
                           f"blob {number} of the stream was fetched but is not in the store")

    async def plaintext(self, number: int) -> bytes:
        """
        Blob C{number} read from the store, checked against its name (a
        damaged blob is removed) and decrypted.
        """
        info, blob = self._descriptor.blobs[number], self._hashes[number]
        try:
            data = await self._store.read_blob(blob)
        except BlobNotFoundError:
            raise blob_missing(info) from None
        if blob_hash(data) != blob:
            await self._store.check_blob(blob)
            raise Refusal(503, "blob_missing", f"blob {number} was damaged on disk and removed")
        try:
            plain = decrypt_blob(self._descriptor.key, bytes.fromhex(info.iv), data)
        except DecryptionError as e:
            raise Refusal(422, "bad_stream", f"blob {number}: {e}") from None
        if number < self._count - 1 and len(plain) != PLAINTEXT_CHUNK_SIZE:
            raise Refusal(422, "bad_stream",
                           f"blob {number} holds {len(plain)} bytes, not {PLAINTEXT_CHUNK_SIZE}:"
                           " ranges of this stream cannot be served")
        return plain


@implementer(IPushProducer)
class RangeAnswer:
    """
    The body of an answer that sends part of a stream's content, written
    one blob at a time as its request's push producer: while the client's
    connection is paused no further blob is read, so that about one blob is
    held in memory whatever the range, and when the client goes away the
    answer stops.  The status and headers go out with the first bytes
    (L{_begin}), so that a failure to get the first blob can still be
    answered with an error.  (The stream gateway's and the S3 gateway's
    answers are made of it.)
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._status = 200
        self._headers: dict[bytes, bytes] = {}
        self._started = False
        self._gone = False
        self._paused: Deferred[None] | None = None
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._gone = True
        self.resumeProducing()

    def _begin(self) -> None:
        """
        Send the status and headers, once.
        """
        if self._started:
            return
        self._started = True
        self._request.setResponseCode(self._status)
        for name, value in self._headers.items():
            self._request.setHeader(name, value)

    async def _send(
        self,
        blobs: StreamBlobs,
        start: int,
        end: int,
        each: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> bool:
        """
        Write bytes C{start} to C{end} (both included) of the content,
        fetching the next missing blob while one is sent.

        @param each: given each piece before it is written (to hash it).
        @return: whether every byte was written (C{False}: the client went
            away).
        """
        if self._gone:
            return False
        numbers = range(start // PLAINTEXT_CHUNK_SIZE, end // PLAINTEXT_CHUNK_SIZE + 1)
        self._request.registerProducer(self, True)
        try:
            for number in numbers:
                while self._paused is not None:
                    await self._paused
                if not self._gone:
                    await blobs.obtain(number)
                if self._gone:
                    return False
                if number + 1 in numbers:
                    blobs.fetch_ahead(number + 1)
                plain = await blobs.plaintext(number)
                base = number * PLAINTEXT_CHUNK_SIZE
                piece = plain[max(start - base, 0) : end + 1 - base]
                if each is not None:
                    await each(piece)
                self._begin()
                self._request.write(piece)
        finally:
            if not self._gone:
                self._request.unregisterProducer()
        self._begin()  # (an empty range sends the headers alone)
        return True

    def _finish(self) -> None:
        if not self._gone:
            self._request.finish()

    def _end_with(self, error_body: Callable[[], bytes], reason: str) -> None:
        """
        End the answer after a failure: with the error C{error_body()}
        makes (setting its status) while no byte of the content is sent,
        else (the status is gone) by cutting the connection, which the
        client sees as a short body.
        """
        if self._gone:
            return
        if self._started:
            _log.warn("Cut the connection serving {uri}: {reason}",
                      uri=self._request.uri, reason=reason)
            self._request.loseConnection()
        else:
            self._request.write(error_body())
            self._request.finish()
