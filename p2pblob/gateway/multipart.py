"""
Multipart uploads over streams (L{Multipart}).

Each uploaded part is published as a stream of its own, through a
L{StreamCreator}, and recorded in the namespace once it is whole: parts may
arrive in any order, concurrently, and be sent again (the newer replaces
the older), and since they are recorded in SQLite and their blobs belong to
published streams, an upload survives a restart of the node between parts.
A part copied from an object (C{UploadPartCopy}) copies nothing: it is
recorded as a range of that object's stream.

CompleteMultipartUpload makes the object ONE stream: the parts are
decrypted in order into a new L{StreamCreator}, then their streams are
removed.  When the parts are exactly a whole object's stream, copied in
order (as C{aws s3 cp} copies a large object between buckets), the new
object is a zero-copy alias of that stream instead.

The object's ETag is S3's multipart form: the MD5 of the concatenated
binary MD5s of the parts, then C{-} and their number; its MD5 of the whole
content is kept besides.  A copied part's ETag is the MD5 of its source when
the part is the whole source, else the MD5 of C{"<sd hash>:<first>:<size>"}
(the part's bytes are not read to hash them; clients only send part ETags
back).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

from twisted.logger import Logger

from p2pblob.gateway.namespace import ObjectRecord, PartRecord, UploadRecord
from p2pblob.gateway.objects import Objects, refusal_error
from p2pblob.gateway.rules import multipart_etag
from p2pblob.gateway.xml import S3Error
from p2pblob.http._blobs import Refusal
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from p2pblob.stream.writer import StreamCreator

__all__ = ["MAX_PART_NUMBER", "MIN_PART_SIZE", "Multipart", "no_such_upload"]

_log = Logger()

MIN_PART_SIZE = 5 * 1024 * 1024
"""
The least size of a part that is not the last (as S3).
"""

MAX_PART_NUMBER = 10000


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error(404, "NoSuchUpload", "The specified multipart upload does not exist. The "
                   "upload ID may be invalid, or the upload may have been aborted or completed.",
                   extra={"UploadId": upload_id[:200]})


def check_part_number(text: str) -> int:
    """
    @raise S3Error: InvalidArgument unless C{text} is 1 to 10000.
    """
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error(400, "InvalidArgument", "Part number must be an integer between 1 and "
                      f"{MAX_PART_NUMBER}, inclusive", extra={"ArgumentName": "partNumber"})
    return number


class Multipart:
    """
    The multipart uploads of the gateway's L{Objects}.

    @param min_part_size: the least size of a part that is not the last.
    """

    def __init__(self, objects: Objects, min_part_size: int = MIN_PART_SIZE) -> None:
        self._objects = objects
        self._namespace = objects.namespace
        self._min_part_size = min_part_size
        self._completing: set[str] = set()

    def create(self, bucket: str, key: str, content_type: str, headers: Mapping[str, str],
               metadata: Mapping[str, str]) -> str:
        """
        Start an upload; return its id.
        """
        self._objects.check_quota(0, new_objects=0 if self._namespace.get_object(
            bucket, key) else 1)
        upload_id = secrets.token_urlsafe(32)
        self._namespace.create_upload(UploadRecord(upload_id, bucket, key, content_type,
                                                   dict(headers), dict(metadata),
                                                   self._objects.now()))
        return upload_id

    def upload(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        """
        The upload C{upload_id}, of the object C{key} of C{bucket}.

        @raise S3Error: NoSuchUpload.
        """
        upload = self._namespace.get_upload(upload_id)
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise no_such_upload(upload_id)
        return upload

    def check_part_quota(self, upload_id: str, number: int, size: int) -> None:
        replaced = [part.size for part in self._namespace.parts(upload_id, number - 1, 1)
                    if part.number == number and not part.copied]
        self._objects.check_quota(size, sum(replaced))

    def add_part(self, upload_id: str, number: int, sd_hash: str, size: int, md5: str,
                 crc32: int) -> None:
        """
        Record a part uploaded as the stream C{sd_hash} (replacing a part of
        the same number).  If the upload is gone meanwhile, the part's
        stream is removed again.

        @raise S3Error: NoSuchUpload.
        """
        part = PartRecord(upload_id, number, sd_hash, 0, size, md5, crc32, False,
                          self._objects.now())
        try:
            replaced = self._namespace.put_part(part)
        except KeyError:
            self._objects.release([sd_hash])
            raise no_such_upload(upload_id) from None
        if replaced is not None and replaced != sd_hash:
            self._objects.release([replaced])

    def copy_part(self, upload_id: str, number: int, source: ObjectRecord,
                  span: tuple[int, int]) -> str:
        """
        Record bytes C{span} (both included) of the object C{source} as a
        part; return its ETag.
        """
        first, last = span
        size = last + 1 - first
        if first == 0 and size == source.size and source.md5 is not None:
            etag = source.md5
        else:
            etag = hashlib.md5(f"{source.sd_hash}:{first}:{size}".encode("ascii"),
                               usedforsecurity=False).hexdigest()
        part = PartRecord(upload_id, number, source.sd_hash, first, size, etag,
                          source.crc32 if size == source.size else None, True,
                          self._objects.now())
        try:
            replaced = self._namespace.put_part(part)
        except KeyError:
            raise no_such_upload(upload_id) from None
        if replaced is not None and replaced != source.sd_hash:
            self._objects.release([replaced])
        return etag

    def abort(self, upload_id: str) -> None:
        """
        Forget an upload; its parts' streams are removed.
        """
        if upload_id in self._completing:
            raise S3Error(409, "OperationAborted", "this upload is being completed")
        self._objects.release(self._namespace.delete_upload(upload_id))

    def chosen_parts(self, upload: UploadRecord, wanted: list[tuple[int, str]]) -> list[PartRecord]:
        """
        The parts a CompleteMultipartUpload names, checked.

        @raise S3Error: InvalidPartOrder, InvalidPart (unknown, or another
            ETag), EntityTooSmall (a part but the last under the least
            size), or OperationAborted if it is being completed already.
        """
        if upload.upload_id in self._completing:
            raise S3Error(409, "OperationAborted", "this upload is being completed already")
        numbers = [number for number, _ in wanted]
        if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
            raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending "
                          "order. The parts list must be specified in order by part number.")
        parts = {part.number: part for part in self._namespace.parts(upload.upload_id)}
        chosen = []
        for number, etag in wanted:
            part = parts.get(number)
            if part is None or part.etag != etag:
                raise S3Error(400, "InvalidPart", "One or more of the specified parts could not "
                              "be found. The part may not have been uploaded, or the specified "
                              "entity tag may not match the part's entity tag.",
                              extra={"PartNumber": str(number), "ETag": etag[:100]})
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < self._min_part_size:
                raise S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the "
                              "minimum allowed object size.",
                              extra={"PartNumber": str(part.number),
                                     "ProposedSize": str(part.size),
                                     "MinSizeAllowed": str(self._min_part_size)})
        return chosen

    async def complete(self, upload: UploadRecord, parts: list[PartRecord]) -> ObjectRecord:
        """
        Make the object of C{upload} from C{parts} (from L{chosen_parts}).

        @raise S3Error: QuotaExceeded, NoSuchUpload (aborted meanwhile), or
            the error reading a part.
        """
        upload_id = upload.upload_id
        self._completing.add(upload_id)
        try:
            return await self._complete(upload, parts)
        finally:
            self._completing.discard(upload_id)

    async def _complete(self, upload: UploadRecord, parts: list[PartRecord]) -> ObjectRecord:
        objects = self._objects
        total = sum(part.size for part in parts)
        uploaded = sum(part.size for part in self._namespace.parts(upload.upload_id)
                       if not part.copied)
        previous = self._namespace.get_object(upload.bucket, upload.key)
        objects.check_quota(total, uploaded + (0 if previous is None else previous.size),
                            0 if previous is not None else 1)
        etag = multipart_etag([part.etag for part in parts])
        alias = await self._whole_stream(parts)
        if alias is not None:
            sd_hash, size = alias, total
            md5, crc32 = self._namespace.digests(sd_hash)
            owned = False
        else:
            sd_hash, size, md5, crc32 = await self._assemble(upload, parts)
            owned = True
        now = objects.now()
        record = ObjectRecord(upload.bucket, upload.key, sd_hash, size, etag, md5, crc32,
                              upload.content_type, upload.headers, upload.metadata, now, now)
        if self._namespace.get_upload(upload.upload_id) is None:
            if owned:
                objects.release([sd_hash])
            raise no_such_upload(upload.upload_id)
        released = [part.sd_hash for part in self._namespace.parts(upload.upload_id)]
        objects.name(record, owned, upload_id=upload.upload_id)
        objects.release(released)
        _log.info("Completed the multipart upload of {bucket}/{key}: {count} parts, "
                  "{size} bytes, stream {sd_hash}", bucket=upload.bucket, key=upload.key,
                  count=len(parts), size=size, sd_hash=sd_hash)
        return record

    async def _whole_stream(self, parts: list[PartRecord]) -> str | None:
        """
        The sd hash of the stream the parts are, copied whole and in order,
        if they are.
        """
        sd_hash = parts[0].sd_hash
        position = 0
        for part in parts:
            if not part.copied or part.sd_hash != sd_hash or part.first != position:
                return None
            position += part.size
        with self._objects.reading(sd_hash):
            size = await self._objects.stream_size(await self._objects.descriptor(sd_hash))
        return sd_hash if position == size else None

    async def _assemble(self, upload: UploadRecord,
                        parts: list[PartRecord]) -> tuple[str, int, str, int]:
        """
        Decrypt the parts in order into a new stream; its sd hash, size,
        MD5 and CRC32.
        """
        objects = self._objects
        creator = objects.creator(upload.key)
        try:
            for part in parts:
                with objects.reading(part.sd_hash):
                    await self._copy_range(creator, part)
        except Refusal as refusal:
            await objects.cancel(creator)
            raise refusal_error(refusal) from None
        except BaseException:
            await objects.cancel(creator)
            raise
        return await objects.finish(creator)

    async def _copy_range(self, creator: StreamCreator, part: PartRecord) -> None:
        if not part.size:
            return
        objects = self._objects
        blobs = objects.blobs(await objects.descriptor(part.sd_hash))
        first, last = part.first, part.first + part.size - 1
        numbers = range(first // PLAINTEXT_CHUNK_SIZE, last // PLAINTEXT_CHUNK_SIZE + 1)
        for number in numbers:
            await blobs.obtain(number)
            if number + 1 in numbers:
                blobs.fetch_ahead(number + 1)
            plain = await blobs.plaintext(number)
            base = number * PLAINTEXT_CHUNK_SIZE
            await creator.write(plain[max(first - base, 0):last + 1 - base])
