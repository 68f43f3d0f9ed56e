"""
Making files durable: a directory's entries synced to the disk, and a small
private file (a key, a token) replaced whole, never found half written.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_private_file"]


def fsync_dir(directory: Path) -> None:
    """
    Make a directory's entries (a rename, a new file) durable.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """
    Put C{data} in C{path}, readable by this user only (mode 0600): written
    to a temporary file beside it, synced, renamed over C{path}, and the
    rename synced, so that C{path} holds either its old content or C{data}.

    @raise OSError: it could not be written (the temporary file is gone).
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        raise
