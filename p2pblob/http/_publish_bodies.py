"""
The bodies of the publishing routes (L{p2pblob.http.publishing}), taken as
they arrive (L{p2pblob.interfaces.IBodyReceiver}, fed by the streaming site
of L{p2pblob.http._body}): a manifest's, kept in memory up to its bound
(L{ManifestReceiver}), and an upload's, written into its
L{p2pblob.publish.manifest.UploadSession} as it comes, never spooled
(L{UploadReceiver}).

A request that may not publish, or names no file that can be uploaded, is
refused as soon as its headers are in: none of its body is taken.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from p2pblob.errors import P2PBlobError, WrongLengthError
from p2pblob.http._publish_answers import (
    Answer,
    answer_of,
    cut,
    fail,
    file_number,
    finish,
    header,
    internal_error,
    reply_error,
    reply_json,
    watch,
)
from p2pblob.interfaces import IBodyReceiver
from p2pblob.publish._manifest_checks import MAX_MANIFEST_BYTES
from p2pblob.publish.manifest import PublishedName, Upload, UploadSession, parse_manifest

if TYPE_CHECKING:
    from p2pblob.http.publishing import PublishResource

__all__ = ["ManifestReceiver", "Receiver", "UploadReceiver"]

_log = Logger()

_CONTENT_RANGE = re.compile(rb"\s*bytes\s+(\d{1,20})-(\d{1,20})/(\d{1,20})\s*")


class Receiver:
    """
    What the receivers of bodies share: a refusal decided before any byte
    was read, or the failure met while reading.
    """

    def __init__(self, resource: PublishResource, prefix: str) -> None:
        self._resource = resource
        self._prefix = prefix
        self._refused: Answer | None = None

    def _refuse(self, request: Request, error: BaseException) -> None:
        answer = answer_of(error)
        if answer is None:
            raise error
        self._refused = answer
        request.setResponseCode(answer.status)

    def body_started(self, request: Request) -> None:
        refusal = self._resource.refusal(request.requestHeaders, request.isSecure())
        try:
            if refusal is not None:
                raise refusal
            self.start(request)
        except Exception as e:
            self._refuse(request, e)

    def start(self, request: Request) -> None:
        raise NotImplementedError

    def body_chunk(self, data: bytes) -> Deferred[None] | None:
        raise NotImplementedError

    def body_finished(self) -> None:
        raise NotImplementedError

    def render(self, request: Request) -> bytes | int:
        if self._refused is not None:
            return reply_error(request, self._refused)
        failure = getattr(request, "body_failure", None)
        if isinstance(failure, Failure):
            answer = answer_of(failure.value)
            if answer is not None:
                return reply_error(request, answer)
            _log.failure("Publishing failed taking the body of {uri}", failure, uri=request.uri)
            return reply_error(request, internal_error("taking this request's body"))
        return self.answer(request)

    def answer(self, request: Request) -> bytes | int:
        raise NotImplementedError


@implementer(IBodyReceiver)
class ManifestReceiver(Receiver):
    """
    A manifest's body, kept in memory up to L{MAX_MANIFEST_BYTES}.
    """

    def __init__(self, resource: PublishResource, prefix: str) -> None:
        super().__init__(resource, prefix)
        self._data = bytearray()

    def start(self, request: Request) -> None:
        length = header(request.requestHeaders, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_MANIFEST_BYTES:
            raise Answer(413, "manifest_too_large",
                         f"a manifest may be {MAX_MANIFEST_BYTES} bytes at most")
        self._resource.publisher.require_prefix(self._prefix)

    def body_chunk(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > MAX_MANIFEST_BYTES:
            raise Answer(413, "manifest_too_large",
                         f"a manifest may be {MAX_MANIFEST_BYTES} bytes at most")

    def body_finished(self) -> None:
        pass

    def body_lost(self, reason: Failure) -> None:
        pass

    def take_buffered(self, request: Request) -> None:
        """
        Be given a body twisted.web buffered.
        """
        self.body_started(request)
        content = request.content
        if self._refused is None and content is not None:
            content.seek(0)
            try:
                self.body_chunk(content.read(MAX_MANIFEST_BYTES + 1))
            except Answer as e:
                self._refuse(request, e)

    def answer(self, request: Request) -> bytes:
        try:
            transfer = self._resource.publisher.admit(self._prefix, parse_manifest(bytes(self._data)))
        except P2PBlobError as e:
            answer = answer_of(e)
            if answer is None:
                raise
            return reply_error(request, answer)
        return reply_json(request, self._resource.transfer_json(request, transfer), 201)


@implementer(IBodyReceiver)
class UploadReceiver(Receiver):
    """
    An upload's body, into an L{UploadSession} as it arrives.
    """

    def __init__(self, resource: PublishResource, prefix: str, key: str, number: str) -> None:
        super().__init__(resource, prefix)
        self._key = key
        self._number = number
        self._session: UploadSession | None = None
        self._finished: Deferred[PublishedName] | None = None

    def start(self, request: Request) -> None:
        headers = request.requestHeaders
        number = file_number(self._number)
        publisher = self._resource.publisher
        upload = publisher.upload(self._prefix, self._key, number)
        start, length = 0, None
        given = header(headers, b"content-length")
        if given is not None:
            length = int(given) if given.strip().isdigit() else None
        ranged = header(headers, b"content-range")
        if ranged is not None:
            start = _content_range(ranged, upload, publisher.offset(upload))
        session = publisher.begin(self._prefix, self._key, number, start=start, length=length)
        session.cut = lambda: cut(request)
        self._session = session

    def body_chunk(self, data: bytes) -> Deferred[None] | None:
        assert self._session is not None
        return self._session.write(data)

    def body_finished(self) -> None:
        assert self._session is not None
        self._finished = self._session.finish()

    def body_lost(self, reason: Failure) -> None:
        if self._session is not None:
            self._session.abandon(f"the connection was lost: {reason.getErrorMessage()}")

    def answer(self, request: Request) -> int:
        finished = self._finished
        assert finished is not None and self._session is not None
        upload = self._session.upload

        gone = watch(request)

        def published(name: PublishedName) -> None:
            finish(request, reply_json(request,
                                       self._resource.published_json(request, name, upload)),
                   gone)

        finished.addCallbacks(published, lambda f: fail(request, f, gone))
        return NOT_DONE_YET


def _content_range(value: bytes, upload: Upload, offset: int) -> int:
    """
    Where a C{Content-Range: bytes <first>-<last>/<size>} upload starts.

    @raise WrongLengthError: it does not parse, or is not the rest of the
        file from some byte.
    """
    match = _CONTENT_RANGE.fullmatch(value)
    size = upload.size
    if match is None:
        raise WrongLengthError(offset, f"send 'Content-Range: bytes {offset}-{size - 1}/{size}' "
                                       "to go on with the upload (other forms are not taken)")
    first, last, total = (int(group) for group in match.groups())
    if total != size or last != size - 1 or first > last:
        raise WrongLengthError(offset, f"{upload.name!r} is {size} bytes: an upload goes on to "
                                       f"its end, with 'Content-Range: bytes {offset}-{size - 1}/"
                                       f"{size}'")
    return first
