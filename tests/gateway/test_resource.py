"""
Tests for L{p2pblob.gateway.resource}: the S3 REST API over a real blob
store, with requests signed by botocore (an implementation independent of
ours) and sent through the gateway's streaming site in memory.

Many cases are vblob's own tests (C{test/common_test}), run without its
five-second wait before listing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import quote

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet.defer import Deferred

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.gateway.rules import http_date, multipart_etag
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE as CHUNK
from p2pblob.stream.writer import StreamCreator
from tests.gateway._helpers import (
    ACCESS,
    HOST,
    MIN_PART,
    SECRET,
    GatewayTestCase,
    content,
    crc32_b64,
    md5_b64,
)

_RFC1123 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class BucketTests(GatewayTestCase):
    def test_create_is_idempotent(self) -> None:
        first = self.request("PUT", "/photos")
        again = self.request("PUT", "/photos")
        self.assertEqual((first.status, again.status), (200, 200))
        self.assertEqual(first.header("location"), "/photos")
        listing = self.request("GET", "/")
        self.assertEqual(listing.findall("Buckets/Bucket/Name"), ["photos"])
        self.assertRegex(listing.find("Buckets/Bucket/CreationDate") or "",
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_invalid_names(self) -> None:
        """
        vblob's C{testcontainername.js}, and a few of S3's own rules.
        """
        for name in ["Upper", "(paren", "ab", "a" * 64, "under_score", "dot..dot", "dash-.dot",
                     "dot.-dash", "1.2.3.4", "trailing-", "xn--abc", "end-s3alias"]:
            response = self.request("PUT", "/" + quote(name))
            self.assertEqual((response.status, response.code), (400, "InvalidBucketName"), name)
        self.assertEqual(self.request("GET", "/").findall("Buckets/Bucket/Name"), [])

    def test_blobs_is_reserved(self) -> None:
        response = self.request("PUT", "/blobs")
        self.assertEqual((response.status, response.code), (409, "BucketAlreadyExists"))

    def test_delete_not_empty(self) -> None:
        self.make_bucket()
        self.put("file", b"x")
        response = self.request("DELETE", "/bucket")
        self.assertEqual((response.status, response.code), (409, "BucketNotEmpty"))
        self.assertEqual(self.request("DELETE", "/bucket/file").status, 204)
        self.assertEqual(self.request("DELETE", "/bucket").status, 204)
        self.assertEqual(self.request("HEAD", "/bucket").status, 404)
        self.assertEqual(self.request("GET", "/").findall("Buckets/Bucket/Name"), [])

    def test_delete_aborts_uploads(self) -> None:
        self.make_bucket()
        upload_id = self.request("POST", "/bucket/big?uploads").find("UploadId")
        self.request("PUT", f"/bucket/big?partNumber=1&uploadId={upload_id}", b"part")
        self.assertGreater(self.blob_count(), 0)
        self.assertEqual(self.request("DELETE", "/bucket").status, 204)
        self.assertEqual(self.blob_count(), 0)

    def test_no_such_bucket(self) -> None:
        for method, path in [("GET", "/nope"), ("DELETE", "/nope"), ("HEAD", "/nope"),
                             ("GET", "/nope/key"), ("PUT", "/nope/key")]:
            response = self.request(method, path, b"data" if method == "PUT" else b"")
            self.assertEqual(response.status, 404, (method, path))
            if method != "HEAD":
                self.assertEqual(response.code, "NoSuchBucket")

    def test_error_document(self) -> None:
        """
        Errors are S3 XML documents with Code, Message, Resource and
        RequestId, and the request id is in a header too.
        """
        response = self.request("GET", "/nope/some%20key")
        self.assertEqual(response.header("content-type"), "application/xml")
        self.assertEqual(response.xml().tag, "Error")
        self.assertEqual(response.find("Resource"), "/nope/some key")
        self.assertEqual(response.find("RequestId"), response.header("x-amz-request-id"))
        self.assertTrue(response.find("Message"))

    def test_not_implemented(self) -> None:
        self.make_bucket()
        self.put("key", b"x")
        for path in ["/bucket?acl", "/bucket?versioning", "/bucket?policy", "/bucket?cors",
                     "/bucket/key?acl", "/bucket/key?tagging"]:
            response = self.request("GET", path)
            self.assertEqual((response.status, response.code), (501, "NotImplemented"), path)
            self.assertIn("?" + path.partition("?")[2], response.find("Message") or "")

    def test_location(self) -> None:
        self.make_bucket()
        response = self.request("GET", "/bucket?location")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.xml().tag.rpartition("}")[2], "LocationConstraint")

    def test_region_configuration(self) -> None:
        body = (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b"<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>")
        response = self.request("PUT", "/elsewhere", body)
        self.assertEqual((response.status, response.code), (400, "InvalidLocationConstraint"))
        doctype = b'<!DOCTYPE x [<!ENTITY a "b">]><CreateBucketConfiguration/>'
        self.assertEqual(self.request("PUT", "/elsewhere", doctype).code, "MalformedXML")

    def test_method_not_allowed(self) -> None:
        response = self.request("DELETE", "/")
        self.assertEqual((response.status, response.code), (405, "MethodNotAllowed"))


class ObjectTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()

    def test_put_publishes(self) -> None:
        """
        A PUT publishes the body as a stream (several blobs here), answers
        the quoted MD5 and the sd hash, and announces.
        """
        data = content(2 * CHUNK + 1000)
        response = self.put("holiday.mp4", data)
        self.assertEqual(response.header("etag"), f'"{_md5(data)}"')
        sd_hash = response.header("x-p2pblob-sd-hash") or ""
        self.assertTrue(self.store.index.has_stream(sd_hash))
        self.assertEqual(len(self.store.index.stream_blobs(sd_hash)), 4)
        self.assertEqual(self.announced, 1)
        self.assertEqual(response.header("x-amz-checksum-crc32"), crc32_b64(data))
        got = self.get("holiday.mp4")
        self.assertEqual(got.body, data)
        self.assertEqual(got.header("x-p2pblob-sd-hash"), sd_hash)

    def test_headers_and_metadata(self) -> None:
        """
        vblob's C{testputfile.js}: standard headers and user metadata are
        given back, metadata names in lowercase; dates are RFC 1123.
        """
        stored = {"Cache-Control": "max-age=3600", "Content-Disposition": "attachment",
                  "Content-Encoding": "identity", "Content-Type": "text/plain",
                  "Content-Language": "fr", "Expires": "Thu, 01 Dec 2094 16:00:00 GMT"}
        self.put("hello.txt", b"hello", {**stored, "x-amz-meta-hello": "World",
                                         "X-Amz-Meta-Colour": "blue"})
        for method in ("GET", "HEAD"):
            response = self.request(method, "/bucket/hello.txt")
            for name, value in stored.items():
                self.assertEqual(response.header(name), value, (method, name))
            self.assertEqual(response.header("x-amz-meta-hello"), "World")
            self.assertEqual(response.header("x-amz-meta-colour"), "blue")
            self.assertIn("x-amz-meta-colour", response.headers["_names"].split())
            self.assertRegex(response.header("last-modified") or "", _RFC1123)
            self.assertEqual(response.header("content-length"), "5")
            self.assertEqual(response.header("etag"), f'"{_md5(b"hello")}"')
        self.assertEqual(self.request("HEAD", "/bucket/hello.txt").body, b"")

    def test_default_type(self) -> None:
        self.put("plain", b"x")
        self.assertEqual(self.get("plain").header("content-type"), "binary/octet-stream")

    def test_response_overrides(self) -> None:
        """
        vblob's C{response-*} cases.
        """
        self.put("file", b"data", {"Content-Type": "text/plain"})
        overrides = {"content-type": "image/png", "content-language": "de",
                     "content-disposition": 'attachment; filename="a b.png"',
                     "content-encoding": "gzip", "cache-control": "no-cache",
                     "expires": "Thu, 01 Dec 2094 16:00:00 GMT"}
        query = "&".join(f"response-{name}={quote(value)}" for name, value in overrides.items())
        response = self.get("file", query="?" + query)
        self.assertEqual(response.body, b"data")
        for name, value in overrides.items():
            self.assertEqual(response.header(name), value)

    def test_keys(self) -> None:
        for key in ["with space", "ünïcödé/ключ", "a//b", "trailing/", "x" * 1024]:
            self.put(key, key.encode())
            self.assertEqual(self.get(key).body, key.encode(), key)
        response = self.request("PUT", "/bucket/" + "x" * 1025, b"x")
        self.assertEqual((response.status, response.code), (400, "KeyTooLongError"))

    def test_empty_object(self) -> None:
        response = self.put("empty", b"")
        self.assertEqual(response.header("etag"), f'"{_md5(b"")}"')
        got = self.get("empty")
        self.assertEqual((got.status, got.body, got.header("content-length")), (200, b"", "0"))

    def test_overwrite_removes_the_old_stream(self) -> None:
        first = self.put("file", content(3000, 1)).header("x-p2pblob-sd-hash") or ""
        self.put("file", content(4000, 2))
        self.assertFalse(self.store.index.has_stream(first))
        self.assertEqual(self.get("file").body, content(4000, 2))
        self.assertEqual(self.blob_count(), 2)

    def test_delete(self) -> None:
        sd_hash = self.put("file", content(3000)).header("x-p2pblob-sd-hash") or ""
        self.assertEqual(self.request("DELETE", "/bucket/file").status, 204)
        self.assertEqual(self.get("file").code, "NoSuchKey")
        self.assertFalse(self.store.index.has_stream(sd_hash))
        self.assertEqual(self.blob_count(), 0)
        self.assertEqual(self.request("DELETE", "/bucket/file").status, 204)

    def test_delete_objects(self) -> None:
        for key in ("a", "b", "c"):
            self.put(key, key.encode())
        body = (b"<Delete><Object><Key>a</Key></Object><Object><Key>c</Key></Object>"
                b"<Object><Key>missing</Key></Object></Delete>")
        response = self.request("POST", "/bucket?delete", body,
                                {"Content-MD5": md5_b64(body)})
        self.assertEqual(response.findall("Deleted/Key"), ["a", "c", "missing"])
        listing = self.request("GET", "/bucket?list-type=2")
        self.assertEqual(listing.findall("Contents/Key"), ["b"])

    def test_delete_while_reading(self) -> None:
        """
        A stream deleted while a GET sends it stays in the store until the
        GET is done.
        """
        data = content(2 * CHUNK + 10)
        sd_hash = self.put("file", data).header("x-p2pblob-sd-hash") or ""
        held: list[Deferred[bytes]] = []
        read_blob = self.store.read_blob
        second = self.store.index.stream_blobs(sd_hash)[2]

        def reading(blob: str) -> Deferred[bytes]:
            if blob == second and not held:
                held.append(Deferred())
                return held[0]
            return read_blob(blob)

        self.patch(self.store, "read_blob", reading)
        pending = self.send("GET", "/bucket/file")
        self.assertEqual(len(held), 1)
        self.assertEqual(self.request("DELETE", "/bucket/file").status, 204)
        self.assertTrue(self.store.index.has_stream(sd_hash))
        held[0].callback(self.store.path_of(second).read_bytes())
        self.assertEqual(pending.response().body, data)
        self.assertFalse(self.store.index.has_stream(sd_hash))

    def test_not_spooled(self) -> None:
        """
        The body goes into the stream as it arrives: twisted.web never
        spools it to a temporary file, and blobs are stored before its end.
        """
        import twisted.web.http

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("the body was spooled")

        self.patch(twisted.web.http.tempfile, "TemporaryFile", refuse)
        data = content(2 * CHUNK + 10)
        pending = self.send("PUT", "/bucket/big", data, chunks=[data[:CHUNK + 100]])
        self.assertEqual(self.blob_count(), 1)
        self.protocols[-1].dataReceived(data[CHUNK + 100:])
        self.assertEqual(pending.response().status, 200)
        self.assertEqual(self.get("big").body, data)

    def test_no_such_key(self) -> None:
        response = self.get("nothing")
        self.assertEqual((response.status, response.code), (404, "NoSuchKey"))
        self.assertEqual(self.request("HEAD", "/bucket/nothing").status, 404)

    def test_part_number_read(self) -> None:
        self.put("file", b"x")
        self.assertEqual(self.get("file", query="?partNumber=1").status, 501)


class RangeTests(GatewayTestCase):
    """
    vblob's C{testgetfile.js} ranges, and S3's 416 document.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.data = content(2 * CHUNK + 1000)
        self.sd_hash = self.put("file", self.data).header("x-p2pblob-sd-hash") or ""

    def ranged(self, value: str) -> Any:
        return self.get("file", headers={"Range": value})

    def test_ranges(self) -> None:
        size = len(self.data)
        for value, first, last in [("bytes=0-3", 0, 3), ("bytes=3-", 3, size - 1),
                                   ("bytes=-3", size - 3, size - 1),
                                   ("bytes=100-99999999", 100, size - 1)]:
            response = self.ranged(value)
            self.assertEqual(response.status, 206, value)
            self.assertEqual(response.body, self.data[first:last + 1], value)
            self.assertEqual(response.header("content-range"), f"bytes {first}-{last}/{size}")
            self.assertEqual(response.header("content-length"), str(last + 1 - first))

    def test_unsatisfiable(self) -> None:
        response = self.ranged(f"bytes={len(self.data)}-")
        self.assertEqual((response.status, response.code), (416, "InvalidRange"))
        self.assertEqual(response.header("content-range"), f"bytes */{len(self.data)}")
        self.assertEqual(response.find("ActualObjectSize"), str(len(self.data)))

    def test_malformed_is_ignored(self) -> None:
        response = self.ranged("bytes=abc")
        self.assertEqual((response.status, response.body), (200, self.data))

    def test_cross_blob_range_reads_two_blobs(self) -> None:
        """
        A range across the first two blobs reads exactly those two.
        """
        reads: list[str] = []
        read_blob = self.store.read_blob

        def reading(blob: str) -> Deferred[bytes]:
            reads.append(blob)
            return read_blob(blob)

        self.patch(self.store, "read_blob", reading)
        response = self.ranged(f"bytes={CHUNK - 10}-{CHUNK + 10}")
        self.assertEqual(response.body, self.data[CHUNK - 10:CHUNK + 11])
        hashes = self.store.index.stream_blobs(self.sd_hash)
        self.assertEqual(reads, [self.sd_hash, hashes[1], hashes[2]])

    def test_empty_object_range(self) -> None:
        self.put("empty", b"")
        response = self.get("empty", headers={"Range": "bytes=0-"})
        self.assertEqual((response.status, response.code), (416, "InvalidRange"))


class ConditionTests(GatewayTestCase):
    """
    vblob's conditional cases, and S3's order of the conditions.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.etag = self.put("file", b"data").header("etag") or ""
        self.past = http_date(self.clock.seconds() - 3600)
        self.future = http_date(self.clock.seconds() + 3600)

    def status(self, **headers: str) -> int:
        given = {name.replace("_", "-"): value for name, value in headers.items()}
        return self.get("file", headers=given).status

    def test_unmodified_since(self) -> None:
        self.assertEqual(self.status(If_Unmodified_Since=self.past), 412)
        self.assertEqual(self.status(If_Unmodified_Since=self.future), 200)

    def test_modified_since(self) -> None:
        self.assertEqual(self.status(If_Modified_Since=self.past), 200)
        # a date in the future is ignored
        self.assertEqual(self.status(If_Modified_Since=self.future), 200)
        last_modified = self.get("file").header("last-modified") or ""
        self.assertEqual(self.status(If_Modified_Since=last_modified), 304)

    def test_match(self) -> None:
        self.assertEqual(self.status(If_Match=self.etag), 200)
        self.assertEqual(self.status(If_Match='"other"'), 412)
        self.assertEqual(self.status(If_Match="*"), 200)
        response = self.get("file", headers={"If-Match": '"other"'})
        self.assertEqual(response.code, "PreconditionFailed")

    def test_none_match(self) -> None:
        self.assertEqual(self.status(If_None_Match=self.etag), 304)
        self.assertEqual(self.status(If_None_Match='"other"'), 200)
        response = self.get("file", headers={"If-None-Match": self.etag})
        self.assertEqual((response.body, response.header("etag")), (b"", self.etag))

    def test_order(self) -> None:
        """
        If-Match that holds makes If-Unmodified-Since moot; If-None-Match
        that fails (no match) makes If-Modified-Since moot.
        """
        self.assertEqual(self.status(If_Match=self.etag, If_Unmodified_Since=self.past), 200)
        last_modified = self.get("file").header("last-modified") or ""
        self.assertEqual(self.status(If_None_Match='"x"', If_Modified_Since=last_modified), 200)

    def test_head(self) -> None:
        response = self.request("HEAD", "/bucket/file", headers={"If-Match": '"x"'})
        self.assertEqual((response.status, response.body), (412, b""))


class DigestTests(GatewayTestCase):
    """
    Content-MD5 and x-amz-checksum-crc32: nothing is stored unless they
    hold.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.data = content(CHUNK + 5000)

    def assertNothingStored(self) -> None:
        self.assertEqual(self.blob_count(), 0)
        self.assertEqual(self.get("file").code, "NoSuchKey")

    def test_right(self) -> None:
        self.put("file", self.data, {"Content-MD5": md5_b64(self.data),
                                     "x-amz-checksum-crc32": crc32_b64(self.data)})
        self.assertEqual(self.get("file").body, self.data)

    def test_bad_digest(self) -> None:
        response = self.request("PUT", "/bucket/file", self.data,
                                {"Content-MD5": md5_b64(b"other")})
        self.assertEqual((response.status, response.code), (400, "BadDigest"))
        self.assertNothingStored()

    def test_invalid_digest(self) -> None:
        """
        A malformed Content-MD5 is refused before the body is read: with
        C{Expect: 100-continue}, at once.
        """
        pending = self.send("PUT", "/bucket/file", self.data,
                            {"Content-MD5": "not base64!", "Expect": "100-continue"},
                            chunks=[])
        self.clock.advance(0)
        response = pending.response()
        self.assertEqual((response.status, response.code), (400, "InvalidDigest"))
        self.assertNothingStored()

    def test_wrong_crc32(self) -> None:
        response = self.request("PUT", "/bucket/file", self.data,
                                {"x-amz-checksum-crc32": crc32_b64(b"other")})
        self.assertEqual((response.status, response.code), (400, "BadDigest"))
        self.assertNothingStored()

    def test_wrong_payload_hash(self) -> None:
        """
        A body that is not the one whose SHA-256 was signed.
        """
        other = bytes(len(self.data))
        response = self.request("PUT", "/bucket/file", self.data, signed_body=other)
        self.assertEqual((response.status, response.code), (400, "XAmzContentSHA256Mismatch"))
        self.assertNothingStored()

    def test_short_body(self) -> None:
        """
        A connection lost before the end of the body leaves nothing.
        """
        pending = self.send("PUT", "/bucket/file", self.data,
                            {"Content-Length": str(len(self.data) + 10)})
        self.assertGreater(self.blob_count(), 0)
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.protocols[-1].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(pending.transport.value(), b"")
        self.assertNothingStored()


class CopyTests(GatewayTestCase):
    """
    vblob's C{testcopyfile.js}: a copy is a new name for the same stream.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.data = content(CHUNK + 100)
        self.source = self.put("source", self.data, {"Content-Type": "text/plain",
                                                     "x-amz-meta-origin": "one"})
        self.blobs = self.blob_count()

    def copy(self, key: str, headers: dict[str, str] | None = None,
             source: str = "/bucket/source") -> Any:
        return self.request("PUT", f"/bucket/{key}",
                            headers={"x-amz-copy-source": source, **(headers or {})})

    def test_copy(self) -> None:
        response = self.copy("copy")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.find("ETag"), self.source.header("etag"))
        got = self.get("copy")
        self.assertEqual(got.body, self.data)
        self.assertEqual(got.header("x-amz-meta-origin"), "one")
        self.assertEqual(got.header("content-type"), "text/plain")
        self.assertEqual(got.header("x-p2pblob-sd-hash"), self.source.header("x-p2pblob-sd-hash"))
        self.assertEqual(self.blob_count(), self.blobs)

    def test_replace(self) -> None:
        self.copy("copy", {"x-amz-metadata-directive": "REPLACE", "x-amz-meta-origin": "two",
                           "Content-Type": "image/png"})
        got = self.get("copy")
        self.assertEqual((got.header("x-amz-meta-origin"), got.header("content-type")),
                         ("two", "image/png"))
        self.assertEqual(self.get("source").header("x-amz-meta-origin"), "one")

    def test_onto_itself(self) -> None:
        self.assertEqual(self.copy("source").code, "InvalidRequest")
        response = self.copy("source", {"x-amz-metadata-directive": "REPLACE",
                                         "x-amz-meta-origin": "three"})
        self.assertEqual(response.status, 200)
        self.assertEqual(self.get("source").header("x-amz-meta-origin"), "three")
        self.assertEqual(self.get("source").body, self.data)

    def test_conditions(self) -> None:
        past = http_date(self.clock.seconds() - 3600)
        future = http_date(self.clock.seconds() + 3600)
        etag = self.source.header("etag") or ""
        for headers, status in [
            ({"x-amz-copy-source-if-unmodified-since": past}, 412),
            ({"x-amz-copy-source-if-modified-since": future}, 200),
            ({"x-amz-copy-source-if-match": etag}, 200),
            ({"x-amz-copy-source-if-match": '"x"'}, 412),
            ({"x-amz-copy-source-if-none-match": etag}, 412),
            ({"x-amz-copy-source-if-none-match": '"x"'}, 200),
        ]:
            response = self.copy("copy", headers)
            self.assertEqual(response.status, status, headers)
            if status == 412:
                self.assertEqual(response.code, "PreconditionFailed")

    def test_source_deleted(self) -> None:
        """
        The stream stays while a name refers to it.
        """
        self.copy("copy")
        self.request("DELETE", "/bucket/source")
        self.assertEqual(self.get("copy").body, self.data)
        self.request("DELETE", "/bucket/copy")
        self.assertEqual(self.blob_count(), 0)

    def test_missing_source(self) -> None:
        self.assertEqual(self.copy("copy", source="/bucket/nothing").code, "NoSuchKey")
        self.assertEqual(self.copy("copy", source="/nobucket/x").code, "NoSuchBucket")
        self.assertEqual(self.copy("copy", source="nothing").code, "InvalidArgument")

    def test_other_bucket(self) -> None:
        self.make_bucket("other")
        response = self.request("PUT", "/other/copy",
                                headers={"x-amz-copy-source": "bucket/source"})
        self.assertEqual(response.status, 200)
        self.assertEqual(self.get("copy", bucket="other").body, self.data)


class ListingTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()

    def keys(self, query: str) -> tuple[list[str], list[str], Any]:
        response = self.request("GET", "/bucket?" + query)
        self.assertEqual(response.status, 200, response.body)
        return response.findall("Contents/Key"), response.findall("CommonPrefixes/Prefix"), response

    def test_read_after_write(self) -> None:
        """
        vblob's C{testlistfiles.js}, listed right after the writes.
        """
        for key in ("A.txt", "A/B.txt", "A/B/C.txt"):
            self.put(key, key.encode())
        contents, _, _ = self.keys("")
        self.assertEqual(contents, ["A.txt", "A/B.txt", "A/B/C.txt"])
        contents, prefixes, _ = self.keys("prefix=A&delimiter=/")
        self.assertEqual((contents, prefixes), (["A.txt"], ["A/"]))

    def test_vblob_listing(self) -> None:
        """
        vblob's C{testlistfiles2.js}.
        """
        for key in ["sample.jpg", "photos/2006/January/sample.jpg",
                    "photos/2006/February/sample2.jpg", "photos/2006/February/sample3.jpg",
                    "photos/2006/February/sample4.jpg"]:
            self.put(key, b"x")
        contents, _, response = self.keys("prefix=p&marker=photos/2005&max-keys=3")
        self.assertEqual(len(contents), 3)
        self.assertEqual(response.find("IsTruncated"), "true")
        self.assertEqual((response.find("Prefix"), response.find("Marker"),
                          response.find("MaxKeys")), ("p", "photos/2005", "3"))
        contents, prefixes, _ = self.keys("delimiter=/")
        self.assertEqual((contents, prefixes), (["sample.jpg"], ["photos/"]))
        contents, prefixes, _ = self.keys("prefix=photos/2006/&delimiter=/")
        self.assertEqual(prefixes, ["photos/2006/February/", "photos/2006/January/"])

    def test_entries(self) -> None:
        response = self.put("file", b"hello")
        _, _, listing = self.keys("list-type=2")
        self.assertEqual(listing.find("Contents/ETag"), response.header("etag"))
        self.assertEqual(listing.find("Contents/Size"), "5")
        self.assertEqual(listing.find("KeyCount"), "1")
        self.assertRegex(listing.find("Contents/LastModified") or "",
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_v2_continuation(self) -> None:
        keys = [f"k{n:02}" for n in range(7)] + ["p/1", "p/2", "q/1"]
        for key in keys:
            self.put(key, b"x")
        seen: list[str] = []
        token = None
        while True:
            query = "list-type=2&max-keys=3&delimiter=/"
            if token is not None:
                query += "&continuation-token=" + quote(token)
            contents, prefixes, response = self.keys(query)
            seen += contents + prefixes
            if response.find("IsTruncated") != "true":
                self.assertIsNone(response.find("NextContinuationToken"))
                break
            token = response.find("NextContinuationToken")
        self.assertEqual(seen, [f"k{n:02}" for n in range(7)] + ["p/", "q/"])

    def test_bad_arguments(self) -> None:
        for query in ["max-keys=-1", "max-keys=x", "encoding-type=base64",
                      "list-type=2&continuation-token=bogus"]:
            response = self.request("GET", "/bucket?" + query)
            self.assertEqual((response.status, response.code), (400, "InvalidArgument"), query)

    def test_url_encoding(self) -> None:
        self.put("a b/ü", b"x")
        contents, prefixes, _ = self.keys("encoding-type=url&delimiter=/")
        self.assertEqual(prefixes, ["a%20b/"])
        contents, _, _ = self.keys("encoding-type=url")
        self.assertEqual(contents, ["a%20b/%C3%BC"])


class MultipartTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.parts = [content(CHUNK + 7, 1), content(MIN_PART, 2), content(500, 3)]

    def create(self, key: str = "big") -> str:
        response = self.request("POST", f"/bucket/{key}?uploads",
                                headers={"Content-Type": "video/mp4", "x-amz-meta-kind": "film"})
        self.assertEqual(response.status, 200, response.body)
        return response.find("UploadId") or ""

    def upload(self, upload_id: str, number: int, data: bytes, key: str = "big") -> str:
        response = self.request("PUT", f"/bucket/{key}?partNumber={number}&uploadId={upload_id}",
                                data)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("etag"), f'"{_md5(data)}"')
        return response.header("etag") or ""

    def complete_body(self, etags: list[tuple[int, str]]) -> bytes:
        parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                        for n, e in etags)
        return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()

    def complete(self, upload_id: str, etags: list[tuple[int, str]], key: str = "big") -> Any:
        return self.request("POST", f"/bucket/{key}?uploadId={upload_id}",
                            self.complete_body(etags))

    def test_upload(self) -> None:
        """
        Parts sent out of order, one of them twice, make one stream; the
        parts' streams are removed; the ETag is S3's multipart form.
        """
        upload_id = self.create()
        etags = {3: self.upload(upload_id, 3, self.parts[2])}
        self.upload(upload_id, 1, b"first try" * 200)
        etags[1] = self.upload(upload_id, 1, self.parts[0])
        etags[2] = self.upload(upload_id, 2, self.parts[1])
        listed = self.request("GET", f"/bucket/big?uploadId={upload_id}")
        self.assertEqual(listed.findall("Part/PartNumber"), ["1", "2", "3"])
        self.assertEqual(self.announced, 0)
        self.assertEqual(listed.findall("Part/Size"), [str(len(p)) for p in self.parts])
        response = self.complete(upload_id, sorted(etags.items()))
        self.assertEqual(response.status, 200, response.body)
        expected = multipart_etag([_md5(part) for part in self.parts])
        self.assertEqual(response.find("ETag"), f'"{expected}"')
        self.assertEqual(self.announced, 1)
        got = self.get("big")
        data = b"".join(self.parts)
        self.assertEqual(got.body, data)
        self.assertEqual(got.header("etag"), f'"{expected}"')
        self.assertEqual((got.header("content-type"), got.header("x-amz-meta-kind")),
                         ("video/mp4", "film"))
        sd_hash = got.header("x-p2pblob-sd-hash") or ""
        self.assertEqual(self.store.index.streams()[0][0], sd_hash)
        self.assertEqual(len(self.store.index.streams()), 1)
        self.assertEqual(self.blob_count(), 3)
        self.assertEqual(self.request("GET", f"/bucket/big?uploadId={upload_id}").code,
                         "NoSuchUpload")

    def test_restart_between_parts(self) -> None:
        upload_id = self.create()
        first = self.upload(upload_id, 1, self.parts[0])
        self.build()
        second = self.upload(upload_id, 2, self.parts[1])
        response = self.complete(upload_id, [(1, first), (2, second)])
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(self.get("big").body, self.parts[0] + self.parts[1])

    def test_errors(self) -> None:
        upload_id = self.create()
        first = self.upload(upload_id, 1, b"small")
        second = self.upload(upload_id, 2, self.parts[1])
        self.assertEqual(self.complete(upload_id, [(2, second), (1, first)]).code,
                         "InvalidPartOrder")
        self.assertEqual(self.complete(upload_id, [(1, '"x"')]).code, "InvalidPart")
        self.assertEqual(self.complete(upload_id, [(1, first), (3, second)]).code, "InvalidPart")
        self.assertEqual(self.complete(upload_id, [(1, first), (2, second)]).code,
                         "EntityTooSmall")
        self.assertEqual(self.complete("nope", [(1, first)]).code, "NoSuchUpload")
        self.assertEqual(self.request("PUT", "/bucket/big?partNumber=0&uploadId=" + upload_id,
                                      b"x").code, "InvalidArgument")
        self.assertEqual(self.request("PUT", "/bucket/big?partNumber=1&uploadId=nope",
                                      b"x").code, "NoSuchUpload")
        self.assertEqual(self.request("POST", f"/bucket/big?uploadId={upload_id}",
                                      b"<Complete").code, "MalformedXML")

    def test_abort(self) -> None:
        upload_id = self.create()
        self.upload(upload_id, 1, self.parts[0])
        listed = self.request("GET", "/bucket?uploads")
        self.assertEqual(listed.findall("Upload/UploadId"), [upload_id])
        self.assertEqual(self.request("DELETE", f"/bucket/big?uploadId={upload_id}").status, 204)
        self.assertEqual(self.blob_count(), 0)
        self.assertEqual(self.request("GET", "/bucket?uploads").findall("Upload/UploadId"), [])
        self.assertEqual(self.request("DELETE", f"/bucket/big?uploadId={upload_id}").code,
                         "NoSuchUpload")

    def test_copied_whole(self) -> None:
        """
        Parts copied in order from the whole of an object make an alias of
        its stream: no blob is made.
        """
        data = content(3 * MIN_PART + 11)
        source = self.put("source", data)
        blobs = self.blob_count()
        upload_id = self.create("copy")
        etags = []
        for number, (first, last) in enumerate([(0, MIN_PART - 1), (MIN_PART, 3 * MIN_PART - 1),
                                                (3 * MIN_PART, len(data) - 1)], 1):
            response = self.request(
                "PUT", f"/bucket/copy?partNumber={number}&uploadId={upload_id}",
                headers={"x-amz-copy-source": "/bucket/source",
                         "x-amz-copy-source-range": f"bytes={first}-{last}"})
            self.assertEqual(response.status, 200, response.body)
            etags.append((number, response.find("ETag") or ""))
        self.assertEqual(self.complete(upload_id, etags, "copy").status, 200)
        got = self.get("copy")
        self.assertEqual(got.body, data)
        self.assertEqual(got.header("x-p2pblob-sd-hash"), source.header("x-p2pblob-sd-hash"))
        self.assertEqual(self.blob_count(), blobs)

    def test_copied_ranges(self) -> None:
        """
        Parts copied from parts of objects, mixed with an uploaded part,
        are assembled.
        """
        data = content(3 * MIN_PART, 5)
        self.put("source", data)
        upload_id = self.create("mixed")
        copied = self.request("PUT", f"/bucket/mixed?partNumber=1&uploadId={upload_id}",
                              headers={"x-amz-copy-source": "/bucket/source",
                                       "x-amz-copy-source-range": f"bytes=10-{MIN_PART + 9}"})
        uploaded = self.upload(upload_id, 2, b"tail", "mixed")
        response = self.complete(upload_id, [(1, copied.find("ETag") or ""), (2, uploaded)],
                                 "mixed")
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(self.get("mixed").body, data[10:MIN_PART + 10] + b"tail")
        bad = self.request("PUT", f"/bucket/mixed?partNumber=1&uploadId={upload_id}",
                           headers={"x-amz-copy-source": "/bucket/source",
                                    "x-amz-copy-source-range": "bytes=0-99999999"})
        self.assertEqual(bad.code, "NoSuchUpload")

    def test_keepalive(self) -> None:
        """
        A CompleteMultipartUpload that takes long starts its answer (200
        and the XML declaration) and sends spaces until its document.
        """
        upload_id = self.create()
        first = self.upload(upload_id, 1, self.parts[0])
        second = self.upload(upload_id, 2, self.parts[2])
        held: list[Deferred[bytes]] = []
        read_blob = self.store.read_blob

        def slow(blob: str) -> Deferred[bytes]:
            held.append(Deferred())
            held[-1].addCallback(lambda _: read_blob(blob))
            return held[-1]

        self.patch(self.store, "read_blob", slow)
        pending = self.send("POST", f"/bucket/big?uploadId={upload_id}",
                            self.complete_body([(1, first), (2, second)]))
        self.assertEqual(pending.transport.value(), b"")
        self.clock.advance(10)
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertTrue(pending.transport.value().startswith(b"HTTP/1.1 200"))
        while held:
            held.pop(0).callback(None)
        response = pending.response()
        self.assertTrue(response.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n  '))
        self.assertEqual(response.find("Key"), "big")
        self.patch(self.store, "read_blob", read_blob)
        self.assertEqual(self.get("big").body, self.parts[0] + self.parts[2])


class AuthenticationTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()

    def test_wrong_secret(self) -> None:
        response = self.request("GET", "/", secret="wrong")
        self.assertEqual((response.status, response.code), (403, "SignatureDoesNotMatch"))

    def test_wrong_secret_stores_nothing(self) -> None:
        response = self.request("PUT", "/bucket/file", b"data" * 1000, secret="wrong")
        self.assertEqual(response.code, "SignatureDoesNotMatch")
        self.assertEqual(self.blob_count(), 0)

    def test_unsigned(self) -> None:
        response = self.request("GET", "/", sign=False)
        self.assertEqual((response.status, response.code), (403, "AccessDenied"))

    def test_presigned(self) -> None:
        self.put("file", b"shared")
        request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/file")
        S3SigV4QueryAuth(Credentials(ACCESS, SECRET), "s3", "us-east-1", 60).add_auth(request)
        path = request.url.removeprefix(f"http://{HOST}")
        self.assertEqual(self.request("GET", path, sign=False).body, b"shared")


class AnonymousTests(GatewayTestCase):
    anonymous = True

    def test_unsigned_from_loopback(self) -> None:
        self.assertEqual(self.request("PUT", "/open", sign=False).status, 200)
        self.assertEqual(self.request("PUT", "/open/file", b"data", sign=False).status, 200)
        self.assertEqual(self.request("GET", "/open/file", sign=False).body, b"data")

    def test_other_host(self) -> None:
        """
        A page that renamed itself to 127.0.0.1 (DNS rebinding), or one of
        another origin, is refused.
        """
        response = self.request("GET", "/", sign=False, headers={"Host": "evil.example"})
        self.assertEqual((response.status, response.code), (403, "AccessDenied"))
        response = self.request("GET", "/", sign=False, headers={"Origin": "http://evil.example"})
        self.assertEqual(response.status, 403)

    def test_signed_still_checked(self) -> None:
        self.assertEqual(self.request("GET", "/", secret="wrong").code, "SignatureDoesNotMatch")


class QuotaTests(GatewayTestCase):
    """
    vblob's C{testquotas.js} and C{testobjlimit.js}, answered 403
    QuotaExceeded (not vblob's 500, which clients retry).
    """

    quota = 10000
    max_objects = 3

    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()

    def test_bytes(self) -> None:
        self.put("a", content(6000))
        response = self.request("PUT", "/bucket/b", content(5000))
        self.assertEqual((response.status, response.code), (403, "QuotaExceeded"))
        self.assertEqual(self.get("b").code, "NoSuchKey")
        self.put("a", content(9000))  # (replacing: counted once)
        self.request("DELETE", "/bucket/a")
        self.put("b", content(5000))

    def test_objects(self) -> None:
        for key in "abc":
            self.put(key, b"x")
        response = self.request("PUT", "/bucket/d", b"x")
        self.assertEqual((response.status, response.code), (403, "QuotaExceeded"))
        self.put("a", b"again")
        self.request("DELETE", "/bucket/c")
        self.put("d", b"x")

    def test_streamed_without_length(self) -> None:
        """
        A chunked body with no length announced is stopped once it passes
        the quota.
        """
        body = content(12000)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 3000]), body[i:i + 3000])
                           for i in range(0, len(body), 3000)) + b"0\r\n\r\n"
        response = self.request("PUT", "/bucket/big", sign=False, chunks=[chunked],
                                headers={"Transfer-Encoding": "chunked"})
        self.assertEqual(response.status, 403)  # unsigned first: not allowed
        self.gateway._anonymous = True
        response = self.request("PUT", "/bucket/big", sign=False, chunks=[chunked],
                                headers={"Transfer-Encoding": "chunked"})
        self.assertEqual((response.status, response.code), (403, "QuotaExceeded"))
        self.assertEqual(self.blob_count(), 0)

    def test_parts(self) -> None:
        upload_id = self.request("POST", "/bucket/big?uploads").find("UploadId")
        self.request("PUT", f"/bucket/big?partNumber=1&uploadId={upload_id}", content(8000))
        response = self.request("PUT", f"/bucket/big?partNumber=2&uploadId={upload_id}",
                                content(3000))
        self.assertEqual(response.code, "QuotaExceeded")


class ImportTests(GatewayTestCase):
    """
    A stream of the network imported under a name by its sd hash: its
    blobs come from another store (the peers) when they are read.
    """

    def setUp(self) -> None:
        super().setUp()
        self.network = self.make_store("peer")
        self.fetcher = self.fetch
        self.build()
        self.make_bucket()
        self.data = content(2 * CHUNK + 77)
        creator = StreamCreator(self.network, run_inline, "film.mp4")
        self.successResultOf(creator.write(self.data))
        self.sd_hash = self.successResultOf(creator.finish()).sd_hash

    def fetch(self, blob: str) -> Deferred[None]:
        def copy(data: bytes) -> Deferred[None]:
            return self.store.put_blob(data, blob).addCallback(lambda _: None)

        return self.network.read_blob(blob).addCallback(copy)

    def import_(self, key: str = "film", sd_hash: str | None = None, body: bytes = b"") -> Any:
        return self.request("PUT", f"/bucket/{key}", body,
                            {"x-p2pblob-sd-hash": sd_hash or self.sd_hash})

    def test_import(self) -> None:
        response = self.import_()
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("etag"), f'"{self.sd_hash}"')
        hashes = self.network.index.stream_blobs(self.sd_hash)
        # the descriptor and the last blob, for the size
        self.assertEqual(self.fetched, [self.sd_hash, hashes[-1]])
        head = self.request("HEAD", "/bucket/film")
        self.assertEqual(head.header("content-length"), str(len(self.data)))
        got = self.get("film")
        self.assertEqual(got.body, self.data)
        self.assertEqual(sorted(self.fetched), sorted(hashes))
        # read in full: its ETag is now the MD5, and the sd hash still matches
        etag = f'"{_md5(self.data)}"'
        self.assertEqual(self.request("HEAD", "/bucket/film").header("etag"), etag)
        self.assertEqual(self.get("film", headers={"If-Match": f'"{self.sd_hash}"'}).status, 200)
        listing = self.request("GET", "/bucket?list-type=2")
        self.assertEqual(listing.find("Contents/ETag"), etag)

    def test_delete_removes(self) -> None:
        self.import_()
        self.get("film")
        self.request("DELETE", "/bucket/film")
        self.assertFalse(self.store.index.has_stream(self.sd_hash))
        self.assertEqual(self.blob_count(), 0)

    def test_stream_held_before(self) -> None:
        """
        A stream the store recorded before (published, downloaded) is only
        unnamed.
        """
        creator = StreamCreator(self.store, run_inline, "mine")
        self.successResultOf(creator.write(b"mine"))
        mine = self.successResultOf(creator.finish()).sd_hash
        self.assertEqual(self.import_("mine", mine).status, 200)
        self.assertEqual(self.get("mine").body, b"mine")
        self.request("DELETE", "/bucket/mine")
        self.assertTrue(self.store.index.has_stream(mine))

    def test_last_blob_missing(self) -> None:
        """
        An import whose last blob no peer gives is refused (503, which
        clients retry), and leaves nothing behind.
        """
        last = self.network.index.stream_blobs(self.sd_hash)[-1]
        self.successResultOf(self.network.delete_blobs([last]))
        response = self.import_()
        self.assertEqual((response.status, response.code), (503, "ServiceUnavailable"))
        self.assertFalse(self.store.index.has_stream(self.sd_hash))
        self.assertEqual(self.blob_count(), 0)
        self.assertEqual(self.get("film").code, "NoSuchKey")

    def test_unknown(self) -> None:
        response = self.import_(sd_hash="ab" * 48)
        self.assertEqual((response.status, response.code), (404, "NoSuchKey"))
        self.assertEqual(self.import_(sd_hash="nothex").code, "InvalidArgument")

    def test_with_body(self) -> None:
        self.assertEqual(self.import_(body=b"data").code, "InvalidRequest")


class RawBlobTests(GatewayTestCase):
    def test_raw_blobs(self) -> None:
        data = b"a raw blob"
        name = blob_hash(data)
        self.assertEqual(self.request("PUT", f"/blobs/{blob_hash(b'x')}", data).code,
                         "BadDigest")
        response = self.request("PUT", f"/blobs/{name}", data)
        self.assertEqual((response.status, response.header("etag")), (200, f'"{name}"'))
        got = self.request("GET", f"/blobs/{name}")
        self.assertEqual(got.body, data)
        ranged = self.request("GET", f"/blobs/{name}", headers={"Range": "bytes=2-4"})
        self.assertEqual((ranged.status, ranged.body), (206, data[2:5]))
        self.assertEqual(self.request("HEAD", f"/blobs/{name}").header("content-length"),
                         str(len(data)))
        self.assertEqual(self.request("GET", "/blobs").findall("Contents/Key"), [name])
        self.assertEqual(self.request("DELETE", f"/blobs/{name}").status, 405)
        self.assertEqual(self.request("GET", f"/blobs/{blob_hash(b'y')}").code, "NoSuchKey")
        self.assertEqual(self.request("HEAD", "/blobs").status, 200)

    def test_fetched(self) -> None:
        network = self.make_store("peer")
        blob = self.successResultOf(network.put_blob(b"elsewhere"))

        def fetch(name: str) -> Deferred[None]:
            return network.read_blob(name).addCallback(
                lambda data: self.store.put_blob(data, name)).addCallback(lambda _: None)

        self.fetcher = fetch
        self.build()
        self.assertEqual(self.request("GET", f"/blobs/{blob.blob_hash}").body, b"elsewhere")
