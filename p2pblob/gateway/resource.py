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

Where the parts are: what a request asks for and who signs it
(L{p2pblob.gateway._routing}), the receivers of its body
(L{p2pblob.gateway._bodies}), and the handlers of the operations on
buckets, objects and multipart uploads (L{p2pblob.gateway._bucket_handlers},
L{p2pblob.gateway._object_handlers},
L{p2pblob.gateway._multipart_handlers}).

See L{p2pblob.gateway.service} for the operations, headers and choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.gateway._answers import request_id, send_error, use_response_headers
from p2pblob.gateway._bodies import MAX_OBJECT_SIZE, Exchange, Publishing, Sink, declared_length
from p2pblob.gateway._bucket_handlers import BucketHandlers
from p2pblob.gateway._multipart_handlers import MultipartHandlers
from p2pblob.gateway._object_handlers import ObjectHandlers
from p2pblob.gateway._routing import (
    SD_HASH_HEADER,
    Handler,
    Target,
    authenticate,
    existing_bucket,
)
from p2pblob.gateway.multipart import Multipart, check_part_number
from p2pblob.gateway.objects import Objects
from p2pblob.gateway.rules import RAW_BLOBS_BUCKET, check_key, user_metadata
from p2pblob.gateway.sigv4 import Verified
from p2pblob.gateway.xml import S3Error
from p2pblob.http._body import streaming_site
from p2pblob.interfaces import IBodyReceiver

__all__ = ["MAX_OBJECT_SIZE", "SD_HASH_HEADER", "S3Gateway"]

_log = Logger()


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
        self._operations: dict[str, Handler] = {
            **BucketHandlers(objects, multipart).operations(),
            **ObjectHandlers(objects, multipart).operations(),
            **MultipartHandlers(objects, multipart, keepalive).operations(),
        }

    # HTTP

    def resource(self) -> IResource:
        return _Root(self)

    def route(self, method: bytes, target: bytes, headers: Headers) -> IBodyReceiver:
        """
        The receiver of every request's body (see L{p2pblob.http._body}).
        """
        return Exchange(self, method, target, headers)

    def site(self, **kwargs: Any) -> Site:
        site = streaming_site(self.resource(), self.route, **kwargs)
        site.displayTracebacks = False
        return site

    # authentication

    def authenticate(self, method: bytes, target: Target, headers: Headers,
                     request: Request) -> Verified:
        """
        Who signed the request (see L{p2pblob.gateway._routing.authenticate}).

        @raise S3Error: AccessDenied, SignatureDoesNotMatch and the other
            errors of L{verify}.
        """
        client = getattr(request.getClientAddress(), "host", None)
        return authenticate(method, target, headers, client, self._keys, self._anonymous,
                            self.objects.now())

    # where bodies go

    def sink(self, exchange: Exchange) -> Sink:
        """
        Where the payload of a request goes; the checks that are possible
        before its body is read are made here.

        @raise S3Error: the request is refused.
        """
        operation, target, headers = exchange.operation, exchange.target, exchange.headers
        if target.bucket == RAW_BLOBS_BUCKET and target.raw_key is not None:
            if operation == "put_object":
                check_key(target.raw_key)
                return Sink(MAX_BLOB_SIZE)
            return Sink()
        if operation not in ("put_object", "upload_part"):
            return Sink()
        bucket, key = existing_bucket(self.namespace, target), target.key
        length = declared_length(headers)
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
        return Publishing(self.objects, key, limit, announce=operation == "put_object")

    # answering

    async def answer(self, request: Request) -> None:
        """
        Answer C{request}.
        """
        exchange = getattr(request, "body_receiver", None)
        if not isinstance(exchange, Exchange):
            exchange = await self._buffered(request)
        use_response_headers(request)
        request_id(request)
        if exchange.error is not None:
            send_error(request, exchange.error)
            return
        await self._operations[exchange.operation](request, exchange)

    async def _buffered(self, request: Request) -> Exchange:
        """
        The exchange of a request whose body twisted.web buffered (a site
        without body routing): its body goes through the same receiver.
        """
        exchange = Exchange(self, request.method, request.uri, request.requestHeaders)
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
