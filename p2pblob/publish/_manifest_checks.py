"""
What a manifest is checked against before any byte is uploaded: its form
(L{parse_manifest}), each file's name (L{check_name}), and how much room
the files will take in the blob store (L{stored_size}, L{store_room}).
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pblob.blob.store import BlobStore
from p2pblob.errors import ManifestError
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.crypt import BLOCK_SIZE, PLAINTEXT_CHUNK_SIZE

__all__ = [
    "HEADROOM",
    "MAX_FILES",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST_BYTES",
    "FileSpec",
    "check_name",
    "check_prefix",
    "parse_manifest",
    "store_room",
    "stored_size",
]

MAX_FILES = 1000
"""
The most files one manifest may list.
"""

MAX_MANIFEST_BYTES = 1024 * 1024
"""
The longest manifest accepted, in bytes of JSON.
"""

MAX_DATA_BLOBS = 10_000
"""
The most data blobs of a stream published through a manifest: its sd blob
(about 200 bytes of JSON per blob) must fit in one blob of 2 MiB.
"""

MAX_FILE_SIZE = MAX_DATA_BLOBS * PLAINTEXT_CHUNK_SIZE
"""
The largest file one manifest entry may declare (about 19.5 GiB).
"""

HEADROOM = 0.05
"""
The share of the disk (and of the blob store's disk-use limit) kept free:
a manifest is refused if its files would eat into it.
"""

_MAX_NAME_BYTES = 255
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_PREFIX = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# characters that make a name lie about itself on screen
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# (about what an sd blob takes per blob, and for the rest of it)
_SD_BYTES_PER_BLOB = 200
_SD_BYTES = 1024


@dataclass(frozen=True)
class FileSpec:
    """
    One file a manifest declares.

    @ivar name: the name it is to be published under (as given: see
        L{check_name}).
    @ivar size: its length in bytes.
    @ivar md5: its MD5, 32 lowercase hex digits.
    """

    name: str
    size: int
    md5: str


def parse_manifest(body: bytes) -> list[FileSpec]:
    """
    The files of a manifest: a JSON object C{{"files": [...]}}, or the list
    alone, each file an object with C{name} (a string), C{size} (bytes, a
    whole number) and C{md5} (32 hex digits).  Names are checked later, one
    by one (L{check_name}), so that every bad one is reported.

    @raise ManifestError: the manifest is malformed; the message says where.
    """
    if len(body) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"the manifest is not JSON: {e}") from None
    if isinstance(document, dict):
        unknown = set(document) - {"files"}
        if unknown:
            raise ManifestError(f"unknown field(s) in the manifest: {', '.join(sorted(unknown))[:200]}")
        document = document.get("files")
    if not isinstance(document, list) or not document:
        raise ManifestError('the manifest must list the files: {"files": [{"name": ..., '
                            '"size": ..., "md5": ...}, ...]}')
    if len(document) > MAX_FILES:
        raise ManifestError(f"a manifest may list {MAX_FILES} files at most, not {len(document)}")
    return [_file(number, entry) for number, entry in enumerate(document)]


def _file(number: int, entry: object) -> FileSpec:
    where = f"file {number} of the manifest"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} is not an object with a name, a size and an md5")
    unknown = set(entry) - {"name", "size", "md5"}
    if unknown:
        raise ManifestError(f"{where} has unknown field(s): {', '.join(sorted(unknown))[:200]}")
    name, size, md5 = entry.get("name"), entry.get("size"), entry.get("md5")
    if not isinstance(name, str):
        raise ManifestError(f"{where} has no name (a string)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where} has no size (a whole number of bytes)")
    if not isinstance(md5, str) or not _MD5.fullmatch(md5):
        raise ManifestError(f"{where} has no md5 (32 hex digits)")
    return FileSpec(name, size, md5.lower())


def check_name(name: str) -> str:
    """
    The name a file is published under: C{name} in Unicode normal form C
    (so that a name typed on one system is the same name on another).
    Any UTF-8 text is a name, spaces included, except as follows.

    @raise ValueError: (with words for the user) the name is empty, longer
        than 255 bytes of UTF-8, not valid Unicode, C{.} or C{..}, starts or
        ends with white space, or holds a C{/}, a C{\\}, a control
        character or a bidirectional override.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the name is not valid UTF-8 (it holds a lone surrogate)") from None
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise ValueError("the name is empty")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise ValueError(f"the name is longer than {_MAX_NAME_BYTES} bytes of UTF-8")
    if name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a name")
    if name != name.strip():
        raise ValueError("the name starts or ends with white space")
    for char in name:
        if char in "/\\":
            raise ValueError(f"the name holds {char!r} (names are not paths)")
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            raise ValueError(f"the name holds the control character U+{ord(char):04X}")
    return name


def check_prefix(prefix: str) -> str:
    """
    A prefix's name: 1 to 63 of lowercase letters, digits, C{.}, C{_} and
    C{-}, starting with a letter or digit.

    @raise ValueError: it is not.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"{prefix[:70]!r} is not a prefix name (1 to 63 lowercase letters, digits, '.', "
            "'_' and '-', starting with a letter or digit)")
    return prefix


def stored_size(size: int) -> int:
    """
    About the bytes a file of C{size} bytes takes in the blob store as a
    stream: its blobs (the plaintext and its padding) and its sd blob.
    """
    blobs = -(-size // PLAINTEXT_CHUNK_SIZE)
    return size + blobs + BLOCK_SIZE + blobs * _SD_BYTES_PER_BLOB + _SD_BYTES


def store_room(store: IBlobStore, blob_dir: Path | None) -> Callable[[], int | None]:
    """
    A function that tells how many more bytes C{store} can take while
    keeping L{HEADROOM} free, or L{None} when nothing limits it:

      - under its disk-use limit, less 5 % of the limit: the limit, less
        the bytes used, plus those that eviction may free (blobs of
        finished downloads);
      - on the disk of C{blob_dir} (the local store's directory; L{None}
        for a store kept by a storage backend), less 5 % of the disk: the
        free space.

    The smaller of the two counts.
    """

    def room() -> int | None:
        rooms = []
        limit = store.disk_limit
        if limit is not None:
            free = limit - store.used_bytes() + _evictable(store)
            rooms.append(free - int(limit * HEADROOM))
        if blob_dir is not None:
            try:
                usage = shutil.disk_usage(blob_dir)
            except OSError:
                pass
            else:
                rooms.append(usage.free - int(usage.total * HEADROOM))
        return min(rooms) if rooms else None

    return room


def _evictable(store: IBlobStore) -> int:
    """
    The bytes eviction may free in C{store} (0 if it cannot tell).
    """
    if not isinstance(store, BlobStore):
        return 0
    return sum(length for _, length in store.index.evictable())
