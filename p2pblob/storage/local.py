"""
The C{local} storage backend: files in a directory of the local disk.

An upload is written, chunk by chunk at its offset, to a hidden file next to
its target (C{.NAME.p2pblob-upload}); committing it syncs that file to disk
and renames it over the target, so that the target is always either the old
file or the whole new one.  Its methods block: the plugin declares it, and
the host runs them in threads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob._durable import fsync_dir
from p2pblob.errors import DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.interfaces import IStorageBackend
from p2pblob.storage.keys import split_key

__all__ = ["UPLOAD_SUFFIX", "LocalBackend", "make_backend"]

UPLOAD_SUFFIX = ".p2pblob-upload"
"""
The end of the name of a file being uploaded (after a dot and the name of
the file it will become).
"""

_P = ParamSpec("_P")
_T = TypeVar("_T")


# Failures of a call that trying again will not cure.
_OUR_FAULT = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EINVAL}
)


def _errors(f: Callable[_P, _T]) -> Callable[_P, _T]:
    """
    Report the disk's failures as L{DriverError}s when they come from what
    was asked (a name that is a directory, or too long), else as
    L{ServiceError}s (a full or failing disk may recover, so they are
    retried).
    """

    @wraps(f)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return f(*args, **kwargs)
        except OSError as e:
            reason = f"{e.strerror or e} ({e.filename})"
            if e.errno in _OUR_FAULT:
                raise DriverError(reason) from e
            raise ServiceError(reason) from e

    return call


@implementer(IStorageBackend)
class LocalBackend:
    """
    Files under a root directory (created if missing).

    @ivar root: the directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DriverError(f"cannot use {str(root)!r} as a storage directory: {e}") from e
        self._sizes: dict[str, int | None] = {}

    def _path(self, key: str) -> Path:
        parts = split_key(key)
        if parts[-1].endswith(UPLOAD_SUFFIX):
            raise DriverError(f"{key!r:.200} ends like a file being uploaded")
        return self.root.joinpath(*parts)

    def _staging(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(f".{path.name}{UPLOAD_SUFFIX}")

    def set_chunk_size(self, size: int) -> int:
        return size

    @_errors
    def get_chunk(self, key: str, offset: int, size: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                f.seek(offset)
                return f.read(size)
        except (FileNotFoundError, IsADirectoryError):
            raise StorageKeyNotFoundError(key) from None

    @_errors
    def get_file(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise StorageKeyNotFoundError(key) from None

    @_errors
    def start_upload(self, key: str, size: int | None) -> None:
        staging = self._staging(key)
        staging.parent.mkdir(parents=True, exist_ok=True)
        with staging.open("wb"):
            pass
        self._sizes[key] = size

    @_errors
    def upload_chunk(self, key: str, offset: int, data: bytes) -> None:
        try:
            fd = os.open(self._staging(key), os.O_WRONLY)
        except FileNotFoundError:
            raise DriverError(f"no upload of {key!r:.200} is in progress") from None
        try:
            written = os.fstat(fd).st_size
            if offset > written:
                raise DriverError(
                    f"a chunk of {key!r:.200} at offset {offset} would leave a hole "
                    f"after the {written} bytes written"
                )
            view = memoryview(data)
            while view:
                done = os.pwrite(fd, view, offset)
                view = view[done:]
                offset += done
        finally:
            os.close(fd)

    def _commit(self, staging: Path, path: Path) -> None:
        """
        Sync a staged file and rename it to C{path}, then sync the directory
        so that the rename itself survives a crash.
        """
        fd = os.open(staging, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, path)
        fsync_dir(path.parent)

    @_errors
    def end_upload(self, key: str) -> None:
        staging = self._staging(key)
        try:
            written = staging.stat().st_size
        except FileNotFoundError:
            raise DriverError(f"no upload of {key!r:.200} is in progress") from None
        expected = self._sizes.get(key)
        if expected is not None and written != expected:
            raise DriverError(
                f"the upload of {key!r:.200} has {written} bytes, not the {expected} announced"
            )
        self._commit(staging, self._path(key))
        self._sizes.pop(key, None)

    @_errors
    def abort_upload(self, key: str) -> None:
        staging = self._staging(key)
        staging.unlink(missing_ok=True)
        self._sizes.pop(key, None)

    @_errors
    def restart_upload(self, key: str, offset: int, upload_id: str | None = None) -> int:
        # What is on disk is what is safe, whatever the journal says: bytes
        # written past the journal's offset came from the same positions of
        # the same source.
        staging = self._staging(key)
        try:
            return staging.stat().st_size
        except FileNotFoundError:
            self.start_upload(key, None)
            return 0

    @_errors
    def upload_file(self, key: str, data: bytes) -> None:
        staging = self._staging(key)
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.write_bytes(data)
        self._commit(staging, self._path(key))

    @_errors
    def delete_file(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return

    @_errors
    def move_file(self, old_key: str, new_key: str) -> None:
        old = self._path(old_key)
        new = self._path(new_key)
        if old == new:
            return
        if not old.is_file():
            raise StorageKeyNotFoundError(old_key)
        new.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, new)

    @_errors
    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @_errors
    def size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            return path.stat().st_size if path.is_file() else None
        except FileNotFoundError:
            return None

    def close(self) -> None:
        # (nothing stays open between calls)
        return None


verifyClass(IStorageBackend, LocalBackend)


def make_backend(options: dict[str, Any], clock: IReactorTime) -> LocalBackend:
    """
    Make the C{local} plugin's backend (see L{p2pblob.interfaces.IStoragePlugin.backend}):
    its one option of its own, C{root}, is the directory.
    """
    return LocalBackend(Path(options["root"]).expanduser())
