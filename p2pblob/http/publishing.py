"""
Manifest publishing over HTTP (L{p2pblob.publish.manifest}), under
C{/publish/} on the node's API server::

    GET    /publish/                      the prefixes, with their counts
    GET    /publish/<prefix>/             the names published and the files
                                          pending there
    POST   /publish/<prefix>/manifest     admit files, all or none: 201 with
                                          the transfer key, its expiry and an
                                          upload URL per file
    PUT    /publish/<prefix>/<key>/<n>    upload file n (POST too); with
                                          Content-Range, go on from where an
                                          upload was cut off
    HEAD   /publish/<prefix>/<key>/<n>    how far it got (Upload-Offset)
    GET    /publish/<prefix>/<key>/<n>    the same, as JSON
    DELETE /publish/<prefix>/<key>/<n>    cancel file n
    DELETE /publish/<prefix>/<key>        cancel the transfer's pending files
    GET    /publish/<prefix>/<name>       the file published under <name>,
                                          with ranges (HEAD too)

Every request needs the API token, C{Authorization: Bearer <token>} (the
token is in C{DATA_DIR/api-token}), even on loopback where the rest of the
API does not: publishing writes to the node, and a local process that may
not read the data directory may not publish.  The API's other guards apply
too: on loopback, a C{Host} that is not a loopback name is refused (403), and
so is an C{Origin} of another site.

A manifest is a JSON object C{{"files": [{"name": ..., "size": ..., "md5":
...}, ...]}} (or the list alone).  Refused, it is answered with every file
refused and why (C{error.files}), and the status of the worst problem: 400
for a name that is not valid, 413 for a file larger than a stream holds, 409
for a name already taken (or given twice), 507 for the prefix's quota or the
disk's room.  A malformed manifest is a 400.

An upload's body goes into the stream creator as it arrives, never spooled
(L{p2pblob.http._publish_bodies}, on the streaming site of
L{p2pblob.http._body}).  Its C{Content-Length} must be the file's declared
size (or the rest of it, from a C{Content-Range: bytes <offset>-<size -
1>/<size>}); chunked bodies are taken too, and checked as they come.
Answers: 200 with the sd hash and URLs once published; 400 for the wrong
length (the file stays pending, resumable); 404 for an unknown key or file
number (keys expire); 409 for a file already published, one being uploaded
by another request, or an offset the node cannot go on from (the answer
says which, with C{Upload-Offset}); 410 for a cancelled file; 422 for an
MD5 other than the one declared (the file is cancelled, its blobs removed);
507 when the store is full.

An upload cut off keeps the blobs stored so far: C{HEAD} tells the offset
(a multiple of the 2,097,151 bytes of plaintext of a blob) as
C{Upload-Offset}, and a C{PUT} with C{Content-Range: bytes
<offset>-<size - 1>/<size>} carrying the rest goes on from there (a C{PUT}
of the whole file starts again).

A name published is served as the stream gateway serves a stream
(L{p2pblob.http.streaming}: ranges, conditional requests, ETag the sd hash);
a name still pending is a 404 that says so.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from p2pblob.errors import UploadCancelledError
from p2pblob.http._publish_answers import (
    Answer,
    answer_of,
    fail,
    file_number,
    finish,
    header,
    internal_error,
    reply_error,
    reply_json,
    text,
    watch,
)
from p2pblob.http._publish_bodies import ManifestReceiver, Receiver, UploadReceiver
from p2pblob.http.auth import loopback_host, same_origin
from p2pblob.http.streaming import Fetcher, StreamResource
from p2pblob.interfaces import IBlobStore, IBodyReceiver
from p2pblob.publish.manifest import ManifestPublisher, PublishedName, Transfer, Upload

__all__ = ["APIRoot", "PublishResource"]

_log = Logger()


def _publishing(target: bytes) -> bool:
    """
    Whether a request target is under C{/publish}.
    """
    path = target.split(b"?", 1)[0]
    return path == b"/publish" or path.startswith(b"/publish/")


def _segments(target: bytes) -> list[str]:
    """
    The parts of a C{/publish/...} request target after C{publish},
    decoded (an empty last part for a trailing C{/}).

    @raise Answer: a part is not UTF-8 (404).
    """
    path = target.split(b"?", 1)[0]
    if path == b"/publish":
        return [""]
    try:
        return [unquote_to_bytes(part).decode("utf-8")
                for part in path[len(b"/publish/"):].split(b"/")]
    except UnicodeDecodeError:
        raise Answer(404, "not_found", "no such publishing path (names are UTF-8)") from None


class PublishResource(Resource):
    """
    C{/publish/}: see the module's docstring.

    @param publisher: the manifest publisher.
    @param store: the blob store (downloads by name read it).
    @param fetcher: fetches a blob missing from the store, for downloads.
    @param token: the API token every request must bear.
    @param loopback: whether the API listens on loopback only (then the
        C{Host} of requests must be a loopback name).
    """

    isLeaf = True

    def __init__(self, publisher: ManifestPublisher, store: IBlobStore,
                 fetcher: Fetcher | None, token: str, loopback: bool) -> None:
        super().__init__()
        self.publisher = publisher
        self._token = token
        self._loopback = loopback
        self._streams = StreamResource(store, fetcher)

    # who may

    def refusal(self, headers: Headers, secure: bool) -> Answer | None:
        """
        Why a request with C{headers} may not publish, or L{None}.
        """
        host = text(header(headers, b"host"))
        if self._loopback and not loopback_host(host):
            return Answer(403, "forbidden_host",
                           f"this API answers requests for localhost only, not for {host!r}")
        origin = text(header(headers, b"origin"))
        if origin is not None and not same_origin(origin, host, secure):
            return Answer(403, "forbidden_origin",
                           f"requests from web pages of other origins ({origin}) are refused")
        scheme, _, given = (text(header(headers, b"authorization")) or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), self._token.encode("ascii")):
            return Answer(401, "unauthorized",
                           "publishing needs the API token: send 'Authorization: Bearer <token>' "
                           "(the token is in the node's data directory, file api-token)")
        return None

    # bodies

    def route_body(self, method: bytes, target: bytes, headers: Headers) -> IBodyReceiver | None:
        """
        The receiver of an upload's body (or a manifest's), as soon as its
        headers are in.
        """
        if not _publishing(target):
            return None
        try:
            parts = _segments(target)
        except Answer:
            return None
        if method in (b"PUT", b"POST") and len(parts) == 3:
            return UploadReceiver(self, parts[0], parts[1], parts[2])
        if method == b"POST" and len(parts) == 2 and parts[1] == "manifest":
            return ManifestReceiver(self, parts[0])
        return None

    def render(self, request: Request) -> bytes | int:
        try:
            receiver = getattr(request, "body_receiver", None)
            if receiver is None and request.method in (b"PUT", b"POST"):
                receiver = self._buffered(request)
            if isinstance(receiver, Receiver):
                return receiver.render(request)
            return self._render(request)
        except Exception as e:
            answer = answer_of(e)
            if answer is None:
                _log.failure("Publishing failed answering {method} {uri}",
                             method=request.method, uri=request.uri)
                answer = internal_error("answering this request")
            return reply_error(request, answer)

    def _buffered(self, request: Request) -> Receiver | None:
        """
        The receiver of a body twisted.web buffered (a site that does not
        stream bodies): a manifest is taken from the buffer; an upload is
        not (it would have been spooled to a temporary file).
        """
        receiver = self.route_body(request.method, request.uri, request.requestHeaders)
        if isinstance(receiver, ManifestReceiver):
            receiver.take_buffered(request)
            return receiver
        if receiver is not None:
            _log.error("Uploads need a site that streams bodies (p2pblob.http._body)")
            raise Answer(500, "internal_error",
                         "this server does not stream request bodies, so it takes no uploads")
        return None

    def _render(self, request: Request) -> bytes | int:
        refusal = self.refusal(request.requestHeaders, request.isSecure())
        if refusal is not None:
            raise refusal
        parts = _segments(request.uri)
        method = request.method
        if len(parts) == 1 and parts[0] == "":
            self._allow(method, b"GET, HEAD")
            return reply_json(request, self._prefixes(request))
        prefix = parts[0]
        if len(parts) == 1 or (len(parts) == 2 and parts[1] == ""):
            self._allow(method, b"GET, HEAD")
            return reply_json(request, self._listing(request, prefix))
        if len(parts) == 2:
            if method == b"DELETE":
                return self._cancel(request, self.publisher.cancel_transfer(prefix, parts[1]))
            self._allow(method, b"GET, HEAD, DELETE" if parts[1] != "manifest"
                        else b"GET, HEAD, DELETE, POST")
            return self._download(request, prefix, parts[1])
        if len(parts) == 3:
            number = file_number(parts[2])
            if method == b"DELETE":
                return self._cancel(request,
                                    self.publisher.cancel_upload(prefix, parts[1], number))
            self._allow(method, b"GET, HEAD, PUT, POST, DELETE")
            upload = self.publisher.upload(prefix, parts[1], number)
            if upload.state == "cancelled":
                raise UploadCancelledError(f"the upload of {upload.name!r} was cancelled")
            return reply_json(request, self._upload_json(request, upload),
                              headers=_offset_headers(upload, self.publisher.offset(upload)))
        raise Answer(404, "not_found", "no such publishing path")

    def _allow(self, method: bytes, allowed: bytes) -> None:
        if method not in allowed.split(b", "):
            raise Answer(405, "method_not_allowed",
                         f"{method.decode('ascii', 'replace')} is not allowed here (allowed: "
                         f"{allowed.decode('ascii')})", headers={b"allow": allowed})

    def _cancel(self, request: Request, cancelled: Deferred[list[Upload]]) -> int:
        gone = watch(request)

        def answer(uploads: list[Upload]) -> None:
            finish(request, reply_json(request, {"cancelled": [
                {"n": u.number, "name": u.name} for u in uploads]}), gone)

        cancelled.addCallbacks(answer, lambda f: fail(request, f, gone))
        return NOT_DONE_YET

    # reading

    def _prefixes(self, request: Request) -> dict[str, Any]:
        self.publisher.state  # noqa: B018  (raises while not ready)
        summary = self.publisher.summary()
        return {
            "prefixes": [{"prefix": name, "url": f"{_base(request)}/publish/{name}/", **counts}
                         for name, counts in summary["prefixes"].items()],
            "ttl": summary.get("ttl"),
            "quota": summary.get("quota"),
        }

    def _listing(self, request: Request, prefix: str) -> dict[str, Any]:
        publisher = self.publisher
        files = [self._name_json(request, name) for name in publisher.names(prefix)]
        files += [self._upload_json(request, upload) for upload in publisher.pending(prefix)]
        files.sort(key=lambda entry: entry["name"])
        return {"prefix": prefix, "files": files, "quota": publisher.quota,
                "used": publisher.summary()["prefixes"][prefix]["bytes"]}

    def _name_json(self, request: Request, name: PublishedName) -> dict[str, Any]:
        return {"name": name.name, "state": "published", "size": name.size, "md5": name.md5,
                "sd_hash": name.sd_hash, "published": name.published,
                "download_url": _download_url(request, name.prefix, name.name),
                "stream_url": f"{_base(request)}/stream/{name.sd_hash}"}

    def _upload_json(self, request: Request, upload: Upload) -> dict[str, Any]:
        publisher = self.publisher
        entry: dict[str, Any] = {
            "name": upload.name, "size": upload.size, "md5": upload.md5,
            "transfer_key": upload.transfer_key, "n": upload.number,
            "state": "published" if upload.state == "complete" else upload.state,
            "offset": publisher.offset(upload), "uploading": publisher.uploading(upload),
            "expires": publisher.expires(upload),
            "upload_url": _upload_url(request, upload),
        }
        if upload.sd_hash is not None:
            entry["sd_hash"] = upload.sd_hash
            entry["download_url"] = _download_url(request, upload.prefix, upload.name)
        return entry

    def _download(self, request: Request, prefix: str, name: str) -> bytes | int:
        published = self.publisher.lookup(prefix, name)
        request.postpath = []
        page = self._streams.getChild(published.sd_hash.encode("ascii"), request)
        result: bytes | int = page.render(request)
        return result

    # the answers of bodies

    def transfer_json(self, request: Request, transfer: Transfer) -> dict[str, Any]:
        return {
            "transfer_key": transfer.key,
            "prefix": transfer.prefix,
            "expires": transfer.expires,
            "ttl": self.publisher.ttl,
            "files": [{"n": u.number, "name": u.name, "size": u.size, "md5": u.md5,
                       "state": u.state, "upload_url": _upload_url(request, u)}
                      for u in transfer.uploads],
        }

    def published_json(self, request: Request, name: PublishedName,
                       upload: Upload) -> dict[str, Any]:
        return {**self._name_json(request, name), "transfer_key": upload.transfer_key,
                "n": upload.number}


def _base(request: Request) -> str:
    """
    The base URL of this request's server, as the client named it.
    """
    host = text(request.getHeader(b"host"))
    if not host:
        address = request.getHost()
        host = f"{getattr(address, 'host', '127.0.0.1')}:{getattr(address, 'port', 80)}"
    return f"{'https' if request.isSecure() else 'http'}://{host}"


def _upload_url(request: Request, upload: Upload) -> str:
    return (f"{_base(request)}/publish/{upload.prefix}/{upload.transfer_key}/"
            f"{upload.number}")


def _download_url(request: Request, prefix: str, name: str) -> str:
    return f"{_base(request)}/publish/{prefix}/{quote(name, safe='')}"


def _offset_headers(upload: Upload, offset: int) -> dict[bytes, bytes]:
    headers = {b"upload-offset": b"%d" % offset, b"upload-length": b"%d" % upload.size,
               b"upload-state": upload.state.encode("ascii")}
    if offset:
        headers[b"range"] = b"bytes=0-%d" % (offset - 1)
    return headers


class APIRoot(Resource):
    """
    The API server's root: C{/publish/} goes to the publishing resource
    (with its own guard); everything else to the API behind its guard.
    Request bodies are routed (L{route_body}) for the streaming site
    (L{p2pblob.http._body}).
    """

    isLeaf = True

    def __init__(self, api: IResource, publishing: PublishResource) -> None:
        super().__init__()
        self._api = api
        self.publishing = publishing

    def route_body(self, method: bytes, target: bytes, headers: Headers) -> IBodyReceiver | None:
        return self.publishing.route_body(method, target, headers)

    def render(self, request: Request) -> Any:
        if _publishing(request.uri):
            return self.publishing.render(request)
        return self._api.render(request)

