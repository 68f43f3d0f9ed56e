"""
Stream descriptors ("sd blobs", spec section 3).

A stream descriptor is a JSON object naming a stream's key, its file names
and, in order, every blob that makes it up, closed by a zero-length
"terminator" entry.  It is itself stored and exchanged as a blob; its blob
name (the sd hash) is the sha384 of its exact bytes.

L{StreamDescriptor.to_sd_blob} writes the bytes lbry-sdk writes, so that the
same content gets the same sd hash on both; L{parse_sd_blob} reads any
serialization lbry-sdk would accept, checks it more strictly than lbry-sdk
does, and refuses anything else with L{InvalidDescriptorError}.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.errors import InvalidDescriptorError
from p2pblob.stream.crypt import BLOCK_SIZE, IV_SIZE, KEY_SIZE

__all__ = [
    "STREAM_TYPE",
    "BlobInfo",
    "StreamDescriptor",
    "blob_info_digest",
    "blobs_hashsum",
    "compute_stream_hash",
    "parse_sd_blob",
]

STREAM_TYPE = "lbryfile"
"""
The only C{stream_type} there is (2015's C{lbrylive} is not supported).
"""

_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_REQUIRED_KEYS = ("stream_name", "key", "suggested_file_name", "stream_hash", "blobs")


@dataclass(frozen=True)
class BlobInfo:
    """
    One entry of a descriptor's C{blobs} list.

    @ivar blob_num: the entry's position in the list, from 0.
    @ivar length: bytes of ciphertext in the blob; 0 for the terminator.
    @ivar iv: the blob's IV as 32 lowercase hex characters, as in the JSON.
    @ivar blob_hash: the blob's name, or L{None} for the terminator.
    """

    blob_num: int
    length: int
    iv: str
    blob_hash: str | None = None

    @property
    def is_terminator(self) -> bool:
        """
        Whether this is the zero-length entry that ends a stream.
        """
        return self.length == 0

    def _json_object(self) -> dict[str, object]:
        """
        This entry as a JSON object, keys in the 2015 order.
        """
        entry: dict[str, object] = {"length": self.length, "blob_num": self.blob_num}
        if self.blob_hash is not None:
            entry["blob_hash"] = self.blob_hash
        entry["iv"] = self.iv
        return entry


def blob_info_digest(info: BlobInfo) -> bytes:
    """
    The raw sha384 digest one entry contributes to the stream hash (spec 3.3
    step 1): its hex C{blob_hash} unless it has length 0, then the decimal
    C{blob_num}, the hex C{iv} and the decimal C{length}, all ASCII.

    @raise ValueError: if a nonzero-length entry has no blob hash.
    """
    digest = hashlib.sha384()
    if info.length != 0:
        if info.blob_hash is None:
            raise ValueError(f"blob {info.blob_num} has data but no blob_hash")
        digest.update(info.blob_hash.encode("ascii"))
    digest.update(str(info.blob_num).encode("ascii"))
    digest.update(info.iv.encode("ascii"))
    digest.update(str(info.length).encode("ascii"))
    return digest.digest()


def blobs_hashsum(blobs: Iterable[BlobInfo]) -> bytes:
    """
    The raw sha384 of the concatenated L{blob_info_digest}s (spec 3.3 step 2).
    """
    digest = hashlib.sha384()
    for info in blobs:
        digest.update(blob_info_digest(info))
    return digest.digest()


def compute_stream_hash(
    stream_name_hex: str,
    key_hex: str,
    suggested_file_name_hex: str,
    blobs: Iterable[BlobInfo],
) -> str:
    """
    A descriptor's C{stream_hash} (spec 3.3).

    The three hex strings are hashed exactly as they appear in the JSON.

    @return: 96 lowercase hex characters.
    """
    digest = hashlib.sha384()
    digest.update(stream_name_hex.encode("ascii"))
    digest.update(key_hex.encode("ascii"))
    digest.update(suggested_file_name_hex.encode("ascii"))
    digest.update(blobs_hashsum(blobs))
    return digest.hexdigest()


@dataclass(frozen=True)
class StreamDescriptor:
    """
    The content of an sd blob.

    Text fields are kept hex-encoded exactly as in the JSON, so that
    re-serializing and re-hashing never depends on how a name decodes.
    Instances made by L{parse_sd_blob} or L{StreamDescriptor.build} are
    valid; the constructor itself checks nothing.

    @ivar stream_name_hex: hex of the UTF-8 original file name.
    @ivar key_hex: hex of the 16-byte AES key.
    @ivar suggested_file_name_hex: hex of the UTF-8 suggested file name.
    @ivar blobs: the entries in order, the terminator last.
    @ivar stream_hash: the hash of all of the above (spec 3.3).
    @ivar stream_type: always C{"lbryfile"}.
    """

    stream_name_hex: str
    key_hex: str
    suggested_file_name_hex: str
    blobs: tuple[BlobInfo, ...]
    stream_hash: str
    stream_type: str = STREAM_TYPE

    @classmethod
    def build(
        cls,
        stream_name: str,
        key: bytes,
        suggested_file_name: str,
        blobs: Iterable[BlobInfo],
    ) -> StreamDescriptor:
        """
        Describe a newly encrypted stream.

        @param stream_name: the original file name.
        @param key: the 16-byte stream key.
        @param suggested_file_name: the name to suggest to downloaders, for
            LBRY compatibility the result of
            L{p2pblob.stream.names.lbry_sanitize_file_name}.
        @param blobs: every entry, the terminator included.
        @raise ValueError: if the key is not 16 bytes.
        """
        if len(key) != KEY_SIZE:
            raise ValueError(f"a stream key is {KEY_SIZE} bytes, not {len(key)}")
        name_hex = stream_name.encode("utf-8").hex()
        key_hex = key.hex()
        suggested_hex = suggested_file_name.encode("utf-8").hex()
        entries = tuple(blobs)
        return cls(
            stream_name_hex=name_hex,
            key_hex=key_hex,
            suggested_file_name_hex=suggested_hex,
            blobs=entries,
            stream_hash=compute_stream_hash(name_hex, key_hex, suggested_hex, entries),
        )

    @property
    def stream_name(self) -> str:
        """
        The original file name, decoded.  Untrusted: never use it as a path.
        """
        return bytes.fromhex(self.stream_name_hex).decode("utf-8")

    @property
    def suggested_file_name(self) -> str:
        """
        The suggested file name, decoded.  Untrusted: pass it through
        L{p2pblob.stream.names.safe_file_name} before using it as a path.
        """
        return bytes.fromhex(self.suggested_file_name_hex).decode("utf-8")

    @property
    def key(self) -> bytes:
        """
        The stream's AES key.
        """
        return bytes.fromhex(self.key_hex)

    @property
    def data_blobs(self) -> tuple[BlobInfo, ...]:
        """
        The entries that name a blob: all but the terminator.
        """
        return self.blobs[:-1]

    @property
    def blob_hashes(self) -> list[str]:
        """
        The names of the data blobs, in stream order.
        """
        return [info.blob_hash for info in self.data_blobs if info.blob_hash is not None]

    @property
    def plaintext_length_bounds(self) -> tuple[int, int]:
        """
        The loose (lower, upper) estimate of the decrypted size that lbry-sdk
        computes from the descriptor alone (spec section 2).

        Every data blob but the last is assumed to carry one pad byte and the
        last one sixteen; the upper bound is the lower plus 16.  A stream
        with no data blobs gives C{(0, 0)}.
        """
        data = self.data_blobs
        if not data:
            return (0, 0)
        lower = sum(info.length - 1 for info in data[:-1]) + data[-1].length - BLOCK_SIZE
        return (lower, lower + BLOCK_SIZE)

    def to_sd_blob(self, old_order: bool = False) -> bytes:
        """
        Serialize as lbry-sdk does.

        @param old_order: if false, the modern form (keys sorted); if true,
            the 2015 key order (spec 3.2), which gives the same stream but a
            different sd hash.
        @return: ASCII JSON with C{", "} and C{": "} separators and no
            trailing newline.
        """
        document = {
            "stream_name": self.stream_name_hex,
            "blobs": [info._json_object() for info in self.blobs],
            "stream_type": self.stream_type,
            "key": self.key_hex,
            "suggested_file_name": self.suggested_file_name_hex,
            "stream_hash": self.stream_hash,
        }
        # The dicts are in the 2015 order; the modern one is simply sorted.
        return json.dumps(document, sort_keys=not old_order).encode("ascii")

    @property
    def sd_hash(self) -> str:
        """
        The blob name of the modern serialization, L{to_sd_blob}C{()}.

        A descriptor parsed from other bytes (the 2015 order, other
        whitespace) is published under the hash of I{those} bytes, which the
        caller already knows; this is the hash we give the ones we write.
        """
        return blob_hash(self.to_sd_blob())


def parse_sd_blob(data: bytes | bytearray | memoryview) -> StreamDescriptor:
    """
    Read and check an sd blob.

    Accepted: any key order and whitespace, and unknown extra keys (ignored).
    Checked, beyond what lbry-sdk checks (spec 3.4):

      - at most L{MAX_BLOB_SIZE} bytes of UTF-8 holding exactly one JSON
        object, without duplicate keys, C{NaN} or C{Infinity};
      - C{stream_name}, C{key}, C{suggested_file_name}, C{stream_hash} and
        C{blobs} are present; C{stream_type}, if present, is C{"lbryfile"},
        and if absent is taken to be (lbry-sdk never reads it, and it is not
        covered by the stream_hash);
      - C{key} is 32 and each C{iv} 32 lowercase hex characters;
      - C{stream_name} and C{suggested_file_name} are lowercase hex of UTF-8
        text; either may be empty (an empty suggested name makes the
        downloader fall back to a default file name);
      - C{blobs} is a non-empty list of objects whose C{blob_num} is their
        position; the last has C{length} 0 and no C{blob_hash}; every other
        has a valid C{blob_hash} and a C{length} that is positive, at most
        L{MAX_BLOB_SIZE} and a multiple of 16; numbers are JSON integers,
        not booleans or floats;
      - C{stream_hash} equals the hash recomputed from the rest.

    @param data: the sd blob's bytes, as received (untrusted).
    @raise InvalidDescriptorError: for any other input, and nothing else.
    """
    try:
        return _parse(data)
    except InvalidDescriptorError:
        raise
    except RecursionError:
        raise InvalidDescriptorError("the JSON is nested too deeply") from None
    except Exception as e:  # the contract: one exception type, whatever the input
        raise InvalidDescriptorError(
            f"unreadable descriptor ({type(e).__name__}: {e})"[:300]
        ) from e


def _parse(data: bytes | bytearray | memoryview) -> StreamDescriptor:
    """
    L{parse_sd_blob} without its catch-all.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidDescriptorError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_BLOB_SIZE:
        raise InvalidDescriptorError(
            f"it is {len(data)} bytes long, more than a blob can hold ({MAX_BLOB_SIZE})"
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidDescriptorError(
            f"it is not UTF-8 text (bad byte at offset {e.start})"
        ) from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InvalidDescriptorError(f"it is not valid JSON ({e})") from None
    except ValueError as e:
        raise InvalidDescriptorError(f"it is not acceptable JSON ({e})"[:300]) from None
    if not isinstance(document, dict):
        raise InvalidDescriptorError(f"the JSON is {_json_type(document)}, not an object")
    for key in _REQUIRED_KEYS:
        if key not in document:
            raise InvalidDescriptorError(f"required field {key!r} is missing")
    stream_type = document.get("stream_type", STREAM_TYPE)
    if stream_type != STREAM_TYPE:
        raise InvalidDescriptorError(
            f"stream_type is {_show(stream_type)}; only {STREAM_TYPE!r} is supported"
        )
    key_hex = _hex_field(document, "key", KEY_SIZE)
    name_hex = _text_field(document, "stream_name")
    suggested_hex = _text_field(document, "suggested_file_name")
    blobs = _blob_infos(document["blobs"])
    claimed = document["stream_hash"]
    if not is_blob_hash(claimed):
        raise InvalidDescriptorError(
            f"stream_hash {_show(claimed)} is not 96 lowercase hex characters"
        )
    actual = compute_stream_hash(name_hex, key_hex, suggested_hex, blobs)
    if claimed != actual:
        raise InvalidDescriptorError(
            f"stream_hash {claimed} does not match the stream's content, which hashes to {actual}"
        )
    return StreamDescriptor(
        stream_name_hex=name_hex,
        key_hex=key_hex,
        suggested_file_name_hex=suggested_hex,
        blobs=blobs,
        stream_hash=actual,
    )


def _blob_infos(entries: object) -> tuple[BlobInfo, ...]:
    """
    Check the C{blobs} list and turn it into L{BlobInfo}s.
    """
    if not isinstance(entries, list):
        raise InvalidDescriptorError(f"blobs is {_json_type(entries)}, not a list")
    if not entries:
        raise InvalidDescriptorError(
            "the blobs list is empty (even an empty stream has a terminator)"
        )
    last = len(entries) - 1
    infos = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidDescriptorError(
                f"entry {index} of blobs is {_json_type(entry)}, not an object"
            )
        for key in ("blob_num", "length", "iv"):
            if key not in entry:
                raise InvalidDescriptorError(f"entry {index} of blobs has no {key!r}")
        blob_num = _integer(entry["blob_num"], f"entry {index} of blobs: blob_num")
        if blob_num != index:
            raise InvalidDescriptorError(
                f"entry {index} of blobs has blob_num {blob_num}: blobs are out "
                "of order or one is missing"
            )
        length = _integer(entry["length"], f"blob {index}: length")
        iv = _hex_field(entry, "iv", IV_SIZE, f"blob {index}: iv")
        if index == last:
            if length != 0:
                raise InvalidDescriptorError(
                    f"the last blob ({index}) has length {length}: the "
                    "zero-length stream terminator is missing"
                )
            if "blob_hash" in entry:
                raise InvalidDescriptorError(
                    f"the stream terminator (blob {index}) must not have a blob_hash"
                )
            infos.append(BlobInfo(blob_num, 0, iv))
            continue
        _check_data_length(index, length)
        hash_ = entry.get("blob_hash")
        if hash_ is None:
            raise InvalidDescriptorError(f"blob {index} has no blob_hash")
        if not is_blob_hash(hash_):
            raise InvalidDescriptorError(
                f"blob {index} has blob_hash {_show(hash_)}, which is not 96 "
                "lowercase hex characters"
            )
        infos.append(BlobInfo(blob_num, length, iv, hash_))
    return tuple(infos)


def _check_data_length(index: int, length: int) -> None:
    """
    Refuse a data blob length that AES-CBC with PKCS#7 cannot produce or a
    blob cannot hold.
    """
    if length == 0:
        raise InvalidDescriptorError(
            f"blob {index} has length 0 but is not the last entry: only the "
            "stream terminator may be empty"
        )
    if length < 0:
        problem = "which is negative"
    elif length > MAX_BLOB_SIZE:
        problem = f"more than the largest blob ({MAX_BLOB_SIZE})"
    elif length % BLOCK_SIZE:
        problem = f"which is not a multiple of {BLOCK_SIZE}"
    else:
        return
    raise InvalidDescriptorError(f"blob {index} has length {length}, {problem}")


def _integer(value: object, what: str) -> int:
    """
    C{value} if it is a JSON integer (not a boolean, not a float).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDescriptorError(f"{what} is {_show(value)}, not an integer")
    return value


def _hex_field(container: dict[str, Any], key: str, size: int, what: str | None = None) -> str:
    """
    The field C{key} of C{container} if it is lowercase hex of C{size} bytes.
    """
    value = container[key]
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise InvalidDescriptorError(
            f"{what or key} is {_show(value)}, not {2 * size} lowercase hex characters"
        )
    return value


def _text_field(document: dict[str, Any], key: str) -> str:
    """
    The field C{key} of C{document} if it is lowercase hex of UTF-8 text.
    """
    value = document[key]
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise InvalidDescriptorError(
            f"{key} is {_show(value)}, not lowercase hex (an even number of 0-9a-f characters)"
        )
    try:
        bytes.fromhex(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidDescriptorError(f"{key} is hex of bytes that are not UTF-8 text") from None
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """
    Build a JSON object, refusing a key given twice (which one would win is
    a matter of implementation, so such a descriptor is ambiguous).
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidDescriptorError(f"the key {key!r:.60} appears twice in an object")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    """
    Refuse the non-standard C{NaN}, C{Infinity} and C{-Infinity}.
    """
    raise InvalidDescriptorError(f"{name} is not valid JSON")


_JSON_TYPES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}


def _json_type(value: object) -> str:
    """
    The JSON name of C{value}'s type, with an article.
    """
    return _JSON_TYPES.get(type(value), "an object")


def _show(value: object) -> str:
    """
    A short printable rendering of an untrusted JSON value for a message.
    """
    if isinstance(value, (dict, list)):
        return _json_type(value)
    if isinstance(value, str) and len(value) > 48:
        return f"{value[:40]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
