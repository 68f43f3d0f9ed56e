"""
An object's content as the answer to an S3 C{GET}: L{ObjectAnswer} reads,
fetches (from peers, for blobs the store lacks) and decrypts only the blobs
its byte range covers, one at a time, as the request's push producer (so
that about one blob is held in memory whatever the object's size), and
fetches the next missing blob while the current one is sent.

The status and headers go out with the first byte: until then a failure is
answered with an S3 error document; after it the connection is cut, so
that the client sees a short body, never a wrong one.

An object imported by sd hash has no MD5 (hence no ETag of its own) until
its content is read in full: the first full C{GET} computes the MD5 and the
CRC32 as it goes, and records them for every name of the stream.
"""

from __future__ import annotations

import hashlib
import zlib

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from p2pblob.gateway._answers import error_body
from p2pblob.gateway.namespace import ObjectRecord
from p2pblob.gateway.objects import Objects, refusal_error
from p2pblob.gateway.xml import S3Error
from p2pblob.http._blobs import RangeAnswer, Refusal

__all__ = ["ObjectAnswer"]

_log = Logger()


class _Digests:
    """
    The MD5 and CRC32 of a content read in order.
    """

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.crc32 = 0
        self.size = 0

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)


class ObjectAnswer(RangeAnswer):
    """
    The answer to one C{GET} of an object: bytes C{start} to C{end} (both
    included) of its content, with C{status} and C{headers} (see
    L{RangeAnswer}: one blob at a time, the status with the first bytes).
    """

    def __init__(self, request: Request, objects: Objects, record: ObjectRecord,
                 span: tuple[int, int], status: int, headers: dict[bytes, bytes]) -> None:
        super().__init__(request)
        self._objects = objects
        self._record = record
        self._start, self._end = span
        self._status = status
        self._headers = headers

    async def run(self) -> None:
        """
        Answer the request, from the descriptor to the last byte.
        """
        record = self._record
        with self._objects.reading(record.sd_hash):
            descriptor = await self._objects.descriptor(record.sd_hash)
            blobs = self._objects.blobs(descriptor)
            whole = self._start == 0 and self._end == record.size - 1
            digests = _Digests() if whole and record.md5 is None else None

            async def hash_piece(piece: bytes) -> None:
                assert digests is not None
                await self._objects.run(digests.update, piece)

            sent = await self._send(blobs, self._start, self._end,
                                    None if digests is None else hash_piece)
            if sent and digests is not None and digests.size == record.size:
                self._objects.namespace.learn_digests(record.sd_hash, digests.md5.hexdigest(),
                                                      digests.crc32)
        self._finish()

    def fail(self, failure: Failure) -> None:
        """
        End the answer after C{failure}: with an S3 error while no byte is
        sent, else by cutting the connection.  A failure other than an
        L{S3Error} or a L{Refusal} is a bug, and logged as one.
        """
        error = failure.value
        if isinstance(error, Refusal):
            error = refusal_error(error)
        if not isinstance(error, S3Error):
            _log.failure("Failed serving {uri}", failure, uri=self._request.uri)
            error = S3Error(500, "InternalError",
                            "the node failed serving this object; its log has the details")
        s3_error = error
        self._end_with(lambda: error_body(self._request, s3_error), s3_error.message)
