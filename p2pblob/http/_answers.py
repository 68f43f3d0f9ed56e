"""
How the API answers: L{APIError} (a refusal with a stable code), JSON
answers and errors, reading arguments and bodies, the dashboard's files,
and L{Guarded}, the API's resource behind its request guard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from p2pblob.blob.hashing import is_blob_hash
from p2pblob.errors import ConfigError
from p2pblob.http.auth import RequestGuard

__all__ = ["APIError", "Guarded", "error", "int_arg", "json_answer", "json_body", "sd_hash_arg",
           "setting", "static_file"]


class APIError(Exception):
    """
    A request the API refuses: answered with C{status} and the error
    object of C{code} and C{message}.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# the dashboard's files, and their types
_STATIC = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}
# the page may load only its own files and talk only to this node
_DASHBOARD_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def static_file(request: IRequest, name: str) -> bytes:
    kind = _STATIC.get(name)
    if kind is None:
        raise APIError(404, "not_found", f"the dashboard has no file {name[:100]!r}")
    data = files("p2pblob.http").joinpath("dashboard", name).read_bytes()
    request.setHeader(b"content-type", kind)
    request.setHeader(b"content-security-policy", _DASHBOARD_POLICY)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-cache")
    return data


def sd_hash_arg(text: str) -> str:
    sd_hash = text.strip().lower()
    if not is_blob_hash(sd_hash):
        raise APIError(400, "bad_sd_hash", f"{text[:100]!r} is not an sd hash (96 hex digits)")
    return sd_hash


def json_answer(request: IRequest, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


def error(request: IRequest, status: int, code: str, message: str) -> bytes:
    return json_answer(request, {"error": {"code": code, "message": message}}, status)


def int_arg(request: IRequest, name: str, default: int) -> int:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return default
    text = values[0].decode("ascii", "replace")
    try:
        value = int(text)
    except ValueError:
        raise APIError(400, "bad_argument",
                       f"{name} must be a whole number, not {text[:40]!r}") from None
    if value < 0:
        raise APIError(400, "bad_argument", f"{name} must not be negative")
    return value


def json_body(request: IRequest) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise APIError(400, "bad_json", f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, "bad_json", "the request body must be a JSON object")
    return body


def setting(name: str, value: object, parse: Callable[[str, str], int | None]) -> int | None:
    """
    A size or rate setting given as a number of bytes, a string such as
    C{"10MB"}, or C{null}/0 for no limit.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise APIError(400, "bad_setting",
                       f"{name} must be a number of bytes, a string such as \"10MB\", or null")
    if isinstance(value, int):
        if value < 0:
            raise APIError(400, "bad_setting", f"{name} must not be negative")
        return value or None
    try:
        return parse(value, name)
    except ConfigError as e:
        raise APIError(400, "bad_setting", str(e)) from None


class Guarded(Resource):
    """
    The API's resource behind its L{RequestGuard}: a refused request is
    answered with the guard's error and goes no further.
    """

    isLeaf = True

    def __init__(self, inner: IResource, guard: RequestGuard) -> None:
        super().__init__()
        self._inner = inner
        self._guard = guard

    def render(self, request: IRequest) -> Any:
        refusal = self._guard.check(request)
        if refusal is not None:
            if refusal.status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="p2pblob"')
            return error(request, refusal.status, refusal.code, refusal.message)
        return self._inner.render(request)
