"""
The names of files in a storage backend.
"""

from __future__ import annotations

from p2pblob.errors import DriverError

__all__ = ["split_key"]


def split_key(key: str) -> tuple[str, ...]:
    """
    Check a key and split it into its names.

    A key is a relative path whose parts are separated by C{"/"}: it is not
    empty, does not start or end with C{"/"}, has no empty part, no C{"."} or
    C{".."} part, no backslash and no NUL character, so that no backend can
    be led outside its root.

    @param key: the key.

    @return: its parts, in order.
    @raise p2pblob.errors.DriverError: C{key} is not a valid key.
    """
    if not isinstance(key, str):
        raise DriverError(f"a file name must be a string, not {key!r:.100}")
    parts = tuple(key.split("/"))
    if not key or "\0" in key or "\\" in key:
        raise DriverError(f"{key!r:.200} is not a valid file name")
    for part in parts:
        if part in ("", ".", ".."):
            raise DriverError(
                f"{key!r:.200} is not a valid file name: it must be a relative "
                "path without empty, '.' or '..' parts"
            )
    return parts
