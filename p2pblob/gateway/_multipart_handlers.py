"""
The S3 gateway's operations on multipart uploads (over
L{p2pblob.gateway.multipart}): CreateMultipartUpload, UploadPart,
UploadPartCopy, ListParts, AbortMultipartUpload and
CompleteMultipartUpload, whose answer is kept alive while the parts are
joined.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request

from p2pblob.gateway._answers import empty, quoted, request_id, send_xml
from p2pblob.gateway._bodies import Exchange
from p2pblob.gateway._object_handlers import copied_object
from p2pblob.gateway._routing import SD_HASH_HEADER, Handler, Handlers, count_argument
from p2pblob.gateway.multipart import Multipart, check_part_number
from p2pblob.gateway.objects import Objects
from p2pblob.gateway.rules import crc32_header, stored_headers, user_metadata
from p2pblob.gateway.xml import (
    Part,
    S3Error,
    complete_result,
    copy_result,
    error_document,
    initiate_result,
    list_parts,
    parse_complete,
)
from p2pblob.http._ranges import parse_range

__all__ = ["MultipartHandlers"]

_log = Logger()


class MultipartHandlers(Handlers):
    """
    The operations on multipart uploads.

    @param keepalive: seconds a CompleteMultipartUpload may take before its
        answer starts (see L{_KeepAlive}).
    """

    def __init__(self, objects: Objects, multipart: Multipart, keepalive: float) -> None:
        super().__init__(objects, multipart)
        self._keepalive = keepalive

    def operations(self) -> dict[str, Handler]:
        return {
            "create_upload": self._create_upload,
            "upload_part": self._upload_part,
            "upload_part_copy": self._upload_part_copy,
            "list_parts": self._list_parts,
            "abort_upload": self._abort_upload,
            "complete_upload": self._complete_upload,
        }

    async def _create_upload(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
        await exchange.body()
        content_type, headers = stored_headers(exchange.headers)
        upload_id = self.multipart.create(bucket, key, content_type, headers,
                                          user_metadata(exchange.headers))
        _log.info("Started a multipart upload of {bucket}/{key}: {upload_id}", bucket=bucket,
                  key=key, upload_id=upload_id)
        send_xml(request, initiate_result(bucket, key, upload_id))

    async def _upload_part(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        sd_hash, size, md5, crc32 = await exchange.body()
        try:
            bucket, key = self.bucket(target), target.key
            upload_id = target.query.get("uploadId", "")
            self.multipart.upload(bucket, key, upload_id)
            number = check_part_number(target.query.get("partNumber", ""))
        except S3Error:
            self.objects.release([sd_hash])
            raise
        self.multipart.add_part(upload_id, number, sd_hash, size, md5, crc32)
        empty(request, headers={b"etag": quoted(md5), b"x-amz-checksum-crc32":
                                crc32_header(crc32)})

    async def _upload_part_copy(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        number = check_part_number(target.query.get("partNumber", ""))
        source = copied_object(self.objects, exchange)
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

    async def _list_parts(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        marker = count_argument(target.query, "part-number-marker", 0, 2**31)
        max_parts = count_argument(target.query, "max-parts", 1000)
        found = self.namespace.parts(upload_id, marker, max_parts + 1)
        parts = [Part(p.number, p.created, p.etag, p.size) for p in found[:max_parts]]
        send_xml(request, list_parts(bucket, key, upload_id, parts, marker=marker,
                                     max_parts=max_parts, truncated=len(found) > max_parts))

    async def _abort_upload(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
        upload_id = target.query.get("uploadId", "")
        self.multipart.upload(bucket, key, upload_id)
        self.multipart.abort(upload_id)
        _log.info("Aborted the multipart upload {upload_id} of {bucket}/{key}",
                  upload_id=upload_id, bucket=bucket, key=key)
        empty(request, 204)

    async def _complete_upload(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
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
