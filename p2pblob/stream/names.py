"""
File names: the one LBRY suggests when publishing, and the one we dare write.

A descriptor's C{suggested_file_name} comes from whoever published the
stream, so it is untrusted: L{safe_file_name} turns it into a single, harmless
path component, and L{open_new_file} creates it without ever replacing an
existing file.  L{lbry_sanitize_file_name} is the other direction: the name
lbry-sdk would suggest for a file we publish, so that our descriptors (and
their sd hashes) match lbry-sdk's for the same file.
"""

from __future__ import annotations

import errno
import itertools
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DEFAULT_FILE_NAME",
    "MAX_NAME_BYTES",
    "lbry_sanitize_file_name",
    "open_new_file",
    "safe_file_name",
    "unique_path",
]

DEFAULT_FILE_NAME = "p2pblob_download"
"""
The name given to a download whose suggested name has nothing usable left.
"""

MAX_NAME_BYTES = 255
"""
The longest file name, in UTF-8 bytes, that common file systems accept.
"""

_MAX_EXTENSION_BYTES = 32
_MAX_ATTEMPTS = 10_000

# lbry-sdk's rules, as alternatives of one pattern applied in a single pass to
# the stem and to the extension separately.  Their order matters: at a given
# position the first alternative that matches wins.
_LBRY_ILLEGAL = re.compile(
    r'[<>:"/\\|?*]+'  # characters Windows forbids
    r"|[\x00-\x1f]+"  # control characters
    r"|[ \t]*\.+[ \t]*$"  # dots at the end, with the blanks around them
    r"|^[ \t]+|[ \t]+$"  # leading or trailing blanks
    r"|^(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])$"  # device names, as is
)

_SEPARATORS = re.compile(r"[/\\]")
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
# Characters that make a name lie about itself on screen: bidirectional
# overrides and isolates.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"]
)


def lbry_sanitize_file_name(name: str, default: str = "lbry_download") -> str:
    """
    The C{suggested_file_name} lbry-sdk derives from a file's base name when
    it publishes it.

    The stem and the extension (split as C{os.path.splitext} does on POSIX)
    are cleaned separately, in one pass each, of: the characters
    C{<>:"/\\|?*}; control characters 0-31; trailing dots with the spaces or
    tabs around them; leading and trailing spaces and tabs; and a whole part
    that is exactly C{CON}, C{PRN}, C{AUX}, C{NUL}, C{COM1}-C{COM9} or
    C{LPT1}-C{LPT9} (upper case only).  An empty stem becomes C{default}; an
    extension of a lone dot is dropped.

    This reproduces lbry-sdk's output, quirks included; it does not make a
    name safe to write (see L{safe_file_name}).

    @param name: the file's base name.
    @param default: the stem to use when nothing is left of the original.
    """
    stem, extension = posixpath.splitext(name)
    stem = _LBRY_ILLEGAL.sub("", stem) or default
    extension = _LBRY_ILLEGAL.sub("", extension)
    return stem + extension if len(extension) > 1 else stem


def safe_file_name(suggested: str, default: str = DEFAULT_FILE_NAME) -> str:
    """
    A name we can safely create in a download directory, from the untrusted
    name a descriptor suggests.

    The result is a single, non-empty path component: control, surrogate
    and bidirectional-override characters are dropped; C{/} and C{\\} split
    the name into parts, of which empty, C{.} and C{..} ones are dropped and
    the rest joined with C{_}; the characters Windows forbids (C{<>:"|?*})
    become C{_}; leading and trailing dots and white space are removed; a
    Windows device name (C{CON}, C{nul.txt}, C{Com1.tar.gz}, ...) gets a
    C{_} in front; and the name is cut to L{MAX_NAME_BYTES} bytes of UTF-8,
    keeping its extension.

    @param suggested: the descriptor's suggested file name, decoded.
    @param default: used when nothing of C{suggested} is left; it is cleaned
        the same way, and L{DEFAULT_FILE_NAME} stands in if nothing of it is
        left either.
    """
    return _clean(suggested) or _clean(default) or DEFAULT_FILE_NAME


def _clean(name: str) -> str:
    """
    L{safe_file_name} without the fallback; may return C{""}.
    """
    name = "".join(
        c for c in name if unicodedata.category(c) not in ("Cc", "Cs") and c not in _BIDI_CONTROLS
    )
    parts = [p for p in _SEPARATORS.split(name) if p not in ("", ".", "..")]
    name = _WINDOWS_FORBIDDEN.sub("_", "_".join(parts))
    name = _EDGES.sub("", name)
    if name.split(".", 1)[0].rstrip().upper() in _DEVICE_NAMES:
        name = "_" + name
    return _fit(name, "")


def _split_extension(name: str) -> tuple[str, str]:
    """
    Split C{name} into stem and extension (C{"a.tar.gz"} gives C{"a.tar"}
    and C{".gz"}; C{".profile"} has no extension).  An implausibly long
    extension is treated as part of the stem.
    """
    stem, extension = posixpath.splitext(name)
    if len(extension.encode("utf-8")) > _MAX_EXTENSION_BYTES:
        return name, ""
    return stem, extension


def _fit(name: str, suffix: str) -> str:
    """
    C{name} with C{suffix} added before its extension, the stem shortened so
    that the whole is at most L{MAX_NAME_BYTES} bytes of UTF-8.  Returns
    C{""} if no stem is left.
    """
    stem, extension = _split_extension(name)
    room = MAX_NAME_BYTES - len((suffix + extension).encode("utf-8"))
    encoded = stem.encode("utf-8")
    if len(encoded) > room:
        # Cut at a character boundary, then tidy the new end.
        stem = encoded[: max(room, 0)].decode("utf-8", "ignore")
        stem = _EDGES.sub("", stem)
    if not stem:
        return ""
    return stem + suffix + extension


def _check_component(name: str) -> None:
    """
    Refuse a name that is not a single, ordinary path component.

    @raise ValueError: if it is empty, C{.} or C{..}, or holds a path
        separator or a NUL.
    """
    if name in ("", ".", "..") or _SEPARATORS.search(name) or "\x00" in name:
        raise ValueError(f"{name!r} is not a single file name; pass it through safe_file_name()")


def _candidates(name: str) -> Iterator[str]:
    """
    C{name}, then C{stem_1.ext}, C{stem_2.ext}, ... each fitted to
    L{MAX_NAME_BYTES}.
    """
    yield name
    for number in itertools.count(1):
        candidate = _fit(name, f"_{number}")
        if candidate:
            yield candidate
        else:
            yield _fit(DEFAULT_FILE_NAME, f"_{number}")


def _no_free_name(directory: Path, name: str) -> FileExistsError:
    """
    The error for a directory with no free variant of C{name} left.
    """
    return FileExistsError(
        errno.EEXIST,
        f"no free file name found after {_MAX_ATTEMPTS} attempts",
        str(directory / name),
    )


def unique_path(directory: Path, name: str) -> Path:
    """
    C{directory / name}, or if that exists, the first of C{name_1.ext},
    C{name_2.ext}, ... that does not.

    Only a hint: another process may create the file before the caller
    does.  To create a file, use L{open_new_file}, which cannot overwrite.

    @param name: a single file name, normally from L{safe_file_name}.
    @raise ValueError: if C{name} is not a single path component.
    @raise FileExistsError: if thousands of variants are all taken.
    """
    _check_component(name)
    for candidate in itertools.islice(_candidates(name), _MAX_ATTEMPTS):
        path = directory / candidate
        # lexists: a dangling symbolic link still occupies the name.
        if not os.path.lexists(path):
            return path
    raise _no_free_name(directory, name)


def open_new_file(directory: Path, name: str) -> tuple[Path, BinaryIO]:
    """
    Create and open a new file for writing in C{directory}, named C{name} or,
    if that is taken, C{name_1.ext}, C{name_2.ext}, ...

    Each attempt creates the file atomically (C{O_CREAT | O_EXCL}), so an
    existing file, or one another process creates at the same moment, is
    never opened or overwritten, and a symbolic link is never followed.

    @param name: a single file name, normally from L{safe_file_name}.
    @return: the path created and the file, open for binary writing; the
        caller closes it.
    @raise ValueError: if C{name} is not a single path component.
    @raise FileExistsError: if thousands of variants are all taken.
    @raise OSError: if the directory cannot be written.
    """
    _check_component(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for candidate in itertools.islice(_candidates(name), _MAX_ATTEMPTS):
        path = directory / candidate
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "wb")
    raise _no_free_name(directory, name)
