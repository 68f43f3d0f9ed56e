"""
How the publishing routes (L{p2pblob.http.publishing}) answer: the status
and JSON error of each failure of publishing (L{Answer}, L{answer_of}), JSON
answers, answers given once the work is done to a client that may have gone
meanwhile, and the parts of a request they read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from p2pblob.errors import (
    ChecksumMismatchError,
    DiskLimitError,
    ManifestError,
    ManifestRefusedError,
    OffsetMismatchError,
    PublisherNotReadyError,
    StorageError,
    TransferCancelledError,
    UnknownNameError,
    UnknownPrefixError,
    UnknownUploadError,
    UploadBusyError,
    UploadCancelledError,
    UploadCompleteError,
    WrongLengthError,
)
from p2pblob.publish.manifest import IDLE_TAKEOVER

__all__ = ["Answer", "answer_of", "cut", "fail", "file_number", "finish", "header",
           "internal_error", "reply_error", "reply_json", "text", "watch"]

_log = Logger()

_NUMBER = re.compile(r"\d{1,6}")
# the status of each kind of refused manifest, and its code
_REFUSED = {
    "bad_name": (400, "bad_name"),
    "too_large": (413, "file_too_large"),
    "name_taken": (409, "name_taken"),
    "no_room": (507, "insufficient_storage"),
}
# the status and code of each failure, the first that matches
_FAILURES: list[tuple[type[BaseException], int, str]] = [
    (ManifestError, 400, "bad_manifest"),
    (UnknownPrefixError, 404, "unknown_prefix"),
    (UnknownUploadError, 404, "unknown_upload"),
    (UploadCompleteError, 409, "upload_complete"),
    (UploadBusyError, 409, "upload_busy"),
    (OffsetMismatchError, 409, "offset_mismatch"),
    (WrongLengthError, 400, "wrong_length"),
    (UploadCancelledError, 410, "upload_cancelled"),
    (TransferCancelledError, 410, "upload_cancelled"),
    (ChecksumMismatchError, 422, "md5_mismatch"),
    (PublisherNotReadyError, 503, "not_ready"),
    (DiskLimitError, 507, "disk_limit"),
    (StorageError, 503, "storage_error"),
]


class Answer(Exception):
    """
    An error answer: C{status}, a JSON error of C{code} and C{message} (and
    the C{extra} fields), and C{headers}.
    """

    def __init__(self, status: int, code: str, message: str,
                 extra: dict[str, Any] | None = None,
                 headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra or {}
        self.headers = headers or {}


def internal_error(what: str) -> Answer:
    """
    The answer to a bug met doing C{what} (it is logged).
    """
    return Answer(500, "internal_error",
                  f"the node failed {what}; its log has the details")


def answer_of(error: BaseException | None) -> Answer | None:
    """
    The answer to a failure of publishing, or L{None} for a bug.
    """
    if isinstance(error, Answer):
        return error
    if isinstance(error, ManifestRefusedError):
        status, code = _REFUSED[error.kind]
        return Answer(status, code, str(error), {"files": [r.to_json() for r in error.refusals]})
    offset = getattr(error, "offset", None)
    moved = {} if offset is None else {b"upload-offset": b"%d" % offset}
    fields = {} if offset is None else {"offset": offset}
    for kind, status, code in _FAILURES:
        if isinstance(error, kind):
            headers = dict(moved)
            if isinstance(error, UploadBusyError):
                headers[b"retry-after"] = b"%d" % IDLE_TAKEOVER
            elif isinstance(error, PublisherNotReadyError):
                headers[b"retry-after"] = b"5"
            return Answer(status, code, str(error), fields, headers)
    if isinstance(error, UnknownNameError):
        return Answer(404, "pending" if error.pending else "unknown_name", str(error))
    return None


def reply_json(request: Request, body: Any, status: int = 200,
               headers: dict[bytes, bytes] | None = None) -> bytes:
    """
    Set C{request}'s status and headers for the JSON C{body}; return it.
    """
    data = json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"
    request.setResponseCode(status)
    for name, value in {b"content-type": b"application/json; charset=utf-8",
                        b"content-length": b"%d" % len(data),
                        b"cache-control": b"no-store",
                        b"x-content-type-options": b"nosniff", **(headers or {})}.items():
        request.setHeader(name, value)
    return data


def reply_error(request: Request, answer: Answer) -> bytes:
    """
    L{reply_json} with the error C{answer}.
    """
    if answer.status == 401:
        answer.headers[b"www-authenticate"] = b'Bearer realm="p2pblob"'
    body = {"error": {"code": answer.code, "message": answer.message, **answer.extra}}
    return reply_json(request, body, answer.status, answer.headers)


def watch(request: Request) -> Callable[[], bool]:
    """
    A function that tells whether C{request}'s connection is gone.
    """
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)
    return lambda: bool(gone)


def finish(request: Request, body: bytes, gone: Callable[[], bool]) -> None:
    """
    Send C{body} and end the answer, unless the connection is C{gone}.
    """
    if not gone():
        request.write(body)
        request.finish()


def fail(request: Request, failure: Failure, gone: Callable[[], bool]) -> None:
    """
    Answer C{request} with the error answer to C{failure} (logged if it is
    a bug), unless the connection is C{gone}.
    """
    answer = answer_of(failure.value)
    if answer is None:
        _log.failure("Publishing failed answering {method} {uri}", failure,
                     method=request.method, uri=request.uri)
        answer = internal_error("answering this request")
    finish(request, reply_error(request, answer), gone)


def cut(request: Request) -> None:
    """
    Drop C{request}'s connection (its upload was cancelled or taken over,
    or the node stops).
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None:
        abort = getattr(transport, "abortConnection", None)
        (abort or transport.loseConnection)()


def header(headers: Headers, name: bytes) -> bytes | None:
    """
    The last value of header C{name}, or L{None}.
    """
    values = headers.getRawHeaders(name)
    return None if not values else values[-1]


def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def file_number(part: str) -> int:
    """
    The number of a file of a transfer, from its part of the path.

    @raise UnknownUploadError: it is not a number.
    """
    if not _NUMBER.fullmatch(part):
        raise UnknownUploadError(f"{part[:20]!r} is not a file number")
    return int(part)
