"""
Rebuilding a file from the blobs of a stream in the local store, and checking
which of a stream's blobs are present, missing or corrupt.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

from p2pblob._buffers import Buffer, BufferPool
from p2pblob._threads import BlockingRunner
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import IncompleteStreamError, StreamError
from p2pblob.interfaces import IBlob, IBlobStore
from p2pblob.stream._output import SequentialWriter
from p2pblob.stream.creator import Progress
from p2pblob.stream.crypt import BLOCK_SIZE, decrypt_into
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor

__all__ = ["assemble_stream", "verify_stream", "StreamCheck"]


class _Corrupt(Exception):
    pass


def _load(blob: IBlob, info: BlobInfo, key: bytes, data: Buffer, out: Buffer) -> int:
    """
    Read a blob into C{data}, check it against its name, decrypt it into
    C{out}; return the plaintext length.
    """
    with blob.open_for_reading() as f:
        length = f.readinto(memoryview(data)[: info.length])
        extra = f.read(1)
    view = memoryview(data)[:length]
    if length != info.length or extra or hashlib.sha384(view).hexdigest() != info.blob_hash:
        raise _Corrupt(info.blob_hash)
    return decrypt_into(key, bytes.fromhex(info.iv), view, out)


def _finish(out: SequentialWriter, temp: Path, destination: Path) -> None:
    """
    Make the rebuilt file durable and give it its name, never replacing an
    existing file (a hard link fails if the name is taken).
    """
    out.finish()
    try:
        os.link(temp, destination)
    finally:
        os.unlink(temp)


async def assemble_stream(
    store: IBlobStore,
    run: BlockingRunner,
    descriptor: StreamDescriptor,
    destination: Path,
    *,
    workers: int = 3,
    progress: Progress | None = None,
    direct: bool = True,
) -> int:
    """
    Decrypt the stream into a new file at C{destination}.

    The data goes to a temporary file beside C{destination} that is renamed
    only when complete, so a half-written output never appears under the
    final name.  Every blob is re-hashed as it is read: a blob damaged on disk
    is removed from the store and reported.

    @param direct: write past the page cache (C{O_DIRECT}) where the file
        system allows it; see L{p2pblob.stream._output}.
    @return: the number of bytes written.
    @raise IncompleteStreamError: if blobs are missing or corrupt.
    @raise StreamError: if C{destination} exists or cannot be written.
    """
    blobs = descriptor.data_blobs
    missing = [info.blob_hash for info in blobs if info.blob_hash and not store.has_blob(info.blob_hash)]
    if missing:
        raise IncompleteStreamError(missing, [])
    if os.path.lexists(destination):
        raise StreamError(f"{destination} already exists; choose another output")
    try:
        fd, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name[:64]}.", suffix=".part")
    except OSError as e:
        raise StreamError(f"cannot write to {destination.parent}: {e.strerror}") from None
    temp = Path(name)
    os.close(fd)
    out = SequentialWriter(temp, direct=direct)
    key = descriptor.key
    total = sum(info.length for info in blobs)
    written = 0

    inputs = BufferPool(MAX_BLOB_SIZE, keep=workers + 1)
    outputs = BufferPool(MAX_BLOB_SIZE + BLOCK_SIZE, keep=workers + 1)

    async def load(info: BlobInfo) -> tuple[Buffer, int]:
        assert info.blob_hash is not None
        data, plain = inputs.acquire(), outputs.acquire()
        try:
            length = await run(_load, store.get_blob(info.blob_hash), info, key, data, plain)
        except BaseException:
            outputs.release(plain)
            raise
        finally:
            inputs.release(data)
        return plain, length

    async def write_next() -> None:
        nonlocal written
        plain, length = await pending.popleft()
        try:
            written += await run(out.write, memoryview(plain)[:length])
        finally:
            outputs.release(plain)
        if progress is not None:
            progress(written, total)

    pending: deque[Deferred[tuple[Buffer, int]]] = deque()
    try:
        for info in blobs:
            pending.append(Deferred.fromCoroutine(load(info)))
            if len(pending) > workers:
                await write_next()
        while pending:
            await write_next()
        await run(_finish, out, temp, destination)
    except BaseException as e:
        for d in pending:
            d.addErrback(lambda f: None)
        out.close()
        if temp.exists():
            temp.unlink()
        if isinstance(e, _Corrupt):
            await store.check_blob(str(e))
            raise IncompleteStreamError([], [str(e)]) from None
        if isinstance(e, FileExistsError):
            raise StreamError(f"{destination} already exists; choose another output") from None
        if isinstance(e, OSError):
            raise StreamError(f"cannot write {destination}: {e.strerror}") from None
        raise
    return written


@dataclass
class StreamCheck:
    """
    Which data blobs of a stream the local store has.
    """

    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.corrupt


async def verify_stream(
    store: IBlobStore, descriptor: StreamDescriptor, workers: int = 2
) -> StreamCheck:
    """
    Re-hash every data blob of the stream that the store holds.  Corrupt
    blobs are removed from the store (see L{IBlobStore.check_blob}).
    """
    semaphore = DeferredSemaphore(workers)
    hashes = descriptor.blob_hashes
    verdicts = await gatherResults(
        [semaphore.run(store.check_blob, h) for h in hashes], consumeErrors=True
    )
    check = StreamCheck()
    for blob_hash, verdict in zip(hashes, verdicts, strict=True):
        getattr(check, verdict).append(blob_hash)
    return check
