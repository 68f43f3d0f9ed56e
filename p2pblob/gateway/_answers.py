"""
How the S3 gateway answers: XML documents and S3 error documents, with the
request id every answer carries (C{x-amz-request-id}).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from p2pblob.gateway.xml import S3Error, error_document

__all__ = ["REQUEST_ID", "ResponseHeaders", "empty", "error_body", "quoted", "request_id",
           "send_error", "send_xml", "use_response_headers"]

REQUEST_ID = b"x-amz-request-id"
_METADATA = b"x-amz-meta-"


class ResponseHeaders(Headers):
    """
    Response headers that send the names of user metadata in lowercase, as
    S3 does (clients take the metadata's names from the header names as
    they come: twisted.web would send C{X-Amz-Meta-Colour}, and the name
    would become C{Colour}).

    This moves the entry twisted.web's L{Headers} keeps under its
    canonical name (in its private C{_rawHeaders}, pinned by a test).
    """

    __slots__ = ()

    def setRawHeaders(self, name: str | bytes, values: Sequence[str | bytes]) -> None:
        super().setRawHeaders(name, values)
        raw = name.encode("latin-1") if isinstance(name, str) else name
        lowered = raw.lower()
        if lowered.startswith(_METADATA):
            canonical = b"-".join(word.capitalize() for word in lowered.split(b"-"))
            stored = self._rawHeaders.pop(canonical, None)
            if stored is not None:
                self._rawHeaders[lowered] = stored


def use_response_headers(request: IRequest) -> None:
    """
    Give C{request} L{ResponseHeaders} (keeping those set already).
    """
    if not isinstance(request.responseHeaders, ResponseHeaders):
        headers = ResponseHeaders()
        for name, values in request.responseHeaders.getAllRawHeaders():
            headers.setRawHeaders(name, values)
        request.responseHeaders = headers


def request_id(request: IRequest) -> str:
    """
    The id of C{request}, made (and put in its answer's headers) the first
    time it is asked for.
    """
    given = getattr(request, "_s3_request_id", None)
    if isinstance(given, str):
        return given
    made = secrets.token_hex(8).upper()
    request._s3_request_id = made  # type: ignore[attr-defined]
    request.setHeader(REQUEST_ID, made.encode("ascii"))
    return made


def error_body(request: IRequest, error: S3Error) -> bytes:
    """
    Set the status and headers of an S3 error; return its document (none
    for C{HEAD}, as S3).
    """
    resource = unquote_to_bytes(request.path).decode("utf-8", "replace")
    body = error_document(error, resource, request_id(request))
    request.setResponseCode(error.status)
    for name, value in error.headers.items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", b"application/xml")
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"0")
        return b""
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def send_error(request: IRequest, error: S3Error) -> None:
    """
    Answer C{request} with an S3 error and end it.
    """
    request.write(error_body(request, error))
    request.finish()


def send_xml(request: IRequest, body: bytes, status: int = 200,
             headers: dict[bytes, bytes] | None = None) -> None:
    """
    Answer C{request} with an XML document and end it.
    """
    request_id(request)
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", b"application/xml")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def empty(request: IRequest, status: int = 200,
          headers: dict[bytes, bytes] | None = None) -> None:
    """
    Answer with no body.
    """
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if status != 204:
        request.setHeader(b"content-length", b"0")
    request.finish()


def quoted(etag: str) -> bytes:
    """
    An ETag as answers carry it, in double quotes.
    """
    return b'"%s"' % etag.encode("ascii")
