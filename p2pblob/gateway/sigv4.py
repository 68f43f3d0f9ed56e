"""
AWS Signature Version 4, as Amazon S3 checks it, for the S3 gateway.

L{verify} authenticates a request from its method, its path and query
exactly as they came on the wire, and its headers: either an
C{Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
Signature=…} header, or the query parameters of a presigned URL
(C{X-Amz-Algorithm}, C{X-Amz-Credential}, C{X-Amz-Date}, C{X-Amz-Expires},
C{X-Amz-SignedHeaders}, C{X-Amz-Signature}).  L{BodyChecker} then follows
the body as it arrives: it decodes C{aws-chunked} bodies, checks every chunk
signature and the trailer's, and at the end the payload's SHA-256,
C{Content-MD5} and C{x-amz-checksum-*} values.

The canonical request is built the way S3 builds it, which differs from
the other AWS services: the path is not normalised (C{//}, C{.} and C{..}
stay) and not encoded twice.  The path and the query are decoded and
encoded again in the strict form (every byte but C{A-Z a-z 0-9 - . _ ~}
as C{%XX}, the path keeping its C{/}); the query's pairs are sorted by
name, then value, a name without C{=} getting an empty value.  A client
that signed its own, differently escaped, form of the path and query (the
characters it sent, sorted) is accepted as well.  Header values lose their
outer white space and have inner runs of it collapsed to one space;
repeated headers are joined with commas.  Signatures are compared in
constant time.

A body's bytes come out of L{BodyChecker.feed} before the signature or
digest that covers them is checked: whoever stores them must treat them as
provisional until L{BodyChecker.finish} returns.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

from twisted.web.http_headers import Headers

from p2pblob.errors import P2PBlobError

__all__ = [
    "ALGORITHM",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "BodyChecker",
    "SignatureError",
    "Verified",
    "is_anonymous",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

#: The longest validity a presigned URL may claim (seven days), as in S3.
MAX_EXPIRES = 7 * 24 * 3600

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_STREAMING = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SCOPE_DATE = re.compile(r"[0-9]{8}")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")

#: Headers describing the body, which a presigned URL cannot have signed.
_BODY_HEADERS = frozenset(
    {b"x-amz-content-sha256", b"x-amz-decoded-content-length", b"x-amz-trailer"}
)

#: Query parameters that show an attempt at a presigned URL.
_PRESIGNED_NAMES = frozenset({b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature"})

_STATUS = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "RequestTimeTooSkewed": 403,
    "SignatureDoesNotMatch": 403,
}

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you "
    "provided. Check your key and signing method."
)


class SignatureError(P2PBlobError):
    """
    A request to the S3 gateway is not properly authenticated, or its body
    is not what its headers announced.

    @ivar code: the S3 error code (C{SignatureDoesNotMatch},
        C{InvalidAccessKeyId}, C{AccessDenied},
        C{AuthorizationHeaderMalformed},
        C{AuthorizationQueryParametersError}, C{RequestTimeTooSkewed},
        C{XAmzContentSHA256Mismatch}, C{InvalidRequest}, C{InvalidArgument},
        C{IncompleteBody}, C{BadDigest}, C{InvalidDigest}).
    @ivar status: the HTTP status to answer: 403 for a refused identity,
        400 for a malformed request or body.
    @ivar message: the sentence for the S3 C{<Message>} (also C{str()}).
    @ivar extra: further elements S3 puts in its error document, such as
        C{StringToSign} and C{CanonicalRequest} (no secret among them).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = _STATUS.get(code, 400) if status is None else status
        self.extra: dict[str, str] = dict(extra or {})


@dataclass(frozen=True)
class Verified:
    """
    What L{verify} established about a request.

    @ivar access_key: who signed it.
    @ivar payload: the payload mode: the hex SHA-256 of the body, or one of
        L{UNSIGNED_PAYLOAD}, L{STREAMING_SIGNED}, L{STREAMING_SIGNED_TRAILER},
        L{STREAMING_UNSIGNED_TRAILER} (presigned URLs are always
        L{UNSIGNED_PAYLOAD} unless the request says which unsigned form
        its body takes).
    @ivar signing_key: the key derived from the secret for this day, region
        and service, which signs the chunks of a streaming body.
    @ivar seed_signature: the request's signature, which the first chunk's
        signature chains from.
    @ivar scope: the credential scope, C{date/region/s3/aws4_request}.
    @ivar timestamp: the request time as signed, C{YYYYMMDDTHHMMSSZ}.
    @ivar presigned: whether the request was a presigned URL.
    """

    access_key: str
    payload: str
    signing_key: bytes = field(repr=False)
    seed_signature: str
    scope: str
    timestamp: str
    presigned: bool = False


@dataclass(frozen=True)
class _ParsedCredential:
    access_key: str
    date: str
    region: str
    service: str
    terminal: str


@dataclass(frozen=True)
class _Claim:
    """
    The authentication a request claims, before checking it.
    """

    credential: _ParsedCredential
    signed_headers: str
    signature: str
    timestamp: str
    presigned: bool
    expires: int


def is_anonymous(headers: Headers, raw_query: bytes) -> bool:
    """
    Whether a request carries no authentication at all: no C{Authorization}
    header and none of the C{X-Amz-Algorithm}, C{X-Amz-Credential} or
    C{X-Amz-Signature} query parameters of a presigned URL.
    """
    if headers.getRawHeaders(b"authorization") is not None:
        return False
    return not any(name in _PRESIGNED_NAMES for name, _ in _query_pairs(raw_query))


def verify(
    method: bytes,
    raw_path: bytes,
    raw_query: bytes,
    headers: Headers,
    keys: Mapping[str, str],
    now: float,
    max_skew: float = 900,
    *,
    region: str | None = None,
) -> Verified:
    """
    Check a request's Signature Version 4.

    @param method: the request method, as sent.
    @param raw_path: the path as on the wire, still percent-encoded,
        without the query.
    @param raw_query: what follows the C{?} (empty if nothing does).
    @param headers: the request headers.
    @param keys: the secret of each access key.
    @param now: the current time, in seconds since the epoch.
    @param max_skew: how far, in seconds, a request's time may be from
        C{now} (and a presigned URL's start in the future).
    @param region: the only region accepted in credential scopes; any
        region if L{None}.  The service must be C{s3} in any case.
    @return: who signed, and what L{BodyChecker} needs.
    @raise SignatureError: if the request is not authenticated: no or
        malformed authentication (C{AccessDenied},
        C{AuthorizationHeaderMalformed},
        C{AuthorizationQueryParametersError}, C{InvalidRequest},
        C{InvalidArgument}), an unknown key (C{InvalidAccessKeyId}), a
        time too far from C{now} (C{RequestTimeTooSkewed}), an expired URL
        (C{AccessDenied}) or a wrong signature (C{SignatureDoesNotMatch}).
    """
    pairs = _query_pairs(raw_query)
    authorization = headers.getRawHeaders(b"authorization")
    presigned = any(name in _PRESIGNED_NAMES for name, _ in pairs)
    if authorization is not None and presigned:
        raise SignatureError(
            "InvalidRequest",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
            "parameter or the Authorization header should be specified.",
        )
    if authorization is not None:
        claim = _header_claim(authorization, headers)
    elif presigned:
        claim = _query_claim(pairs)
    else:
        raise SignatureError("AccessDenied", "Access Denied: this request is not signed.")

    credential = claim.credential
    _check_scope(credential, claim, region)
    payload = _presigned_payload(headers) if claim.presigned else _header_payload(headers)
    signed = _signed_header_names(claim, headers)
    _check_time(claim, now, max_skew)

    secret = keys.get(credential.access_key)
    if secret is None:
        raise SignatureError(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            extra={"AWSAccessKeyId": credential.access_key},
        )
    signing_key = _signing_key(secret, credential.date, credential.region, credential.service)
    scope = "/".join([credential.date, credential.region, credential.service, credential.terminal])
    canonical_headers = _canonical_headers(signed, headers)
    signed_payload = UNSIGNED_PAYLOAD if claim.presigned else payload
    tried: list[bytes] = []
    for path, query in _canonical_forms(raw_path, pairs, raw_query, claim.presigned):
        canonical = b"\n".join(
            [
                method,
                path,
                query,
                canonical_headers,
                claim.signed_headers.encode("ascii"),
                signed_payload.encode("ascii"),
            ]
        )
        if canonical in tried:
            continue
        tried.append(canonical)
        string_to_sign = "\n".join(
            [ALGORITHM, claim.timestamp, scope, hashlib.sha256(canonical).hexdigest()]
        )
        expected = _hmac_hex(signing_key, string_to_sign)
        if hmac.compare_digest(expected.encode("ascii"), claim.signature.encode("ascii")):
            return Verified(
                access_key=credential.access_key,
                payload=payload,
                signing_key=signing_key,
                seed_signature=claim.signature,
                scope=scope,
                timestamp=claim.timestamp,
                presigned=claim.presigned,
            )
    raise SignatureError(
        "SignatureDoesNotMatch",
        _SIGNATURE_MISMATCH,
        extra={
            "AWSAccessKeyId": credential.access_key,
            "StringToSign": "\n".join(
                [ALGORITHM, claim.timestamp, scope, hashlib.sha256(tried[0]).hexdigest()]
            ),
            "SignatureProvided": claim.signature,
            "CanonicalRequest": tried[0].decode("utf-8", "replace"),
        },
    )


def _malformed_header(message: str) -> SignatureError:
    return SignatureError(
        "AuthorizationHeaderMalformed", f"The authorization header is malformed; {message}"
    )


def _malformed_query(message: str) -> SignatureError:
    return SignatureError("AuthorizationQueryParametersError", message)


def _header_claim(authorization: Sequence[bytes], headers: Headers) -> _Claim:
    """
    Read the C{Authorization} header and the C{x-amz-date} header.
    """
    if len(authorization) != 1:
        raise _malformed_header("there must be one Authorization header.")
    try:
        value = authorization[0].decode("ascii").strip()
    except UnicodeDecodeError:
        raise _malformed_header("it is not ASCII.") from None
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS" or algorithm.startswith("AWS4-"):
            raise SignatureError(
                "InvalidRequest",
                "The authorization mechanism you have provided is not supported. "
                f"Please use {ALGORITHM}.",
            )
        raise _malformed_header(f"the authorization mechanism {algorithm!r} is unknown.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, equals, field_value = part.strip().partition("=")
        if not equals or name in fields:
            raise _malformed_header(f"cannot read {part.strip()!r}.")
        fields[name] = field_value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise _malformed_header(
            "it needs exactly the fields Credential, SignedHeaders and Signature."
        )
    credential = _parse_credential(fields["Credential"], _malformed_header)
    dates = headers.getRawHeaders(b"x-amz-date")
    if dates is None:
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid x-amz-date header."
        )
    timestamp = dates[0].decode("ascii", "replace").strip()
    if len(dates) != 1 or not _valid_timestamp(timestamp):
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid x-amz-date header."
        )
    return _Claim(
        credential=credential,
        signed_headers=fields["SignedHeaders"],
        signature=fields["Signature"],
        timestamp=timestamp,
        presigned=False,
        expires=0,
    )


def _query_claim(pairs: list[tuple[bytes, bytes]]) -> _Claim:
    """
    Read the authentication parameters of a presigned URL.
    """
    wanted = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    ]
    found: dict[str, str] = {}
    for name, value in pairs:
        text = name.decode("latin-1")
        if text in wanted:
            if text in found:
                raise _malformed_query(f"Query-string authentication has {text} twice.")
            try:
                found[text] = value.decode("ascii")
            except UnicodeDecodeError:
                raise _malformed_query(f"{text} is not ASCII.") from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise _malformed_query(
            "Query-string authentication version 4 requires the "
            + ", ".join(wanted)
            + " parameters; missing: "
            + ", ".join(missing)
            + "."
        )
    if found["X-Amz-Algorithm"] != ALGORITHM:
        raise _malformed_query(f'X-Amz-Algorithm only supports "{ALGORITHM}".')
    credential = _parse_credential(found["X-Amz-Credential"], _malformed_query)
    timestamp = found["X-Amz-Date"]
    if not _valid_timestamp(timestamp):
        raise _malformed_query(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"."
        )
    expires_text = found["X-Amz-Expires"]
    if not expires_text.isdigit() or len(expires_text) > 7:
        raise _malformed_query("X-Amz-Expires should be a number.")
    expires = int(expires_text)
    if expires > MAX_EXPIRES:
        raise _malformed_query(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}."
        )
    return _Claim(
        credential=credential,
        signed_headers=found["X-Amz-SignedHeaders"],
        signature=found["X-Amz-Signature"],
        timestamp=timestamp,
        presigned=True,
        expires=expires,
    )


def _parse_credential(value: str, malformed: Callable[[str], SignatureError]) -> _ParsedCredential:
    parts = value.split("/")
    if len(parts) < 5 or not all(parts):
        raise malformed(
            f"the Credential is mal-formed; expecting "
            f'"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request", not {value!r}.'
        )
    return _ParsedCredential("/".join(parts[:-4]), *parts[-4:])


def _valid_timestamp(timestamp: str) -> bool:
    if not _AMZ_DATE.fullmatch(timestamp):
        return False
    try:
        time.strptime(timestamp, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return False
    return True


def _check_scope(credential: _ParsedCredential, claim: _Claim, region: str | None) -> None:
    malformed = _malformed_query if claim.presigned else _malformed_header
    if not _SCOPE_DATE.fullmatch(credential.date):
        raise malformed(f"incorrect date format {credential.date!r}; expecting YYYYMMDD.")
    if credential.date != claim.timestamp[:8]:
        raise malformed(
            f"Invalid credential date {credential.date!r}. "
            f"Date is not the same as X-Amz-Date {claim.timestamp[:8]!r}."
        )
    if region is not None and credential.region != region:
        error = malformed(f"the region {credential.region!r} is wrong; expecting {region!r}")
        error.extra["Region"] = region
        raise error
    if credential.service != "s3":
        raise malformed(f'incorrect service "{credential.service}". This endpoint belongs to "s3".')
    if credential.terminal != "aws4_request":
        raise malformed(
            f'incorrect terminal "{credential.terminal}". This endpoint uses "aws4_request".'
        )
    if not _SIGNATURE.fullmatch(claim.signature):
        raise malformed("the Signature must be 64 lowercase hexadecimal characters.")


def _signed_header_names(claim: _Claim, headers: Headers) -> list[bytes]:
    """
    The names of the signed headers, after checking that those a signature
    must cover are among them.
    """
    malformed = _malformed_query if claim.presigned else _malformed_header
    names = claim.signed_headers.split(";")
    if (
        not all(names)
        or len(set(names)) != len(names)
        or any(name != name.lower() or name != name.strip() for name in names)
    ):
        raise malformed(
            f"SignedHeaders must be distinct lowercase header names separated by ';', "
            f"not {claim.signed_headers!r}."
        )
    signed = [name.encode("latin-1") for name in names]
    required = [b"host"] if claim.presigned else [b"host", b"x-amz-content-sha256", b"x-amz-date"]
    for name in required:
        if name not in signed:
            raise malformed(f"the {name.decode()} header must be signed.")
    if claim.presigned:
        unsigned = sorted(
            lowered
            for lowered in (name.lower() for name, _ in headers.getAllRawHeaders())
            if lowered.startswith(b"x-amz-")
            and lowered not in signed
            and lowered not in _BODY_HEADERS
        )
        if unsigned:
            raise SignatureError(
                "AccessDenied",
                "There were headers present in the request which were not signed: "
                + ", ".join(name.decode("latin-1") for name in unsigned),
            )
    return signed


def _format_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _check_time(claim: _Claim, now: float, max_skew: float) -> None:
    when = calendar.timegm(time.strptime(claim.timestamp, "%Y%m%dT%H%M%SZ"))
    if claim.presigned:
        if when - now > max_skew:
            raise SignatureError("AccessDenied", "Request is not valid yet")
        if now > when + claim.expires:
            raise SignatureError(
                "AccessDenied",
                "Request has expired",
                extra={
                    "X-Amz-Expires": str(claim.expires),
                    "Expires": _format_time(when + claim.expires),
                    "ServerTime": _format_time(now),
                },
            )
    elif abs(when - now) > max_skew:
        raise SignatureError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
            extra={
                "RequestTime": claim.timestamp,
                "ServerTime": _format_time(now),
                "MaxAllowedSkewMilliseconds": str(int(max_skew * 1000)),
            },
        )


def _header_payload(headers: Headers) -> str:
    values = headers.getRawHeaders(b"x-amz-content-sha256")
    if values is None:
        raise SignatureError(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    payload = values[0].decode("latin-1").strip()
    if len(values) != 1 or not (
        payload in _STREAMING or payload == UNSIGNED_PAYLOAD or _HEX_SHA256.fullmatch(payload)
    ):
        raise SignatureError(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value.",
        )
    return payload


def _presigned_payload(headers: Headers) -> str:
    """
    A presigned request's payload mode: what its C{x-amz-content-sha256}
    says, if anything, provided nothing needs the request's signature.
    """
    if headers.getRawHeaders(b"x-amz-content-sha256") is None:
        return UNSIGNED_PAYLOAD
    payload = _header_payload(headers)
    if payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        raise SignatureError(
            "InvalidRequest",
            f"A presigned URL cannot carry a {payload} body; use the Authorization header.",
        )
    return payload


def _query_pairs(raw_query: bytes) -> list[tuple[bytes, bytes]]:
    """
    The decoded C{(name, value)} pairs of a query, in order; a name without
    C{=} has an empty value.
    """
    pairs = []
    for part in raw_query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def _encode(data: bytes, safe: str) -> bytes:
    return quote(data, safe=safe).encode("ascii")


def _canonical_forms(
    raw_path: bytes,
    pairs: list[tuple[bytes, bytes]],
    raw_query: bytes,
    presigned: bool,
) -> list[tuple[bytes, bytes]]:
    """
    The canonical paths and queries to try, the strict form first, then the
    form the client sent.
    """
    strict_path = _encode(unquote_to_bytes(raw_path), "/") or b"/"
    strict_query = b"&".join(
        b"=".join(pair)
        for pair in sorted(
            (_encode(name, ""), _encode(value, ""))
            for name, value in pairs
            if not (presigned and name == b"X-Amz-Signature")
        )
    )
    sent_pairs = []
    for part in raw_query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            if not (presigned and unquote_to_bytes(name) == b"X-Amz-Signature"):
                sent_pairs.append((name, value))
    sent_query = b"&".join(b"=".join(pair) for pair in sorted(sent_pairs))
    return [(strict_path, strict_query), (raw_path or b"/", sent_query)]


def _canonical_headers(signed: list[bytes], headers: Headers) -> bytes:
    lines = []
    for name in signed:
        values = headers.getRawHeaders(name) or []
        lines.append(name + b":" + b",".join(b" ".join(value.split()) for value in values) + b"\n")
    return b"".join(lines)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


# The parts of an aws-chunked body, for BodyChecker.
_CHUNK_HEADER = "chunk header"
_CHUNK_DATA = "chunk data"
_CHUNK_END = "end of chunk data"
_TRAILER = "trailer"
_DONE = "done"

_MAX_LINE = 4096
_MAX_TRAILER = 16384

#: The checksums checked, with the length of their digest.
_CHECKSUMS = {"crc32": 4, "sha1": 20, "sha256": 32}
#: Those accepted without being checked: nothing here computes them.
_UNCHECKED_CHECKSUMS = frozenset({"crc32c", "crc64nvme"})


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _CRC32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _checksum_value(name: str, value: bytes) -> bytes:
    """
    Decode the base64 value of an C{x-amz-checksum-*} header or trailer.
    """
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != _CHECKSUMS[name]:
        raise SignatureError(
            "InvalidRequest", f"Value for x-amz-checksum-{name} header is invalid."
        )
    return digest


def _framing(message: str) -> SignatureError:
    return SignatureError("InvalidRequest", f"The aws-chunked body is malformed: {message}")


class BodyChecker:
    """
    Follow a request body as it arrives, for a request that L{verify}
    accepted: decode it if it is C{aws-chunked} (the payload modes starting
    with C{STREAMING-}), check its chunk and trailer signatures, and count
    and hash what it carries.

    Pieces may be split anywhere, even inside a chunk header or a trailer.
    Memory stays bounded: a header or trailer line longer than 4 KiB, or
    trailers above 16 KiB, are refused.  Checksums C{crc32}, C{sha1} and
    C{sha256} (in headers or trailers) are checked; C{crc32c} and
    C{crc64nvme} are accepted unchecked.

    @ivar decoded_length: how many payload bytes came out so far.
    """

    def __init__(self, verified: Verified, headers: Headers) -> None:
        """
        @raise SignatureError: if the headers describing the body are
            malformed: C{InvalidDigest} for a C{Content-MD5} that is not the
            base64 of 16 bytes, C{InvalidRequest} for a bad
            C{x-amz-checksum-*}, C{x-amz-trailer} or
            C{x-amz-decoded-content-length}.
        """
        self._verified = verified
        self.decoded_length = 0
        payload = verified.payload
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc32 = _CRC32()
        self._sha256 = hashlib.sha256() if _HEX_SHA256.fullmatch(payload) else None
        self._chunked = payload in _STREAMING
        self._signed_chunks = payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        self._signed_trailer = payload == STREAMING_SIGNED_TRAILER
        self._error: SignatureError | None = None

        self._declared_length = self._read_declared_length(headers)
        self._content_md5 = self._read_content_md5(headers)
        self._expected: list[tuple[str, bytes]] = []
        for name in _CHECKSUMS:
            values = headers.getRawHeaders(b"x-amz-checksum-" + name.encode())
            if values is not None:
                if len(values) != 1:
                    raise SignatureError(
                        "InvalidRequest", f"Value for x-amz-checksum-{name} header is invalid."
                    )
                self._expected.append((name, _checksum_value(name, values[0])))
        self._announced = self._read_trailer_names(headers, payload)
        digests: dict[str, _Digest] = {"crc32": self._crc32}
        if self._sha256 is not None:
            digests["sha256"] = self._sha256
        for name in [name for name, _ in self._expected] + self._announced:
            if name == "sha1" and name not in digests:
                digests[name] = hashlib.sha1(usedforsecurity=False)
            elif name == "sha256" and name not in digests:
                digests[name] = hashlib.sha256()
        self._digests = digests
        #: Every digest but the CRC32, which is always kept.
        self._hashing = [digest for digest in digests.values() if digest is not self._crc32]

        self._state = _CHUNK_HEADER if self._chunked else _CHUNK_DATA
        self._line = bytearray()
        self._remaining = 0
        self._chunks = 0
        self._chunk_hash = hashlib.sha256()
        self._chunk_signature = ""
        self._previous_signature = verified.seed_signature
        self._trailers: list[tuple[bytes, bytes]] = []
        self._trailer_bytes = 0
        self._trailer_signature: str | None = None

    @staticmethod
    def _read_declared_length(headers: Headers) -> int | None:
        values = headers.getRawHeaders(b"x-amz-decoded-content-length")
        if values is None:
            return None
        text = values[0].strip()
        if len(values) != 1 or not text.isdigit() or len(text) > 19:
            raise SignatureError(
                "InvalidRequest", "x-amz-decoded-content-length must be a number of bytes."
            )
        return int(text)

    @staticmethod
    def _read_content_md5(headers: Headers) -> bytes | None:
        values = headers.getRawHeaders(b"content-md5")
        if values is None:
            return None
        try:
            digest = base64.b64decode(values[0].strip(), validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(values) != 1 or len(digest) != 16:
            raise SignatureError("InvalidDigest", "The Content-MD5 you specified was invalid.")
        return digest

    @staticmethod
    def _read_trailer_names(headers: Headers, payload: str) -> list[str]:
        """
        The checksums C{x-amz-trailer} announces, without the
        C{x-amz-checksum-} prefix.
        """
        values = headers.getRawHeaders(b"x-amz-trailer")
        if values is None:
            return []
        if payload not in (STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
            raise SignatureError(
                "InvalidRequest",
                f"x-amz-trailer needs x-amz-content-sha256 {STREAMING_UNSIGNED_TRAILER} "
                f"or {STREAMING_SIGNED_TRAILER}.",
            )
        names = []
        for value in values:
            for item in value.split(b","):
                name = item.strip().lower().decode("latin-1")
                algorithm = name.removeprefix("x-amz-checksum-")
                if algorithm == name or not (
                    algorithm in _CHECKSUMS or algorithm in _UNCHECKED_CHECKSUMS
                ):
                    raise SignatureError(
                        "InvalidRequest", f"The trailer {name!r} is not supported."
                    )
                if algorithm in names:
                    raise SignatureError("InvalidRequest", f"The trailer {name!r} is repeated.")
                names.append(algorithm)
        return names

    @property
    def md5_hex(self) -> str:
        """
        The MD5 of the payload so far, in hexadecimal.
        """
        return self._md5.hexdigest()

    @property
    def crc32(self) -> int:
        """
        The CRC32 of the payload so far.
        """
        return self._crc32.value

    def feed(self, data: bytes) -> bytes:
        """
        Take the next piece of the body.

        @return: the payload bytes it carries (the piece itself unless the
            body is C{aws-chunked}).  They are checked only when the chunk
            they belong to ends, or by L{finish}.
        @raise SignatureError: C{SignatureDoesNotMatch} for a wrong chunk or
            trailer signature, C{InvalidRequest} for broken framing or
            trailers, C{IncompleteBody} for more payload than
            C{x-amz-decoded-content-length}.  Every later call raises the
            same error.
        """
        if self._error is not None:
            raise self._error
        try:
            if not self._chunked:
                self._payload(data)
                return data
            out: list[bytes] = []
            self._parse(data, out)
            return b"".join(out)
        except SignatureError as error:
            self._error = error
            raise

    def finish(self) -> None:
        """
        The body is complete: check what only its end can tell.

        @raise SignatureError: C{IncompleteBody} if an C{aws-chunked} body
            stopped short or the payload length differs from
            C{x-amz-decoded-content-length}; C{XAmzContentSHA256Mismatch} if
            the payload's SHA-256 is not the signed one; C{BadDigest} if its
            MD5 is not C{Content-MD5} or a checksum does not match; or the
            error L{feed} raised.
        """
        if self._error is not None:
            raise self._error
        try:
            self._finish()
        except SignatureError as error:
            self._error = error
            raise

    def _finish(self) -> None:
        if self._chunked and self._state != _DONE:
            raise SignatureError(
                "IncompleteBody",
                f"The request body ended inside its aws-chunked encoding (in a {self._state}).",
            )
        if self._declared_length is not None and self.decoded_length != self._declared_length:
            raise SignatureError(
                "IncompleteBody",
                f"The request body carried {self.decoded_length} bytes where "
                f"x-amz-decoded-content-length announced {self._declared_length}.",
            )
        if self._sha256 is not None:
            computed = self._sha256.hexdigest()
            if computed != self._verified.payload.lower():
                raise SignatureError(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    extra={
                        "ClientComputedContentSHA256": self._verified.payload,
                        "S3ComputedContentSHA256": computed,
                    },
                )
        if self._content_md5 is not None and self._md5.digest() != self._content_md5:
            raise SignatureError(
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
                extra={
                    "ExpectedDigest": base64.b64encode(self._content_md5).decode("ascii"),
                    "CalculatedDigest": base64.b64encode(self._md5.digest()).decode("ascii"),
                },
            )
        for name, expected in self._expected:
            if self._digests[name].digest() != expected:
                raise SignatureError(
                    "BadDigest",
                    f"The {name.upper()} you specified did not match the calculated checksum.",
                )

    def _payload(self, data: bytes) -> None:
        self.decoded_length += len(data)
        if self._declared_length is not None and self.decoded_length > self._declared_length:
            raise SignatureError(
                "IncompleteBody",
                f"The request body carries more than the {self._declared_length} bytes "
                "x-amz-decoded-content-length announced.",
            )
        self._md5.update(data)
        self._crc32.update(data)
        for digest in self._hashing:
            digest.update(data)

    def _parse(self, data: bytes, out: list[bytes]) -> None:
        """
        Walk through one piece of an aws-chunked body.
        """
        position = 0
        while position < len(data):
            if self._state == _CHUNK_DATA:
                take = min(self._remaining, len(data) - position)
                piece = data[position : position + take]
                position += take
                self._remaining -= take
                self._payload(piece)
                if self._signed_chunks:
                    self._chunk_hash.update(piece)
                out.append(piece)
                if not self._remaining:
                    self._check_chunk()
                    self._state = _CHUNK_END
            elif self._state == _DONE:
                raise _framing("bytes follow its end.")
            else:
                end = data.find(b"\n", position)
                stop = len(data) if end < 0 else end + 1
                self._line += data[position:stop]
                position = stop
                if len(self._line) > _MAX_LINE:
                    raise _framing(f"a line of its {self._state} is too long.")
                if end >= 0:
                    line = bytes(self._line)
                    self._line.clear()
                    if not line.endswith(b"\r\n"):
                        raise _framing(f"a line of its {self._state} does not end with CRLF.")
                    self._line_done(line[:-2])

    def _line_done(self, line: bytes) -> None:
        if self._state == _CHUNK_HEADER:
            self._chunk_header(line)
        elif self._state == _CHUNK_END:
            if line:
                raise _framing(f"chunk {self._chunks} is longer than its size says.")
            self._state = _CHUNK_HEADER
        else:
            self._trailer_line(line)

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _framing(f"{line[:80]!r} is not a chunk header.")
        self._chunks += 1
        if self._signed_chunks:
            name, _, signature = extension.partition(b"=")
            if name != b"chunk-signature" or not _SIGNATURE.fullmatch(signature.decode("latin-1")):
                raise _framing(f"chunk {self._chunks} has no chunk-signature.")
            self._chunk_signature = signature.decode("ascii")
            self._chunk_hash = hashlib.sha256()
        self._remaining = int(size_text, 16)
        if self._remaining:
            self._state = _CHUNK_DATA
        else:
            self._check_chunk()
            self._state = _TRAILER

    def _check_chunk(self) -> None:
        """
        Check the signature of the chunk just read, chained from the
        previous one's (the request's for the first).
        """
        if not self._signed_chunks:
            return
        verified = self._verified
        string_to_sign = "\n".join(
            [
                ALGORITHM + "-PAYLOAD",
                verified.timestamp,
                verified.scope,
                self._previous_signature,
                _EMPTY_SHA256,
                self._chunk_hash.hexdigest(),
            ]
        )
        expected = _hmac_hex(verified.signing_key, string_to_sign)
        if not hmac.compare_digest(expected.encode(), self._chunk_signature.encode()):
            raise SignatureError(
                "SignatureDoesNotMatch",
                f"The signature of chunk {self._chunks} of the body does not match: "
                "the body was changed, or signed with another key.",
                extra={"StringToSign": string_to_sign},
            )
        self._previous_signature = self._chunk_signature

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > _MAX_TRAILER:
            raise _framing("its trailers are too long.")
        if not line:
            self._end_of_trailers()
            self._state = _DONE
            return
        if self._trailer_signature is not None:
            raise _framing("a trailer follows x-amz-trailer-signature.")
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if not colon:
            raise _framing(f"the trailer {line[:80]!r} has no colon.")
        if name == b"x-amz-trailer-signature":
            if not self._signed_trailer:
                raise _framing("x-amz-trailer-signature comes in a body with unsigned trailers.")
            self._trailer_signature = value.decode("latin-1")
            return
        text = name.decode("latin-1")
        algorithm = text.removeprefix("x-amz-checksum-")
        if algorithm == text or algorithm not in self._announced:
            raise _framing(f"the trailer {text!r} was not announced in x-amz-trailer.")
        if any(seen == name for seen, _ in self._trailers):
            raise _framing(f"the trailer {text!r} is repeated.")
        self._trailers.append((name, value))
        if algorithm in _CHECKSUMS:
            self._expected.append((algorithm, _checksum_value(algorithm, value)))

    def _end_of_trailers(self) -> None:
        names = {name for name, _ in self._trailers}
        missing = [
            name for name in self._announced if b"x-amz-checksum-" + name.encode() not in names
        ]
        if missing:
            raise _framing(f"the announced trailer x-amz-checksum-{missing[0]} is missing.")
        if not self._signed_trailer:
            return
        if self._trailer_signature is None:
            raise _framing("x-amz-trailer-signature is missing.")
        canonical = b"".join(name + b":" + value + b"\n" for name, value in self._trailers)
        verified = self._verified
        string_to_sign = "\n".join(
            [
                ALGORITHM + "-TRAILER",
                verified.timestamp,
                verified.scope,
                self._previous_signature,
                hashlib.sha256(canonical).hexdigest(),
            ]
        )
        expected = _hmac_hex(verified.signing_key, string_to_sign)
        if not hmac.compare_digest(expected.encode(), self._trailer_signature.encode("latin-1")):
            raise SignatureError(
                "SignatureDoesNotMatch",
                "The signature of the body's trailers does not match.",
                extra={"StringToSign": string_to_sign},
            )
