"""
Tests for L{p2pblob.http.publishing}: manifest publishing over HTTP, each
request's bytes fed to the API's streaming site (L{p2pblob.http._body})
through an in-memory transport, over a real blob store, on a L{Clock}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.http._body import StreamingSite, streaming_site
from p2pblob.http.api import NodeAPI, NodeParts
from p2pblob.http.auth import RequestGuard
from p2pblob.http.publishing import APIRoot, PublishResource
from p2pblob.publish.manifest import ManifestPublisher
from p2pblob.ratelimit import RateLimiter
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE
from tests.publish.test_manifest import content, md5, one_shot_sd_hash

C = PLAINTEXT_CHUNK_SIZE
TOKEN = "s3cret-token"
TTL = 600.0
HOST = "127.0.0.1:5279"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return str(self.json["error"]["code"])


def parse_answers(data: bytes) -> list[Answer]:
    """
    The HTTP/1.1 answers in C{data} (with a Content-Length, or chunked),
    interim ones (100 Continue) left out.
    """
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.decode("latin-1").strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, _, rest = rest.partition(b"\r\n")
                length = int(size, 16)
                body, rest = body + rest[:length], rest[length + 2:]
                if not length:
                    break
            data = rest
        else:
            length = int(headers.get("content-length", "0"))
            body, data = rest[:length], rest[length:]
        if status != 100:
            answers.append(Answer(status, headers, body))
    return answers


class Connection:
    """
    One client connection to C{site}, in memory.
    """

    def __init__(self, site: StreamingSite) -> None:
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert self.channel is not None
        self.transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 5279),
                                         IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes, piece: int = 65536) -> None:
        for offset in range(0, len(data), piece):
            if self.transport.disconnecting:
                return
            self.channel.dataReceived(data[offset:offset + piece])

    def drop(self) -> None:
        self.channel.connectionLost(Failure(ConnectionLost("the client went away")))

    def answers(self) -> list[Answer]:
        return parse_answers(self.transport.value())


class PublishingTestCase(SynchronousTestCase):
    """
    The API's root (the JSON API on loopback, and C{/publish/} with its own
    guard) served by a streaming site, over a real blob store and a started
    publisher with the prefixes C{files} and C{music}.
    """

    quota: int | None = None

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = BlobStore(self.clock, run_inline, self.directory / "blobfiles",
                               self.directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.announced = 0
        self.start_node()

    def start_node(self) -> None:
        """
        Start a publisher (C{self.publisher}) over the state file of the
        test's directory, and the API's site (C{self.site}) serving it.
        """
        self.publisher = ManifestPublisher(
            self.clock, self.store, run_inline, self.directory / "publish.sqlite",
            prefixes=("files", "music"), ttl=TTL, quota=self.quota, announce=self.announce)
        self.publisher.startService()
        self.addCleanup(self.publisher.stopService)
        parts = NodeParts(config=Config(data_dir=self.directory), blob_store=self.store,
                          rate_limiter=RateLimiter(self.clock), publisher=self.publisher)
        api = NodeAPI(parts, RequestGuard(TOKEN, True), clock=lambda: 1000.0).resource()
        self.root = APIRoot(api, PublishResource(self.publisher, self.store, None, TOKEN, True))
        self.site = streaming_site(self.root, self.root.route_body, reactor=self.clock)

    def announce(self) -> None:
        self.announced += 1

    def connect(self) -> Connection:
        connection = Connection(self.site)
        self.addCleanup(self.close, connection)
        return connection

    def close(self, connection: Connection) -> None:
        if not connection.transport.disconnected:
            connection.channel.connectionLost(Failure(ConnectionDone()))

    def head(self, method: str, path: str, headers: dict[str, str] | None = None,
             length: int | None = None, token: str | None = TOKEN) -> bytes:
        headers = dict(headers or {})
        lines = [f"{method} {path} HTTP/1.1", f"Host: {headers.pop('Host', HOST)}",
                 "Connection: close"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = TOKEN) -> Answer:
        """
        One request on a connection of its own; its answer.
        """
        connection = self.connect()
        length = None if body is None else len(body)
        if headers and "Transfer-Encoding" in headers:
            length = None
        connection.send(self.head(method, path, headers, length, token) + (body or b""))
        answers = connection.answers()
        self.assertEqual(len(answers), 1, connection.transport.value()[:2000])
        return answers[0]

    def manifest(self, *files: tuple[str, bytes], prefix: str = "files") -> Any:
        body = json.dumps({"files": [{"name": name, "size": len(data), "md5": md5(data)}
                                     for name, data in files]}).encode()
        answer = self.request("POST", f"/publish/{prefix}/manifest", body,
                              {"Content-Type": "application/json"})
        self.assertEqual(answer.status, 201, answer.body)
        return answer.json

    def assertError(self, answer: Answer, status: int, code: str) -> str:
        self.assertEqual((answer.status, answer.code), (status, code), answer.body)
        self.assertEqual(answer.headers["content-type"], "application/json; charset=utf-8")
        return str(answer.json["error"]["message"])

    def blobs(self) -> set[str]:
        return set(self.store.held_blobs())


class ManifestTests(PublishingTestCase):
    quota = 100 * C

    def test_admitted(self) -> None:
        """
        A manifest is answered 201 with the transfer key, its expiry, and an
        upload URL for each file; the files are listed as pending in the
        prefix and counted in the node's status.
        """
        answer = self.manifest(("a b.txt", b"abc"), ("\u00e9t\u00e9.mp4", b"x" * 10))
        key = answer["transfer_key"]
        self.assertEqual((answer["expires"], answer["ttl"], answer["prefix"]),
                         (1000 + TTL, TTL, "files"))
        self.assertEqual([(f["n"], f["name"], f["size"], f["state"], f["upload_url"])
                          for f in answer["files"]],
                         [(0, "a b.txt", 3, "pending", f"http://{HOST}/publish/files/{key}/0"),
                          (1, "\u00e9t\u00e9.mp4", 10, "pending",
                           f"http://{HOST}/publish/files/{key}/1")])
        listing = self.request("GET", "/publish/files/")
        self.assertEqual(listing.status, 200)
        self.assertEqual([(f["name"], f["state"], f["offset"], f["transfer_key"])
                          for f in listing.json["files"]],
                         [("a b.txt", "pending", 0, key), ("\u00e9t\u00e9.mp4", "pending", 0, key)])
        self.assertEqual(self.request("GET", "/publish/files").json, listing.json)
        prefixes = self.request("GET", "/publish/").json["prefixes"]
        self.assertEqual([(p["prefix"], p["pending"], p["published"]) for p in prefixes],
                         [("files", 2, 0), ("music", 0, 0)])
        status = self.request("GET", "/api/v1/status", token=None)
        self.assertEqual(status.json["publish"]["prefixes"]["files"]["pending"], 2)

    def test_malformed(self) -> None:
        for body in [b"not json", b'{"files": []}', b'[{"name": "a"}]']:
            self.assertError(self.request("POST", "/publish/files/manifest", body), 400,
                             "bad_manifest")
        big = b"[" + b" " * (1024 * 1024) + b"]"
        self.assertError(self.request("POST", "/publish/files/manifest", big), 413,
                         "manifest_too_large")

    def test_refused(self) -> None:
        """
        A manifest with a file refused is not admitted; the answer names
        every file refused and why, with the status of the worst problem.
        """
        self.manifest(("taken", b"t"))

        def refused(*files: dict[str, Any]) -> Answer:
            body = json.dumps({"files": list(files)}).encode()
            return self.request("POST", "/publish/files/manifest", body)

        def f(name: str, size: int = 1) -> dict[str, Any]:
            return {"name": name, "size": size, "md5": "0" * 32}

        answer = refused(f("fine"), f("taken"), f("twice"), f("twice"))
        self.assertError(answer, 409, "name_taken")
        self.assertEqual([(e["n"], e["name"], e["code"]) for e in answer.json["error"]["files"]],
                         [(1, "taken", "name_taken"), (3, "twice", "duplicate_name")])
        self.assertError(refused(f("a/b"), f("taken")), 400, "bad_name")
        self.assertError(refused(f("huge", 10**12)), 413, "file_too_large")
        answer = refused(f("big", 60 * C), f("bigger", 50 * C))
        self.assertError(answer, 507, "insufficient_storage")
        self.assertEqual([e["code"] for e in answer.json["error"]["files"]], ["quota"])
        self.assertEqual([f["name"] for f in self.request("GET", "/publish/files/").json["files"]],
                         ["taken"])

    def test_unknown_prefix(self) -> None:
        body = json.dumps([{"name": "a", "size": 1, "md5": "0" * 32}]).encode()
        self.assertError(self.request("POST", "/publish/nope/manifest", body), 404,
                         "unknown_prefix")
        self.assertError(self.request("GET", "/publish/nope/"), 404, "unknown_prefix")

    def test_not_ready(self) -> None:
        """
        While the node is starting (its store not open), publishing answers
        503, saying to try again.
        """
        self.publisher._serving = False
        answer = self.request("POST", "/publish/files/manifest", b"[]")
        self.assertError(answer, 503, "not_ready")
        self.assertEqual(answer.headers["retry-after"], "5")


class GuardTests(PublishingTestCase):
    def test_token_required(self) -> None:
        """
        Every publishing request needs the API token, even on loopback,
        where the rest of the API does not.
        """
        self.manifest(("a", b"a"))
        key = self.publisher.pending("files")[0].transfer_key
        body = json.dumps([{"name": "b", "size": 1, "md5": "0" * 32}]).encode()
        for token in [None, "wrong", ""]:
            for method, path, data in [
                ("POST", "/publish/files/manifest", body),
                ("PUT", f"/publish/files/{key}/0", b"a"),
                ("GET", "/publish/files/", None),
                ("GET", "/publish/files/a", None),
                ("DELETE", f"/publish/files/{key}", None),
                ("HEAD", f"/publish/files/{key}/0", None),
            ]:
                answer = self.request(method, path, data, token=token)
                self.assertEqual(answer.status, 401, (method, path, token))
                self.assertEqual(answer.headers["www-authenticate"], 'Bearer realm="p2pblob"')
        self.assertEqual([u.name for u in self.publisher.pending("files")], ["a"])
        self.assertEqual(self.blobs(), set())
        self.assertEqual(self.request("GET", "/api/v1/status", token=None).status, 200)

    def test_host_and_origin(self) -> None:
        """
        The API's other guards hold: a host that is not loopback, or a page
        of another origin, is refused even with the token.
        """
        self.assertError(self.request("GET", "/publish/", headers={"Host": "evil.example"}),
                         403, "forbidden_host")
        self.assertError(self.request("GET", "/publish/",
                                      headers={"Origin": "http://evil.example"}),
                         403, "forbidden_origin")
        self.assertEqual(self.request("GET", "/publish/",
                                      headers={"Origin": f"http://{HOST}"}).status, 200)

    def test_methods(self) -> None:
        answer = self.request("PUT", "/publish/files/", b"x")
        self.assertError(answer, 405, "method_not_allowed")
        self.assertEqual(answer.headers["allow"], "GET, HEAD")
        self.assertError(self.request("GET", "/publish/files/a/0/x"), 404, "not_found")


class UploadTests(PublishingTestCase):
    def put(self, url: str, data: bytes, headers: dict[str, str] | None = None) -> Answer:
        return self.request("PUT", url.removeprefix(f"http://{HOST}"), data, headers)

    def test_published(self) -> None:
        """
        An upload of the declared bytes is published: 200 with the sd hash
        and URLs; the name then downloads (with ranges), and is listed as
        published.
        """
        data = content(2 * C + 99)
        manifest = self.manifest(("my clip.bin", data))
        answer = self.put(manifest["files"][0]["upload_url"], data)
        self.assertEqual(answer.status, 200, answer.body)
        published = answer.json
        upload = self.publisher.pending("files") or self.publisher.state.uploads()
        stream_key = upload[0].stream_key
        self.assertEqual(published["sd_hash"],
                         one_shot_sd_hash(self, "my clip.bin", data, stream_key))
        self.assertEqual(published["download_url"], f"http://{HOST}/publish/files/my%20clip.bin")
        self.assertEqual(published["stream_url"], f"http://{HOST}/stream/{published['sd_hash']}")
        self.assertEqual((published["name"], published["size"], published["md5"],
                          published["state"]), ("my clip.bin", len(data), md5(data), "published"))
        self.assertEqual(self.announced, 1)
        whole = self.request("GET", "/publish/files/my%20clip.bin")
        self.assertEqual((whole.status, whole.body), (200, data))
        self.assertEqual(whole.headers["etag"], f'"{published["sd_hash"]}"')
        part = self.request("GET", "/publish/files/my%20clip.bin",
                            headers={"Range": f"bytes={C - 10}-{C + 9}"})
        self.assertEqual((part.status, part.body), (206, data[C - 10:C + 10]))
        self.assertEqual(part.headers["content-range"], f"bytes {C - 10}-{C + 9}/{len(data)}")
        head = self.request("HEAD", "/publish/files/my%20clip.bin")
        self.assertEqual((head.status, head.headers["content-length"]), (200, str(len(data))))
        listing = self.request("GET", "/publish/files/").json["files"]
        self.assertEqual([(f["name"], f["state"], f["sd_hash"]) for f in listing],
                         [("my clip.bin", "published", published["sd_hash"])])
        again = self.put(manifest["files"][0]["upload_url"], data)
        self.assertError(again, 409, "upload_complete")
        status = self.request("HEAD", manifest["files"][0]["upload_url"][len(HOST) + 7:])
        self.assertEqual((status.status, status.headers["upload-offset"],
                          status.headers["upload-state"]), (200, str(len(data)), "complete"))

    def test_names_in_urls(self) -> None:
        """
        A UTF-8 name with spaces downloads by its percent-encoded URL; a
        name still pending is a 404 that says so.
        """
        name = "caf\u00e9 & cr\u00e8me #1.txt"
        manifest = self.manifest((name, b"coffee"), ("later", b"l"))
        self.assertEqual(self.put(manifest["files"][0]["upload_url"], b"coffee").status, 200)
        answer = self.request("GET", f"/publish/files/{quote(name, safe='')}")
        self.assertEqual((answer.status, answer.body), (200, b"coffee"))
        self.assertError(self.request("GET", "/publish/files/%FF"), 404, "not_found")
        self.assertError(self.request("GET", "/publish/files/later"), 404, "pending")
        self.assertError(self.request("GET", "/publish/files/nothing"), 404, "unknown_name")
        self.assertError(self.request("GET", "/publish/music/later"), 404, "unknown_name")

    def test_unknown(self) -> None:
        manifest = self.manifest(("a", b"a"))
        key = manifest["transfer_key"]
        for path in [f"/publish/files/{'0' * 32}/0", f"/publish/files/{key}/1",
                     f"/publish/files/{key}/x", f"/publish/music/{key}/0"]:
            self.assertError(self.request("PUT", path, b"a"), 404, "unknown_upload")
            self.assertError(self.request("GET", path), 404, "unknown_upload")
            self.assertEqual(self.request("HEAD", path).status, 404)
        self.assertError(self.request("PUT", f"/publish/nope/{key}/0", b"a"), 404,
                         "unknown_prefix")

    def test_wrong_length(self) -> None:
        """
        A body of another length than the declared size is refused (400)
        before any byte is taken; a client that asked to continue is told
        at once.
        """
        manifest = self.manifest(("a", b"abcd"))
        url = manifest["files"][0]["upload_url"]
        message = self.assertError(self.put(url, b"abc"), 400, "wrong_length")
        self.assertIn("must carry 4, not 3", message)
        connection = self.connect()
        connection.send(self.head("PUT", url[len(HOST) + 7:], {"Expect": "100-continue"}, 5))
        self.clock.advance(0)
        answers = connection.answers()
        self.assertEqual([a.status for a in answers], [400])
        self.assertNotIn(b"100 Continue", connection.transport.value())
        self.assertEqual(self.put(url, b"abcd").status, 200)

    def test_chunked(self) -> None:
        """
        A chunked body is taken as it comes, and its length checked: more
        bytes than declared, or fewer, are refused, and the file stays
        pending.
        """
        manifest = self.manifest(("a", b"abcdef"))
        url = manifest["files"][0]["upload_url"]
        chunked = {"Transfer-Encoding": "chunked"}

        def chunks(*parts: bytes) -> bytes:
            return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"

        self.assertError(self.put(url, chunks(b"abc", b"defg"), chunked), 400, "wrong_length")
        self.assertError(self.put(url, chunks(b"abc"), chunked), 400, "wrong_length")
        answer = self.put(url, chunks(b"abc", b"def"), chunked)
        self.assertEqual(answer.status, 200, answer.body)

    def test_md5_mismatch(self) -> None:
        """
        Bytes whose MD5 is not the one declared: 422, the entry is
        cancelled, and none of the blobs just made is left in the store.
        """
        data = content(C + 5)
        body = json.dumps([{"name": "a", "size": len(data), "md5": md5(b"else")}]).encode()
        manifest = self.request("POST", "/publish/files/manifest", body).json
        url = manifest["files"][0]["upload_url"]
        message = self.assertError(self.put(url, data), 422, "md5_mismatch")
        self.assertIn(md5(data), message)
        self.assertEqual(self.blobs(), set())
        self.assertEqual(self.store.index.streams(), [])
        self.assertEqual(self.request("GET", "/publish/files/").json["files"], [])
        self.assertError(self.put(url, data), 410, "upload_cancelled")
        self.assertError(self.request("GET", "/publish/files/a"), 404, "unknown_name")

    def test_busy(self) -> None:
        """
        A file being uploaded on one connection cannot be uploaded on
        another meanwhile.
        """
        data = content(C + 5)
        manifest = self.manifest(("a", data))
        path = manifest["files"][0]["upload_url"][len(HOST) + 7:]
        first = self.connect()
        first.send(self.head("PUT", path, length=len(data)) + data[:1000])
        answer = self.request("PUT", path, data)
        self.assertError(answer, 409, "upload_busy")
        self.assertEqual(answer.headers["retry-after"], "30")
        first.send(data[1000:])
        self.assertEqual([a.status for a in first.answers()], [200])

    def test_dropped_and_resumed(self) -> None:
        """
        An upload cut off mid-body keeps its full blobs: HEAD tells the
        offset, a PUT with Content-Range carries on from it, and the stream
        is the one a one-shot publish of the same file makes.
        """
        data = content(3 * C + 1234)
        manifest = self.manifest(("video.bin", data))
        path = manifest["files"][0]["upload_url"][len(HOST) + 7:]
        connection = self.connect()
        connection.send(self.head("PUT", path, length=len(data)) + data[:2 * C + C // 2])
        connection.drop()
        self.assertEqual(connection.answers(), [])
        head = self.request("HEAD", path)
        self.assertEqual((head.status, head.headers["upload-offset"], head.headers["range"],
                          head.headers["upload-length"], head.headers["upload-state"]),
                         (200, str(2 * C), f"bytes=0-{2 * C - 1}", str(len(data)), "pending"))
        status = self.request("GET", path).json
        self.assertEqual((status["offset"], status["uploading"], status["state"]),
                         (2 * C, False, "pending"))
        wrong = self.request("PUT", path, data[C:],
                             {"Content-Range": f"bytes {C}-{len(data) - 1}/{len(data)}"})
        self.assertError(wrong, 409, "offset_mismatch")
        self.assertEqual((wrong.headers["upload-offset"], wrong.json["error"]["offset"]),
                         (str(2 * C), 2 * C))
        self.assertError(self.request("PUT", path, data[2 * C:-1], {
            "Content-Range": f"bytes {2 * C}-{len(data) - 2}/{len(data)}"}), 400, "wrong_length")
        self.assertError(self.request("PUT", path, data[2 * C:], {"Content-Range": "bytes */1"}),
                         400, "wrong_length")
        answer = self.request("PUT", path, data[2 * C:],
                              {"Content-Range": f"bytes {2 * C}-{len(data) - 1}/{len(data)}"})
        self.assertEqual(answer.status, 200, answer.body)
        stream_key = self.publisher.state.uploads()[0].stream_key
        self.assertEqual(answer.json["sd_hash"],
                         one_shot_sd_hash(self, "video.bin", data, stream_key))
        self.assertEqual(self.request("GET", "/publish/files/video.bin").body, data)

    def test_node_stops_mid_upload(self) -> None:
        """
        When the node stops during an upload, the upload's connection is
        cut, unanswered, and what it stored is kept: after a restart, HEAD
        tells the offset of the checkpoint saved, and a PUT with
        Content-Range carries on from it to the stream a one-shot publish
        of the same file makes.
        """
        data = content(3 * C + 1234)
        manifest = self.manifest(("video.bin", data))
        path = manifest["files"][0]["upload_url"][len(HOST) + 7:]
        connection = self.connect()
        connection.send(self.head("PUT", path, length=len(data)) + data[:2 * C + C // 2])
        self.assertIsNone(self.publisher.stopService())
        self.assertTrue(connection.transport.disconnecting)
        connection.drop()
        self.assertEqual(connection.answers(), [])

        self.start_node()
        head = self.request("HEAD", path)
        self.assertEqual((head.status, head.headers["upload-offset"], head.headers["upload-state"]),
                         (200, str(2 * C), "pending"))
        answer = self.request("PUT", path, data[2 * C:],
                              {"Content-Range": f"bytes {2 * C}-{len(data) - 1}/{len(data)}"})
        self.assertEqual(answer.status, 200, answer.body)
        stream_key = self.publisher.state.uploads()[0].stream_key
        self.assertEqual(answer.json["sd_hash"],
                         one_shot_sd_hash(self, "video.bin", data, stream_key))
        self.assertEqual(self.request("GET", "/publish/files/video.bin").body, data)

    def test_expiry(self) -> None:
        """
        When its key expires, a file never finished is swept: its entry,
        and the blobs it stored; the key is then unknown.
        """
        data = content(2 * C)
        manifest = self.manifest(("a", data))
        path = manifest["files"][0]["upload_url"][len(HOST) + 7:]
        connection = self.connect()
        connection.send(self.head("PUT", path, length=len(data)) + data[:C + 10])
        connection.drop()
        self.assertNotEqual(self.blobs(), set())
        self.clock.advance(TTL)
        self.assertEqual(self.request("GET", "/publish/files/").json["files"], [])
        self.assertEqual(self.blobs(), set())
        self.assertError(self.request("PUT", path, data), 404, "unknown_upload")

    def test_delete(self) -> None:
        """
        DELETE of a transfer cancels its pending files (and of a file, that
        file); their blobs go; a file published stays.
        """
        data = content(C + 1)
        manifest = self.manifest(("done", b"d"), ("partial", data), ("never", b"n"))
        key = manifest["transfer_key"]
        self.assertEqual(self.request("PUT", f"/publish/files/{key}/0", b"d").status, 200)
        kept = self.blobs()
        connection = self.connect()
        connection.send(self.head("PUT", f"/publish/files/{key}/1", length=len(data))
                        + data[:C + 1 - 100])
        answer = self.request("DELETE", f"/publish/files/{key}/2")
        self.assertEqual((answer.status, answer.json), (200, {"cancelled": [
            {"n": 2, "name": "never"}]}))
        answer = self.request("DELETE", f"/publish/files/{key}")
        self.assertEqual((answer.status, answer.json), (200, {"cancelled": [
            {"n": 1, "name": "partial"}]}))
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(self.blobs(), kept)
        self.assertEqual([f["name"] for f in self.request("GET", "/publish/files/").json["files"]],
                         ["done"])
        self.assertError(self.request("DELETE", f"/publish/files/{key}/0"), 409,
                         "upload_complete")
        self.assertError(self.request("DELETE", f"/publish/files/{'0' * 32}"), 404,
                         "unknown_upload")
