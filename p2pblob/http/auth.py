"""
Who may use the HTTP API: L{load_or_create_token} (the API token kept in the
data directory), L{listens_on_loopback} (whether an endpoint string binds
only to the local machine) and L{RequestGuard} (the checks every request
passes before it reaches a route).

The API is bound to 127.0.0.1 by default, where any local process may use
it without a token, as with other daemons' control ports.  Bound to any
other interface it requires C{Authorization: Bearer <token>}.  Either way a
web page of another origin must not steer the node through the user's
browser, so the guard also refuses:

  - a request whose C{Origin} header names another origin (the API sends no
    CORS headers, so browsers keep other origins from reading answers; this
    also keeps them from sending changes, which a form can do without
    asking);
  - on loopback, a request whose C{Host} is not a loopback name or address
    (a DNS-rebinding page reaches 127.0.0.1 under its own host name);
  - a request with a body that is not C{application/json} (a cross-origin
    form cannot send that type without the browser asking first).

The dashboard's page and files (C{/} and C{/dashboard/...}) need no token:
they hold nothing of the node's; the page asks for the token and sends it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from twisted.web.iweb import IRequest

from p2pblob.errors import ConfigError

__all__ = [
    "TOKEN_FILE",
    "Refusal",
    "RequestGuard",
    "listens_on_loopback",
    "load_or_create_token",
    "loopback_host",
    "same_origin",
]

TOKEN_FILE = "api-token"

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def load_or_create_token(path: Path) -> str:
    """
    The API token in C{path}, made there (random, 256 bits, mode 0600) if
    the file does not exist.

    @raise ConfigError: the file cannot be read or written, is empty, or
        other users may read it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    except OSError as e:
        raise ConfigError(f"cannot create the API token {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    except OSError as e:
        raise ConfigError(f"cannot write the API token {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return token


def _read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the API token {path}: {e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the API token {path} may be read by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    token = text.strip()
    if not token:
        raise ConfigError(f"the API token {path} is empty; delete it to have a new one made")
    return token


def listens_on_loopback(endpoint: str) -> bool:
    """
    Whether a server endpoint string (C{tcp:5279:interface=127.0.0.1})
    accepts connections from this machine only: a TCP or SSL endpoint bound
    to a loopback address, or a UNIX socket.  An endpoint without an
    interface binds to every address, so it does not.
    """
    parts = _split(endpoint)
    kind = parts[0].lower() if parts else ""
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if sep and name == "interface":
            try:
                return ip_address(value).is_loopback
            except ValueError:
                return False
    return False


def _split(endpoint: str) -> list[str]:
    """
    An endpoint string's colon-separated parts (C{\\:} is a colon inside
    a part).
    """
    parts, current, escaped = [], [], False
    for char in endpoint:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class Refusal:
    """
    Why a request may not reach the API: its HTTP status, a stable code
    and words for the user.
    """

    status: int
    code: str
    message: str


class RequestGuard:
    """
    The checks of this module, for an API listening on C{loopback} (or
    not) with C{token} (required unless C{loopback}).
    """

    def __init__(self, token: str | None, loopback: bool) -> None:
        if token is None and not loopback:
            raise ValueError("an API reachable from other machines needs a token")
        self._token = token
        self.loopback = loopback

    def check(self, request: IRequest) -> Refusal | None:
        """
        L{None} if C{request} may go on, else why not.
        """
        host = _header(request, b"host")
        if self.loopback and not loopback_host(host):
            return Refusal(403, "forbidden_host",
                           f"this API answers requests for localhost only, not for {host!r}")
        origin = _header(request, b"origin")
        if origin is not None and not same_origin(origin, host, request.isSecure()):
            return Refusal(403, "forbidden_origin",
                           f"requests from web pages of other origins ({origin}) are refused")
        if not self.loopback and not _public(request) and not self._authorized(request):
            return Refusal(401, "unauthorized",
                           "this API needs its token: send 'Authorization: Bearer <token>' "
                           "(the token is in the node's data directory, file api-token)")
        if request.method in (b"POST", b"PUT", b"PATCH", b"DELETE") and _has_body(request):
            kind = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                return Refusal(415, "unsupported_media_type",
                               "send the request body as JSON, with "
                               "'Content-Type: application/json'")
        return None

    def _authorized(self, request: IRequest) -> bool:
        scheme, _, given = (_header(request, b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token.encode())


def _public(request: IRequest) -> bool:
    """
    Whether C{request} is for the dashboard's own files, which hold no data
    of the node and may be had without the token (the page then asks for
    it, and sends it with its API requests).
    """
    if request.method not in (b"GET", b"HEAD"):
        return False
    path = request.path
    return path == b"/" or (path.startswith(b"/dashboard/") and b"/" not in path[11:])


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def loopback_host(host: str | None) -> bool:
    if host is None:
        # (HTTP/1.0 clients such as some monitoring probes send no Host)
        return True
    name = _host_name(host.strip()).lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, host: str | None, secure: bool) -> bool:
    scheme, sep, rest = origin.partition("://")
    if not sep or host is None:
        return False
    return scheme.lower() == ("https" if secure else "http") and rest.lower() == host.lower()


def _has_body(request: IRequest) -> bool:
    length = _header(request, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(request, b"transfer-encoding") is not None
