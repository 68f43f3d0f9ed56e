"""
The receivers of the S3 gateway's request bodies (L{p2pblob.http._body}):
an L{Exchange} per request authenticates and routes it as soon as its
headers are in, then feeds its payload, checked against its signature and
digests as it arrives, to a L{Sink}: small bodies (XML documents, raw
blobs) in memory, within bounds; objects and parts into a new stream
(L{Publishing}), encrypted into blobs as their bytes arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from p2pblob.errors import DiskLimitError, P2PBlobError
from p2pblob.gateway._routing import Target, lower_headers, operation, signature_error
from p2pblob.gateway.objects import Objects, disk_limit_error, quota_exceeded
from p2pblob.gateway.sigv4 import BodyChecker, SignatureError, Verified
from p2pblob.gateway.xml import MAX_XML_BODY, S3Error
from p2pblob.interfaces import IBodyReceiver
from p2pblob.stream.writer import StreamCreator

if TYPE_CHECKING:
    from p2pblob.gateway.resource import S3Gateway

__all__ = ["MAX_OBJECT_SIZE", "Exchange", "Publishing", "Sink", "declared_length"]

MAX_OBJECT_SIZE = 5 * 1024**3
"""
The most bytes one PUT of an object or a part may carry (as S3; larger
objects are made with multipart uploads).
"""


def declared_length(headers: Mapping[bytes, bytes]) -> int | None:
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


class Sink:
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


class Publishing(Sink):
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
class Exchange:
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
        self._sink: Sink = Sink()

    # the body's receiver

    def body_started(self, request: Request) -> None:
        try:
            self.headers = lower_headers(self.raw_headers)
            self.target = Target.parse(self.raw_target)
            self.verified = self.gateway.authenticate(self.method, self.target,
                                                      self.raw_headers, request)
            try:
                self._checker = BodyChecker(self.verified, self.raw_headers)
            except SignatureError as e:
                raise signature_error(e) from None
            self.operation = operation(self.method, self.target, self.headers)
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
                raise signature_error(e) from None
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
            self._refuse(signature_error(e))
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
