"""
Blocking file operations of the blob store.  Each function here runs in a
worker thread (see L{p2pblob._threads}); none touches the reactor or the index.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from p2pblob.blob.hashing import MAX_BLOB_SIZE, is_blob_hash

__all__ = [
    "TEMP_PREFIX",
    "new_temp_file",
    "commit_temp_file",
    "fsync_dir",
    "hash_bytes",
    "store_bytes",
    "hash_file",
    "remove_quietly",
    "scan_blob_dir",
    "ScanResult",
]

TEMP_PREFIX = ".incoming-"
_READ_SIZE = 1 << 20


def new_temp_file(blob_dir: Path, blob_hash: str) -> tuple[Path, BinaryIO]:
    """
    Create a fresh temporary file in the blob directory for one blob write.
    """
    fd, name = tempfile.mkstemp(dir=blob_dir, prefix=f"{TEMP_PREFIX}{blob_hash[:16]}-")
    return Path(name), os.fdopen(fd, "wb")


def fsync_dir(directory: Path) -> None:
    """
    Make a directory's entries (a rename, a new file) durable.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_temp_file(file: BinaryIO, temp: Path, final: Path) -> None:
    """
    Make a fully written, verified temporary file durable and visible under
    its final name.  On any error the temporary file is removed.
    """
    try:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(temp, final)
        fsync_dir(final.parent)
    except BaseException:
        file.close()
        remove_quietly(temp)
        raise


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha384(data).hexdigest()


def store_bytes(blob_dir: Path, blob_hash: str, data: bytes | bytearray | memoryview) -> None:
    """
    Store C{data}, already hashed to C{blob_hash}, durably as a blob.  A blob
    that is already present is left as it is.
    """
    final = blob_dir / blob_hash
    if final.exists():
        return
    temp, file = new_temp_file(blob_dir, blob_hash)
    try:
        file.write(data)
    except BaseException:
        file.close()
        remove_quietly(temp)
        raise
    commit_temp_file(file, temp, final)


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
