"""
An S3 gateway in memory for the unit tests: a real blob store in a
temporary directory (its blocking work run inline), the gateway's
namespace, a L{task.Clock} at the current time (requests are signed by
botocore with the real time), and an HTTP client that speaks to the
gateway's streaming site over a L{StringTransport}.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.gateway.multipart import Multipart
from p2pblob.gateway.namespace import Namespace
from p2pblob.gateway.objects import Objects
from p2pblob.gateway.resource import S3Gateway
from p2pblob.gateway.xml import NAMESPACE

ACCESS, SECRET = "AKIDGATEWAYTEST", "gateway-test-secret"
HOST = "127.0.0.1:9000"
MIN_PART = 1024


def content(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def xml(self) -> ElementTree.Element:
        return ElementTree.fromstring(self.body)

    def find(self, path: str) -> str | None:
        """
        The text of the first element at C{path} (names without the S3
        namespace, separated by C{/}).
        """
        qualified = "/".join(f"{{{NAMESPACE}}}{part}" for part in path.split("/"))
        root = self.xml()
        found = root.find(qualified)
        if found is None:
            found = root.find(path)
        return None if found is None else (found.text or "")

    def findall(self, path: str) -> list[str]:
        qualified = "/".join(f"{{{NAMESPACE}}}{part}" for part in path.split("/"))
        return [e.text or "" for e in self.xml().findall(qualified)]

    @property
    def code(self) -> str | None:
        """
        The S3 error code of the answer, if it is an error.
        """
        if self.status < 300 or not self.body:
            return None
        return self.find("Code")


def _parse(raw: bytes) -> Response | None:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name] = value.strip()
    lowered = {name.lower(): value for name, value in headers.items()}
    if lowered.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, separator, rest = rest.partition(b"\r\n")
            if not separator:
                return None
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
        return Response(status, {**lowered, "_names": " ".join(headers)}, body)
    length = int(lowered.get("content-length", "0"))
    return Response(status, {**lowered, "_names": " ".join(headers)}, rest[:length])


class Pending:
    """
    A request whose answer may not be complete yet.
    """

    def __init__(self, transport: StringTransport, method: str) -> None:
        self.transport = transport
        self.method = method

    def response(self) -> Response:
        raw = self.transport.value()
        if self.method == "HEAD":
            head, _, _ = raw.partition(b"\r\n\r\n")
            raw = head + b"\r\n\r\n"
            parsed = _parse(raw)
            if parsed is not None:
                parsed.body = b""
        else:
            parsed = _parse(raw)
        if parsed is None:
            raise AssertionError(f"no complete answer yet: {raw[:300]!r}")
        return parsed


class GatewayTestCase(SynchronousTestCase):
    """
    A gateway over a real blob store, and requests signed with a key it
    knows.
    """

    anonymous = False
    quota: int | None = None
    max_objects: int | None = None
    keepalive = 10.0

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.clock = Clock()
        self.clock.advance(time.time())
        self.store = self.make_store("node")
        self.fetched: list[str] = []
        self.fetcher: Any = None
        self.namespace_path = self.directory / "gateway.sqlite"
        self.announced = 0
        self.build()

    def make_store(self, name: str) -> BlobStore:
        store = BlobStore(self.clock, run_inline, self.directory / name / "blobfiles",
                          self.directory / name / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(store.start()))
        self.addCleanup(store.stop)
        return store

    def build(self, **kwargs: Any) -> None:
        """
        (Re)make the gateway over the same files (a restart).
        """
        if hasattr(self, "namespace"):
            self.namespace.close()
        self.namespace = Namespace(self.namespace_path)
        self.addCleanup(self.namespace.close)

        def announce() -> None:
            self.announced += 1

        def fetch(blob: str) -> Deferred[None]:
            self.fetched.append(blob)
            return self.fetcher(blob)  # type: ignore[no-any-return]

        self.objects = Objects(
            self.clock, self.store, run_inline, self.namespace,
            fetch if self.fetcher is not None else None,
            has_stream=self.store.index.has_stream, announce=announce,
            quota=kwargs.get("quota", self.quota),
            max_objects=kwargs.get("max_objects", self.max_objects))
        self.multipart = Multipart(self.objects, MIN_PART)
        self.gateway = S3Gateway(self.objects, self.multipart, {ACCESS: SECRET},
                                 anonymous=self.anonymous, keepalive=self.keepalive)
        self.site = self.gateway.site(reactor=self.clock)

    # requests

    def send(self, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None, *, sign: bool = True,
             secret: str = SECRET, chunks: list[bytes] | None = None,
             signed_body: bytes | None = None) -> Pending:
        """
        Send a request (signed by botocore unless not C{sign}, as if its
        body were C{signed_body} if given); its body in C{chunks} if given
        (to show the gateway refusing before the end).
        """
        url = f"http://{HOST}{path}"
        given = dict(headers or {})
        if sign:
            signed = body if signed_body is None else signed_body
            request = AWSRequest(method=method, url=url, data=signed, headers=given)
            S3SigV4Auth(Credentials(ACCESS, secret), "s3", "us-east-1").add_auth(request)
            given = dict(request.headers.items())
        given.setdefault("Host", HOST)
        if ("Content-Length" not in given and "Transfer-Encoding" not in given
                and (body or method in ("PUT", "POST"))):
            given["Content-Length"] = str(len(body))
        target = path
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in given.items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 9000))
        protocol = self.site.buildProtocol(transport.getPeer())
        assert protocol is not None
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        for piece in chunks if chunks is not None else [body]:
            if piece:
                protocol.dataReceived(piece)
        self.protocols.append(protocol)
        return Pending(transport, method)

    @property
    def protocols(self) -> list[Any]:
        if not hasattr(self, "_protocols"):
            self._protocols: list[Any] = []
            self.addCleanup(self._close_all)
        return self._protocols

    def _close_all(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        for protocol in self._protocols:
            protocol.connectionLost(Failure(ConnectionDone()))

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None, **kwargs: Any) -> Response:
        return self.send(method, path, body, headers, **kwargs).response()

    # shortcuts

    def make_bucket(self, name: str = "bucket") -> None:
        response = self.request("PUT", f"/{name}")
        self.assertEqual(response.status, 200, response.body)

    def put(self, key: str, data: bytes, headers: dict[str, str] | None = None,
            bucket: str = "bucket") -> Response:
        response = self.request("PUT", f"/{bucket}/{quote(key)}", data, headers)
        self.assertEqual(response.status, 200, response.body)
        return response

    def get(self, key: str, bucket: str = "bucket", headers: dict[str, str] | None = None,
            query: str = "") -> Response:
        return self.request("GET", f"/{bucket}/{quote(key)}{query}", headers=headers)

    def blob_count(self) -> int:
        return len(self.successResultOf(self.store.verified_blobs()))
