"""
Blocking file operations of the blob store.  Each function here runs in a
worker thread (see L{p2pblob._threads}); none touches the reactor or the index.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from p2pblob._durable import fsync_dir
from p2pblob.blob.hashing import MAX_BLOB_SIZE, is_blob_hash
from p2pblob.errors import BlobHashMismatchError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "TEMP_PREFIX",
    "new_temp_file",
    "commit_temp_file",
    "fsync_dir",
    "hash_bytes",
    "store_bytes",
    "store_verified",
    "sync_blobs",
    "write_file",
    "hash_file",
    "remove_quietly",
    "scan_blob_dir",
    "ScanResult",
]

TEMP_PREFIX = ".incoming-"
_READ_SIZE = 1 << 20
_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def new_temp_file(blob_dir: Path, blob_hash: str) -> tuple[Path, BinaryIO]:
    """
    Create a fresh temporary file in the blob directory for one blob write.
    """
    fd, name = tempfile.mkstemp(dir=blob_dir, prefix=f"{TEMP_PREFIX}{blob_hash[:16]}-")
    return Path(name), os.fdopen(fd, "wb")


def commit_temp_file(file: BinaryIO, temp: Path, final: Path, durable: bool = True) -> None:
    """
    Make a fully written, verified temporary file durable and visible under
    its final name (with C{durable=False}, only visible: L{sync_blobs} makes
    it durable later).  On any error the temporary file is removed.
    """
    try:
        if durable:
            file.flush()
            os.fsync(file.fileno())
        file.close()
        os.replace(temp, final)
        if durable:
            fsync_dir(final.parent)
    except BaseException:
        file.close()
        remove_quietly(temp)
        raise


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha384(data).hexdigest()


def store_bytes(
    blob_dir: Path, blob_hash: str, data: bytes | bytearray | memoryview, durable: bool = True
) -> None:
    """
    Store C{data}, already hashed to C{blob_hash}, as a blob: durably, or,
    with C{durable=False}, to be made durable by L{sync_blobs}.  A blob that
    is already present is left as it is.
    """
    final = blob_dir / blob_hash
    if final.exists():
        return
    temp, file = new_temp_file(blob_dir, blob_hash)
    try:
        write_file(file.fileno(), data)
    except BaseException:
        file.close()
        remove_quietly(temp)
        raise
    commit_temp_file(file, temp, final, durable)


def store_verified(
    blob_dir: Path, blob_hash: str, data: bytes | bytearray | memoryview, durable: bool = True
) -> None:
    """
    Store C{data} as blob C{blob_hash} (as L{store_bytes} does) if it hashes
    to that name.

    @raise BlobHashMismatchError: if it does not; nothing is stored.
    """
    actual = hash_bytes(data)
    if actual != blob_hash:
        raise BlobHashMismatchError(blob_hash, actual)
    store_bytes(blob_dir, blob_hash, data, durable)


def sync_blobs(blob_dir: Path, blob_hashes: Iterable[str]) -> None:
    """
    Make blobs stored with C{durable=False} durable: each file, then the
    directory holding their names, which is synced once for them all.  A
    blob deleted meanwhile is skipped.
    """
    for blob_hash in blob_hashes:
        try:
            fd = os.open(blob_dir / blob_hash, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(blob_dir)


def write_file(fd: int, data: bytes | bytearray | memoryview) -> None:
    """
    Write C{data} at the start of the new, empty file C{fd}.

    When C{data} is page-aligned memory (a L{p2pblob._buffers.BufferPool}
    buffer) and the file system allows it, its whole 4 KiB blocks go to the
    disk with C{O_DIRECT}, past the page cache: on the machines p2pblob is
    measured on, buffered writes into page-cache memory cost about two CPU
    seconds per GiB and C{O_DIRECT} almost none, and a blob just stored is
    not read back soon (a download decrypts it from the buffer it arrived
    in).  The remainder, or everything when C{O_DIRECT} is refused (tmpfs,
    unaligned memory, other platforms), is written through the page cache.
    """
    view = memoryview(data).cast("B")
    done = 0
    whole = len(view) - len(view) % _ALIGN
    if whole and _O_DIRECT and sys.platform != "win32":
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
        except OSError:
            pass  # the file system has no direct I/O
        else:
            try:
                _write_all(fd, view[:whole], 0)
                done = whole
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    _write_all(fd, view[done:], done)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def hash_file(path: Path) -> tuple[str, int]:
    """
    The sha384 hex digest and size of a file.

    @raise OSError: if it cannot be read.
    """
    hasher = hashlib.sha384()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_READ_SIZE)
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return hasher.hexdigest(), size


def remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class ScanResult:
    """
    What start-up reconciliation found and did.

    @ivar present: hash -> length of every blob that may be served.
    @ivar adopted: blobs that had a verified file but no index row.
    @ivar removed: (file name, reason) for each file deleted.
    @ivar dropped: hashes of index rows whose file is gone or damaged.
    @ivar ignored: names of files in the blob directory that are not ours.
    """

    present: dict[str, int] = field(default_factory=dict)
    adopted: dict[str, int] = field(default_factory=dict)
    removed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def scan_blob_dir(blob_dir: Path, rows: dict[str, int]) -> ScanResult:
    """
    Reconcile the blob directory with the index rows C{rows}: delete stray
    temporary files and files of the wrong size, adopt verified files the index
    does not know (after re-hashing them), and report rows without a file.
    """
    result = ScanResult()
    seen: set[str] = set()
    with os.scandir(blob_dir) as entries:
        for entry in entries:
            name = entry.name
            path = Path(entry.path)
            if name.startswith(TEMP_PREFIX):
                remove_quietly(path)
                result.removed.append((name, "unfinished temporary file"))
                continue
            if not is_blob_hash(name) or not entry.is_file(follow_symlinks=False):
                result.ignored.append(name)
                continue
            size = entry.stat(follow_symlinks=False).st_size
            if name in rows:
                seen.add(name)
                if size == rows[name]:
                    result.present[name] = size
                else:
                    remove_quietly(path)
                    result.removed.append(
                        (name, f"size {size} differs from the indexed {rows[name]}")
                    )
                    result.dropped.append(name)
                continue
            if size > MAX_BLOB_SIZE:
                remove_quietly(path)
                result.removed.append((name, f"size {size} is over the blob limit"))
                continue
            digest, size = hash_file(path)
            if digest == name:
                result.present[name] = size
                result.adopted[name] = size
            else:
                remove_quietly(path)
                result.removed.append((name, "contents do not match its name"))
    result.dropped.extend(h for h in rows if h not in seen)
    return result
