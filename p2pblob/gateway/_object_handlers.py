"""
The S3 gateway's operations on objects: PutObject (and the import of a
stream by sd hash), CopyObject, DeleteObject, GetObject and HeadObject, and
the raw blobs of the reserved bucket C{blobs}.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from p2pblob.blob.hashing import blob_hash, is_blob_hash
from p2pblob.errors import BlobHashMismatchError, BlobNotFoundError, DiskLimitError
from p2pblob.gateway._answers import empty, quoted, send_xml
from p2pblob.gateway._bodies import Exchange
from p2pblob.gateway._routing import (
    SD_HASH_HEADER,
    Handler,
    Handlers,
    no_such_bucket,
    no_such_key,
    not_allowed,
)
from p2pblob.gateway.namespace import ObjectRecord
from p2pblob.gateway.objects import Objects, disk_limit_error
from p2pblob.gateway.reading import ObjectAnswer
from p2pblob.gateway.rules import (
    RAW_BLOBS_BUCKET,
    STORED_HEADERS,
    Conditions,
    copy_source,
    crc32_header,
    evaluate,
    http_date,
    stored_headers,
    user_metadata,
)
from p2pblob.gateway.xml import S3Error, copy_result
from p2pblob.http._ranges import parse_range, satisfiable_range

__all__ = ["ObjectHandlers", "copied_object"]

_log = Logger()

# response-* query parameters and the headers they set (GET and HEAD)
_OVERRIDES = {
    "response-cache-control": b"cache-control",
    "response-content-disposition": b"content-disposition",
    "response-content-encoding": b"content-encoding",
    "response-content-language": b"content-language",
    "response-content-type": b"content-type",
    "response-expires": b"expires",
}


class ObjectHandlers(Handlers):
    """
    The operations on objects.
    """

    def operations(self) -> dict[str, Handler]:
        return {
            "put_object": self._put_object,
            "import_object": self._import_object,
            "copy_object": self._copy_object,
            "delete_object": self._delete_object,
            "get_object": self._get_object,
        }

    async def _put_object(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            await self._put_raw_blob(request, exchange)
            return
        sd_hash, size, md5, crc32 = await exchange.body()
        try:
            bucket = self.bucket(target)
            key = target.key
            previous = self.namespace.get_object(bucket, key)
            self.objects.check_quota(size, 0 if previous is None else previous.size,
                                     0 if previous else 1)
        except S3Error:
            self.objects.release([sd_hash])
            raise
        content_type, headers = stored_headers(exchange.headers)
        now = self.objects.now()
        record = ObjectRecord(bucket, key, sd_hash, size, md5, md5, crc32, content_type,
                              headers, user_metadata(exchange.headers), now, now)
        self.objects.name(record, owned=True)
        _log.info("Put {bucket}/{key}: {size} bytes, stream {sd_hash}", bucket=bucket,
                  key=key, size=size, sd_hash=sd_hash)
        empty(request, headers={b"etag": quoted(md5), SD_HASH_HEADER: sd_hash.encode(),
                                b"x-amz-checksum-crc32": crc32_header(crc32)})

    async def _import_object(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        bucket, key = self.bucket(target), target.key
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
        empty(request, headers={b"etag": quoted(record.etag), SD_HASH_HEADER: sd_hash.encode()})

    async def _put_raw_blob(self, request: Request, exchange: Exchange) -> None:
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
        empty(request, headers={b"etag": quoted(name)})

    async def _copy_object(self, request: Request, exchange: Exchange) -> None:
        target, headers = exchange.target, exchange.headers
        bucket, key = self.bucket(target), target.key
        source = copied_object(self.objects, exchange)
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

    async def _delete_object(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            raise not_allowed(b"DELETE", "a raw blob", b"GET, HEAD, PUT")
        bucket, key = self.bucket(target), target.key
        if self.objects.delete(bucket, key):
            _log.info("Deleted {bucket}/{key}", bucket=bucket, key=key)
        empty(request, 204)

    async def _get_object(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        if target.bucket == RAW_BLOBS_BUCKET:
            await self._get_raw_blob(request, exchange)
            return
        bucket, key = self.bucket(target), target.key
        record = self.namespace.get_object(bucket, key)
        if record is None:
            raise no_such_key(key)
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

    async def _get_raw_blob(self, request: Request, exchange: Exchange) -> None:
        name = exchange.target.key
        store = self.objects.store
        if not is_blob_hash(name):
            raise no_such_key(name)
        if not store.has_blob(name) and self.objects.fetcher is not None:
            try:
                await self.objects.fetcher(name)
            except Exception as e:
                raise S3Error(404, "NoSuchKey", f"no peer gave the blob: {e}"[:300]) from None
        try:
            data = await store.read_blob(name)
        except BlobNotFoundError:
            raise no_such_key(name) from None
        etag = quoted(name)
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


def copied_object(objects: Objects, exchange: Exchange) -> ObjectRecord:
    """
    The object a copy reads, which must pass the copy's conditions.

    @raise S3Error: NoSuchBucket, NoSuchKey, PreconditionFailed.
    """
    headers = exchange.headers
    source_bucket, source_key = copy_source(headers[b"x-amz-copy-source"])
    if not objects.namespace.has_bucket(source_bucket):
        raise no_such_bucket(source_bucket)
    source = objects.namespace.get_object(source_bucket, source_key)
    if source is None:
        raise no_such_key(source_key)
    outcome = evaluate(Conditions.of(headers, b"x-amz-copy-source-"), _etags(source),
                       source.modified, objects.now(), copy=True)
    if outcome is not None:
        raise _precondition_failed("x-amz-copy-source-If-*")
    return source


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


def _object_headers(record: ObjectRecord, exchange: Exchange) -> dict[bytes, bytes]:
    """
    The headers of an answer about C{record}: ETag, Last-Modified, its
    type, stored headers and user metadata (as the C{response-*}
    parameters override them), its stream, and its CRC32 when the client
    asks for checksums.
    """
    headers = {
        b"etag": quoted(record.etag),
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


def _span(exchange: Exchange, size: int, headers: dict[bytes, bytes]) -> tuple[int, int]:
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
