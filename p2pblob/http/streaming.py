"""
A stream's decrypted content over HTTP, with byte ranges: L{StreamResource},
mounted so that C{GET /stream/<sd hash>} reaches it::

    root.putChild(b"stream", StreamResource(store, fetcher))

Every data blob of a stream but the last holds exactly
L{PLAINTEXT_CHUNK_SIZE} bytes of plaintext, so byte C{n} of the content is
in blob C{n // PLAINTEXT_CHUNK_SIZE}, and the total length needs only the
padding of the last blob, which its final 32 bytes reveal
(L{last_blob_plaintext_length}).  An answer therefore reads, decrypts and
fetches only the blobs its range covers, plus that tail; a C{HEAD} reads
only the tail; a 304 reads only the descriptor.

Ranges follow RFC 9110 section 14, with these choices: one range of C{bytes}
is served (206), and a request for several gets the whole content (200, no
C{multipart/byteranges}); a C{Range} that does not parse is ignored, as are
ranges of an empty stream and ranges on C{HEAD} (only C{GET} defines them);
C{If-Range} keeps the range only for our exact ETag (a date never matches:
there is no C{Last-Modified}); C{If-None-Match} with our ETag or C{*} is 304.

Until the first byte of the body is sent, a failure is answered with a JSON
error worded as the control API's (L{p2pblob.http.api}); after that the
connection is cut, so that the client sees a short body, never a wrong one.
"""

from __future__ import annotations

import json
import mimetypes
import re
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from p2pblob.http._blobs import Fetcher, StreamBlobs, load_descriptor
from p2pblob.http._blobs import Refusal as _Refusal
from p2pblob.http._blobs import blob_missing as _missing
from p2pblob.http._ranges import last_blob_plaintext_length, parse_range, satisfiable_range
from p2pblob.interfaces import IBlobStore
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from p2pblob.stream.descriptor import StreamDescriptor
from p2pblob.stream.names import safe_file_name

__all__ = ["Fetcher", "StreamResource", "last_blob_plaintext_length", "parse_range",
           "satisfiable_range"]

_log = Logger()

_CACHE_CONTROL = b"max-age=31536000, immutable"
_ENTITY_TAG = re.compile(rb'(?:W/)?"[^"]*"')
# RFC 5987 attr-char other than letters and digits, left as is in filename*
_ATTR_CHARS = "!#$&+-.^_`|~"


def _error_body(request: Request, refusal: _Refusal) -> bytes:
    """
    Set the status and headers of a JSON error; return its body.
    """
    error = {"code": refusal.code, "message": refusal.message}
    body = json.dumps({"error": error}, sort_keys=True).encode("utf-8") + b"\n"
    request.setResponseCode(refusal.status)
    headers = {**refusal.headers, b"content-type": b"application/json; charset=utf-8",
               b"content-length": b"%d" % (len(body),), b"cache-control": b"no-store",
               b"x-content-type-options": b"nosniff"}
    for name, value in headers.items():
        request.setHeader(name, value)
    return body


def _entity_headers(sd_hash: str, descriptor: StreamDescriptor) -> dict[bytes, bytes]:
    """
    The headers of every successful answer about a stream.

    The content never changes for a given sd hash: hence a strong ETag made
    of it, and a long cache lifetime.  The type is guessed from the file
    name (a compressed file, as C{.tar.gz}, is left untyped), which is
    given in ASCII and, if it is not, also in UTF-8 (RFC 6266).  The content
    comes from anyone: the sandbox keeps an HTML page in it from acting as
    the node's own origin.
    """
    name = safe_file_name(descriptor.suggested_file_name)
    guessed, encoding = mimetypes.guess_type(name)
    if guessed is None or encoding is not None:
        guessed = "application/octet-stream"
    ascii_name = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
    disposition = f'inline; filename="{ascii_name}"'
    if ascii_name != name:
        disposition += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHARS)
    return {
        b"etag": b'"%s"' % (sd_hash.encode("ascii"),),
        b"cache-control": _CACHE_CONTROL,
        b"accept-ranges": b"bytes",
        b"content-type": guessed.encode("ascii"),
        b"content-disposition": disposition.encode("ascii"),
        b"x-content-type-options": b"nosniff",
        b"content-security-policy": b"sandbox",
    }


def _header(request: Request, name: bytes) -> bytes | None:
    """
    All the values of a request header, as one list.
    """
    values = request.requestHeaders.getRawHeaders(name)
    return None if values is None else b", ".join(values)


def _none_match(value: bytes | None, etag: bytes) -> bool:
    """
    Whether an C{If-None-Match} value is C{*} or names C{etag}, compared
    weakly (RFC 9110 13.1.2).
    """
    if value is None:
        return False
    tags = _ENTITY_TAG.findall(value)
    return value.strip() == b"*" or any(tag.removeprefix(b"W/") == etag for tag in tags)


def _requested_span(request: Request, etag: bytes, total: int) -> tuple[int, int] | None:
    """
    The bytes C{(start, end)} to answer with a 206, or L{None} for all.

    @raise _Refusal: 416, if the one range asked for selects no byte.
    """
    value = _header(request, b"range")
    condition = _header(request, b"if-range")
    if value is None or request.method != b"GET" or total == 0:
        return None
    if condition is not None and condition.strip() != etag:
        return None
    spec = parse_range(value)
    span = None if spec is None else satisfiable_range(spec, total)
    if spec is not None and span is None:
        raise _Refusal(416, "range_not_satisfiable",
                       f"{value[:100].decode('ascii', 'replace')!r} selects no byte of the "
                       f"{total} bytes of this stream", {b"content-range": b"bytes */%d" % total})
    return span


@implementer(IPushProducer)
class _Answer:
    """
    The answer to one request for a stream's content.

    It writes the body one blob at a time as the request's push producer:
    while the client's connection is paused no further blob is read, so
    that about one blob is held in memory whatever the range, and when the
    client goes away it stops.  The status and headers go out with the
    first bytes of the body, so that a failure to get the first blob is
    still answered with a JSON error.
    """

    def __init__(self, request: Request, store: IBlobStore, fetcher: Fetcher | None,
                 sd_hash: str) -> None:
        self._request = request
        self._store = store
        self._fetcher = fetcher
        self._sd_hash = sd_hash
        self._started = False
        self._gone = False
        self._paused: Deferred[None] | None = None
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._gone = True
        self.resumeProducing()

    async def run(self) -> None:
        """
        Answer the request, from the descriptor to the last byte.
        """
        request = self._request
        descriptor = await load_descriptor(self._store, self._sd_hash, self._fetcher)
        headers = _entity_headers(self._sd_hash, descriptor)
        etag = headers[b"etag"]
        if _none_match(_header(request, b"if-none-match"), etag):
            self._begin(304, {b"etag": etag, b"cache-control": _CACHE_CONTROL})
            return self._finish()
        blobs = StreamBlobs(self._store, self._fetcher, descriptor)
        early = self._fetch_early(blobs, request, descriptor)
        try:
            total = await blobs.total_length()
        finally:
            if early is not None:
                # (its failure, if any, is met again when the blob is needed)
                early.addErrback(lambda failure: None)
        span = _requested_span(request, etag, total)
        start, end = span or (0, total - 1)
        headers[b"content-length"] = b"%d" % (end + 1 - start,)
        if span is not None:
            headers[b"content-range"] = b"bytes %d-%d/%d" % (start, end, total)
        status = 200 if span is None else 206
        if request.method == b"HEAD" or total == 0:
            self._begin(status, headers)
            return self._finish()
        numbers = range(start // PLAINTEXT_CHUNK_SIZE, end // PLAINTEXT_CHUNK_SIZE + 1)
        missing = blobs.first_missing(numbers) if self._fetcher is None else None
        if missing is not None:
            raise _missing(missing)
        if self._gone:
            return
        request.registerProducer(self, True)
        try:
            await self._write(blobs, numbers, start, end, status, headers)
        finally:
            if not self._gone:
                request.unregisterProducer()
        self._finish()

    def _fetch_early(self, blobs: StreamBlobs, request: Request,
                     descriptor: StreamDescriptor) -> Deferred[None] | None:
        """
        Start fetching the first blob a C{GET} will send, if it is missing,
        while the last blob is fetched for the total length: a stream no
        blob of which is here starts after one round of fetches, not two.
        (A suffix range starts in the last blob, which is fetched anyway.)
        """
        if self._fetcher is None or request.method != b"GET":
            return None
        spec = parse_range(_header(request, b"range") or b"")
        first = spec[0] if spec is not None and spec[0] is not None else 0
        number = first // PLAINTEXT_CHUNK_SIZE
        if spec is not None and spec[0] is None or number >= len(descriptor.data_blobs) - 1:
            return None
        return Deferred.fromCoroutine(blobs.obtain(number))

    async def _write(self, blobs: StreamBlobs, numbers: range, start: int, end: int,
                     status: int, headers: dict[bytes, bytes]) -> None:
        for number in numbers:
            while self._paused is not None:
                await self._paused
            if not self._gone:
                await blobs.obtain(number)
            if self._gone:
                return
            if number + 1 in numbers:
                blobs.fetch_ahead(number + 1)
            plain = await blobs.plaintext(number)
            if not self._started:
                self._begin(status, headers)
            base = number * PLAINTEXT_CHUNK_SIZE
            self._request.write(plain[max(start - base, 0):end + 1 - base])

    def _begin(self, status: int, headers: dict[bytes, bytes]) -> None:
        self._request.setResponseCode(status)
        for name, value in headers.items():
            self._request.setHeader(name, value)
        self._started = True

    def _finish(self) -> None:
        if not self._gone:
            self._request.finish()

    def fail(self, failure: Failure) -> None:
        """
        End the answer after C{failure}: with a JSON error while no byte is
        sent, else by cutting the connection.  A failure other than a
        L{_Refusal} is a bug, and logged as one.
        """
        refusal = failure.value
        if not isinstance(refusal, _Refusal):
            _log.failure("Failed serving {uri}", failure, uri=self._request.uri)
            refusal = _Refusal(500, "internal_error",
                               "the node failed serving this stream; its log has the details")
        if self._gone:
            return
        if self._started:
            _log.warn("Cut the connection serving {uri}: {reason}",
                      uri=self._request.uri, reason=refusal.message)
            self._request.loseConnection()
        else:
            self._request.write(_error_body(self._request, refusal))
            self._request.finish()


class StreamResource(Resource):
    """
    C{/stream/}: each child, named by an sd hash, is the content of that
    stream (L{_StreamPage}).

    @param store: the blob store holding the streams.
    @param fetcher: brings a missing blob into C{store} (see L{Fetcher});
        without one, an answer that needs a missing blob is a 503.
    """

    def __init__(self, store: IBlobStore, fetcher: Fetcher | None = None) -> None:
        super().__init__()
        self._store = store
        self._fetcher = fetcher

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _StreamPage(self._store, self._fetcher, path)

    def render(self, request: Request) -> bytes:
        return _error_body(request, _Refusal(404, "not_found", "name a stream: /stream/<sd hash>"))


class _StreamPage(Resource):
    """
    The content of the stream whose sd hash is C{name}, for C{GET} and
    C{HEAD}.
    """

    isLeaf = True

    def __init__(self, store: IBlobStore, fetcher: Fetcher | None, name: bytes) -> None:
        super().__init__()
        self._store = store
        self._fetcher = fetcher
        self._sd_hash = name.decode("ascii", "replace")

    def render(self, request: Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            return _error_body(request, _Refusal(405, "method_not_allowed", "only GET and HEAD "
                                                 "are allowed here", {b"allow": b"GET, HEAD"}))
        if request.postpath:
            return _error_body(request, _Refusal(404, "not_found", "no such stream path"))
        answer = _Answer(request, self._store, self._fetcher, self._sd_hash)
        Deferred.fromCoroutine(answer.run()).addErrback(answer.fail)
        return NOT_DONE_YET
