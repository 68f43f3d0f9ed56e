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
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from p2pblob.http._blobs import Fetcher, RangeAnswer, StreamBlobs, load_descriptor
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


class _Answer(RangeAnswer):
    """
    The answer to one request for a stream's content (see L{RangeAnswer}:
    one blob at a time, the status with the first bytes).
    """

    def __init__(self, request: Request, store: IBlobStore, fetcher: Fetcher | None,
                 sd_hash: str) -> None:
        super().__init__(request)
        self._store = store
        self._fetcher = fetcher
        self._sd_hash = sd_hash

    async def run(self) -> None:
        """
        Answer the request, from the descriptor to the last byte.
        """
        request = self._request
        descriptor = await load_descriptor(self._store, self._sd_hash, self._fetcher)
        headers = _entity_headers(self._sd_hash, descriptor)
        etag = headers[b"etag"]
        if _none_match(_header(request, b"if-none-match"), etag):
            self._status, self._headers = 304, {b"etag": etag, b"cache-control": _CACHE_CONTROL}
            self._begin()
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
        self._status, self._headers = (200 if span is None else 206), headers
        if request.method == b"HEAD" or total == 0:
            self._begin()
            return self._finish()
        numbers = range(start // PLAINTEXT_CHUNK_SIZE, end // PLAINTEXT_CHUNK_SIZE + 1)
        missing = blobs.first_missing(numbers) if self._fetcher is None else None
        if missing is not None:
            raise _missing(missing)
        if await self._send(blobs, start, end):
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
        self._end_with(lambda: _error_body(self._request, refusal), refusal.message)


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
