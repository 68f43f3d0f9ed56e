"""
The S3 gateway over HTTP: L{S3Gateway} answers S3's REST API, path-style
(C{/bucket/key}), for the objects of an L{Objects} and their multipart
uploads.

Every request's body goes to a receiver (L{p2pblob.http._body}) as it
arrives: the request is authenticated (SigV4, L{p2pblob.gateway.sigv4}) and
checked (bucket, key, quotas, digests' form) as soon as its headers are in,
before a byte of the body is read, and refused then if need be.  An object
or a part is then encrypted into blobs as its bytes arrive (never spooled
to disk), and published once the body is whole and its digests
(C{x-amz-content-sha256}, C{Content-MD5}, C{x-amz-checksum-crc32}) hold;
if one does not, the blobs made are removed again and nothing is named.
Other bodies (XML documents, raw blobs) are small, and bounded.

See L{p2pblob.gateway.service} for the operations, headers and choices.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.errors import BlobHashMismatchError, BlobNotFoundError, DiskLimitError, P2PBlobError
from p2pblob.gateway._answers import request_id, send_error, send_xml, use_response_headers
from p2pblob.gateway.multipart import Multipart, check_part_number
from p2pblob.gateway.namespace import ObjectRecord
from p2pblob.gateway.objects import Objects, disk_limit_error, quota_exceeded
from p2pblob.gateway.reading import ObjectAnswer
from p2pblob.gateway.rules import (
    RAW_BLOBS_BUCKET,
    STORED_HEADERS,
    Conditions,
    check_bucket_name,
    check_key,
    copy_source,
    crc32_header,
    evaluate,
    http_date,
    stored_headers,
    user_metadata,
)
from p2pblob.gateway.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    BodyChecker,
    SignatureError,
    Verified,
    is_anonymous,
    verify,
)
from p2pblob.gateway.xml import (
    MAX_XML_BODY,
    Bucket,
    Entry,
    Listing,
    Part,
    S3Error,
    Upload,
    check_bucket_configuration,
    complete_result,
    copy_result,
    delete_result,
    error_document,
    initiate_result,
    list_buckets,
    list_objects,
    list_parts,
    list_uploads,
    location,
    parse_complete,
    parse_delete,
)
from p2pblob.http._body import streaming_site
from p2pblob.http._ranges import parse_range, satisfiable_range
from p2pblob.interfaces import IBodyReceiver
from p2pblob.stream.writer import StreamCreator

__all__ = ["MAX_OBJECT_SIZE", "SD_HASH_HEADER", "S3Gateway"]

_log = Logger()

SD_HASH_HEADER = b"x-p2pblob-sd-hash"
"""
The stream an object names, in every answer about it; on a PUT with an
empty body, the stream of the network to import under that name.
"""

MAX_OBJECT_SIZE = 5 * 1024**3
"""
The most bytes one PUT of an object or a part may carry (as S3; larger
objects are made with multipart uploads).
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
# response-* query parameters and the headers they set (GET and HEAD)
_OVERRIDES = {
    "response-cache-control": b"cache-control",
    "response-content-disposition": b"content-disposition",
    "response-content-encoding": b"content-encoding",
    "response-content-language": b"content-language",
    "response-content-type": b"content-type",
    "response-expires": b"expires",
}
_CONTINUE_PREFIX = "p2pblob:"


def _lower_headers(headers: Headers) -> dict[bytes, bytes]:
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


def _operation(method: bytes, target: Target, headers: Mapping[bytes, bytes]) -> str:
    """
    The S3 operation a request asks for.

    @raise S3Error: NotImplemented (501) for subresources this gateway does
        not have, MethodNotAllowed (405) for a method it does not take.
    """
    query = target.query
    if target.bucket is None:
        if method in (b"GET", b"HEAD"):
            return "list_buckets"
        raise _not_allowed(method, "the service", b"GET")
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
        raise _not_allowed(method, "a bucket", b"GET, HEAD, PUT, DELETE, POST")
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
    raise _not_allowed(method, "an object", b"GET, HEAD, PUT, DELETE, POST")


def _not_allowed(method: bytes, what: str, allowed: bytes) -> S3Error:
    return S3Error(405, "MethodNotAllowed", f"The specified method is not allowed against "
                   f"{what}: {method[:20].decode('latin-1')}",
                   extra={"Method": method[:20].decode("latin-1"),
                          "ResourceType": what.split()[-1].upper()},
                   headers={b"allow": allowed})


def _no_such_bucket(bucket: str) -> S3Error:
    return S3Error(404, "NoSuchBucket", "The specified bucket does not exist",
                   extra={"BucketName": bucket[:100]})


def _no_such_key(key: str) -> S3Error:
    return S3Error(404, "NoSuchKey", "The specified key does not exist.",
                   extra={"Key": key[:1024]})


def _declared_length(headers: Mapping[bytes, bytes]) -> int | None:
    """
    The payload length a request announces (C{x-amz-decoded-content-length}
    for an aws-chunked body, else C{Content-Length}), if it does.
    """
    for name in (b"x-amz-decoded-content-length", b"content-length"):
        value = headers.get(name)
        if value is not None:
            text = value.strip()
            if not text.isdigit() or len(text) > 19:
                raise S3Error(400, "InvalidArgument", f"{name.decode()} is not a number")
            return int(text)
    return None


def _signature_error(error: SignatureError) -> S3Error:
    return S3Error(error.status, error.code, error.message, extra=dict(error.extra))


class _Sink:
    """
    Where the payload of a request goes: in memory, up to C{limit} bytes.
    """

    def __init__(self, limit: int = MAX_XML_BODY) -> None:
        self._limit = limit
        self._pieces: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> Deferred[None] | None:
        self.size += len(data)
        if self.size > self._limit:
            raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big: this "
                          f"request's body may hold at most {self._limit} bytes")
        self._pieces.append(data)
        return None

    def data(self) -> bytes:
        return b"".join(self._pieces)

    async def close(self) -> Any:
        return self.data()

    def cancel(self) -> None:
        self._pieces.clear()


class _Publishing(_Sink):
    """
    A payload encrypted into a new stream as it arrives, within C{limit}
    bytes (the quota left, or L{None}); announced if C{announce}.

    It closes with the stream's sd hash, size, MD5 and CRC32.
    """

    def __init__(self, objects: Objects, key: str, limit: int | None,
                 announce: bool = True) -> None:
        super().__init__()
        self._objects = objects
        self._quota_left = limit
        self._announce = announce
        self.creator: StreamCreator | None = objects.creator(key)

    def write(self, data: bytes) -> Deferred[None] | None:
        self.size += len(data)
        if self._quota_left is not None and self.size > self._quota_left:
            raise quota_exceeded("this upload would pass the gateway's quota")
        if self.size > MAX_OBJECT_SIZE:
            raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum "
                          f"allowed size of {MAX_OBJECT_SIZE} bytes: use a multipart upload")
        if not data or self.creator is None:
            return None
        return self.creator.write(data).addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, DiskLimitError):
            return Failure(disk_limit_error(error))
        return failure

    async def close(self) -> Any:
        creator, self.creator = self.creator, None
        assert creator is not None
        return await self._objects.finish(creator, self._announce)

    def cancel(self) -> None:
        creator, self.creator = self.creator, None
        if creator is not None:
            self._objects.cancel(creator)


@implementer(IBodyReceiver)
class _Exchange:
    """
    One request to the gateway: its body's receiver, and then what the
    resource answers from.

    @ivar error: why the request is refused, if it is.
    @ivar outcome: what the body came to (its bytes, or the stream made of
        them), once it has ended.
    """

    def __init__(self, gateway: S3Gateway, method: bytes, target: bytes,
                 headers: Headers) -> None:
        self.gateway = gateway
        self.method = method
        self.raw_target = target
        self.raw_headers = headers
        self.headers: dict[bytes, bytes] = {}
        self.target = Target(b"/", b"")
        self.operation = ""
        self.error: S3Error | None = None
        self.verified: Verified | None = None
        self.outcome: Deferred[Any] | None = None
        self._checker: BodyChecker | None = None
        self._sink: _Sink = _Sink()

    # the body's receiver

    def body_started(self, request: Request) -> None:
        try:
            self.headers = _lower_headers(self.raw_headers)
            self.target = Target.parse(self.raw_target)
            self.verified = self.gateway.authenticate(self.method, self.target,
                                                      self.raw_headers, request)
            try:
                self._checker = BodyChecker(self.verified, self.raw_headers)
            except SignatureError as e:
                raise _signature_error(e) from None
            self.operation = _operation(self.method, self.target, self.headers)
            self._sink = self.gateway.sink(self)
        except S3Error as e:
            self.error = e
            request.setResponseCode(e.status)

    def body_chunk(self, data: bytes) -> Deferred[None] | None:
        if self.error is not None:
            return None
        assert self._checker is not None
        try:
            try:
                payload = self._checker.feed(data)
            except SignatureError as e:
                raise _signature_error(e) from None
            written = self._sink.write(payload)
        except S3Error as e:
            self._refuse(e)
            raise
        if written is None:
            return None
        return written.addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        self._refuse(error if isinstance(error, S3Error) else S3Error(
            500 if not isinstance(error, P2PBlobError) else 503,
            "InternalError" if not isinstance(error, P2PBlobError) else "ServiceUnavailable",
            f"the upload failed: {error}"))
        return failure

    def _refuse(self, error: S3Error) -> None:
        if self.error is None:
            self.error = error
        self._sink.cancel()

    def body_finished(self) -> None:
        if self.error is not None:
            return
        assert self._checker is not None
        try:
            self._checker.finish()
        except SignatureError as e:
            self._refuse(_signature_error(e))
            return
        self.outcome = Deferred.fromCoroutine(self._sink.close())

    def body_lost(self, reason: Failure) -> None:
        self._sink.cancel()

    # after the body

    async def body(self) -> Any:
        """
        What the body came to.

        @raise S3Error: the refusal, if the request is refused.
        """
        if self.error is not None:
            raise self.error
        if self.outcome is None:
            raise S3Error(400, "IncompleteBody", "You did not provide the number of bytes "
                          "specified by the Content-Length HTTP header")
        return await self.outcome

    def require_empty_body(self) -> None:
        if self._sink.size:
            raise S3Error(400, "InvalidRequest", "this request takes no body")


class _Root(Resource):
    """
    Every path of the gateway: each request is answered by its
    L{S3Gateway}.
    """

    isLeaf = True

    def __init__(self, gateway: S3Gateway) -> None:
        super().__init__()
        self._gateway = gateway

    def render(self, request: Request) -> int:
        Deferred.fromCoroutine(self._gateway.answer(request)).addErrback(
            self._gateway.failed, request)
        return NOT_DONE_YET


class S3Gateway:
    """
    The S3 REST API over C{objects}.

    @param keys: the secret of each access key.
    @param anonymous: accept unsigned requests (on loopback only: from a
        loopback address, for a loopback C{Host}, and not from a web page
        of another origin).
    @param keepalive: seconds a CompleteMultipartUpload may take before its
        answer starts (status 200), then carries a space as often, until
        the result or error document (as S3, so that clients do not time
        out).
    """

    def __init__(self, objects: Objects, multipart: Multipart, keys: Mapping[str, str],
                 anonymous: bool = False, keepalive: float = 10.0) -> None:
        self.objects = objects
        self.multipart = multipart
        self.namespace = objects.namespace
        self._keys = dict(keys)
        self._anonymous = anonymous
        self._keepalive = keepalive

    # HTTP

    def resource(self) -> IResource:
        return _Root(self)

    def route(self, method: bytes, target: bytes, headers: Headers) -> IBodyReceiver:
        """
        The receiver of every request's body (see L{p2pblob.http._body}).
        """
        return _Exchange(self, method, target, headers)

    def site(self, **kwargs: Any) -> Site:
        site = streaming_site(self.resource(), self.route, **kwargs)
        site.displayTracebacks = False
        return site

    # authentication

    def authenticate(self, method: bytes, target: Target, headers: Headers,
                     request: Request) -> Verified:
        """
        Who signed the request (SigV4), or an anonymous signer if the
        gateway accepts unsigned requests and this one may be.

        @raise S3Error: AccessDenied, SignatureDoesNotMatch and the other
            errors of L{verify}.
        """
        if is_anonymous(headers, target.raw_query):
            if not self._anonymous:
                raise S3Error(403, "AccessDenied", "Access Denied: this gateway takes signed "
                              "requests only (AWS Signature Version 4, with a configured key)")
            client = getattr(request.getClientAddress(), "host", None)
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
            return verify(method, target.raw_path, target.raw_query, headers, self._keys,
                          self.objects.now())
        except SignatureError as e:
            raise _signature_error(e) from None

    # where bodies go

    def sink(self, exchange: _Exchange) -> _Sink:
        """
        Where the payload of a request goes; the checks that are possible
        before its body is read are made here.

        @raise S3Error: the request is refused.
        """
        operation, target, headers = exchange.operation, exchange.target, exchange.headers
        if target.bucket == RAW_BLOBS_BUCKET and target.raw_key is not None:
            if operation == "put_object":
                check_key(target.raw_key)
                return _Sink(MAX_BLOB_SIZE)
            return _Sink()
        if operation not in ("put_object", "upload_part"):
            return _Sink()
        bucket, key = self._bucket(target), target.key
        length = _declared_length(headers)
        if length is not None and length > MAX_OBJECT_SIZE:
            raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum "
                          f"allowed size of {MAX_OBJECT_SIZE} bytes: use a multipart upload")
        if operation == "put_object":
            user_metadata(headers)
            previous = self.namespace.get_object(bucket, key)
            replacing = 0 if previous is None else previous.size
            self.objects.check_quota(length or 0, replacing, 0 if previous else 1)
        else:
            upload_id = target.query.get("uploadId", "")
            self.multipart.upload(bucket, key, upload_id)
            number = check_part_number(target.query.get("partNumber", ""))
            self.multipart.check_part_quota(upload_id, number, length or 0)
            replacing = 0
        limit = None
        if self.objects.quota is not None:
            limit = self.objects.quota - self.namespace.usage().size + replacing
        return _Publishing(self.objects, key, limit, announce=operation == "put_object")

    def _bucket(self, target: Target) -> str:
        """
        The bucket a request names, which must exist.

        @raise S3Error: NoSuchBucket.
        """
        bucket = target.bucket or ""
        if not self.namespace.has_bucket(bucket):
            raise _no_such_bucket(bucket)
        return bucket

    # answering

    async def answer(self, request: Request) -> None:
        """
        Answer C{request}.
        """
        exchange = getattr(request, "body_receiver", None)
        if not isinstance(exchange, _Exchange):
            exchange = await self._buffered(request)
        use_response_headers(request)
        request_id(request)
        if exchange.error is not None:
            send_error(request, exchange.error)
            return
        handler = getattr(self, "_" + exchange.operation)
        await handler(request, exchange)

    async def _buffered(self, request: Request) -> _Exchange:
        """
        The exchange of a request whose body twisted.web buffered (a site
        without body routing): its body goes through the same receiver.
        """
        exchange = _Exchange(self, request.method, request.uri, request.requestHeaders)
        exchange.body_started(request)
        if exchange.error is None and request.content is not None:
            request.content.seek(0)
            while exchange.error is None and (data := request.content.read(1 << 20)):
                try:
                    written = exchange.body_chunk(data)
                    if written is not None:
                        await written
                except Exception:
                    break
        exchange.body_finished()
        return exchange

    def failed(self, failure: Failure, request: Request) -> None:
        """
        Answer a request whose handling failed: an S3 error is the answer;
        anything else is a bug, logged, and answered with InternalError.
        """
        error = failure.value
        if not isinstance(error, S3Error):
            _log.failure("Failed answering {method} {uri}", failure,
                         method=request.method, uri=request.uri)
            error = S3Error(500, "InternalError", "We encountered an internal error. Please "
                            "try again. (The node's log has the details.)")
        if request.finished or getattr(request, "_disconnected", False):
            return
        if request.startedWriting:
            request.loseConnection()
            return
        send_error(request, error)

    # the service

    async def _list_buckets(self, request: Request, exchange: _Exchange) -> None:
        buckets = [Bucket(name, created) for name, created in self.namespace.buckets()]
        send_xml(request, list_buckets(buckets))

    # buckets

    async def _create_bucket(self, request: Request, exchange: _Exchange) -> None:
        bucket = exchange.target.bucket or ""
        check_bucket_name(bucket)
        check_bucket_configuration(await exchange.body())
        if self.namespace.create_bucket(bucket, self.objects.now()):
            _log.info("Created bucket {bucket}", bucket=bucket)
        request.setHeader(b"location", b"/" + quote(bucket).encode("ascii"))
        _empty(request)

    async def _head_bucket(self, request: Request, exchange: _Exchange) -> None:
        if exchange.target.bucket != RAW_BLOBS_BUCKET:
            self._bucket(exchange.target)
        request.setHeader(b"x-amz-bucket-region", b"us-east-1")
        _empty(request)

    async def _delete_bucket(self, request: Request, exchange: _Exchange) -> None:
        bucket = self._bucket(exchange.target)
        try:
            released = self.namespace.delete_bucket(bucket)
        except ValueError:
            raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty",
                          extra={"BucketName": bucket}) from None
        self.objects.release(released)
        _log.info("Deleted bucket {bucket}", bucket=bucket)
        _empty(request, 204)

    async def _location(self, request: Request, exchange: _Exchange) -> None:
        if exchange.target.bucket != RAW_BLOBS_BUCKET:
            self._bucket(exchange.target)
        send_xml(request, location())

    async def _list_objects(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        query = target.query
        if target.bucket == RAW_BLOBS_BUCKET:
            bucket = RAW_BLOBS_BUCKET
        else:
            bucket = self._bucket(target)
        version = 2 if query.get("list-type") == "2" else 1
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request",
                          extra={"ArgumentName": "encoding-type"})
        max_keys = _count_argument(query, "max-keys", 1000)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter") or None
        continuation = query.get("continuation-token") if version == 2 else None
        if version == 1:
            after = query.get("marker") or None
        elif continuation is not None:
            after = _read_continuation(continuation)
        else:
            after = query.get("start-after") or None
        if bucket == RAW_BLOBS_BUCKET:
            listing = await self._raw_listing(prefix, after, max_keys)
        else:
            records, prefixes, truncated, last = self.namespace.list_objects(
                bucket, prefix, delimiter, after, max_keys)
            entries = [Entry(r.key, r.modified, r.etag, r.size) for r in records]
            listing = Listing(entries, prefixes, truncated, last)
        next_continuation = None
        if version == 2 and listing.truncated and listing.next_marker is not None:
            next_continuation = _write_continuation(listing.next_marker)
        send_xml(request, list_objects(
            bucket, listing, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
            url_encoded=encoding == "url", version=version, marker=query.get("marker"),
            start_after=query.get("start-after") if version == 2 else None,
            continuation=continuation, next_continuation=next_continuation,
            fetch_owner=query.get("fetch-owner") == "true"))

    async def _raw_listing(self, prefix: str, after: str | None, max_keys: int) -> Listing:
        """
        The raw blobs held, as objects of the bucket C{blobs}.
        """
        held = sorted(h for h in await self.objects.store.verified_blobs()
                      if h.startswith(prefix) and (after is None or h > after))
        entries = []
        for blob in held[:max_keys]:
            try:
                length = self.objects.store.get_blob(blob).length
            except BlobNotFoundError:
                continue
            entries.append(Entry(blob, 0.0, blob, length))
        truncated = len(held) > max_keys
        return Listing(entries, [], truncated, entries[-1].key if entries else None)

    async def _delete_objects(self, request: Request, exchange: _Exchange) -> None:
        bucket = self._bucket(exchange.target)
        keys, quiet = parse_delete(await exchange.body())
        deleted, errors = [], []
        for key in keys:
            try:
                check_key(quote(key, safe="").encode("ascii"))
            except S3Error as e:
                errors.append((key, e))
                continue
            self.objects.delete(bucket, key)
            deleted.append(key)
        send_xml(request, delete_result(deleted, errors, quiet))

    async def _list_uploads(self, request: Request, exchange: _Exchange) -> None:
        bucket = self._bucket(exchange.target)
        query = exchange.target.query
        max_uploads = _count_argument(query, "max-uploads", 1000)
        prefix = query.get("prefix", "")
        key_marker = query.get("key-marker", "")
        id_marker = query.get("upload-id-marker", "")
        found = self.namespace.uploads(bucket, prefix, key_marker, id_marker, max_uploads + 1)
        uploads = [Upload(u.key, u.upload_id, u.created) for u in found[:max_uploads]]
        send_xml(request, list_uploads(bucket, uploads, prefix=prefix, key_marker=key_marker,
                                       upload_id_marker=id_marker, max_uploads=max_uploads,
                                       truncated=len(found) > max_uploads))

    # objects

    async def _put_object(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            await self._put_raw_blob(request, exchange)
            return
        sd_hash, size, md5, crc32 = await exchange.body()
        try:
            bucket = self._bucket(target)
            key = target.key
            previous = self.namespace.get_object(bucket, key)
            self.objects.check_quota(size, 0 if previous is None else previous.size,
                                     0 if previous else 1)
        except S3Error:
            self.namespace.own_stream(sd_hash)
            self.objects.release([sd_hash])
            raise
        content_type, headers = stored_headers(exchange.headers)
        now = self.objects.now()
        record = ObjectRecord(bucket, key, sd_hash, size, md5, md5, crc32, content_type,
                              headers, user_metadata(exchange.headers), now, now)
        self.objects.name(record, owned=True)
        _log.info("Put {bucket}/{key}: {size} bytes, stream {sd_hash}", bucket=bucket,
                  key=key, size=size, sd_hash=sd_hash)
        _empty(request, headers={b"etag": _quoted(md5), SD_HASH_HEADER: sd_hash.encode(),
                                 b"x-amz-checksum-crc32": crc32_header(crc32)})

    async def _import_object(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        await exchange.body()
        exchange.require_empty_body()
        sd_hash = exchange.headers[SD_HASH_HEADER].decode("latin-1").strip().lower()
        if not is_blob_hash(sd_hash):
            raise S3Error(400, "InvalidArgument", f"{SD_HASH_HEADER.decode()} must be an sd "
                          "hash: 96 hexadecimal digits",
                          extra={"ArgumentName": SD_HASH_HEADER.decode()})
        size, owned = await self.objects.import_stream(sd_hash)
        previous = self.namespace.get_object(bucket, key)
        try:
            self.objects.check_quota(size, 0 if previous is None else previous.size,
                                     0 if previous else 1)
        except S3Error:
            self.objects.release([sd_hash])
            raise
        md5, crc32 = self.namespace.digests(sd_hash)
        content_type, headers = stored_headers(exchange.headers)
        now = self.objects.now()
        record = ObjectRecord(bucket, key, sd_hash, size, md5 or sd_hash, md5, crc32,
                              content_type, headers, user_metadata(exchange.headers), now, now)
        self.objects.name(record, owned=owned)
        _log.info("Imported stream {sd_hash} as {bucket}/{key} ({size} bytes)",
                  sd_hash=sd_hash, bucket=bucket, key=key, size=size)
        _empty(request, headers={b"etag": _quoted(record.etag), SD_HASH_HEADER: sd_hash.encode()})

    async def _put_raw_blob(self, request: Request, exchange: _Exchange) -> None:
        name = exchange.target.key
        data = await exchange.body()
        if not is_blob_hash(name):
            raise S3Error(400, "InvalidArgument", f"a raw blob's key is its sha384 (96 lowercase "
                          f"hexadecimal digits), not {name[:100]!r}")
        if blob_hash(data) != name:
            raise S3Error(400, "BadDigest", "the body's sha384 is not the key: a raw blob is "
                          "named by its content")
        try:
            await self.objects.store.put_blob(data, name)
        except BlobHashMismatchError:
            raise S3Error(400, "BadDigest", "the body's sha384 is not the key") from None
        except DiskLimitError as e:
            raise disk_limit_error(e) from None
        _empty(request, headers={b"etag": _quoted(name)})

    async def _copy_object(self, request: Request, exchange: _Exchange) -> None:
        target, headers = exchange.target, exchange.headers
        bucket, key = self._bucket(target), target.key
        source = self._copy_source(exchange)
        directive = headers.get(b"x-amz-metadata-directive", b"COPY").strip().upper()
        if directive not in (b"COPY", b"REPLACE"):
            raise S3Error(400, "InvalidArgument", "Unknown metadata directive.",
                          extra={"ArgumentName": "x-amz-metadata-directive"})
        if (source.bucket, source.key) == (bucket, key) and directive == b"COPY":
            raise S3Error(400, "InvalidRequest", "This copy request is illegal because it is "
                          "trying to copy an object to itself without changing the object's "
                          "metadata, storage class, website redirect location or encryption "
                          "attributes.")
        if directive == b"REPLACE":
            content_type, stored = stored_headers(headers)
            metadata = user_metadata(headers)
        else:
            content_type, stored, metadata = (source.content_type, dict(source.headers),
                                              dict(source.metadata))
        previous = self.namespace.get_object(bucket, key)
        self.objects.check_quota(source.size, 0 if previous is None else previous.size,
                                 0 if previous else 1)
        now = self.objects.now()
        record = ObjectRecord(bucket, key, source.sd_hash, source.size, source.etag, source.md5,
                              source.crc32, content_type, stored, metadata, now, now)
        self.objects.name(record, owned=False)
        _log.info("Copied {source} to {bucket}/{key} (stream {sd_hash}, no bytes copied)",
                  source=f"{source.bucket}/{source.key}", bucket=bucket, key=key,
                  sd_hash=source.sd_hash)
        send_xml(request, copy_result(record.etag, now),
                 headers={SD_HASH_HEADER: source.sd_hash.encode()})

    def _copy_source(self, exchange: _Exchange) -> ObjectRecord:
        """
        The object a copy reads, which must pass the copy's conditions.

        @raise S3Error: NoSuchBucket, NoSuchKey, PreconditionFailed.
        """
        headers = exchange.headers
        source_bucket, source_key = copy_source(headers[b"x-amz-copy-source"])
        if not self.namespace.has_bucket(source_bucket):
            raise _no_such_bucket(source_bucket)
        source = self.namespace.get_object(source_bucket, source_key)
        if source is None:
            raise _no_such_key(source_key)
        outcome = evaluate(Conditions.of(headers, b"x-amz-copy-source-"), _etags(source),
                           source.modified, self.objects.now(), copy=True)
        if outcome is not None:
            raise _precondition_failed("x-amz-copy-source-If-*")
        return source

    async def _delete_object(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            raise _not_allowed(b"DELETE", "a raw blob", b"GET, HEAD, PUT")
        bucket, key = self._bucket(target), target.key
        if self.objects.delete(bucket, key):
            _log.info("Deleted {bucket}/{key}", bucket=bucket, key=key)
        _empty(request, 204)

    async def _get_object(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            await self._get_raw_blob(request, exchange)
            return
        bucket, key = self._bucket(target), target.key
        record = self.namespace.get_object(bucket, key)
        if record is None:
            raise _no_such_key(key)
        headers = _object_headers(record, exchange)
        outcome = evaluate(Conditions.of(exchange.headers), _etags(record), record.modified,
                           self.objects.now())
        if outcome == 412:
            raise _precondition_failed("If-Match or If-Unmodified-Since")
        if outcome == 304:
            request.setResponseCode(304)
            for name in (b"etag", b"last-modified", SD_HASH_HEADER):
                request.setHeader(name, headers[name])
            request.finish()
            return
        span = _span(exchange, record.size, headers)
        if request.method == b"HEAD" or record.size == 0 or span[1] < span[0]:
            request.setResponseCode(206 if b"content-range" in headers else 200)
            for name, value in headers.items():
                request.setHeader(name, value)
            request.finish()
            return
        status = 206 if b"content-range" in headers else 200
        answer = ObjectAnswer(request, self.objects, record, span, status, headers)
        try:
            await answer.run()
        except Exception:
            answer.fail(Failure())

    async def _get_raw_blob(self, request: Request, exchange: _Exchange) -> None:
        name = exchange.target.key
        store = self.objects.store
        if not is_blob_hash(name):
            raise _no_such_key(name)
        if not store.has_blob(name) and self.objects.fetcher is not None:
            try:
                await self.objects.fetcher(name)
            except Exception as e:
                raise S3Error(404, "NoSuchKey", f"no peer gave the blob: {e}"[:300]) from None
        try:
            data = await store.read_blob(name)
        except BlobNotFoundError:
            raise _no_such_key(name) from None
        etag = _quoted(name)
        if evaluate(Conditions.of(exchange.headers), (name,), 0, self.objects.now()) == 304:
            request.setResponseCode(304)
            request.setHeader(b"etag", etag)
            request.finish()
            return
        headers = {b"etag": etag, b"content-type": b"application/octet-stream",
                   b"accept-ranges": b"bytes", b"last-modified": http_date(0).encode()}
        first, last = _span(exchange, len(data), headers)
        headers[b"content-length"] = b"%d" % max(last + 1 - first, 0)
        request.setResponseCode(206 if b"content-range" in headers else 200)
        for header, value in headers.items():
            request.setHeader(header, value)
        request.write(data[first:last + 1])
        request.finish()

    # multipart uploads

    async def _create_upload(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        await exchange.body()
        content_type, headers = stored_headers(exchange.headers)
        upload_id = self.multipart.create(bucket, key, content_type, headers,
                                          user_metadata(exchange.headers))
        _log.info("Started a multipart upload of {bucket}/{key}: {upload_id}", bucket=bucket,
                  key=key, upload_id=upload_id)
        send_xml(request, initiate_result(bucket, key, upload_id))

    async def _upload_part(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        sd_hash, size, md5, crc32 = await exchange.body()
        try:
            bucket, key = self._bucket(target), target.key
            upload_id = target.query.get("uploadId", "")
            self.multipart.upload(bucket, key, upload_id)
            number = check_part_number(target.query.get("partNumber", ""))
        except S3Error:
            self.namespace.own_stream(sd_hash)
            self.objects.release([sd_hash])
            raise
        self.multipart.add_part(upload_id, number, sd_hash, size, md5, crc32)
        _empty(request, headers={b"etag": _quoted(md5), b"x-amz-checksum-crc32":
                                 crc32_header(crc32)})

    async def _upload_part_copy(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        number = check_part_number(target.query.get("partNumber", ""))
        source = self._copy_source(exchange)
        value = exchange.headers.get(b"x-amz-copy-source-range")
        span = (0, source.size - 1)
        if value is not None:
            spec = parse_range(value)
            if spec is None or spec[0] is None or spec[1] is None or spec[1] >= source.size:
                raise S3Error(400, "InvalidArgument", "The x-amz-copy-source-range value must "
                              "be of the form bytes=first-last where first and last are the "
                              "zero-based offsets of the first and last bytes to copy",
                              extra={"ArgumentName": "x-amz-copy-source-range"})
            span = (spec[0], spec[1])
        etag = self.multipart.copy_part(upload_id, number, source, span)
        send_xml(request, copy_result(etag, self.objects.now(), part=True))

    async def _list_parts(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        marker = _count_argument(target.query, "part-number-marker", 0, 2**31)
        max_parts = _count_argument(target.query, "max-parts", 1000)
        found = self.namespace.parts(upload_id, marker, max_parts + 1)
        parts = [Part(p.number, p.created, p.etag, p.size) for p in found[:max_parts]]
        send_xml(request, list_parts(bucket, key, upload_id, parts, marker=marker,
                                     max_parts=max_parts, truncated=len(found) > max_parts))

    async def _abort_upload(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        self.multipart.abort(upload_id)
        _log.info("Aborted the multipart upload {upload_id} of {bucket}/{key}",
                  upload_id=upload_id, bucket=bucket, key=key)
        _empty(request, 204)

    async def _complete_upload(self, request: Request, exchange: _Exchange) -> None:
        target = exchange.target
        bucket, key = self._bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        upload = self.multipart.upload(bucket, key, upload_id)
        parts = self.multipart.chosen_parts(upload, parse_complete(await exchange.body()))
        completing = Deferred.fromCoroutine(self.multipart.complete(upload, parts))
        keepalive = _KeepAlive(request, self.objects.clock, self._keepalive)
        try:
            record = await completing
        except S3Error as error:
            if not keepalive.stop():
                raise
            keepalive.finish(error_document(error, target.resource(), request_id(request)))
            return
        except BaseException:
            keepalive.stop()
            raise
        host = exchange.headers.get(b"host", b"localhost").decode("latin-1")
        body = complete_result(f"http://{host}/{quote(bucket)}/{quote(key)}", bucket, key,
                               record.etag)
        if keepalive.stop():
            keepalive.finish(body)
            return
        send_xml(request, body, headers={SD_HASH_HEADER: record.sd_hash.encode()})


class _KeepAlive:
    """
    The answer to a CompleteMultipartUpload that takes long: after
    C{delay} seconds a 200 and the XML declaration go out, then a space
    every C{delay} seconds, until L{finish} sends the document.
    """

    def __init__(self, request: Request, clock: Any, delay: float) -> None:
        self._request = request
        self._delay = delay
        self._started = False
        self._looping: LoopingCall | None = None
        self._call = clock.callLater(delay, self._start)
        self._clock = clock

    def _start(self) -> None:
        request = self._request
        if request.finished or getattr(request, "_disconnected", False):
            return
        self._started = True
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/xml")
        request.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        self._looping = LoopingCall(self._space)
        self._looping.clock = self._clock
        self._looping.start(self._delay, now=False)

    def _space(self) -> None:
        if not getattr(self._request, "_disconnected", False):
            self._request.write(b" ")

    def stop(self) -> bool:
        """
        Stop sending spaces; whether the answer has started.
        """
        if self._call.active():
            self._call.cancel()
        if self._looping is not None and self._looping.running:
            self._looping.stop()
        return self._started

    def finish(self, document: bytes) -> None:
        """
        Send the document (its declaration left out: it went first).
        """
        if getattr(self._request, "_disconnected", False):
            return
        self._request.write(document.split(b"\n", 1)[1])
        self._request.finish()


def _empty(request: Request, status: int = 200, headers: dict[bytes, bytes] | None = None) -> None:
    """
    Answer with no body.
    """
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if status != 204:
        request.setHeader(b"content-length", b"0")
    request.finish()


def _quoted(etag: str) -> bytes:
    return b'"%s"' % etag.encode("ascii")


def _etags(record: ObjectRecord) -> tuple[str, ...]:
    """
    The ETags that name an object in conditions: its own, and, for a
    stream imported by sd hash, the sd hash it had until its MD5 was known.
    """
    if record.etag == record.sd_hash:
        return (record.etag,)
    return (record.etag, record.sd_hash)


def _precondition_failed(condition: str) -> S3Error:
    return S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you "
                   "specified did not hold", extra={"Condition": condition})


def _count_argument(query: Mapping[str, str], name: str, default: int,
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


def _write_continuation(last: str) -> str:
    return base64.urlsafe_b64encode((_CONTINUE_PREFIX + last).encode("utf-8")).decode("ascii")


def _read_continuation(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_CONTINUE_PREFIX):
        raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect",
                      extra={"ArgumentName": "continuation-token"})
    return text[len(_CONTINUE_PREFIX):]


def _object_headers(record: ObjectRecord, exchange: _Exchange) -> dict[bytes, bytes]:
    """
    The headers of an answer about C{record}: ETag, Last-Modified, its
    type, stored headers and user metadata (as the C{response-*}
    parameters override them), its stream, and its CRC32 when the client
    asks for checksums.
    """
    headers = {
        b"etag": _quoted(record.etag),
        b"last-modified": http_date(record.modified).encode("ascii"),
        b"content-type": record.content_type.encode("latin-1"),
        b"accept-ranges": b"bytes",
        b"content-length": b"%d" % record.size,
        SD_HASH_HEADER: record.sd_hash.encode("ascii"),
    }
    for name in STORED_HEADERS:
        if name in record.headers:
            headers[name.encode("ascii")] = record.headers[name].encode("latin-1")
    for name, value in record.metadata.items():
        headers[b"x-amz-meta-" + name.encode("latin-1")] = value.encode("latin-1")
    for parameter, header in _OVERRIDES.items():
        override = exchange.target.query.get(parameter)
        if override is not None:
            headers[header] = override.encode("utf-8")
    mode = exchange.headers.get(b"x-amz-checksum-mode", b"").strip().upper()
    if mode == b"ENABLED" and record.crc32 is not None and b"range" not in exchange.headers:
        headers[b"x-amz-checksum-crc32"] = crc32_header(record.crc32)
        headers[b"x-amz-checksum-type"] = b"FULL_OBJECT"
    return headers


def _span(exchange: _Exchange, size: int, headers: dict[bytes, bytes]) -> tuple[int, int]:
    """
    The bytes C{(first, last)} to send of C{size}, from the request's
    C{Range} (one range of bytes; a header that does not parse is ignored,
    as S3 does); sets C{Content-Range} and C{Content-Length} for a 206.

    @raise S3Error: InvalidRange (416) for a range that selects no byte.
    """
    value = exchange.headers.get(b"range")
    if value is None or exchange.method != b"GET":
        return 0, size - 1
    spec = parse_range(value)
    if spec is None:
        return 0, size - 1
    span = satisfiable_range(spec, size) if size else None
    if span is None:
        raise S3Error(416, "InvalidRange", "The requested range is not satisfiable",
                      extra={"RangeRequested": value[:100].decode("latin-1"),
                             "ActualObjectSize": str(size)},
                      headers={b"content-range": b"bytes */%d" % size})
    first, last = span
    headers[b"content-range"] = b"bytes %d-%d/%d" % (first, last, size)
    headers[b"content-length"] = b"%d" % (last + 1 - first)
    return first, last
