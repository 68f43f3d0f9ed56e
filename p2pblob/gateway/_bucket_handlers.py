"""
The S3 gateway's operations on the service and on buckets: ListBuckets,
CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, ListObjects (v1
and v2, and the raw blobs of the bucket C{blobs}), DeleteObjects and
ListMultipartUploads.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.server import Request

from p2pblob.errors import BlobNotFoundError
from p2pblob.gateway._answers import empty, send_xml
from p2pblob.gateway._bodies import Exchange
from p2pblob.gateway._routing import Handler, Handlers, count_argument
from p2pblob.gateway.rules import RAW_BLOBS_BUCKET, check_bucket_name, check_key
from p2pblob.gateway.xml import (
    Bucket,
    Entry,
    Listing,
    S3Error,
    Upload,
    check_bucket_configuration,
    delete_result,
    list_buckets,
    list_objects,
    list_uploads,
    location,
    parse_delete,
)

__all__ = ["BucketHandlers"]

_log = Logger()

_CONTINUE_PREFIX = "p2pblob:"


class BucketHandlers(Handlers):
    """
    The operations on the service and on buckets.
    """

    def operations(self) -> dict[str, Handler]:
        return {
            "list_buckets": self._list_buckets,
            "create_bucket": self._create_bucket,
            "head_bucket": self._head_bucket,
            "delete_bucket": self._delete_bucket,
            "location": self._location,
            "list_objects": self._list_objects,
            "delete_objects": self._delete_objects,
            "list_uploads": self._list_uploads,
        }

    async def _list_buckets(self, request: Request, exchange: Exchange) -> None:
        buckets = [Bucket(name, created) for name, created in self.namespace.buckets()]
        send_xml(request, list_buckets(buckets))

    async def _create_bucket(self, request: Request, exchange: Exchange) -> None:
        bucket = exchange.target.bucket or ""
        check_bucket_name(bucket)
        check_bucket_configuration(await exchange.body())
        if self.namespace.create_bucket(bucket, self.objects.now()):
            _log.info("Created bucket {bucket}", bucket=bucket)
        request.setHeader(b"location", b"/" + quote(bucket).encode("ascii"))
        empty(request)

    async def _head_bucket(self, request: Request, exchange: Exchange) -> None:
        if exchange.target.bucket != RAW_BLOBS_BUCKET:
            self.bucket(exchange.target)
        request.setHeader(b"x-amz-bucket-region", b"us-east-1")
        empty(request)

    async def _delete_bucket(self, request: Request, exchange: Exchange) -> None:
        bucket = self.bucket(exchange.target)
        try:
            released = self.namespace.delete_bucket(bucket)
        except ValueError:
            raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty",
                          extra={"BucketName": bucket}) from None
        self.objects.release(released)
        _log.info("Deleted bucket {bucket}", bucket=bucket)
        empty(request, 204)

    async def _location(self, request: Request, exchange: Exchange) -> None:
        if exchange.target.bucket != RAW_BLOBS_BUCKET:
            self.bucket(exchange.target)
        send_xml(request, location())

    async def _list_objects(self, request: Request, exchange: Exchange) -> None:
        target = exchange.target
        query = target.query
        if target.bucket == RAW_BLOBS_BUCKET:
            bucket = RAW_BLOBS_BUCKET
        else:
            bucket = self.bucket(target)
        version = 2 if query.get("list-type") == "2" else 1
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request",
                          extra={"ArgumentName": "encoding-type"})
        max_keys = count_argument(query, "max-keys", 1000)
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

    async def _delete_objects(self, request: Request, exchange: Exchange) -> None:
        bucket = self.bucket(exchange.target)
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

    async def _list_uploads(self, request: Request, exchange: Exchange) -> None:
        bucket = self.bucket(exchange.target)
        query = exchange.target.query
        max_uploads = count_argument(query, "max-uploads", 1000)
        prefix = query.get("prefix", "")
        key_marker = query.get("key-marker", "")
        id_marker = query.get("upload-id-marker", "")
        found = self.namespace.uploads(bucket, prefix, key_marker, id_marker, max_uploads + 1)
        uploads = [Upload(u.key, u.upload_id, u.created) for u in found[:max_uploads]]
        send_xml(request, list_uploads(bucket, uploads, prefix=prefix, key_marker=key_marker,
                                       upload_id_marker=id_marker, max_uploads=max_uploads,
                                       truncated=len(found) > max_uploads))


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

