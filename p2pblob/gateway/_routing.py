"""
What a request to the S3 gateway asks for, and who asks: the operation
named by its method, path and query (L{operation}, over a L{Target}); its
signer (L{authenticate}); and the base of the handlers that answer the
operations (L{Handlers}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_to_bytes

from twisted.web.http_headers import Headers
from twisted.web.server import Request

from p2pblob.gateway.multipart import Multipart
from p2pblob.gateway.namespace import Namespace
from p2pblob.gateway.objects import Objects
from p2pblob.gateway.rules import check_key
from p2pblob.gateway.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    SignatureError,
    Verified,
    is_anonymous,
    verify,
)
from p2pblob.gateway.xml import S3Error

if TYPE_CHECKING:
    from p2pblob.gateway._bodies import Exchange

__all__ = ["SD_HASH_HEADER", "Handler", "Handlers", "Target", "authenticate", "count_argument",
           "existing_bucket", "lower_headers", "no_such_bucket", "no_such_key", "not_allowed",
           "operation", "signature_error"]

SD_HASH_HEADER = b"x-p2pblob-sd-hash"
"""
The stream an object names, in every answer about it; on a PUT with an
empty body, the stream of the network to import under that name.
"""

# the subresources (query parameters) of S3 that are not implemented
_BUCKET_UNSUPPORTED = (
    "accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering",
    "inventory", "lifecycle", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "tagging", "versioning", "versions", "website",
)
_OBJECT_UNSUPPORTED = (
    "acl", "attributes", "legal-hold", "restore", "retention", "select", "tagging", "torrent",
    "versionId",
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def lower_headers(headers: Headers) -> dict[bytes, bytes]:
    """
    A request's headers by lowercase name, repeated ones joined by commas.
    """
    return {name.lower(): b", ".join(values) for name, values in headers.getAllRawHeaders()}


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Target:
    """
    What a request is about, from its target (path and query as sent).

    @ivar bucket: the bucket named, if any.
    @ivar raw_key: the rest of the path after the bucket's C{/}, still
        percent-encoded (L{None} if there is no C{/} after the bucket).
    @ivar query: the query's parameters (the first value of each).
    """

    raw_path: bytes
    raw_query: bytes
    bucket: str | None = None
    raw_key: bytes | None = None
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, target: bytes) -> Target:
        """
        @raise S3Error: InvalidURI for a path that is not UTF-8.
        """
        raw_path, _, raw_query = target.partition(b"?")
        if raw_path.startswith(b"http://") or raw_path.startswith(b"https://"):
            # (an absolute-form target)
            raw_path = b"/" + raw_path.split(b"/", 3)[3] if raw_path.count(b"/") >= 3 else b"/"
        result = cls(raw_path, raw_query)
        try:
            pairs = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True,
                              encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise S3Error(400, "InvalidURI", "Couldn't parse the specified URI: its query "
                          "is not UTF-8") from None
        for name, value in pairs:
            result.query.setdefault(name, value)
        path = raw_path.lstrip(b"/")
        if path:
            bucket, slash, key = path.partition(b"/")
            try:
                result.bucket = unquote_to_bytes(bucket).decode("utf-8")
            except UnicodeDecodeError:
                raise S3Error(400, "InvalidURI", "Couldn't parse the specified URI: its "
                              "bucket is not UTF-8") from None
            result.raw_key = key if slash and key else None
        return result

    @property
    def key(self) -> str:
        """
        @raise S3Error: as L{check_key}.
        """
        return check_key(self.raw_key or b"")

    def resource(self) -> str:
        return unquote_to_bytes(self.raw_path).decode("utf-8", "replace")


def operation(method: bytes, target: Target, headers: Mapping[bytes, bytes]) -> str:
    """
    The S3 operation a request asks for.

    @raise S3Error: NotImplemented (501) for subresources this gateway does
        not have, MethodNotAllowed (405) for a method it does not take.
    """
    query = target.query
    if target.bucket is None:
        if method in (b"GET", b"HEAD"):
            return "list_buckets"
        raise not_allowed(method, "the service", b"GET")
    if target.raw_key is None:
        for name in _BUCKET_UNSUPPORTED:
            if name in query:
                raise S3Error(501, "NotImplemented", f"the bucket subresource ?{name} is not "
                              "implemented by this gateway")
        if method == b"GET":
            if "location" in query:
                return "location"
            if "uploads" in query:
                return "list_uploads"
            return "list_objects"
        if method == b"POST" and "delete" in query:
            return "delete_objects"
        operations = {b"PUT": "create_bucket", b"HEAD": "head_bucket",
                      b"DELETE": "delete_bucket"}
        if method in operations:
            return operations[method]
        raise not_allowed(method, "a bucket", b"GET, HEAD, PUT, DELETE, POST")
    for name in _OBJECT_UNSUPPORTED:
        if name in query:
            raise S3Error(501, "NotImplemented", f"the object subresource ?{name} is not "
                          "implemented by this gateway")
    copying = b"x-amz-copy-source" in headers
    if method == b"PUT":
        if "uploadId" in query or "partNumber" in query:
            return "upload_part_copy" if copying else "upload_part"
        if copying:
            return "copy_object"
        if SD_HASH_HEADER in headers:
            return "import_object"
        return "put_object"
    if method in (b"GET", b"HEAD"):
        if "uploadId" in query and method == b"GET":
            return "list_parts"
        if "partNumber" in query:
            raise S3Error(501, "NotImplemented", "reading one part of an object (partNumber) "
                          "is not implemented by this gateway: use a Range")
        return "get_object"
    if method == b"DELETE":
        return "abort_upload" if "uploadId" in query else "delete_object"
    if method == b"POST":
        if "uploads" in query:
            return "create_upload"
        if "uploadId" in query:
            return "complete_upload"
        raise S3Error(501, "NotImplemented", "POST uploads of objects (HTML forms) are not "
                      "implemented by this gateway")
    raise not_allowed(method, "an object", b"GET, HEAD, PUT, DELETE, POST")


def not_allowed(method: bytes, what: str, allowed: bytes) -> S3Error:
    return S3Error(405, "MethodNotAllowed", f"The specified method is not allowed against "
                   f"{what}: {method[:20].decode('latin-1')}",
                   extra={"Method": method[:20].decode("latin-1"),
                          "ResourceType": what.split()[-1].upper()},
                   headers={b"allow": allowed})


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error(404, "NoSuchBucket", "The specified bucket does not exist",
                   extra={"BucketName": bucket[:100]})


def no_such_key(key: str) -> S3Error:
    return S3Error(404, "NoSuchKey", "The specified key does not exist.",
                   extra={"Key": key[:1024]})


def signature_error(error: SignatureError) -> S3Error:
    return S3Error(error.status, error.code, error.message, extra=dict(error.extra))


def count_argument(query: Mapping[str, str], name: str, default: int,
                   most: int = 1000) -> int:
    """
    A non-negative count of the query (at most C{most}).

    @raise S3Error: InvalidArgument.
    """
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or len(value) > 10:
        raise S3Error(400, "InvalidArgument", f"Provided {name} not an integer or within "
                      "integer range", extra={"ArgumentName": name, "ArgumentValue": value[:20]})
    return min(int(value), most)


def authenticate(method: bytes, target: Target, headers: Headers, client: str | None,
                 keys: Mapping[str, str], anonymous: bool, now: float) -> Verified:
    """
    Who signed the request (SigV4), or an anonymous signer if the gateway
    accepts unsigned requests (C{anonymous}) and this one may be.

    @param client: the host the request comes from.
    @param keys: the secret of each access key.

    @raise S3Error: AccessDenied, SignatureDoesNotMatch and the other
        errors of L{verify}.
    """
    if is_anonymous(headers, target.raw_query):
        if not anonymous:
            raise S3Error(403, "AccessDenied", "Access Denied: this gateway takes signed "
                          "requests only (AWS Signature Version 4, with a configured key)")
        host = (headers.getRawHeaders(b"host") or [b""])[0].decode("latin-1")
        if (not _loopback(client) or not _loopback(host)
                or headers.getRawHeaders(b"origin") is not None):
            raise S3Error(403, "AccessDenied", "Access Denied: unsigned requests are "
                          "taken from this machine only, for localhost, not from web pages")
        given = (headers.getRawHeaders(b"x-amz-content-sha256") or [b""])[0].decode(
            "latin-1").strip()
        if given in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            raise S3Error(403, "AccessDenied", "Access Denied: a signed aws-chunked body "
                          "needs a signed request")
        payload = given if given else UNSIGNED_PAYLOAD
        if payload not in (UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_TRAILER):
            try:
                bytes.fromhex(payload)
            except ValueError:
                payload = UNSIGNED_PAYLOAD
            if len(payload) != 64:
                payload = UNSIGNED_PAYLOAD
        return Verified(access_key="", payload=payload, signing_key=b"",
                        seed_signature="", scope="", timestamp="")
    try:
        return verify(method, target.raw_path, target.raw_query, headers, keys, now)
    except SignatureError as e:
        raise signature_error(e) from None


Handler = Callable[[Request, "Exchange"], Awaitable[None]]
"""
What answers one operation, once the request's body is being received.
"""


class Handlers:
    """
    Handlers of some of the gateway's operations (L{operations}), over its
    objects and their multipart uploads.
    """

    def __init__(self, objects: Objects, multipart: Multipart) -> None:
        self.objects = objects
        self.multipart = multipart
        self.namespace = objects.namespace

    def operations(self) -> dict[str, Handler]:
        """
        The handler of each operation these handlers answer, by the name
        L{operation} gives it.
        """
        raise NotImplementedError

    def bucket(self, target: Target) -> str:
        """
        The bucket a request names, which must exist.

        @raise S3Error: NoSuchBucket.
        """
        return existing_bucket(self.namespace, target)


def existing_bucket(namespace: Namespace, target: Target) -> str:
    """
    The bucket a request names, which must exist in C{namespace}.

    @raise S3Error: NoSuchBucket.
    """
    bucket = target.bucket or ""
    if not namespace.has_bucket(bucket):
        raise no_such_bucket(bucket)
    return bucket
