"""
The file a download writes, and the blob handler that decrypts into it.

The output grows in a hidden part file beside its final name
(C{.<sd hash>.p2pblob-part}); a small state file records how many blobs of it
are durably written.  Every 128 MiB the part file is flushed to disk
and only then the state file replaced (write, fsync, rename), so after a
crash, C{kill -9} or Ctrl-C the next run trims the part file back to the
last checkpoint and continues from that blob.  When the last blob is in, the
part file is synced and linked to its final name (never replacing an
existing file), so a partial output never appears under that name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from p2pblob._buffers import Buffer, BufferPool
from p2pblob._durable import fsync_dir
from p2pblob._threads import BlockingRunner
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.staged import HeldBlobs
from p2pblob.errors import BlobHashMismatchError, StorageError, StreamError
from p2pblob.interfaces import IBlob, IBlobHandler
from p2pblob.stream._output import SequentialWriter
from p2pblob.stream.crypt import BLOCK_SIZE, decrypt_into
from p2pblob.stream.descriptor import BlobInfo
from p2pblob.stream.names import unique_path

__all__ = ["DecryptingBlobHandler", "PartialOutput"]

CHECKPOINT_BYTES = 128 * 1024 * 1024


class PartialOutput:
    """
    A download's output file while it is being written.  Its methods block:
    call them from a worker thread, one at a time.

    @ivar blobs_done: how many blobs of the stream are in the file.
    @ivar size: the bytes in the file.
    """

    def __init__(self, directory: Path, sd_hash: str, file_name: str) -> None:
        self.directory = directory
        self.sd_hash = sd_hash
        self.file_name = file_name
        stem = f".{sd_hash[:32]}.p2pblob"
        self.part_path = directory / f"{stem}-part"
        self.state_path = directory / f"{stem}-state"
        self.blobs_done = 0
        self.size = 0
        self._synced_size = 0
        self._file: SequentialWriter | None = None

    def open(self) -> int:
        """
        Open the part file, continuing an earlier run's if its state matches;
        return the number of blobs already written.
        """
        state = self._read_state()
        try:
            fd = os.open(self.part_path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                present = os.fstat(fd).st_size
                if state is not None and present >= state["size"]:
                    self.blobs_done, self.size = state["blobs"], state["size"]
                else:
                    self.blobs_done, self.size = 0, 0
                os.ftruncate(fd, self.size)
            finally:
                os.close(fd)
            # past the page cache where the file system allows: the file is
            # written once and not read back
            self._file = SequentialWriter(self.part_path, direct=True, start=self.size)
            self._synced_size = self.size
            self._write_state()
        except OSError as e:
            self.close()
            raise StorageError(f"cannot write in {self.directory}: {e.strerror}") from None
        return self.blobs_done

    def _read_state(self) -> dict[str, int] | None:
        try:
            state: Any = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError):
            return None
        if (
            isinstance(state, dict)
            and state.get("sd_hash") == self.sd_hash
            and type(state.get("blobs")) is int
            and type(state.get("size")) is int
            and state["blobs"] >= 0
            and state["size"] >= 0
        ):
            return {"blobs": state["blobs"], "size": state["size"]}
        return None

    def _write_state(self) -> None:
        temp = self.state_path.with_name(self.state_path.name + ".new")
        data = json.dumps(
            {"sd_hash": self.sd_hash, "blobs": self.blobs_done, "size": self.size,
             "file_name": self.file_name}
        ).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.state_path)

    def append(self, data: memoryview | bytes, blob_num: int) -> None:
        """
        Add the plaintext of blob C{blob_num}, which must be the next blob
        of the stream: the file never gets a blob out of order, even from a
        handler that was given blobs while an earlier one failed.

        @raise StreamError: if C{blob_num} is not the next blob.
        """
        assert self._file is not None
        if blob_num != self.blobs_done:
            raise StreamError(
                f"blob {blob_num} cannot be written before blob {self.blobs_done}: "
                "the output file stays as it is"
            )
        try:
            self.size += self._file.write(data)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StorageError(f"the disk holding {self.directory} is full") from None
            raise StorageError(f"cannot write {self.part_path}: {e.strerror}") from None
        self.blobs_done += 1
        if self.size - self._synced_size >= CHECKPOINT_BYTES:
            self.checkpoint()

    def checkpoint(self) -> None:
        """
        Make what is written durable, then record it.
        """
        if self._file is None:
            return
        self._file.sync()
        self._synced_size = self.size
        self._write_state()

    def finish(self) -> Path:
        """
        Sync the file and give it its final name (the first free variant of
        C{file_name}); return that path.
        """
        assert self._file is not None
        self._file.finish()
        self._file = None
        while True:
            final = unique_path(self.directory, self.file_name)
            try:
                os.link(self.part_path, final)
            except FileExistsError:
                continue
            break
        os.unlink(self.part_path)
        try:
            os.unlink(self.state_path)
        except FileNotFoundError:
            pass
        fsync_dir(self.directory)
        return final

    def close(self) -> None:
        """
        Close the file; what was written after the last checkpoint may be
        lost (the next run starts from the checkpoint anyway).
        """
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard_if_empty(self) -> None:
        """
        Remove the part and state files if nothing was written (a download
        that never got a blob leaves nothing behind).
        """
        self.close()
        if self.size == 0:
            for path in (self.part_path, self.state_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _decrypt_append(
    blob: IBlob,
    info: BlobInfo,
    key: bytes,
    output: PartialOutput,
    verify: bool,
    data: Buffer,
    length: int | None,
    plain: Buffer,
) -> None:
    """
    Decrypt blob C{info} onto the end of C{output}: its ciphertext is the
    first C{length} bytes of C{data}, or, if C{length} is C{None}, is read
    from C{blob} into C{data} first.
    """
    if length is None:
        with blob.open_for_reading() as f:
            length = f.readinto(memoryview(data)[: info.length])
    view = memoryview(data)[:length]
    if verify:
        actual = hashlib.sha384(view).hexdigest()
        if length != info.length or actual != info.blob_hash:
            raise BlobHashMismatchError(str(info.blob_hash), actual)
    size = decrypt_into(key, bytes.fromhex(info.iv), view, plain)
    output.append(memoryview(plain)[:size], info.blob_num)


@implementer(IBlobHandler)
class DecryptingBlobHandler:
    """
    Decrypts each blob, in stream order, onto the end of a L{PartialOutput}.

    @param reverify: blobs to hash again as they are read (those that were
        already on disk when the download started: they were verified in
        an earlier run and may have been damaged since).
    @param held: blobs that just arrived, still in memory: these are
        decrypted from there rather than read back from the store.
    """

    def __init__(
        self, run: BlockingRunner, key: bytes, output: PartialOutput,
        reverify: set[str] | None = None, held: HeldBlobs | None = None,
    ) -> None:
        self._run = run
        self._key = key
        self._output = output
        self._reverify = reverify if reverify is not None else set()
        self._held = held
        self._inputs = BufferPool(MAX_BLOB_SIZE, keep=1)
        self._outputs = BufferPool(MAX_BLOB_SIZE + BLOCK_SIZE, keep=1)

    def blob_downloaded(self, blob: IBlob, blob_info: BlobInfo) -> Deferred[None]:
        assert blob_info.blob_hash is not None
        taken = self._held.take(blob_info.blob_hash) if self._held is not None else None
        if taken is not None:
            data, length, verify = taken[0], taken[1], False
        else:
            data, length = self._inputs.acquire(), None
            verify = blob_info.blob_hash in self._reverify
        plain = self._outputs.acquire()
        done = self._run(
            _decrypt_append, blob, blob_info, self._key, self._output, verify, data, length, plain
        )

        def release(result: object) -> object:
            if taken is not None and self._held is not None:
                self._held.release(data)
            else:
                self._inputs.release(data)
            self._outputs.release(plain)
            return result

        return done.addBoth(release)
