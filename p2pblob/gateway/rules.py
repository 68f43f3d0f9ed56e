"""
S3's rules, as pure functions for the gateway: bucket names and keys,
HTTP dates, ETags, conditional requests, stored headers and user
metadata, copy sources, and the multipart ETag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from ipaddress import IPv4Address
from urllib.parse import unquote_to_bytes

from p2pblob.gateway.xml import S3Error

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_METADATA_SIZE",
    "RAW_BLOBS_BUCKET",
    "STORED_HEADERS",
    "Conditions",
    "check_bucket_name",
    "check_key",
    "content_md5",
    "copy_source",
    "crc32_header",
    "evaluate",
    "http_date",
    "multipart_etag",
    "parse_http_date",
    "stored_headers",
    "user_metadata",
]

RAW_BLOBS_BUCKET = "blobs"
"""
The reserved bucket of raw blobs: C{/blobs/<sha384>}.
"""

MAX_KEY_LENGTH = 1024
"""
The longest key, in bytes of UTF-8 (as S3).
"""

MAX_METADATA_SIZE = 2048
"""
The most bytes of user metadata (names and values) one object carries
(as S3).
"""

STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires")
"""
The standard headers stored with an object and given back (besides its
Content-Type).
"""

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_METADATA_PREFIX = b"x-amz-meta-"
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"|([^\s,"]+)')


def check_bucket_name(name: str) -> None:
    """
    S3's bucket naming rules: 3 to 63 characters, lowercase letters,
    digits, dots and hyphens, starting and ending with a letter or digit;
    no two dots in a row nor a dot beside a hyphen; not shaped like an IP
    address; none of S3's reserved prefixes and suffixes; and not
    L{RAW_BLOBS_BUCKET}.

    @raise S3Error: InvalidBucketName, saying which rule.
    """
    def refuse(why: str) -> S3Error:
        return S3Error(400, "InvalidBucketName",
                       f"The specified bucket is not valid: {name[:80]!r} {why}")

    if not 3 <= len(name) <= 63:
        raise refuse("is not 3 to 63 characters long")
    if not _BUCKET_NAME.fullmatch(name):
        raise refuse("must be lowercase letters, digits, dots and hyphens, starting and "
                     "ending with a letter or a digit")
    if ".." in name or ".-" in name or "-." in name:
        raise refuse("has two dots in a row, or a dot beside a hyphen")
    try:
        IPv4Address(name)
    except ValueError:
        pass
    else:
        raise refuse("is shaped like an IP address")
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
            ("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3")):
        raise refuse("uses a prefix or suffix S3 reserves")
    if name == RAW_BLOBS_BUCKET:
        raise S3Error(409, "BucketAlreadyExists",
                      f"the bucket {RAW_BLOBS_BUCKET!r} is the node's raw blobs (GET "
                      f"/{RAW_BLOBS_BUCKET}/<sha384>), and cannot be made")


def check_key(raw: bytes) -> str:
    """
    An object key from the percent-encoded remainder of a path.

    @raise S3Error: KeyTooLongError (over 1024 bytes) or InvalidArgument
        (empty, or not UTF-8).
    """
    decoded = unquote_to_bytes(raw)
    if len(decoded) > MAX_KEY_LENGTH:
        raise S3Error(400, "KeyTooLongError", f"Your key is too long: {len(decoded)} bytes "
                      f"(at most {MAX_KEY_LENGTH})")
    try:
        key = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error(400, "InvalidArgument", "the object key is not UTF-8") from None
    if not key:
        raise S3Error(400, "InvalidArgument", "the object key is empty")
    return key


def http_date(seconds: float) -> str:
    """
    An RFC 1123 date in GMT, as HTTP headers carry it.
    """
    return formatdate(int(seconds), usegmt=True)


def parse_http_date(value: bytes | None) -> float | None:
    """
    The time an HTTP date names (RFC 1123, RFC 850 or asctime), or L{None}
    if C{value} is missing or not a date.
    """
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # (asctime: GMT by definition)
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _tags(value: bytes) -> list[str]:
    """
    The entity tags in an C{If-Match} or C{If-None-Match} value, without
    their quotes (unquoted tags are taken too: some clients send them).
    """
    text = value.decode("latin-1")
    return [quoted if quoted else bare for quoted, bare in _ENTITY_TAG.findall(text)]


def _matches(value: bytes, etags: tuple[str, ...]) -> bool:
    if value.strip() == b"*":
        return True
    return any(tag in etags for tag in _tags(value))


@dataclass(frozen=True)
class Conditions:
    """
    The preconditions of a request: on the object itself (C{If-Match} and
    the like) or on a copy's source (C{x-amz-copy-source-if-match} and the
    like).
    """

    match: bytes | None = None
    none_match: bytes | None = None
    modified_since: bytes | None = None
    unmodified_since: bytes | None = None

    @classmethod
    def of(cls, headers: Mapping[bytes, bytes], prefix: bytes = b"") -> Conditions:
        return cls(
            match=headers.get(prefix + b"if-match"),
            none_match=headers.get(prefix + b"if-none-match"),
            modified_since=headers.get(prefix + b"if-modified-since"),
            unmodified_since=headers.get(prefix + b"if-unmodified-since"),
        )


def evaluate(conditions: Conditions, etags: tuple[str, ...], modified: float, now: float,
             copy: bool = False) -> int | None:
    """
    What the preconditions make of a request for an object whose ETag is
    any of C{etags} (unquoted) and which was last modified at C{modified}.

    RFC 9110's order (13.2.2), which S3 follows: C{If-Match}, else
    C{If-Unmodified-Since}; then C{If-None-Match}, else
    C{If-Modified-Since}.  A date in the future, or one that does not
    parse, is ignored (as RFC 9110 says of C{If-Modified-Since}).  Times
    are compared to the second, as C{Last-Modified} shows them.

    @param copy: the conditions are on a copy's source: any failure is a
        412, never a 304.
    @return: L{None} to go on, 304, or 412.
    """
    second = int(modified)
    since = parse_http_date(conditions.modified_since)
    if since is not None and since > now:
        since = None
    until = parse_http_date(conditions.unmodified_since)
    if conditions.match is not None:
        if not _matches(conditions.match, etags):
            return 412
    elif until is not None and second > until:
        return 412
    not_modified = 412 if copy else 304
    if conditions.none_match is not None:
        return not_modified if _matches(conditions.none_match, etags) else None
    if since is not None and second <= since:
        return not_modified
    return None


def stored_headers(headers: Mapping[bytes, bytes]) -> tuple[str, dict[str, str]]:
    """
    The Content-Type (S3's C{binary/octet-stream} if none) and the other
    standard headers of a request that are stored with its object.
    """
    content_type = headers.get(b"content-type", b"binary/octet-stream").decode("latin-1")
    stored = {name: headers[name.encode("ascii")].decode("latin-1")
              for name in STORED_HEADERS if name.encode("ascii") in headers}
    return content_type, stored


def user_metadata(headers: Mapping[bytes, bytes]) -> dict[str, str]:
    """
    The user metadata of a request: its C{x-amz-meta-*} headers, by
    lowercase name without the prefix (values kept as sent, as Latin-1
    text).

    @raise S3Error: MetadataTooLarge, over L{MAX_METADATA_SIZE} bytes.
    """
    metadata = {name[len(_METADATA_PREFIX):].decode("latin-1"): value.decode("latin-1")
                for name, value in headers.items() if name.startswith(_METADATA_PREFIX)}
    size = sum(len(name) + len(value) for name, value in metadata.items())
    if size > MAX_METADATA_SIZE:
        raise S3Error(400, "MetadataTooLarge", f"Your metadata headers exceed the maximum "
                      f"allowed metadata size: {size} bytes (at most {MAX_METADATA_SIZE})")
    return metadata


def content_md5(headers: Mapping[bytes, bytes]) -> bytes | None:
    """
    The digest a C{Content-MD5} header gives, if there is one.

    @raise S3Error: InvalidDigest, if it is not the base64 of 16 bytes.
    """
    value = headers.get(b"content-md5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid: it is "
                      "not the base64 of a 16-byte MD5")
    return digest


def crc32_header(crc32: int) -> bytes:
    """
    A CRC32 as C{x-amz-checksum-crc32} carries it: the base64 of its four
    bytes, most significant first.
    """
    return base64.b64encode(crc32.to_bytes(4, "big"))


def copy_source(value: bytes) -> tuple[str, str]:
    """
    The bucket and key an C{x-amz-copy-source} header names
    (C{/bucket/key} or C{bucket/key}, percent-encoded; a C{?versionId=}
    is refused: there are no versions).

    @raise S3Error: InvalidArgument, or NotImplemented for a version.
    """
    path, _, query = value.partition(b"?")
    if query:
        raise S3Error(501, "NotImplemented", "copying a version of an object is not "
                      "implemented: this gateway keeps no versions")
    bucket_raw, slash, key_raw = path.lstrip(b"/").partition(b"/")
    if not slash or not bucket_raw or not key_raw:
        raise S3Error(400, "InvalidArgument", "Copy Source must mention the source bucket and "
                      "key: sourcebucket/sourcekey")
    try:
        bucket = unquote_to_bytes(bucket_raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error(400, "InvalidArgument", "the copy source's bucket is not UTF-8") from None
    return bucket, check_key(key_raw)


def multipart_etag(part_md5s: list[str]) -> str:
    """
    S3's ETag of an object made by a multipart upload: the MD5 of the
    concatenated binary MD5s of its parts, then C{-} and their number.
    """
    digest = hashlib.md5(b"".join(bytes.fromhex(md5) for md5 in part_md5s),
                         usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(part_md5s)}"
