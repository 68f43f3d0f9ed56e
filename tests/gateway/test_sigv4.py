"""
Tests for L{p2pblob.gateway.sigv4}.

The requests are signed by botocore, an implementation independent of
ours: its L{S3SigV4Auth} for the C{Authorization} header, its
L{S3SigV4QueryAuth} and boto3's C{generate_presigned_url} for presigned
URLs, and boto3 itself, talking to a capture server on 127.0.0.1, for whole
requests as a client sends them (C{aws-chunked} bodies with checksum
trailers are only sent over TLS).  botocore never signs chunks: the signed
C{aws-chunked} bodies are checked against the worked examples of the AWS
documentation ("Signature Calculations for the Authorization Header:
Transferring Payload in Multiple Chunks" and "Signature calculations for
trailing headers"), and the small chunk signer here is checked against the
same examples before it makes random bodies.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import hmac
import ipaddress
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from p2pblob.errors import P2PBlobError
from p2pblob.gateway.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    BodyChecker,
    SignatureError,
    Verified,
    is_anonymous,
    verify,
)

ACCESS_KEY = "AKIDEXAMPLE0000000"
SECRET = "s3cr3t/with+odd=chars"
KEYS = {ACCESS_KEY: SECRET, "other": "another secret"}
ENDPOINT = "http://127.0.0.1:8333"

# The example credentials and times of the AWS documentation.
DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = calendar.timegm((2013, 5, 24, 0, 0, 0))
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
DOC_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
DOC_TRAILER_CHUNK_SIGNATURES = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]
DOC_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
DOC_TRAILERS = (
    f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n"
)


def amz_time(headers: Headers | dict[str, str]) -> float:
    """
    The time a request was signed at, from its C{x-amz-date}.
    """
    if isinstance(headers, Headers):
        text = (headers.getRawHeaders(b"x-amz-date") or [b""])[0].decode()
    else:
        text = headers["X-Amz-Date"]
    return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))


class Signed:
    """
    A request as the gateway would receive it.
    """

    def __init__(self, method: bytes, url: str, headers: Headers, body: bytes = b"") -> None:
        parts = urlsplit(url)
        self.method = method
        self.path = parts.path.encode("ascii")
        self.query = parts.query.encode("ascii")
        self.headers = headers
        self.body = body
        self.now = amz_time(headers) if headers.hasHeader(b"x-amz-date") else 0.0

    def verify(
        self,
        *,
        method: bytes | None = None,
        path: bytes | None = None,
        query: bytes | None = None,
        headers: Headers | None = None,
        keys: dict[str, str] = KEYS,
        now: float | None = None,
        **kwargs: Any,
    ) -> Verified:
        """
        Verify the request, or a variant of it.
        """
        return verify(
            self.method if method is None else method,
            self.path if path is None else path,
            self.query if query is None else query,
            self.headers if headers is None else headers,
            keys,
            self.now if now is None else now,
            **kwargs,
        )


def sign(
    method: str,
    url: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    access_key: str = ACCESS_KEY,
    region: str = "us-east-1",
    signer: type[SigV4Auth] = S3SigV4Auth,
    service: str = "s3",
    unsigned_payload: bool = False,
) -> Signed:
    """
    Sign a request with botocore's signer, and give it as it arrives.
    """
    request = AWSRequest(method=method, url=url, data=body)
    items = headers.items() if isinstance(headers, dict) else headers or []
    for name, value in items:
        request.headers[name] = value  # HTTPHeaders: a repeated name adds a value
    if unsigned_payload:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    signer(Credentials(access_key, secret), service, region).add_auth(request)
    received = Headers()
    received.addRawHeader(b"Host", urlsplit(url).netloc.encode("ascii"))
    for name, value in request.headers.items():
        received.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
    return Signed(method.encode("ascii"), request.url, received, body)


def presign(url: str, expires: int = 3600, headers: dict[str, str] | None = None) -> Signed:
    """
    Presign a URL with botocore's query signer.
    """
    request = AWSRequest(method="GET", url=url, headers=headers or {})
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1", expires=expires).add_auth(
        request
    )
    return received_presigned("GET", request.url, headers)


def received_presigned(method: str, url: str, headers: dict[str, str] | None = None) -> Signed:
    received = Headers({b"host": [urlsplit(url).netloc.encode("ascii")]})
    for name, value in (headers or {}).items():
        received.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
    signed = Signed(method.encode("ascii"), url, received)
    query = dict(pair.split("=", 1) for pair in urlsplit(url).query.split("&"))
    signed.now = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    return signed


def replace_header(headers: Headers, name: bytes, *values: bytes) -> Headers:
    copy = headers.copy()
    copy.setRawHeaders(name, list(values))
    return copy


class ErrorAssertions(SynchronousTestCase):
    def assertSignatureError(
        self, code: str, status: int, call: Callable[..., object], *args: Any, **kwargs: Any
    ) -> SignatureError:
        """
        C{call(*args, **kwargs)} raises a L{SignatureError} with this code
        and status.
        """
        with self.assertRaises(SignatureError) as raised:
            call(*args, **kwargs)
        error = raised.exception
        self.assertEqual((error.code, error.status), (code, status), error.message)
        self.assertIsInstance(error, P2PBlobError)
        self.assertEqual(str(error), error.message)
        return error


class HeaderAuthTests(ErrorAssertions):
    """
    Requests signed with the C{Authorization} header.
    """

    def test_get(self) -> None:
        """
        A request botocore signed is accepted, saying who signed it and
        what the body's hash is.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/key.txt")
        verified = signed.verify()
        self.assertEqual(verified.access_key, ACCESS_KEY)
        self.assertEqual(verified.payload, hashlib.sha256(b"").hexdigest())
        self.assertEqual(verified.timestamp[:8], verified.scope[:8])
        self.assertTrue(verified.scope.endswith("/us-east-1/s3/aws4_request"))
        self.assertFalse(verified.presigned)
        self.assertEqual(len(verified.seed_signature), 64)
        self.assertNotIn("signing_key", repr(verified))

    def test_unicode_and_spaces(self) -> None:
        """
        Keys with spaces, non-ASCII letters and reserved characters, encoded
        as boto3 encodes them, are accepted.
        """
        for key in ["a b/ü.txt", "a+b=c&d", "x//y/../z", "~tilde*star'quote(1)!", "%41"]:
            path = quote(f"/bucket/{key}", safe="/~")
            signed = sign("PUT", f"{ENDPOINT}{path}", body=b"data")
            self.assertEqual(signed.verify().access_key, ACCESS_KEY, key)

    def test_path_as_sent(self) -> None:
        """
        A client that signs the path exactly as it sent it, with characters
        escaped differently from the strict form, is accepted too; the path
        is never normalised (dots and double slashes matter).
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/it's%7e(1)!/%2f")
        signed.verify()
        for other in [b"/bucket/it's~(1)!//", b"/bucket/it's%7e(1)!/"]:
            self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, path=other)
        dotted = sign("GET", f"{ENDPOINT}/bucket/a/./b/../c")
        dotted.verify()
        self.assertSignatureError("SignatureDoesNotMatch", 403, dotted.verify, path=b"/bucket/a/c")

    def test_query(self) -> None:
        """
        Repeated names, empty values, names without C{=}, and values with
        spaces and reserved characters are canonicalised as botocore does,
        whatever their order on the wire.
        """
        query = "prefix=a%20b%2Fc&list-type=2&prefix=a&acl&delimiter=&marker=%C3%BC%2B"
        signed = sign("GET", f"{ENDPOINT}/bucket?{query}")
        signed.verify()
        signed.verify(query=b"&".join(reversed(signed.query.split(b"&"))))
        signed.verify(query=signed.query.replace(b"%2F", b"%2f").replace(b"%C3%BC", b"%c3%bc"))
        for tampered in [
            signed.query + b"&versionId=1",
            signed.query.replace(b"list-type=2", b"list-type=1"),
            signed.query.replace(b"&acl", b""),
            signed.query.replace(b"delimiter=", b"delimiter=%2F"),
        ]:
            self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, query=tampered)

    def test_query_params(self) -> None:
        """
        A query that botocore encoded itself from parameters (spaces as
        C{%20}, C{+} as C{%2B}) is accepted.
        """
        request = AWSRequest(
            method="GET",
            url=f"{ENDPOINT}/bucket",
            params=[("prefix", "a b+c/ü"), ("prefix", "a"), ("empty", "")],
        )
        prepared_url = request.prepare().url
        signed = sign("GET", prepared_url)
        signed.verify()

    def test_header_whitespace(self) -> None:
        """
        Header values are trimmed and their inner white space collapsed;
        a header repeated is joined with commas.
        """
        signed = sign(
            "PUT",
            f"{ENDPOINT}/bucket/k",
            [
                ("x-amz-meta-note", "  two   spaces\tand a tab  "),
                ("x-amz-meta-many", "first"),
                ("x-amz-meta-many", "second"),
            ],
            b"body",
        )
        self.assertEqual(signed.headers.getRawHeaders(b"x-amz-meta-many"), [b"first", b"second"])
        signed.verify()
        signed.verify(
            headers=replace_header(signed.headers, b"x-amz-meta-note", b"two spaces and a tab")
        )
        swapped = replace_header(signed.headers, b"x-amz-meta-many", b"second", b"first")
        self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, headers=swapped)

    def test_wrong_secret(self) -> None:
        """
        A request signed with another secret is refused with
        C{SignatureDoesNotMatch}, and the error gives the canonical request
        and string to sign, as S3 does.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/k?acl", secret="not the secret")
        error = self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify)
        self.assertEqual(error.extra["AWSAccessKeyId"], ACCESS_KEY)
        self.assertTrue(error.extra["CanonicalRequest"].startswith("GET\n/bucket/k\nacl=\n"))
        self.assertTrue(error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n"))
        self.assertNotIn(SECRET, repr(error.extra))

    def test_unknown_key(self) -> None:
        signed = sign("GET", f"{ENDPOINT}/bucket/k", access_key="nobody")
        error = self.assertSignatureError("InvalidAccessKeyId", 403, signed.verify)
        self.assertEqual(error.extra["AWSAccessKeyId"], "nobody")
        other = sign("GET", f"{ENDPOINT}/b")
        self.assertSignatureError("InvalidAccessKeyId", 403, other.verify, keys={})

    def test_other_key(self) -> None:
        """
        Each access key has its own secret.
        """
        signed = sign("GET", f"{ENDPOINT}/b", access_key="other", secret="another secret")
        self.assertEqual(signed.verify().access_key, "other")
        swapped = sign("GET", f"{ENDPOINT}/b", access_key="other", secret=SECRET)
        self.assertSignatureError("SignatureDoesNotMatch", 403, swapped.verify)

    def test_tampered(self) -> None:
        """
        Changing the method, the path, a signed header or the body's hash
        breaks the signature.
        """
        signed = sign(
            "PUT",
            f"{ENDPOINT}/bucket/k",
            {"x-amz-meta-color": "blue", "Content-Type": "a/b"},
            b"x",
        )
        signed.verify()
        self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, method=b"POST")
        for path in [b"/bucket/K", b"/bucket/k/", b"/bucket//k"]:
            self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, path=path)
        other_hash = hashlib.sha256(b"y").hexdigest().encode()
        for name, value in [
            (b"x-amz-meta-color", b"red"),
            (b"content-type", b"a/c"),
            (b"host", b"example.com"),
            (b"x-amz-content-sha256", other_hash),
            (b"x-amz-content-sha256", UNSIGNED_PAYLOAD.encode()),
        ]:
            headers = replace_header(signed.headers, name, value)
            self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, headers=headers)

    def test_unsigned_headers_ignored(self) -> None:
        """
        Headers outside SignedHeaders (C{User-Agent}, C{Expect}) may change.
        """
        signed = sign("PUT", f"{ENDPOINT}/bucket/k", {"Expect": "100-continue"}, b"x")
        headers = replace_header(signed.headers, b"user-agent", b"curl")
        headers.setRawHeaders(b"expect", [b"nothing"])
        signed.verify(headers=headers)

    def test_skew(self) -> None:
        """
        A request more than C{max_skew} seconds (15 minutes unless told)
        from the server's clock is refused with C{RequestTimeTooSkewed}.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/k")
        for delta in [-900, 0, 900]:
            signed.verify(now=signed.now + delta)
        for delta in [-901, 901, 10**6]:
            error = self.assertSignatureError(
                "RequestTimeTooSkewed", 403, signed.verify, now=signed.now + delta
            )
            self.assertEqual(error.extra["MaxAllowedSkewMilliseconds"], "900000")
        signed.verify(now=signed.now + 3000, max_skew=3600)
        self.assertSignatureError(
            "RequestTimeTooSkewed", 403, signed.verify, now=signed.now + 61, max_skew=60
        )

    def test_region(self) -> None:
        """
        Any region is accepted unless one is configured; the service must
        be C{s3}.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/k", region="eu-west-3")
        self.assertIn("/eu-west-3/", signed.verify().scope)
        signed.verify(region="eu-west-3")
        error = self.assertSignatureError(
            "AuthorizationHeaderMalformed", 400, signed.verify, region="us-east-1"
        )
        self.assertEqual(error.extra["Region"], "us-east-1")
        other = sign("GET", f"{ENDPOINT}/bucket/k", service="sqs", signer=SigV4Auth)
        self.assertSignatureError("AuthorizationHeaderMalformed", 400, other.verify)

    def test_credential_date(self) -> None:
        """
        The credential's date must be the request's.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/k")
        authorization = signed.headers.getRawHeaders(b"authorization")[0]
        day = signed.headers.getRawHeaders(b"x-amz-date")[0][:8]
        moved = authorization.replace(b"/" + day + b"/", b"/20000101/")
        headers = replace_header(signed.headers, b"authorization", moved)
        self.assertSignatureError(
            "AuthorizationHeaderMalformed", 400, signed.verify, headers=headers
        )

    def test_required_headers(self) -> None:
        """
        C{x-amz-date} and C{x-amz-content-sha256} are required and must be
        signed, as must C{host}.
        """
        signed = sign("GET", f"{ENDPOINT}/bucket/k")
        no_date = signed.headers.copy()
        no_date.removeHeader(b"x-amz-date")
        self.assertSignatureError("AccessDenied", 403, signed.verify, headers=no_date)
        bad_date = replace_header(signed.headers, b"x-amz-date", b"20130532T000000Z")
        self.assertSignatureError("AccessDenied", 403, signed.verify, headers=bad_date)
        no_payload = signed.headers.copy()
        no_payload.removeHeader(b"x-amz-content-sha256")
        self.assertSignatureError("InvalidRequest", 400, signed.verify, headers=no_payload)
        for bad in [b"abc", b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", b"g" * 64]:
            headers = replace_header(signed.headers, b"x-amz-content-sha256", bad)
            self.assertSignatureError("InvalidArgument", 400, signed.verify, headers=headers)
        authorization = signed.headers.getRawHeaders(b"authorization")[0]
        for name in [b"host;", b"x-amz-content-sha256;", b";x-amz-date"]:
            headers = replace_header(
                signed.headers, b"authorization", authorization.replace(name, b"", 1)
            )
            self.assertSignatureError(
                "AuthorizationHeaderMalformed", 400, signed.verify, headers=headers
            )

    def test_malformed_authorization(self) -> None:
        signed = sign("GET", f"{ENDPOINT}/bucket/k")
        good = signed.headers.getRawHeaders(b"authorization")[0]
        credential, names, signature = good.split(b" ", 1)[1].split(b", ")

        def authorized(*parts: bytes) -> Headers:
            value = b"AWS4-HMAC-SHA256 " + b", ".join(parts)
            return replace_header(signed.headers, b"authorization", value)

        for value in [b"AWS " + ACCESS_KEY.encode() + b":x", b"AWS4-ECDSA-P256-SHA256 x"]:
            headers = replace_header(signed.headers, b"authorization", value)
            self.assertSignatureError("InvalidRequest", 400, signed.verify, headers=headers)
        for headers in [
            replace_header(signed.headers, b"authorization", b"Bearer token"),
            replace_header(signed.headers, b"authorization", good, good),
            replace_header(signed.headers, b"authorization", "AWS4-HMAC-SHA256 ü=1".encode()),
            authorized(credential, names),
            authorized(credential, names, signature, signature),
            authorized(b"Credential=" + ACCESS_KEY.encode() + b"/x", names, signature),
            authorized(credential.replace(b"aws4_request", b"aws5_request"), names, signature),
            authorized(credential, names.upper(), signature),
            authorized(credential, names + b";;host", signature),
            authorized(credential, names, signature.upper()),
            authorized(credential, names, b"Signature=abc"),
        ]:
            self.assertSignatureError(
                "AuthorizationHeaderMalformed", 400, signed.verify, headers=headers
            )
        # The same fields without spaces after the commas are fine.
        compact = replace_header(signed.headers, b"authorization", good.replace(b", ", b","))
        signed.verify(headers=compact)

    def test_anonymous(self) -> None:
        """
        A request with no authentication is anonymous; L{verify} refuses it.
        """
        headers = Headers({b"host": [b"127.0.0.1"]})
        self.assertTrue(is_anonymous(headers, b""))
        self.assertTrue(is_anonymous(headers, b"list-type=2&prefix=X-Amz-Signature"))
        self.assertFalse(is_anonymous(headers, b"X-Amz-Signature=abc"))
        self.assertFalse(is_anonymous(headers, b"a=1&X-Amz-Credential=abc"))
        self.assertFalse(is_anonymous(Headers({b"authorization": [b"x"]}), b""))
        self.assertFalse(is_anonymous(sign("GET", f"{ENDPOINT}/b").headers, b""))
        self.assertSignatureError("AccessDenied", 403, verify, b"GET", b"/b", b"", headers, KEYS, 0)

    def test_both_mechanisms(self) -> None:
        signed = sign("GET", f"{ENDPOINT}/bucket/k")
        self.assertSignatureError(
            "InvalidRequest", 400, signed.verify, query=b"X-Amz-Algorithm=AWS4-HMAC-SHA256"
        )

    def test_unsigned_payload(self) -> None:
        signed = sign("PUT", "https://127.0.0.1:8333/b/k", body=b"x", unsigned_payload=True)
        self.assertEqual(signed.verify().payload, UNSIGNED_PAYLOAD)


class PresignedTests(ErrorAssertions):
    """
    Presigned URLs: the signature in the query.
    """

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=ENDPOINT,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def test_boto3_get(self) -> None:
        """
        A URL from boto3's C{generate_presigned_url} is accepted until it
        expires, and only with its own path and query.
        """
        url = self.client().generate_presigned_url(
            "get_object",
            Params={"Bucket": "bucket", "Key": "a b/ü+?.txt", "ResponseContentType": "text/x y"},
            ExpiresIn=60,
        )
        signed = received_presigned("GET", url)
        self.assertIn(b"/bucket/a%20b/%C3%BC%2B%3F.txt", signed.path)
        verified = signed.verify()
        self.assertEqual(verified.access_key, ACCESS_KEY)
        self.assertEqual(verified.payload, UNSIGNED_PAYLOAD)
        self.assertTrue(verified.presigned)
        signed.verify(now=signed.now + 60)
        signed.verify(now=signed.now - 900)
        error = self.assertSignatureError("AccessDenied", 403, signed.verify, now=signed.now + 61)
        self.assertEqual(error.message, "Request has expired")
        self.assertEqual(error.extra["X-Amz-Expires"], "60")
        self.assertSignatureError("AccessDenied", 403, signed.verify, now=signed.now - 901)
        for query in [
            signed.query.replace(b"X-Amz-Expires=60", b"X-Amz-Expires=6000"),
            signed.query.replace(b"text%2Fx%20y", b"text%2Fhtml"),
            signed.query + b"&response-content-disposition=attachment",
        ]:
            self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, query=query)
        self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, method=b"DELETE")
        self.assertSignatureError(
            "SignatureDoesNotMatch", 403, signed.verify, path=b"/bucket/other"
        )

    def test_boto3_put(self) -> None:
        """
        A presigned PUT takes any body: the payload is unsigned.
        """
        url = self.client().generate_presigned_url(
            "put_object", Params={"Bucket": "bucket", "Key": "k"}, ExpiresIn=600
        )
        signed = received_presigned("PUT", url, {"Content-Length": "5"})
        verified = signed.verify()
        checker = BodyChecker(verified, signed.headers)
        self.assertEqual(checker.feed(b"hel") + checker.feed(b"lo"), b"hello")
        checker.finish()
        self.assertEqual(checker.md5_hex, hashlib.md5(b"hello").hexdigest())
        self.assertEqual(checker.decoded_length, 5)

    def test_boto3_list(self) -> None:
        url = self.client().generate_presigned_url(
            "list_objects_v2",
            Params={"Bucket": "bucket", "Prefix": "a b/", "Delimiter": "/", "StartAfter": ""},
        )
        received_presigned("GET", url).verify()

    def test_unsigned_amz_header(self) -> None:
        """
        Headers C{x-amz-*} that the URL did not sign are refused; those it
        signed must keep their value.
        """
        signed = presign(f"{ENDPOINT}/bucket/k", headers={"x-amz-meta-a": "1"})
        signed.verify()
        added = signed.headers.copy()
        added.addRawHeader(b"X-Amz-Meta-B", b"2")
        error = self.assertSignatureError("AccessDenied", 403, signed.verify, headers=added)
        self.assertIn("x-amz-meta-b", error.message)
        changed = replace_header(signed.headers, b"x-amz-meta-a", b"2")
        self.assertSignatureError("SignatureDoesNotMatch", 403, signed.verify, headers=changed)
        # Headers that describe the body need not be signed; a body whose
        # chunks would need the signature is refused.
        for mode in [UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_TRAILER, "0" * 64]:
            headers = replace_header(signed.headers, b"x-amz-content-sha256", mode.encode())
            self.assertEqual(signed.verify(headers=headers).payload, mode)
        for mode in [STREAMING_SIGNED, STREAMING_SIGNED_TRAILER]:
            headers = replace_header(signed.headers, b"x-amz-content-sha256", mode.encode())
            self.assertSignatureError("InvalidRequest", 400, signed.verify, headers=headers)

    def test_repeated_and_empty(self) -> None:
        """
        Query parameters repeated or empty, before the signature's own.
        """
        signed = presign(f"{ENDPOINT}/bucket?tagging&b=2&b=1&empty=&x=a%20b")
        signed.verify()

    def test_expires_limit(self) -> None:
        """
        A URL may be valid for at most seven days.
        """
        presign(f"{ENDPOINT}/bucket/k", expires=604800).verify()
        signed = presign(f"{ENDPOINT}/bucket/k", expires=604801)
        self.assertSignatureError("AuthorizationQueryParametersError", 400, signed.verify)

    def test_malformed(self) -> None:
        signed = presign(f"{ENDPOINT}/bucket/k")
        pairs = signed.query.split(b"&")
        for index in range(len(pairs)):
            without = b"&".join(pairs[:index] + pairs[index + 1 :])
            self.assertFalse(is_anonymous(signed.headers, without))
            self.assertSignatureError(
                "AuthorizationQueryParametersError", 400, signed.verify, query=without
            )
        for old, new in [
            (b"X-Amz-Algorithm=AWS4-HMAC-SHA256", b"X-Amz-Algorithm=AWS4-HMAC-SHA1"),
            (b"X-Amz-Expires=3600", b"X-Amz-Expires=soon"),
            (b"X-Amz-Expires=3600", b"X-Amz-Expires=3600&X-Amz-Expires=3600"),
            (b"X-Amz-Date=", b"X-Amz-Date=1"),
            (b"%2Fs3%2F", b"%2Fsqs%2F"),
        ]:
            query = signed.query.replace(old, new)
            self.assertNotEqual(query, signed.query)
            self.assertSignatureError(
                "AuthorizationQueryParametersError", 400, signed.verify, query=query
            )

    def test_wrong_secret(self) -> None:
        url = boto3.client(
            "s3",
            endpoint_url=ENDPOINT,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key="wrong",
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        ).generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
        self.assertSignatureError(
            "SignatureDoesNotMatch", 403, received_presigned("GET", url).verify
        )


def derive_key(secret: str, scope: str) -> bytes:
    """
    The signing key of a scope, per the AWS documentation.
    """
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(
    verified: Verified,
    secret: str,
    chunks: list[bytes],
    trailers: list[tuple[str, str]] | None = None,
) -> bytes:
    """
    An C{aws-chunked} body with signed chunks (and signed trailers if
    C{trailers} is not L{None}), made as the AWS documentation says.
    """
    key = derive_key(secret, verified.scope)
    head = f"{verified.timestamp}\n{verified.scope}\n"
    previous = verified.seed_signature
    body = []
    for chunk in [*chunks, b""]:
        to_sign = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{head}{previous}\n{hashlib.sha256(b'').hexdigest()}\n"
            f"{hashlib.sha256(chunk).hexdigest()}"
        )
        previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        body.append(b"%x;chunk-signature=%s\r\n" % (len(chunk), previous.encode()))
        if chunk:
            body.append(chunk + b"\r\n")
    if trailers is not None:
        canonical = "".join(f"{name}:{value}\n" for name, value in trailers)
        to_sign = (
            f"AWS4-HMAC-SHA256-TRAILER\n{head}{previous}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        for name, value in [*trailers, ("x-amz-trailer-signature", signature)]:
            body.append(f"{name}:{value}\r\n".encode())
    body.append(b"\r\n")
    return b"".join(body)


def unsigned_chunks(chunks: list[bytes], trailers: list[tuple[str, str]]) -> bytes:
    body = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk]
    body.append(b"0\r\n")
    body.extend(f"{name}:{value}\r\n".encode() for name, value in trailers)
    body.append(b"\r\n")
    return b"".join(body)


class StreamingAuth(S3SigV4Auth):
    """
    botocore's S3 signer, for a request whose payload is one of the
    C{STREAMING-…} modes: only the value of C{x-amz-content-sha256} changes.
    """

    mode = STREAMING_SIGNED

    def payload(self, request: AWSRequest) -> str:
        return self.mode


def streaming_request(
    mode: str, length: int, extra: dict[str, str] | None = None
) -> tuple[Signed, Verified]:
    auth = type("Auth", (StreamingAuth,), {"mode": mode})
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Decoded-Content-Length": str(length),
        **(extra or {}),
    }
    signed = sign("PUT", f"{ENDPOINT}/bucket/stream", headers, signer=auth)
    verified = signed.verify()
    return signed, verified


def feed_in_pieces(checker: BodyChecker, body: bytes, cuts: list[int]) -> bytes:
    out = []
    start = 0
    for cut in sorted(cuts) + [len(body)]:
        out.append(checker.feed(body[start:cut]))
        start = max(start, cut)
    return b"".join(out)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class DocumentedExampleTests(ErrorAssertions):
    """
    The worked examples of the AWS documentation: a PUT of 66560 bytes of
    C{a} in chunks of 64 KiB and 1 KiB, without and with a trailer.
    """

    def request(self, trailer: bool, body: bytes) -> tuple[Headers, Verified]:
        if trailer:
            signed_names = (
                "content-encoding;host;x-amz-content-sha256;x-amz-date;"
                "x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer"
            )
            seed, payload = DOC_TRAILER_SEED, STREAMING_SIGNED_TRAILER
        else:
            signed_names = (
                "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                "x-amz-decoded-content-length;x-amz-storage-class"
            )
            seed, payload = DOC_SEED, STREAMING_SIGNED
        headers = Headers(
            {
                b"Host": [b"s3.amazonaws.com"],
                b"x-amz-date": [b"20130524T000000Z"],
                b"x-amz-storage-class": [b"REDUCED_REDUNDANCY"],
                b"Authorization": [
                    f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request,"
                    f"SignedHeaders={signed_names},Signature={seed}".encode()
                ],
                b"x-amz-content-sha256": [payload.encode()],
                b"Content-Encoding": [b"aws-chunked"],
                b"x-amz-decoded-content-length": [b"66560"],
            }
        )
        if trailer:
            headers.setRawHeaders(b"x-amz-trailer", [b"x-amz-checksum-crc32c"])
        else:
            headers.setRawHeaders(b"content-length", [str(len(body)).encode()])
        verified = verify(
            b"PUT",
            b"/examplebucket/chunkObject.txt",
            b"",
            headers,
            {DOC_KEY: DOC_SECRET},
            DOC_NOW,
            region="us-east-1",
        )
        self.assertEqual(verified.seed_signature, seed)
        self.assertEqual(verified.payload, payload)
        return headers, verified

    def body(self, signatures: list[str], trailers: bytes = b"") -> bytes:
        return (
            b"10000;chunk-signature=%s\r\n" % signatures[0].encode()
            + b"a" * 65536
            + b"\r\n400;chunk-signature=%s\r\n" % signatures[1].encode()
            + b"a" * 1024
            + b"\r\n0;chunk-signature=%s\r\n" % signatures[2].encode()
            + trailers
            + b"\r\n"
        )

    def test_chunked(self) -> None:
        """
        The documented body, of the documented length, decodes and checks
        even fed one byte at a time.
        """
        body = self.body(DOC_CHUNK_SIGNATURES)
        self.assertEqual(len(body), 66824)
        headers, verified = self.request(False, body)
        checker = BodyChecker(verified, headers)
        self.assertEqual(checker.feed(body), b"a" * 66560)
        checker.finish()
        checker = BodyChecker(verified, headers)
        one_by_one = b"".join(checker.feed(body[i : i + 1]) for i in range(len(body)))
        self.assertEqual(one_by_one, b"a" * 66560)
        checker.finish()
        self.assertEqual(checker.decoded_length, 66560)
        self.assertEqual(checker.md5_hex, hashlib.md5(b"a" * 66560).hexdigest())
        self.assertEqual(checker.crc32, zlib.crc32(b"a" * 66560))

    def test_trailer(self) -> None:
        """
        The documented body with a signed C{crc32c} trailer (accepted,
        though its value is not checked: nothing here computes CRC32C).
        """
        trailers = DOC_TRAILERS
        body = self.body(DOC_TRAILER_CHUNK_SIGNATURES, trailers.encode())
        headers, verified = self.request(True, body)
        checker = BodyChecker(verified, headers)
        by_three = b"".join(checker.feed(body[i : i + 3]) for i in range(0, len(body), 3))
        self.assertEqual(by_three, b"a" * 66560)
        checker.finish()
        for bad in [
            trailers.replace("sOO8", "sOO9"),
            trailers.replace("d81f", "d82f"),
            trailers.split("\r\n", 1)[1],
        ]:
            checker = BodyChecker(verified, headers)
            bad_body = self.body(DOC_TRAILER_CHUNK_SIGNATURES, bad.encode())
            self.assertRaises(SignatureError, checker.feed, bad_body)

    def test_test_signer(self) -> None:
        """
        The chunk signer of these tests makes the documented signatures.
        """
        headers, verified = self.request(False, self.body(DOC_CHUNK_SIGNATURES))
        self.assertEqual(
            signed_chunks(verified, DOC_SECRET, [b"a" * 65536, b"a" * 1024]),
            self.body(DOC_CHUNK_SIGNATURES),
        )
        trailers = [("x-amz-checksum-crc32c", "sOO8/Q==")]
        _, verified = self.request(True, b"")
        self.assertEqual(
            signed_chunks(verified, DOC_SECRET, [b"a" * 65536, b"a" * 1024], trailers),
            self.body(
                DOC_TRAILER_CHUNK_SIGNATURES,
                DOC_TRAILERS.encode(),
            ),
        )

    def test_tampered(self) -> None:
        """
        A changed byte, a wrong signature, chunks swapped or a chunk missing
        are refused: by the chunk's signature as soon as the chunk ends, or
        by L{BodyChecker.finish} for a body cut short.
        """
        body = self.body(DOC_CHUNK_SIGNATURES)
        headers, verified = self.request(False, body)
        changed = body[:1000] + b"b" + body[1001:]
        checker = BodyChecker(verified, headers)
        checker.feed(changed[:60000])
        error = self.assertSignatureError(
            "SignatureDoesNotMatch", 403, checker.feed, changed[60000:]
        )
        self.assertIn("chunk 1", error.message)
        self.assertIs(self.assertRaises(SignatureError, checker.feed, b""), error)
        self.assertIs(self.assertRaises(SignatureError, checker.finish), error)

        for signatures in [
            [DOC_CHUNK_SIGNATURES[0], DOC_CHUNK_SIGNATURES[0], DOC_CHUNK_SIGNATURES[2]],
            [DOC_CHUNK_SIGNATURES[0], DOC_CHUNK_SIGNATURES[1], DOC_CHUNK_SIGNATURES[1]],
            ["0" * 64, *DOC_CHUNK_SIGNATURES[1:]],
        ]:
            checker = BodyChecker(verified, headers)
            self.assertSignatureError(
                "SignatureDoesNotMatch", 403, checker.feed, self.body(signatures)
            )
        # The same bytes under another seed (another request) do not pass.
        other = sign("PUT", f"{ENDPOINT}/b", signer=type("A", (StreamingAuth,), {}))
        checker = BodyChecker(other.verify(), headers)
        self.assertSignatureError("SignatureDoesNotMatch", 403, checker.feed, body)

        checker = BodyChecker(verified, headers)
        checker.feed(body[: body.index(b"400;")])
        self.assertSignatureError("IncompleteBody", 400, checker.finish)
        checker = BodyChecker(verified, headers)
        checker.feed(body[:-2])
        self.assertSignatureError("IncompleteBody", 400, checker.finish)


class BodyCheckerTests(ErrorAssertions):
    """
    L{BodyChecker} with every payload mode.
    """

    def plain(
        self, body: bytes, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[Signed, BodyChecker]:
        signed = sign("PUT", f"{ENDPOINT}/bucket/k", headers, body, **kwargs)
        return signed, BodyChecker(signed.verify(), signed.headers)

    def test_signed_payload(self) -> None:
        """
        The body's SHA-256 must be the one signed.
        """
        signed, checker = self.plain(b"hello world")
        self.assertEqual(checker.feed(b"hello ") + checker.feed(b"world"), b"hello world")
        checker.finish()
        signed, checker = self.plain(b"hello world")
        checker.feed(b"hello there")
        error = self.assertSignatureError("XAmzContentSHA256Mismatch", 400, checker.finish)
        self.assertEqual(
            error.extra["S3ComputedContentSHA256"], hashlib.sha256(b"hello there").hexdigest()
        )

    def test_content_md5(self) -> None:
        md5 = b64(hashlib.md5(b"data").digest())
        _, checker = self.plain(b"data", {"Content-MD5": md5}, unsigned_payload=True)
        checker.feed(b"data")
        checker.finish()
        _, checker = self.plain(b"data", {"Content-MD5": md5}, unsigned_payload=True)
        checker.feed(b"date")
        error = self.assertSignatureError("BadDigest", 400, checker.finish)
        self.assertEqual(error.extra["ExpectedDigest"], md5)
        for bad in ["nope", b64(b"short"), md5 + "=", md5[:-2] + "!!"]:
            signed = sign("PUT", f"{ENDPOINT}/b/k", {"Content-MD5": bad}, b"data")
            verified = signed.verify()
            self.assertSignatureError("InvalidDigest", 400, BodyChecker, verified, signed.headers)

    def test_checksum_headers(self) -> None:
        """
        C{x-amz-checksum-crc32}, C{-sha1} and C{-sha256} headers are checked.
        """
        data = b"some data" * 1000
        for name, good in [
            ("crc32", crc32_b64(data)),
            ("sha1", b64(hashlib.sha1(data).digest())),
            ("sha256", b64(hashlib.sha256(data).digest())),
        ]:
            header = {f"x-amz-checksum-{name}": good}
            for unsigned in (True, False):
                _, checker = self.plain(data, header, unsigned_payload=unsigned)
                feed_in_pieces(checker, data, [5, 17, 4000])
                checker.finish()
            _, checker = self.plain(data, header, unsigned_payload=True)
            checker.feed(data[:-1] + b"!")
            error = self.assertSignatureError("BadDigest", 400, checker.finish)
            self.assertIn(name.upper(), error.message)
            signed = sign("PUT", f"{ENDPOINT}/b/k", {f"x-amz-checksum-{name}": "AAAA"}, data)
            verified = signed.verify()
            self.assertSignatureError("InvalidRequest", 400, BodyChecker, verified, signed.headers)

    def test_decoded_length(self) -> None:
        _, verified = streaming_request(STREAMING_UNSIGNED_TRAILER, 3)
        signed, verified = streaming_request(STREAMING_UNSIGNED_TRAILER, 3)
        checker = BodyChecker(verified, signed.headers)
        checker.feed(unsigned_chunks([b"ab"], []))
        self.assertSignatureError("IncompleteBody", 400, checker.finish)
        checker = BodyChecker(verified, signed.headers)
        self.assertSignatureError(
            "IncompleteBody", 400, checker.feed, unsigned_chunks([b"abcd"], [])
        )
        bad = replace_header(signed.headers, b"x-amz-decoded-content-length", b"-1")
        self.assertSignatureError("InvalidRequest", 400, BodyChecker, verified, bad)

    def test_unsigned_trailer(self) -> None:
        """
        C{STREAMING-UNSIGNED-PAYLOAD-TRAILER}: plain chunks, and the
        announced checksums in the trailer, which must match.
        """
        data = b"0123456789" * 500
        trailers = [
            ("x-amz-checksum-crc32", crc32_b64(data)),
            ("x-amz-checksum-sha256", b64(hashlib.sha256(data).digest())),
        ]
        signed, verified = streaming_request(
            STREAMING_UNSIGNED_TRAILER,
            len(data),
            {"X-Amz-Trailer": "x-amz-checksum-crc32, x-amz-checksum-sha256"},
        )
        self.assertEqual(verified.payload, STREAMING_UNSIGNED_TRAILER)
        body = unsigned_chunks([data[:1000], data[1000:]], trailers)
        checker = BodyChecker(verified, signed.headers)
        self.assertEqual(feed_in_pieces(checker, body, [1, 1003, 1004, len(body) - 3]), data)
        checker.finish()

        bad = unsigned_chunks([data], [trailers[0], ("x-amz-checksum-sha256", trailers[0][1] * 8)])
        checker = BodyChecker(verified, signed.headers)
        self.assertSignatureError("InvalidRequest", 400, checker.feed, bad)
        wrong = unsigned_chunks([data], [(trailers[0][0], crc32_b64(b"x")), trailers[1]])
        checker = BodyChecker(verified, signed.headers)
        checker.feed(wrong)
        self.assertSignatureError("BadDigest", 400, checker.finish)
        for trailer_list in [
            trailers[:1],
            [*trailers, ("x-amz-checksum-sha1", b64(hashlib.sha1(data).digest()))],
            [*trailers, trailers[0]],
            [*trailers, ("x-amz-trailer-signature", "0" * 64)],
        ]:
            checker = BodyChecker(verified, signed.headers)
            self.assertSignatureError(
                "InvalidRequest", 400, checker.feed, unsigned_chunks([data], trailer_list)
            )

    def test_trailer_needs_trailer_mode(self) -> None:
        signed = sign("PUT", f"{ENDPOINT}/b/k", {"X-Amz-Trailer": "x-amz-checksum-crc32"}, b"x")
        verified = signed.verify()
        self.assertSignatureError("InvalidRequest", 400, BodyChecker, verified, signed.headers)
        signed, verified = streaming_request(
            STREAMING_UNSIGNED_TRAILER, 1, {"X-Amz-Trailer": "x-amz-meta-x"}
        )
        self.assertSignatureError("InvalidRequest", 400, BodyChecker, verified, signed.headers)

    def test_signed_trailer(self) -> None:
        data = bytes(range(256)) * 40
        trailers = [("x-amz-checksum-crc32", crc32_b64(data))]
        signed, verified = streaming_request(
            STREAMING_SIGNED_TRAILER, len(data), {"X-Amz-Trailer": "x-amz-checksum-crc32"}
        )
        body = signed_chunks(verified, SECRET, [data[:8192], data[8192:]], trailers)
        checker = BodyChecker(verified, signed.headers)
        self.assertEqual(checker.feed(body), data)
        checker.finish()
        # A trailer changed after signing breaks the trailer's signature.
        forged = body.replace(trailers[0][1].encode(), crc32_b64(b"other").encode())
        checker = BodyChecker(verified, signed.headers)
        self.assertSignatureError("SignatureDoesNotMatch", 403, checker.feed, forged)
        # A wrong checksum, signed, is a bad digest.
        body = signed_chunks(verified, SECRET, [data], [(trailers[0][0], crc32_b64(b"x"))])
        checker = BodyChecker(verified, signed.headers)
        checker.feed(body)
        self.assertSignatureError("BadDigest", 400, checker.finish)
        # No trailer signature.
        body = signed_chunks(verified, SECRET, [data]).replace(b"\r\n\r\n", b"\r\n") + (
            f"{trailers[0][0]}:{trailers[0][1]}\r\n\r\n".encode()
        )
        checker = BodyChecker(verified, signed.headers)
        self.assertSignatureError("InvalidRequest", 400, checker.feed, body)

    def test_framing(self) -> None:
        """
        Broken C{aws-chunked} framing is refused, with bounded memory.
        """
        data = b"x" * 100
        signed, verified = streaming_request(STREAMING_SIGNED, len(data))
        good = signed_chunks(verified, SECRET, [data])
        header, rest = good.split(b"\r\n", 1)
        bad_bodies = [
            good.replace(b"\r\n", b"\n", 1),
            b"zz" + good[2:],
            b"-" + good,
            header.replace(b"chunk-signature", b"chunk-sig") + b"\r\n" + rest,
            header[:-1] + b"\r\n" + rest,
            header + b";more=1\r\n" + rest,
            b"1" * 17 + b";" + good.split(b";", 1)[1],
            b"63" + good[2:],
            b"65" + good[2:],
            good + b"extra",
            good[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n",
            b"1" * 5000,
            b"64;chunk-signature=" + b"0" * 10000,
        ]
        for body in bad_bodies:
            checker = BodyChecker(verified, signed.headers)
            self.assertRaises(SignatureError, checker.feed, body)
        checker = BodyChecker(verified, signed.headers)
        self.assertEqual(checker.feed(good), data)
        checker.finish()

    def test_many_trailers_bounded(self) -> None:
        signed, verified = streaming_request(
            STREAMING_UNSIGNED_TRAILER, 0, {"X-Amz-Trailer": "x-amz-checksum-crc32"}
        )
        checker = BodyChecker(verified, signed.headers)
        checker.feed(b"0\r\n")
        with self.assertRaises(SignatureError):
            for _ in range(1000):
                checker.feed(b"x-amz-checksum-crc32:" + b" " * 60 + b"\r\n")

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        data=st.binary(max_size=3000),
        sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
        cuts=st.lists(st.integers(0, 6000), max_size=30),
        mode=st.sampled_from(
            [STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER]
        ),
    )
    def test_split_anywhere(
        self, data: bytes, sizes: list[int], cuts: list[int], mode: str
    ) -> None:
        """
        However the body is cut into pieces (inside chunk headers, data,
        CRLFs and trailers), the payload comes out whole and checks.
        """
        chunks = []
        rest = data
        for size in sizes:
            chunks.append(rest[:size])
            rest = rest[size:]
        chunks.append(rest)
        chunks = [chunk for chunk in chunks if chunk]
        trailers = [
            ("x-amz-checksum-crc32", crc32_b64(data)),
            ("x-amz-checksum-sha1", b64(hashlib.sha1(data).digest())),
        ]
        extra = {"Content-MD5": b64(hashlib.md5(data).digest())}
        if mode != STREAMING_SIGNED:
            extra["X-Amz-Trailer"] = "x-amz-checksum-crc32,x-amz-checksum-sha1"
        signed, verified = streaming_request(mode, len(data), extra)
        if mode == STREAMING_UNSIGNED_TRAILER:
            body = unsigned_chunks(chunks, trailers)
        else:
            body = signed_chunks(
                verified, SECRET, chunks, None if mode == STREAMING_SIGNED else trailers
            )
        checker = BodyChecker(verified, signed.headers)
        pieces = [cut % (len(body) + 1) for cut in cuts]
        self.assertEqual(feed_in_pieces(checker, body, pieces), data)
        checker.finish()
        self.assertEqual(checker.decoded_length, len(data))
        self.assertEqual(checker.crc32, zlib.crc32(data))
        self.assertEqual(checker.md5_hex, hashlib.md5(data).hexdigest())

    def test_botocore_wrapper(self) -> None:
        """
        A body made by botocore's own C{AwsChunkedWrapper} (small chunks),
        read whole or byte by byte.
        """
        data = bytes(range(256)) * 123
        wrapped = AwsChunkedWrapper(
            BytesReader(data),
            checksum_cls=Crc32Checksum,
            checksum_name="x-amz-checksum-crc32",
            chunk_size=1000,
        )
        body = b"".join(wrapped)
        signed, verified = streaming_request(
            STREAMING_UNSIGNED_TRAILER, len(data), {"X-Amz-Trailer": "x-amz-checksum-crc32"}
        )
        for step in (len(body), 1, 7):
            checker = BodyChecker(verified, signed.headers)
            out = b"".join(checker.feed(body[i : i + step]) for i in range(0, len(body), step))
            self.assertEqual(out, data)
            checker.finish()


class BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._position + size
        piece = self._data[self._position : end]
        self._position += len(piece)
        return piece


# A capture server: real requests from boto3, over real sockets.


class Captured:
    def __init__(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> None:
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body


class _CaptureHandler(socketserver.StreamRequestHandler):
    server: _CaptureServer

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline()
            if not request_line:
                return
            method, target, _ = request_line.split(b" ", 2)
            headers = Headers()
            while True:
                line = self.rfile.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                headers.addRawHeader(name.strip(), value.strip())
            if headers.getRawHeaders(b"expect") == [b"100-continue"]:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if headers.getRawHeaders(b"transfer-encoding") == [b"chunked"]:
                body = self.read_chunked()
            else:
                body = self.rfile.read(int((headers.getRawHeaders(b"content-length") or [b"0"])[0]))
            self.server.captured.append(Captured(method, target, headers, body))
            self.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "0"\r\n\r\n')
            self.wfile.flush()

    def read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if not size:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()


class _CaptureServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.captured: list[Captured] = []
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, address


def self_signed(directory: Path) -> tuple[Path, Path]:
    """
    A certificate for 127.0.0.1 and its key.
    """
    key = generate_private_key(SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class CaptureTests(ErrorAssertions):
    """
    Requests exactly as boto3 sends them to a server on 127.0.0.1.
    """

    def serve(self, tls: bool) -> tuple[Any, _CaptureServer]:
        context = None
        verify_tls: bool | str = False
        if tls:
            directory = Path(self.mktemp())
            directory.mkdir()
            cert_path, key_path = self_signed(directory)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_path, key_path)
            verify_tls = str(cert_path)
        server = _CaptureServer(context)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        self.addCleanup(stop)
        scheme = "https" if tls else "http"
        client = boto3.client(
            "s3",
            endpoint_url=f"{scheme}://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            verify=verify_tls,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=10,
            ),
        )
        return client, server

    def check(self, captured: Captured, cuts: list[int] | None = None) -> tuple[Verified, bytes]:
        verified = verify(
            captured.method,
            captured.path,
            captured.query,
            captured.headers,
            KEYS,
            amz_time(captured.headers),
        )
        checker = BodyChecker(verified, captured.headers)
        payload = feed_in_pieces(checker, captured.body, cuts or [])
        checker.finish()
        return verified, payload

    def test_plain_http(self) -> None:
        """
        Over plain HTTP boto3 signs the payload's SHA-256 and sends a CRC32
        header; object keys, metadata, ranges and list parameters all
        verify.
        """
        client, server = self.serve(tls=False)
        data = b"hello \xff world" * 1000
        key = "dir a/ü file+(1).txt"
        client.put_object(
            Bucket="bucket",
            Key=key,
            Body=data,
            Metadata={"note": "  spaced   out "},
            ContentType="text/plain; charset=utf-8",
        )
        client.put_object(
            Bucket="bucket", Key="md5", Body=b"x", ContentMD5=b64(hashlib.md5(b"x").digest())
        )
        client.get_object(Bucket="bucket", Key=key, Range="bytes=0-9")
        client.head_object(Bucket="bucket", Key=key)
        client.list_objects_v2(Bucket="bucket", Prefix="dir a/", Delimiter="/", StartAfter="ü")
        client.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": key}, {"Key": "b c"}]})
        self.assertEqual(len(server.captured), 6)
        put = server.captured[0]
        self.assertEqual(put.path, b"/bucket/dir%20a/%C3%BC%20file%2B%281%29.txt")
        self.assertIsNotNone(put.headers.getRawHeaders(b"x-amz-checksum-crc32"))
        verified, payload = self.check(put, [1, 100, 5000])
        self.assertEqual(payload, data)
        self.assertEqual(verified.payload, hashlib.sha256(data).hexdigest())
        for captured in server.captured[1:]:
            self.check(captured)
        # The same bytes, with another key, path or body, do not pass.
        when = amz_time(put.headers)
        wrong_key = {ACCESS_KEY: "x"}
        self.assertSignatureError(
            "SignatureDoesNotMatch",
            403,
            verify,
            put.method,
            put.path,
            put.query,
            put.headers,
            wrong_key,
            when,
        )
        self.assertSignatureError(
            "SignatureDoesNotMatch",
            403,
            verify,
            put.method,
            b"/bucket/other",
            put.query,
            put.headers,
            KEYS,
            when,
        )
        checker = BodyChecker(self.check(put)[0], put.headers)
        checker.feed(data.replace(b"world", b"World", 1))
        self.assertSignatureError("XAmzContentSHA256Mismatch", 400, checker.finish)

    def test_tls_aws_chunked(self) -> None:
        """
        Over TLS boto3 sends C{aws-chunked} bodies with an unsigned CRC32
        trailer (inside HTTP chunked transfer coding).
        """
        client, server = self.serve(tls=True)
        data = bytes(range(256)) * 5000
        client.put_object(Bucket="bucket", Key="big ü", Body=data)
        client.put_object(Bucket="bucket", Key="empty", Body=b"")
        captured = server.captured[0]
        self.assertEqual(
            captured.headers.getRawHeaders(b"x-amz-content-sha256"),
            [STREAMING_UNSIGNED_TRAILER.encode()],
        )
        self.assertEqual(
            captured.headers.getRawHeaders(b"x-amz-trailer"), [b"x-amz-checksum-crc32"]
        )
        verified, payload = self.check(captured, [3, 4, 5, len(captured.body) - 10])
        self.assertEqual(payload, data)
        self.assertEqual(verified.payload, STREAMING_UNSIGNED_TRAILER)
        self.check(captured, list(range(0, len(captured.body), 997)))
        self.assertEqual(self.check(server.captured[1])[1], b"")
        # A changed payload byte fails the trailer's CRC32.
        tampered = captured.body.replace(b"\x00\x01\x02", b"\x00\x01\x03", 1)
        checker = BodyChecker(verified, captured.headers)
        checker.feed(tampered)
        self.assertSignatureError("BadDigest", 400, checker.finish)
