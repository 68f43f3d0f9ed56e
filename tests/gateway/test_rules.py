"""
Tests for L{p2pblob.gateway.rules} and L{p2pblob.gateway.xml}: S3's rules
as pure functions, and the gateway's XML.
"""

from __future__ import annotations

import base64
import hashlib
from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.gateway.rules import (
    Conditions,
    check_bucket_name,
    check_key,
    content_md5,
    copy_source,
    crc32_header,
    evaluate,
    http_date,
    multipart_etag,
    parse_http_date,
    stored_headers,
    user_metadata,
)
from p2pblob.gateway.xml import (
    NAMESPACE,
    Entry,
    Listing,
    S3Error,
    error_document,
    iso_date,
    list_objects,
    parse_complete,
    parse_delete,
)

NOW = 1_800_000_000.0


class BucketNameTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for name in ["abc", "my-bucket", "my.bucket.1", "a" * 63, "0day"]:
            check_bucket_name(name)

    def test_invalid(self) -> None:
        for name in ["ab", "a" * 64, "Abc", "a_b", "-abc", "abc-", "a..b", "a.-b", "a-.b",
                     "192.168.1.1", "xn--abc", "sthree-x", "abc-s3alias", "abc--ol-s3", "ab c"]:
            with self.assertRaises(S3Error, msg=name) as caught:
                check_bucket_name(name)
            self.assertEqual(caught.exception.code, "InvalidBucketName")

    def test_reserved(self) -> None:
        with self.assertRaises(S3Error) as caught:
            check_bucket_name("blobs")
        self.assertEqual(caught.exception.status, 409)


class KeyTests(SynchronousTestCase):
    def test_decoded(self) -> None:
        self.assertEqual(check_key(b"a%20b/%C3%BC+c"), "a b/ü+c")

    def test_invalid(self) -> None:
        for raw, code in [(b"", "InvalidArgument"), (b"%FF", "InvalidArgument"),
                          (b"x" * 1025, "KeyTooLongError"), (b"%C3%BC" * 513, "KeyTooLongError")]:
            with self.assertRaises(S3Error) as caught:
                check_key(raw)
            self.assertEqual(caught.exception.code, code)

    def test_copy_source(self) -> None:
        self.assertEqual(copy_source(b"/bucket/a%20b"), ("bucket", "a b"))
        self.assertEqual(copy_source(b"bucket/dir/key"), ("bucket", "dir/key"))
        for value in [b"bucket", b"/bucket/", b"/bucket/key?versionId=1"]:
            self.assertRaises(S3Error, copy_source, value)


class DateTests(SynchronousTestCase):
    def test_rfc1123(self) -> None:
        self.assertEqual(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertEqual(parse_http_date(b"Thu, 01 Jan 1970 00:01:00 GMT"), 60.0)

    def test_other_forms(self) -> None:
        self.assertEqual(parse_http_date(b"Thursday, 01-Jan-70 00:01:00 GMT"), 60.0)
        self.assertEqual(parse_http_date(b"Thu Jan  1 00:01:00 1970"), 60.0)
        self.assertIsNone(parse_http_date(b"yesterday"))
        self.assertIsNone(parse_http_date(None))

    def test_iso(self) -> None:
        self.assertEqual(iso_date(1.25), "1970-01-01T00:00:01.250Z")

    @given(st.integers(min_value=0, max_value=2**33))
    def test_round_trip(self, seconds: int) -> None:
        self.assertEqual(parse_http_date(http_date(seconds).encode()), seconds)


class ConditionTests(SynchronousTestCase):
    def status(self, modified: float = NOW - 100, **headers: str) -> int | None:
        conditions = Conditions.of({name.replace("_", "-").encode(): value.encode()
                                    for name, value in headers.items()})
        return evaluate(conditions, ("abc",), modified, NOW)

    def test_none(self) -> None:
        self.assertIsNone(self.status())

    def test_match(self) -> None:
        self.assertIsNone(self.status(if_match='"abc"'))
        self.assertIsNone(self.status(if_match='"x", "abc"'))
        self.assertIsNone(self.status(if_match="abc"))
        self.assertIsNone(self.status(if_match="*"))
        self.assertEqual(self.status(if_match='"x"'), 412)

    def test_none_match(self) -> None:
        self.assertEqual(self.status(if_none_match='"abc"'), 304)
        self.assertEqual(self.status(if_none_match='W/"abc"'), 304)
        self.assertEqual(self.status(if_none_match="*"), 304)
        self.assertIsNone(self.status(if_none_match='"x"'))

    def test_dates(self) -> None:
        before, after = http_date(NOW - 1000), http_date(NOW - 10)
        self.assertEqual(self.status(if_unmodified_since=before), 412)
        self.assertIsNone(self.status(if_unmodified_since=after))
        self.assertIsNone(self.status(if_modified_since=before))
        self.assertEqual(self.status(if_modified_since=after), 304)
        # to the second: a fraction does not make it modified
        self.assertEqual(self.status(modified=NOW - 100.5,
                                     if_modified_since=http_date(NOW - 101)), 304)
        # in the future, or not a date: ignored
        self.assertIsNone(self.status(if_modified_since=http_date(NOW + 10)))
        self.assertIsNone(self.status(if_unmodified_since="garbage"))

    def test_precedence(self) -> None:
        before, after = http_date(NOW - 1000), http_date(NOW - 10)
        self.assertIsNone(self.status(if_match='"abc"', if_unmodified_since=before))
        self.assertIsNone(self.status(if_none_match='"x"', if_modified_since=after))
        self.assertEqual(self.status(if_none_match='"abc"', if_modified_since=before), 304)

    def test_copy(self) -> None:
        conditions = Conditions.of({b"x-amz-copy-source-if-none-match": b'"abc"'},
                                   b"x-amz-copy-source-")
        self.assertEqual(evaluate(conditions, ("abc",), NOW, NOW, copy=True), 412)
        conditions = Conditions.of(
            {b"x-amz-copy-source-if-modified-since": http_date(NOW).encode()},
            b"x-amz-copy-source-")
        self.assertEqual(evaluate(conditions, ("abc",), NOW - 10, NOW, copy=True), 412)


class HeaderTests(SynchronousTestCase):
    def test_stored(self) -> None:
        content_type, stored = stored_headers({b"content-type": b"text/plain",
                                               b"cache-control": b"no-cache",
                                               b"x-other": b"no"})
        self.assertEqual((content_type, stored), ("text/plain", {"cache-control": "no-cache"}))
        self.assertEqual(stored_headers({})[0], "binary/octet-stream")

    def test_metadata(self) -> None:
        self.assertEqual(user_metadata({b"x-amz-meta-colour": b"blue", b"x-amz-other": b"x"}),
                         {"colour": "blue"})
        with self.assertRaises(S3Error) as caught:
            user_metadata({b"x-amz-meta-big": b"x" * 2048})
        self.assertEqual(caught.exception.code, "MetadataTooLarge")

    def test_content_md5(self) -> None:
        digest = hashlib.md5(b"x").digest()
        self.assertEqual(content_md5({b"content-md5": base64.b64encode(digest)}), digest)
        self.assertIsNone(content_md5({}))
        for value in [b"!!", base64.b64encode(b"short")]:
            with self.assertRaises(S3Error) as caught:
                content_md5({b"content-md5": value})
            self.assertEqual(caught.exception.code, "InvalidDigest")

    def test_crc32(self) -> None:
        """
        As botocore writes it.
        """
        import zlib

        from botocore.httpchecksum import Crc32Checksum

        theirs = Crc32Checksum()
        theirs.update(b"Hello World")
        self.assertEqual(crc32_header(zlib.crc32(b"Hello World")),
                         base64.b64encode(theirs.digest()))

    def test_multipart_etag(self) -> None:
        parts = [hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()]
        joined = hashlib.md5(hashlib.md5(b"a").digest() + hashlib.md5(b"b").digest())
        self.assertEqual(multipart_etag(parts), joined.hexdigest() + "-2")


class XMLTests(SynchronousTestCase):
    def test_error(self) -> None:
        error = S3Error(416, "InvalidRange", "no <bytes> & such",
                        extra={"ActualObjectSize": "3"})
        root = ElementTree.fromstring(error_document(error, "/b/k", "ID"))
        self.assertEqual([(e.tag, e.text) for e in root],
                         [("Code", "InvalidRange"), ("Message", "no <bytes> & such"),
                          ("ActualObjectSize", "3"), ("Resource", "/b/k"), ("RequestId", "ID")])

    def test_listing(self) -> None:
        listing = Listing([Entry("a b", 0.0, "etag", 3)], ["c d/"], True, "c d/")
        body = list_objects("bucket", listing, prefix="", delimiter="/", max_keys=2,
                            url_encoded=True, version=1, marker="")
        root = ElementTree.fromstring(body)
        self.assertEqual(root.tag, f"{{{NAMESPACE}}}ListBucketResult")
        found = {e.tag.rpartition("}")[2]: e for e in root}
        self.assertEqual(found["NextMarker"].text, "c%20d/")
        self.assertEqual(found["Contents"][0].text, "a%20b")
        self.assertEqual(found["Contents"][2].text, '"etag"')

    def test_parse_complete(self) -> None:
        body = (b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b'<Part><ETag>"a"</ETag><PartNumber>1</PartNumber></Part>'
                b"<Part><PartNumber>2</PartNumber><ETag>b</ETag><ChecksumCRC32>x</ChecksumCRC32>"
                b"</Part></CompleteMultipartUpload>")
        self.assertEqual(parse_complete(body), [(1, "a"), (2, "b")])
        for bad in [b"<CompleteMultipartUpload/>", b"<Other/>", b"<", b"x" * (1 << 21),
                    b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag>"
                    b"</Part></CompleteMultipartUpload>",
                    b'<!DOCTYPE a [<!ENTITY e "e">]><CompleteMultipartUpload/>']:
            with self.assertRaises(S3Error) as caught:
                parse_complete(bad)
            self.assertEqual(caught.exception.code, "MalformedXML")

    def test_parse_delete(self) -> None:
        body = b"<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object></Delete>"
        self.assertEqual(parse_delete(body), (["a&b"], True))
        many = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>"
        self.assertRaises(S3Error, parse_delete, many)
