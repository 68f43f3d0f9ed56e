"""
Publishing a file as an encrypted stream (spec section 2 and 3).

The file is read in chunks of 2,097,151 bytes, each chunk encrypted with the
stream key and its own IV, and each resulting blob stored as soon as it is
made.  A few chunks are in flight at once (bounded), so memory stays flat
for any file size while both cores work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger

from p2pblob._buffers import Buffer, BufferPool
from p2pblob._threads import BlockingRunner
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.errors import StreamError
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.crypt import (
    BLOCK_SIZE,
    PLAINTEXT_CHUNK_SIZE,
    encrypt_into,
    random_iv,
    random_key,
)
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor
from p2pblob.stream.names import lbry_sanitize_file_name

__all__ = ["publish_file", "Progress"]

_log = Logger()

Progress = Callable[[int, int], None]
"""
Called as C{progress(done, total)} with plaintext bytes processed so far.
"""


def _read_and_encrypt(
    fd: int, offset: int, length: int, key: bytes, iv: bytes, chunk: Buffer, out: Buffer
) -> memoryview:
    if os.preadv(fd, [memoryview(chunk)[:length]], offset) != length:
        raise StreamError("the file changed size while it was being published")
    return memoryview(out)[: encrypt_into(key, iv, chunk, length, out)]


async def publish_file(
    store: IBlobStore,
    run: BlockingRunner,
    path: Path,
    *,
    key: bytes | None = None,
    iv_source: Callable[[], bytes] = random_iv,
    workers: int = 4,
    progress: Progress | None = None,
) -> tuple[StreamDescriptor, str]:
    """
    Encrypt the file at C{path} into blobs, store them and the sd blob, and
    record the stream as published (so its blobs are never evicted).

    @param key: the stream key; a fresh random one if L{None}.
    @param iv_source: returns the next IV; called once per blob entry in
        stream order, the terminator last.
    @param workers: chunks being read, encrypted and stored at once.
    @return: the descriptor and its sd hash.
    @raise StreamError: if the file cannot be read or changes meanwhile.
    @raise p2pblob.errors.DiskLimitError: if the blobs do not fit; the blobs
        stored so far are removed again.
    """
    if key is None:
        key = random_key()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise StreamError(f"cannot read {path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        count = -(-size // PLAINTEXT_CHUNK_SIZE)
        ivs = [iv_source() for _ in range(count + 1)]
        infos = await _encrypt_all(store, run, fd, size, count, key, ivs, workers, progress)
    finally:
        os.close(fd)

    infos.append(BlobInfo(blob_num=count, length=0, iv=ivs[count].hex()))
    descriptor = StreamDescriptor.build(
        stream_name=path.name,
        key=key,
        suggested_file_name=lbry_sanitize_file_name(path.name),
        blobs=infos,
    )
    data_hashes = [info.blob_hash for info in infos if info.blob_hash is not None]
    try:
        sd_blob = await store.put_blob(descriptor.to_sd_blob())
    except BaseException:
        await store.delete_blobs(data_hashes)
        raise
    await store.add_stream(sd_blob.blob_hash, [sd_blob.blob_hash, *data_hashes], "published")
    _log.info(
        "Published {name} ({size} bytes, {count} blobs) as {sd_hash}",
        name=path.name, size=size, count=count, sd_hash=sd_blob.blob_hash,
    )
    return descriptor, sd_blob.blob_hash


async def _encrypt_all(
    store: IBlobStore,
    run: BlockingRunner,
    fd: int,
    size: int,
    count: int,
    key: bytes,
    ivs: list[bytes],
    workers: int,
    progress: Progress | None,
) -> list[BlobInfo]:
    """
    Make and store every data blob, at most C{workers} at a time.  On the
    first failure the rest is skipped, the blobs already stored are deleted,
    and the failure is raised.
    """
    semaphore = DeferredSemaphore(workers)
    chunks = BufferPool(MAX_BLOB_SIZE, keep=workers)
    outputs = BufferPool(MAX_BLOB_SIZE + BLOCK_SIZE, keep=workers)
    infos: list[BlobInfo | None] = [None] * count
    failed = False
    done = 0

    async def make(num: int) -> None:
        nonlocal done
        await semaphore.acquire()
        try:
            if failed:
                return
            offset = num * PLAINTEXT_CHUNK_SIZE
            length = min(PLAINTEXT_CHUNK_SIZE, size - offset)
            chunk, out = chunks.acquire(), outputs.acquire()
            try:
                ciphertext = await run(
                    _read_and_encrypt, fd, offset, length, key, ivs[num], chunk, out
                )
                blob = await store.put_blob(ciphertext)
            finally:
                chunks.release(chunk)
                outputs.release(out)
            infos[num] = BlobInfo(num, blob.length, ivs[num].hex(), blob.blob_hash)
            done += length
            if progress is not None:
                progress(done, size)
        finally:
            semaphore.release()

    def stop_others(failure):  # type: ignore[no-untyped-def]
        nonlocal failed
        failed = True
        return failure

    tasks = [Deferred.fromCoroutine(make(num)).addErrback(stop_others) for num in range(count)]
    results = await DeferredList(tasks, consumeErrors=True)
    errors = [result for ok, result in results if not ok]
    if errors:
        await store.delete_blobs([i.blob_hash for i in infos if i is not None and i.blob_hash])
        errors[0].raiseException()
    return [info for info in infos if info is not None]
