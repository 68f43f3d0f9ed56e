"""
A stream's content as a transfer source: what a mirror uploads.

L{StreamSource} reads the file a stream decodes to from the local blob
store, blob after blob, each checked against its hash and decrypted in a
thread, holding one blob's plaintext at a time.  Nothing of a damaged blob
is ever returned: it is removed from the store and the read fails in words.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from io import BufferedIOBase
from typing import Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob._threads import BlockingRunner, run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, check_blob_hash, is_blob_hash
from p2pblob.errors import (
    BlobNotFoundError,
    DecryptionError,
    InvalidDescriptorError,
    SourceGoneError,
)
from p2pblob.http._ranges import last_blob_plaintext_length
from p2pblob.interfaces import IBlobStore
from p2pblob.storage.transfer import (
    ITransferSource,
)
from p2pblob.stream.crypt import BLOCK_SIZE, PLAINTEXT_CHUNK_SIZE, decrypt_blob
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor, parse_sd_blob
from p2pblob.stream.names import safe_file_name

__all__ = ["STREAM_PREFIX", "StreamSource", "open_stream_source", "stream_of"]

_log = Logger()

STREAM_PREFIX: Final = "stream:"
"""
How a stream source's description begins (C{stream:<sd hash>}).
"""


# -- reading a stream ----------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """
    Where each data blob's plaintext lies in a stream's content.

    @ivar lengths: how many bytes of plaintext each holds.
    @ivar starts: where each begins.
    @ivar size: the content's size.
    """

    descriptor: StreamDescriptor
    lengths: tuple[int, ...]
    starts: tuple[int, ...]
    size: int


def _read_tail(f: BufferedIOBase, length: int) -> bytes:
    """
    The last 32 bytes (at most) of a blob of C{length} bytes; closes C{f}.
    """
    with f:
        size = min(length, 2 * BLOCK_SIZE)
        f.seek(length - size)
        return f.read(size)


def _check_and_decrypt(key: bytes, info: BlobInfo, data: bytes) -> bytes | None:
    """
    A blob's plaintext, or C{None} if its bytes do not match its hash.

    @raise DecryptionError: it does not decrypt.
    """
    if blob_hash(data) != info.blob_hash:
        return None
    return decrypt_blob(key, bytes.fromhex(info.iv), data)


@implementer(ITransferSource)
class StreamSource:
    """
    The content of a stream (the file it decodes to), read from a blob store
    as a transfer source (L{ITransferSource}).

    Its version is its sd hash: a stream never changes.  Its size is the
    length of its plaintext: every data blob but the last of a full
    L{MAX_BLOB_SIZE} holds L{PLAINTEXT_CHUNK_SIZE} bytes (as every LBRY
    stream's does), and the others' padding is read from their last 32
    bytes; a blob found to hold anything else fails the read.

    Reads decrypt blob by blob.  The plaintext of the last blob decrypted
    is kept, so that reading a stream from its start to its end (as an
    upload does) reads, checks and decrypts each blob once, holding one
    blob's plaintext at a time.  Every failure to read is a
    L{SourceGoneError} that says why in words: a blob that is not in the
    store (named), a blob whose bytes do not match its hash (it is removed
    from the store; nothing of it is returned), a descriptor that is
    missing or not valid, a blob that does not decrypt.

    @ivar sd_hash: the stream.
    @ivar blobs_decrypted: how many blobs it has decrypted so far.
    """

    def __init__(self, store: IBlobStore, sd_hash: str, run: BlockingRunner = run_inline) -> None:
        """
        @param store: where the stream's blobs are.
        @param sd_hash: the stream.
        @param run: where blobs are hashed and decrypted (threads).

        @raise p2pblob.errors.InvalidBlobHashError: C{sd_hash} is not an sd
            hash.
        """
        self.sd_hash = check_blob_hash(sd_hash)
        self.description = STREAM_PREFIX + self.sd_hash
        self.size = 0
        self.blobs_decrypted = 0
        self._store = store
        self._run = run
        self._layout: _Layout | None = None
        self._cached: tuple[int, bytes] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<StreamSource {self.sd_hash[:16]}>"

    @property
    def descriptor(self) -> StreamDescriptor | None:
        """
        The stream's descriptor, once L{version} has read it.
        """
        return None if self._layout is None else self._layout.descriptor

    @property
    def file_name(self) -> str:
        """
        The stream's suggested file name, made safe; known once L{version}
        has read the descriptor.
        """
        descriptor = self.descriptor
        if descriptor is None:
            raise ValueError("the descriptor of the stream is not read yet: call version()")
        return safe_file_name(descriptor.suggested_file_name)

    def close(self) -> None:
        """
        Read nothing more from the store: every later read that would need
        it fails with L{CancelledError}, which leaves an upload in the
        transfer journal, to go on later (for a node that stops, whose blob
        store closes).
        """
        self._closed = True

    def _gone(self, reason: str) -> SourceGoneError:
        return SourceGoneError(self.description, reason)

    def _missing(self, info: BlobInfo) -> SourceGoneError:
        return self._gone(
            f"blob {info.blob_num} of the stream ({info.blob_hash}) is not in the local "
            "store (p2pblob verify lists what is missing; download the stream again to "
            "get it back)"
        )

    def _damaged(self, info: BlobInfo) -> SourceGoneError:
        return self._gone(
            f"blob {info.blob_num} of the stream ({info.blob_hash}) is damaged in the local "
            "store: its bytes do not match its hash; it was removed from the store, and "
            "nothing of it was exported (download the stream again to get it back)"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise CancelledError("the node is stopping: the blob store closes")

    async def _discard(self, blob: str) -> None:
        """
        Have the store look at a blob found damaged: it removes it.
        """
        if self._closed:
            return
        try:
            await self._store.check_blob(blob)
        except Exception:
            _log.failure("Could not remove the damaged blob {blob}", blob=blob)

    # -- the version and the size ------------------------------------------

    def version(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self._version())

    async def _version(self) -> str:
        self.size = (await self._load()).size
        return self.sd_hash

    async def _load(self) -> _Layout:
        if self._layout is None:
            self._layout = await self._read_layout()
        return self._layout

    async def _read_layout(self) -> _Layout:
        self._check_open()
        try:
            data = await self._store.read_blob(self.sd_hash)
        except BlobNotFoundError:
            raise self._gone(
                "its descriptor (the sd blob) is not in the local store"
            ) from None
        if await self._run(blob_hash, data) != self.sd_hash:
            await self._discard(self.sd_hash)
            raise self._gone(
                "its descriptor (the sd blob) is damaged in the local store: its bytes do "
                "not match its hash (it was removed)"
            )
        try:
            descriptor = parse_sd_blob(data)
        except InvalidDescriptorError as e:
            raise self._gone(f"its descriptor is not valid: {e}") from None
        data_blobs = descriptor.data_blobs
        lengths = []
        for info in data_blobs:
            if info.blob_num < len(data_blobs) - 1 and info.length == MAX_BLOB_SIZE:
                lengths.append(PLAINTEXT_CHUNK_SIZE)
            else:
                lengths.append(await self._tail_length(descriptor, info))
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length)
        return _Layout(descriptor, tuple(lengths), tuple(starts), sum(lengths))

    async def _tail_length(self, descriptor: StreamDescriptor, info: BlobInfo) -> int:
        """
        How many bytes of plaintext a blob holds, from its last bytes.
        """
        assert info.blob_hash is not None
        self._check_open()
        try:
            blob = self._store.get_blob(info.blob_hash)
            if blob.length != info.length:
                raise self._gone(
                    f"blob {info.blob_num} of the stream ({info.blob_hash}) is {blob.length} "
                    f"bytes long, and its descriptor says {info.length}"
                )
            tail = await self._run(_read_tail, await blob.open(), info.length)
        except BlobNotFoundError:
            raise self._missing(info) from None
        try:
            return last_blob_plaintext_length(
                descriptor.key, bytes.fromhex(info.iv), info.length, tail
            )
        except DecryptionError as e:
            reason = str(e)
        # a damaged blob, or one that is not of this stream?
        if not self._closed and await self._store.check_blob(info.blob_hash) == "corrupt":
            raise self._damaged(info)
        raise self._gone(
            f"blob {info.blob_num} of the stream ({info.blob_hash}) does not decrypt: {reason}"
        )

    # -- reading -----------------------------------------------------------

    def read(self, offset: int, size: int) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self._read(offset, size))

    async def _read(self, offset: int, size: int) -> bytes:
        layout = await self._load()
        end = min(offset + max(size, 0), layout.size)
        pieces: list[memoryview] = []
        while offset < end:
            number = bisect.bisect_right(layout.starts, offset) - 1
            plain = await self._plaintext(layout, number)
            begin = offset - layout.starts[number]
            piece = memoryview(plain)[begin : begin + end - offset]
            if not piece:
                raise self._gone(f"blob {number} of the stream ends before byte {offset}")
            pieces.append(piece)
            offset += len(piece)
        return b"".join(pieces)

    async def _plaintext(self, layout: _Layout, number: int) -> bytes:
        """
        The plaintext of data blob C{number}: the one kept, or read from the
        store, checked and decrypted.
        """
        cached = self._cached
        if cached is not None and cached[0] == number:
            return cached[1]
        info = layout.descriptor.data_blobs[number]
        assert info.blob_hash is not None
        self._check_open()
        try:
            data = await self._store.read_blob(info.blob_hash)
        except BlobNotFoundError:
            raise self._missing(info) from None
        try:
            plain = await self._run(_check_and_decrypt, layout.descriptor.key, info, data)
        except DecryptionError as e:
            raise self._gone(
                f"blob {number} of the stream ({info.blob_hash}) does not decrypt: {e}"
            ) from None
        if plain is None:
            await self._discard(info.blob_hash)
            raise self._damaged(info)
        if len(plain) != layout.lengths[number]:
            raise self._gone(
                f"blob {number} of the stream holds {len(plain)} bytes of plaintext, not the "
                f"{layout.lengths[number]} a blob of its length holds in an LBRY stream"
            )
        self.blobs_decrypted += 1
        self._cached = (number, plain)
        return plain


verifyClass(ITransferSource, StreamSource)


def stream_of(description: str) -> str | None:
    """
    The sd hash a stream source's description names, or C{None}.
    """
    if not description.startswith(STREAM_PREFIX):
        return None
    sd_hash = description[len(STREAM_PREFIX) :]
    return sd_hash if is_blob_hash(sd_hash) else None


def open_stream_source(
    description: str, store: IBlobStore, run: BlockingRunner = run_inline
) -> StreamSource | None:
    """
    Open again a stream source from its description (for L{Transfers}'
    C{open_source}).

    @return: the source, or C{None} if C{description} does not name a
        stream (whether the store still holds it is found when it is read).
    """
    sd_hash = stream_of(description)
    return None if sd_hash is None else StreamSource(store, sd_hash, run)
