"""
The S3 gateway's XML: the documents it answers (L{list_buckets},
L{list_objects}, ...), its errors (L{S3Error}, L{error_document}) and the
few request bodies it reads (L{parse_complete}, L{parse_delete},
L{check_bucket_configuration}).

Request bodies are parsed with the standard library's ElementTree after
two checks that take the place of C{defusedxml}: a size bound, and the
refusal of any document type declaration (so no entity is ever defined,
let alone expanded).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree import ElementTree

from p2pblob.errors import P2PBlobError

__all__ = [
    "MAX_XML_BODY",
    "NAMESPACE",
    "Bucket",
    "Entry",
    "Listing",
    "Part",
    "S3Error",
    "Upload",
    "check_bucket_configuration",
    "copy_result",
    "delete_result",
    "document",
    "error_document",
    "initiate_result",
    "iso_date",
    "list_buckets",
    "list_objects",
    "list_parts",
    "list_uploads",
    "location",
    "complete_result",
    "parse_complete",
    "parse_delete",
]

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

MAX_XML_BODY = 1024 * 1024
"""
The longest XML request body read (a CompleteMultipartUpload of 10,000
parts is about 700 kB).
"""

# the most keys one DeleteObjects may name (as S3)
MAX_DELETE_KEYS = 1000


class S3Error(P2PBlobError):
    """
    A request to the S3 gateway is refused: it is answered with C{status}
    and an S3 error document of C{code} and C{message}.

    @ivar extra: further elements of the error document, by name (as
        C{RangeRequested} for C{InvalidRange}).
    @ivar headers: headers of the answer (as C{Allow} for a 405).
    """

    def __init__(self, status: int, code: str, message: str, *,
                 extra: dict[str, str] | None = None,
                 headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"<S3Error {self.status} {self.code}: {self.message}>"


def _element(parent: ElementTree.Element, name: str, text: object = None) -> ElementTree.Element:
    child = ElementTree.SubElement(parent, name)
    if text is not None:
        child.text = text if isinstance(text, str) else str(text)
    return child


def _root(name: str, namespace: bool = True) -> ElementTree.Element:
    return ElementTree.Element(name, {"xmlns": NAMESPACE} if namespace else {})


def document(root: ElementTree.Element) -> bytes:
    """
    The bytes of an XML document, with its declaration.
    """
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _boolean(value: bool) -> str:
    return "true" if value else "false"


def iso_date(seconds: float) -> str:
    """
    A time as S3 writes it in XML: C{2026-11-03T17:50:30.000Z}.
    """
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def error_document(error: S3Error, resource: str, request_id: str) -> bytes:
    """
    C{<Error><Code/><Message/>...<Resource/><RequestId/></Error>}.
    """
    root = _root("Error", namespace=False)
    _element(root, "Code", error.code)
    _element(root, "Message", error.message)
    for name, value in error.extra.items():
        _element(root, name, value)
    _element(root, "Resource", resource)
    _element(root, "RequestId", request_id)
    return document(root)


def _owner(parent: ElementTree.Element, name: str = "Owner") -> None:
    owner = _element(parent, name)
    _element(owner, "ID", "p2pblob")
    _element(owner, "DisplayName", "p2pblob")


@dataclass(frozen=True)
class Bucket:
    name: str
    created: float


def list_buckets(buckets: Iterable[Bucket]) -> bytes:
    root = _root("ListAllMyBucketsResult")
    _owner(root)
    listed = _element(root, "Buckets")
    for bucket in buckets:
        item = _element(listed, "Bucket")
        _element(item, "Name", bucket.name)
        _element(item, "CreationDate", iso_date(bucket.created))
    return document(root)


def location() -> bytes:
    """
    GetBucketLocation: the empty constraint of C{us-east-1}.
    """
    return document(_root("LocationConstraint"))


@dataclass(frozen=True)
class Entry:
    """
    An object as a listing shows it.
    """

    key: str
    modified: float
    etag: str
    size: int


@dataclass(frozen=True)
class Listing:
    """
    What a bucket listing found: objects, common prefixes, and whether more
    follow (then C{next_marker} is the last key or prefix given).
    """

    entries: Sequence[Entry]
    prefixes: Sequence[str]
    truncated: bool
    next_marker: str | None


def list_objects(bucket: str, listing: Listing, *, prefix: str, delimiter: str | None,
                 max_keys: int, url_encoded: bool, version: int,
                 marker: str | None = None, start_after: str | None = None,
                 continuation: str | None = None, next_continuation: str | None = None,
                 fetch_owner: bool = False) -> bytes:
    """
    A ListBucketResult, as ListObjects (C{version} 1) or ListObjectsV2
    (C{version} 2) answers it; with C{url_encoded}, keys and prefixes are
    percent-encoded (C{encoding-type=url}).
    """
    def text(value: str) -> str:
        return quote(value, safe="/~-_.") if url_encoded else value

    root = _root("ListBucketResult")
    _element(root, "Name", bucket)
    _element(root, "Prefix", text(prefix))
    if version == 1:
        _element(root, "Marker", text(marker or ""))
        if listing.truncated and delimiter and listing.next_marker is not None:
            _element(root, "NextMarker", text(listing.next_marker))
    else:
        if continuation is not None:
            _element(root, "ContinuationToken", continuation)
        if next_continuation is not None:
            _element(root, "NextContinuationToken", next_continuation)
        if start_after is not None:
            _element(root, "StartAfter", text(start_after))
        _element(root, "KeyCount", len(listing.entries) + len(listing.prefixes))
    _element(root, "MaxKeys", max_keys)
    if delimiter is not None:
        _element(root, "Delimiter", text(delimiter))
    if url_encoded:
        _element(root, "EncodingType", "url")
    _element(root, "IsTruncated", _boolean(listing.truncated))
    for entry in listing.entries:
        item = _element(root, "Contents")
        _element(item, "Key", text(entry.key))
        _element(item, "LastModified", iso_date(entry.modified))
        _element(item, "ETag", f'"{entry.etag}"')
        _element(item, "Size", entry.size)
        if version == 1 or fetch_owner:
            _owner(item)
        _element(item, "StorageClass", "STANDARD")
    for common in listing.prefixes:
        _element(_element(root, "CommonPrefixes"), "Prefix", text(common))
    return document(root)


def copy_result(etag: str, modified: float, part: bool = False) -> bytes:
    """
    CopyObjectResult, or CopyPartResult for C{part}.
    """
    root = _root("CopyPartResult" if part else "CopyObjectResult")
    _element(root, "LastModified", iso_date(modified))
    _element(root, "ETag", f'"{etag}"')
    return document(root)


def initiate_result(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _element(root, "Bucket", bucket)
    _element(root, "Key", key)
    _element(root, "UploadId", upload_id)
    return document(root)


def complete_result(location_url: str, bucket: str, key: str, etag: str) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _element(root, "Location", location_url)
    _element(root, "Bucket", bucket)
    _element(root, "Key", key)
    _element(root, "ETag", f'"{etag}"')
    return document(root)


@dataclass(frozen=True)
class Part:
    """
    A part of a multipart upload, as ListParts shows it.
    """

    number: int
    modified: float
    etag: str
    size: int


def list_parts(bucket: str, key: str, upload_id: str, parts: Sequence[Part], *,
               marker: int, max_parts: int, truncated: bool) -> bytes:
    root = _root("ListPartsResult")
    _element(root, "Bucket", bucket)
    _element(root, "Key", key)
    _element(root, "UploadId", upload_id)
    _owner(root, "Initiator")
    _owner(root)
    _element(root, "StorageClass", "STANDARD")
    _element(root, "PartNumberMarker", marker)
    if parts:
        _element(root, "NextPartNumberMarker", parts[-1].number)
    _element(root, "MaxParts", max_parts)
    _element(root, "IsTruncated", _boolean(truncated))
    for part in parts:
        item = _element(root, "Part")
        _element(item, "PartNumber", part.number)
        _element(item, "LastModified", iso_date(part.modified))
        _element(item, "ETag", f'"{part.etag}"')
        _element(item, "Size", part.size)
    return document(root)


@dataclass(frozen=True)
class Upload:
    """
    A multipart upload in progress, as ListMultipartUploads shows it.
    """

    key: str
    upload_id: str
    created: float


def list_uploads(bucket: str, uploads: Sequence[Upload], *, prefix: str, key_marker: str,
                 upload_id_marker: str, max_uploads: int, truncated: bool) -> bytes:
    root = _root("ListMultipartUploadsResult")
    _element(root, "Bucket", bucket)
    _element(root, "KeyMarker", key_marker)
    _element(root, "UploadIdMarker", upload_id_marker)
    if uploads:
        _element(root, "NextKeyMarker", uploads[-1].key)
        _element(root, "NextUploadIdMarker", uploads[-1].upload_id)
    _element(root, "Prefix", prefix)
    _element(root, "MaxUploads", max_uploads)
    _element(root, "IsTruncated", _boolean(truncated))
    for upload in uploads:
        item = _element(root, "Upload")
        _element(item, "Key", upload.key)
        _element(item, "UploadId", upload.upload_id)
        _owner(item, "Initiator")
        _owner(item)
        _element(item, "StorageClass", "STANDARD")
        _element(item, "Initiated", iso_date(upload.created))
    return document(root)


def delete_result(deleted: Sequence[str], errors: Sequence[tuple[str, S3Error]],
                  quiet: bool) -> bytes:
    root = _root("DeleteResult")
    if not quiet:
        for key in deleted:
            _element(_element(root, "Deleted"), "Key", key)
    for key, error in errors:
        item = _element(root, "Error")
        _element(item, "Key", key)
        _element(item, "Code", error.code)
        _element(item, "Message", error.message)
    return document(root)


# reading request bodies

def _malformed(why: str) -> S3Error:
    return S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                   f"validate against our published schema: {why}")


def _parse(body: bytes) -> ElementTree.Element:
    """
    The root element of a small request document.

    @raise S3Error: MalformedXML, for a body too long, with a document type
        declaration, or that does not parse.
    """
    if len(body) > MAX_XML_BODY:
        raise _malformed(f"the body is over {MAX_XML_BODY} bytes")
    if b"<!" in body:
        raise _malformed("document type declarations, entities and comments are not accepted")
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise _malformed(str(e)) from None


def _name(element: ElementTree.Element) -> str:
    """
    An element's name without its namespace.
    """
    return element.tag.rpartition("}")[2]


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _name(child) == name]


def _child_text(element: ElementTree.Element, name: str) -> str | None:
    found = _children(element, name)
    if not found:
        return None
    return found[0].text or ""


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """
    The C{(part number, ETag)} pairs of a CompleteMultipartUpload body, in
    its order; the ETag without its quotes.

    @raise S3Error: MalformedXML.
    """
    root = _parse(body)
    if _name(root) != "CompleteMultipartUpload":
        raise _malformed("the root element is not CompleteMultipartUpload")
    parts = []
    for part in _children(root, "Part"):
        number, etag = _child_text(part, "PartNumber"), _child_text(part, "ETag")
        if number is None or etag is None:
            raise _malformed("a Part lacks its PartNumber or its ETag")
        try:
            parts.append((int(number.strip()), etag.strip().strip('"')))
        except ValueError:
            raise _malformed(f"{number[:20]!r} is not a part number") from None
    if not parts:
        raise _malformed("no Part is named")
    return parts


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """
    The keys a DeleteObjects body names, and whether it asks for a quiet
    answer.

    @raise S3Error: MalformedXML, also for more than 1000 keys.
    """
    root = _parse(body)
    if _name(root) != "Delete":
        raise _malformed("the root element is not Delete")
    keys = []
    for item in _children(root, "Object"):
        key = _child_text(item, "Key")
        if key is None:
            raise _malformed("an Object lacks its Key")
        keys.append(key)
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise _malformed(f"name from 1 to {MAX_DELETE_KEYS} objects")
    quiet = (_child_text(root, "Quiet") or "false").strip().lower() == "true"
    return keys, quiet


def check_bucket_configuration(body: bytes) -> None:
    """
    Accept a CreateBucketConfiguration for C{us-east-1} (or none).

    @raise S3Error: MalformedXML, or InvalidLocationConstraint for another
        region: a bucket here lives on this node, in no region.
    """
    if not body.strip():
        return
    root = _parse(body)
    if _name(root) != "CreateBucketConfiguration":
        raise _malformed("the root element is not CreateBucketConfiguration")
    constraint = (_child_text(root, "LocationConstraint") or "").strip()
    if constraint not in ("", "us-east-1"):
        raise S3Error(400, "InvalidLocationConstraint",
                      f"the location constraint {constraint[:40]!r} is not served here: "
                      "this gateway's buckets are in us-east-1")
