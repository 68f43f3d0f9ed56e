"""
The C{s3} storage backend: files as the objects of a bucket of Amazon S3,
or of another service that speaks its protocol, through boto3.

Each file is one object, named by the C{prefix} option followed by its key.
An upload is an S3 multipart upload with one part per chunk: the chunk at
offset C{n * chunk_size} is part C{n + 1}, so every part but the last has
exactly the chunk size (at least 5 MiB, S3's smallest part).  Nothing of an
upload is visible before L{S3Backend.end_upload} completes it.  The backend
remembers the uploads it began, but the service is the truth: where an
upload resumes, whether it has holes, what is committed, all come from the
service's list of the parts it holds.

boto3 blocks: the plugin says so, and the host runs the backend's calls in
threads of its own.  One boto3 client, which is thread-safe, serves them
all; what the backend remembers is guarded by a lock.  boto3 is imported
only when a backend is made, so that a node without it runs every other
plugin.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from importlib import import_module
from types import ModuleType
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.errors import (
    ConfigError,
    DriverError,
    P2PBlobError,
    ServiceError,
    StorageKeyNotFoundError,
)
from p2pblob.interfaces import IStorageBackend
from p2pblob.storage.keys import split_key

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_COPY",
    "MAX_NAME",
    "MAX_PART",
    "MAX_PARTS",
    "MIN_PART",
    "READ_TIMEOUT",
    "S3Backend",
    "make_backend",
]

_MiB = 1024 * 1024

MIN_PART = 5 * _MiB
"""
The smallest part of a multipart upload S3 takes (but for the last), hence
the smallest chunk size.
"""

MAX_PART = 5 * 1024 * _MiB
"""
The largest part of a multipart upload S3 takes, hence the largest chunk
size.
"""

MAX_PARTS = 10_000
"""
The most parts a multipart upload may have.
"""

MAX_COPY = 5 * 1024 * _MiB
"""
The largest object S3 copies in one request; larger files are renamed by
the host, chunk by chunk.
"""

MAX_NAME = 1024
"""
The longest object name S3 takes, in bytes of UTF-8.
"""

CONNECT_TIMEOUT = 10.0
"""
Seconds to wait for a connection to the service.
"""

READ_TIMEOUT = 60.0
"""
Seconds to wait for the service to send something, once connected.
"""

# Error codes of the service that say it is busy or failing: trying again
# later may work.
_BUSY = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)

# Error codes that say the credentials are wrong or not allowed.
_DENIED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
    }
)

# Error codes of a missing object (HeadObject has no body: only its status).
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})

# Error codes that say the bucket is in another region.
_ELSEWHERE = frozenset({"PermanentRedirect", "301", "AuthorizationHeaderMalformed"})

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _code(error: Any) -> tuple[str, int]:
    """
    The error code and HTTP status of a botocore C{ClientError}.
    """
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code, status if isinstance(status, int) else 0


def _multipart_etag(parts: list[dict[str, Any]]) -> str | None:
    """
    The ETag S3 gives an object made of these parts: the MD5 of their MD5s,
    and their number.  C{None} if a part's ETag is not its MD5 (as with
    some kinds of encryption).
    """
    try:
        digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in parts)
    except (ValueError, AttributeError):
        return None
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"'


@dataclass
class _Upload:
    """
    What a backend remembers of an upload in progress.

    @ivar upload_id: the service's name for it.
    @ivar size: the size given to C{start_upload}, if any.
    @ivar parts: the sizes of the parts known to be stored, by part number
        (from the service's list, or written since).
    @ivar completing: the ETag the object would have once a completion sent
        to the service is done, in case its answer is lost.
    """

    upload_id: str
    size: int | None = None
    parts: dict[int, int] = field(default_factory=dict)
    completing: str | None = None


def _service(
    f: Callable[Concatenate[S3Backend, _P], _T],
) -> Callable[Concatenate[S3Backend, _P], _T]:
    """
    Make sure the bucket is there before a call, and report what boto3
    raises as p2pblob's errors (see L{S3Backend._translate}), naming the
    key the call is about (its first argument).
    """

    @wraps(f)
    def call(self: S3Backend, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        key = args[0] if args and isinstance(args[0], str) else None
        try:
            self._check_bucket()
            return f(self, *args, **kwargs)
        except P2PBlobError:
            raise
        except self._failures as e:
            raise self._translate(e, key) from e

    return call


@implementer(IStorageBackend)
class S3Backend:
    """
    Files as objects of a bucket of an S3 service.

    @ivar client: the boto3 client.
    @ivar bucket: the bucket's name.
    @ivar prefix: what every object name starts with, before the key.
    @ivar where: the service, in words, for messages.
    """

    def __init__(
        self,
        client: Any,
        exceptions: ModuleType,
        bucket: str,
        *,
        prefix: str = "",
        chunk_size: int = MIN_PART,
        create_bucket: bool = False,
        region: str = "us-east-1",
        where: str = "S3",
    ) -> None:
        """
        @param client: a boto3 S3 client.
        @param exceptions: C{botocore.exceptions}.
        @param bucket: the bucket's name.
        @param prefix: what every object name starts with.
        @param chunk_size: the chunk size wanted until L{set_chunk_size}
            says otherwise (raised to L{MIN_PART}).
        @param create_bucket: make the bucket if it is missing.
        @param region: the region to make it in.
        @param where: the service, in words, for messages.
        """
        self.client = client
        self._errors = exceptions
        self._failures: tuple[type[BaseException], ...] = (
            exceptions.ClientError,
            exceptions.BotoCoreError,
        )
        self.bucket = bucket
        self.prefix = prefix
        self.where = where
        self._create_bucket = create_bucket
        self._region = region
        self._chunk_size = self._agree(chunk_size)
        self._lock = threading.Lock()
        self._uploads: dict[str, _Upload] = {}
        self._bucket_lock = threading.Lock()
        self._bucket_checked = False

    # -- boto3's errors ----------------------------------------------------

    def _translate(self, error: BaseException, key: str | None) -> P2PBlobError:
        """
        The p2pblob error that reports a boto3 one: L{ServiceError} when the
        service is busy, failing or out of reach (the host tries again),
        L{DriverError} when it refuses what was asked (a missing bucket,
        wrong credentials, a missing upload), L{StorageKeyNotFoundError}
        when the object is missing.
        """
        bucket = f"the bucket {self.bucket!r} at {self.where}"
        about = f" ({key!r:.200})" if key is not None else ""
        e = self._errors
        if isinstance(error, e.ClientError):
            code, status = _code(error)
            message = str(getattr(error, "response", {}).get("Error", {}).get("Message", ""))
            said = f"{code}: {message}" if message else code
            if code == "NoSuchUpload":
                return DriverError(f"no upload of {key!r:.200} is in progress")
            if code == "NoSuchBucket":
                return DriverError(f"there is no {bucket}")
            if code in _DENIED or status == 403:
                return DriverError(
                    f"{bucket} refused access{about} ({said}); check the credentials "
                    "(the access_key and secret_key options, or boto3's own settings) "
                    "and what they are allowed to do"
                )
            if code in _ELSEWHERE or status == 301:
                return DriverError(
                    f"{bucket} is in another region than {self._region!r} ({said}); "
                    "set the region option"
                )
            if code in _BUSY or status == 429 or (status >= 500 and code != "NotImplemented"):
                return ServiceError(f"{bucket} failed{about}: {said}")
            if key is not None and (code in _MISSING or status == 404):
                return StorageKeyNotFoundError(key)
            return DriverError(f"{bucket} refused a request{about}: {said}")
        transient = (
            e.HTTPClientError,
            e.ConnectionError,
            e.IncompleteReadError,
            e.ChecksumError,
            getattr(e, "FlexibleChecksumError", e.ChecksumError),
        )
        if isinstance(error, transient):
            return ServiceError(f"talking to {bucket} failed{about}: {error}")
        if isinstance(error, (e.NoCredentialsError, e.PartialCredentialsError)):
            return DriverError(
                f"there are no credentials for {bucket}: give the access_key and "
                "secret_key options, or set up boto3's own"
            )
        return DriverError(f"boto3 failed with {bucket}{about}: {error}")

    def _check_bucket(self) -> None:
        """
        Make sure, once, that the bucket is there (making it if the
        C{create_bucket} option says so), so that a missing bucket is not
        taken for a missing object.
        """
        if self._bucket_checked:
            return
        with self._bucket_lock:
            if self._bucket_checked:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except self._errors.ClientError as e:
                code, status = _code(e)
                if status != 404 and code not in ("NoSuchBucket", "NotFound", "404"):
                    raise
                if not self._create_bucket:
                    raise DriverError(
                        f"there is no bucket {self.bucket!r} at {self.where} (make it, or "
                        "set the create_bucket option)"
                    ) from None
                self._make_bucket()
            self._bucket_checked = True

    def _make_bucket(self) -> None:
        arguments: dict[str, Any] = {"Bucket": self.bucket}
        if self._region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self.client.create_bucket(**arguments)
        except self._errors.ClientError as e:
            code, _ = _code(e)
            if code == "BucketAlreadyOwnedByYou":
                return
            if code == "BucketAlreadyExists":
                raise DriverError(
                    f"the bucket name {self.bucket!r} is taken at {self.where} by "
                    "someone else: choose another"
                ) from None
            raise

    # -- names and parts ---------------------------------------------------

    def _name(self, key: str) -> str:
        """
        The object name of a key (checked).
        """
        split_key(key)
        name = self.prefix + key
        if len(name.encode("utf-8")) > MAX_NAME:
            raise DriverError(
                f"{key!r:.200} is too long for S3: object names have at most {MAX_NAME} bytes"
            )
        return name

    def _agree(self, size: int) -> int:
        if size > MAX_PART:
            raise DriverError(f"S3 cannot take chunks of more than {MAX_PART} bytes, not {size}")
        return max(size, MIN_PART)

    def _pages(self, operation: str, **arguments: Any) -> Iterator[dict[str, Any]]:
        """
        The pages of a listing, however many it takes.
        """
        paginator = self.client.get_paginator(operation)
        yield from paginator.paginate(Bucket=self.bucket, **arguments)

    def _list_parts(self, name: str, upload_id: str) -> list[dict[str, Any]]:
        """
        The parts the service holds of an upload, by part number.

        @raise botocore.exceptions.ClientError: C{NoSuchUpload} if there is
            no such upload.
        """
        parts: list[dict[str, Any]] = []
        for page in self._pages("list_parts", Key=name, UploadId=upload_id):
            parts.extend(page.get("Parts", []))
        return sorted(parts, key=lambda part: int(part["PartNumber"]))

    def _open_uploads(self, name: str) -> list[str]:
        """
        The ids of the multipart uploads of an object the service holds,
        oldest first.
        """
        found: list[tuple[Any, int, str]] = []
        for page in self._pages("list_multipart_uploads", Prefix=name):
            for upload in page.get("Uploads", []):
                if upload.get("Key") == name:
                    found.append((upload.get("Initiated"), len(found), upload["UploadId"]))
        # Uploads started in the same second keep the listing's order.
        found.sort(key=lambda u: (u[0] is not None, u[0] or 0, u[1]))
        return [upload_id for _, _, upload_id in found]

    def _abort(self, name: str, upload_id: str) -> None:
        """
        Abort a multipart upload, if the service still has it.
        """
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except self._errors.ClientError as e:
            if _code(e)[0] != "NoSuchUpload":
                raise

    def _abort_all(self, key: str, name: str, keep: str | None = None) -> None:
        """
        Abort every upload of a key, the one remembered and those the
        service holds, but for C{keep}.
        """
        with self._lock:
            remembered = self._uploads.get(key)
            if remembered is not None and remembered.upload_id != keep:
                del self._uploads[key]
        ids = self._open_uploads(name)
        if remembered is not None and remembered.upload_id not in ids:
            ids.append(remembered.upload_id)
        for upload_id in ids:
            if upload_id != keep:
                self._abort(name, upload_id)

    def _forget(self, key: str, upload: _Upload) -> None:
        with self._lock:
            if self._uploads.get(key) is upload:
                del self._uploads[key]

    def _upload_of(self, key: str, name: str) -> _Upload:
        """
        The upload of a key in progress: the one remembered or else the
        newest the service holds.

        @raise DriverError: there is none.
        """
        with self._lock:
            upload = self._uploads.get(key)
        if upload is not None:
            return upload
        for upload_id in reversed(self._open_uploads(name)):
            try:
                parts = self._list_parts(name, upload_id)
            except self._errors.ClientError as e:
                if _code(e)[0] == "NoSuchUpload":
                    continue
                raise
            found = _Upload(upload_id, parts=self._sizes(parts))
            with self._lock:
                return self._uploads.setdefault(key, found)
        raise DriverError(f"no upload of {key!r:.200} is in progress")

    @staticmethod
    def _sizes(parts: list[dict[str, Any]]) -> dict[int, int]:
        return {int(part["PartNumber"]): int(part["Size"]) for part in parts}

    @staticmethod
    def _written(sizes: dict[int, int], chunk: int) -> tuple[int, int | None]:
        """
        How many bytes from the start of the file parts of these sizes hold
        without a gap, and the number of the short part they end with (the
        end of the file), if they do.
        """
        written = 0
        number = 1
        while number in sizes:
            written += sizes[number]
            if sizes[number] != chunk:
                return written, number
            number += 1
        return written, None

    def _check_parts(self, parts: list[dict[str, Any]], chunk: int, size: int | None) -> str:
        """
        What is wrong with the parts of an upload that is to be completed,
        in words, or C{""}.
        """
        total = 0
        for number, part in enumerate(parts, start=1):
            if int(part["PartNumber"]) != number:
                return f"lacks its part {number} (bytes from {total})"
            if number < len(parts) and int(part["Size"]) != chunk:
                return f"has a part {number} of {part['Size']} bytes, not {chunk}"
            total += int(part["Size"])
        if size is not None and total != size:
            return f"has {total} bytes, not the {size} announced"
        return ""

    # -- IStorageBackend ---------------------------------------------------

    def set_chunk_size(self, size: int) -> int:
        self._chunk_size = self._agree(size)
        return self._chunk_size

    @_service
    def get_chunk(self, key: str, offset: int, size: int) -> bytes:
        name = self._name(key)
        if offset < 0:
            raise DriverError(f"cannot read {key!r:.200} from offset {offset}")
        if size <= 0:
            if not self.exists(key):
                raise StorageKeyNotFoundError(key)
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={offset}-{offset + size - 1}"
            )
        except self._errors.ClientError as e:
            # An object exists, but the range starts at or past its end.
            if _code(e)[0] == "InvalidRange":
                return b""
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        if "ContentRange" not in response:
            # A service that ignored the range sent the whole object.
            return data[offset : offset + size]
        return data

    @_service
    def get_file(self, key: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    @_service
    def start_upload(self, key: str, size: int | None) -> str:
        name = self._name(key)
        chunk = self._chunk_size
        if size is not None and (size < 0 or -(-size // chunk) > MAX_PARTS):
            raise DriverError(
                f"{key!r:.200} cannot be uploaded in at most {MAX_PARTS} chunks of "
                f"{chunk} bytes ({size} bytes): raise the chunk_size option"
            )
        self._abort_all(key, name)
        response = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload = _Upload(str(response["UploadId"]), size)
        with self._lock:
            self._uploads[key] = upload
        return upload.upload_id

    @_service
    def upload_chunk(self, key: str, offset: int, data: bytes) -> None:
        name = self._name(key)
        chunk = self._chunk_size
        if offset < 0 or offset % chunk:
            raise DriverError(
                f"a chunk of {key!r:.200} at offset {offset}: S3 uploads take chunks "
                f"at multiples of the chunk size, {chunk} bytes"
            )
        if len(data) > chunk:
            raise DriverError(
                f"a chunk of {key!r:.200} has {len(data)} bytes, more than the chunk "
                f"size, {chunk} bytes"
            )
        number = offset // chunk + 1
        if number > MAX_PARTS:
            raise DriverError(
                f"{key!r:.200} cannot be uploaded in at most {MAX_PARTS} chunks of "
                f"{chunk} bytes: raise the chunk_size option"
            )
        upload = self._upload_of(key, name)
        with self._lock:
            known = dict(upload.parts)
        if offset > self._written(known, chunk)[0]:
            # What we know may be behind the service: ask it.
            known = self._sizes(self._list_parts(name, upload.upload_id))
            with self._lock:
                upload.parts = dict(known)
            written = self._written(known, chunk)[0]
            if offset > written:
                raise DriverError(
                    f"a chunk of {key!r:.200} at offset {offset} would leave a hole "
                    f"after the {written} bytes written"
                )
        if not data:
            return
        try:
            self.client.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload.upload_id,
                PartNumber=number,
                Body=data,
            )
        except self._errors.ClientError as e:
            if _code(e)[0] == "NoSuchUpload":
                self._forget(key, upload)
            raise
        with self._lock:
            upload.parts[number] = len(data)

    @_service
    def upload_file(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)

    @_service
    def end_upload(self, key: str) -> None:
        name = self._name(key)
        chunk = self._chunk_size
        upload = self._upload_of(key, name)
        try:
            parts = self._list_parts(name, upload.upload_id)
        except self._errors.ClientError as e:
            if _code(e)[0] == "NoSuchUpload" and self._completed(key, name, upload):
                return
            raise
        problem = self._check_parts(parts, chunk, upload.size)
        if problem:
            self._abort(name, upload.upload_id)
            self._forget(key, upload)
            raise DriverError(f"the upload of {key!r:.200} {problem}: it is given up")
        if not parts:
            # S3 completes no upload without parts: an empty file is put.
            self._abort(name, upload.upload_id)
            self.client.put_object(Bucket=self.bucket, Key=name, Body=b"")
            self._forget(key, upload)
            return
        upload.completing = _multipart_etag(parts)
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload.upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": int(part["PartNumber"]), "ETag": part["ETag"]}
                        for part in parts
                    ]
                },
            )
        except self._errors.ClientError as e:
            if _code(e)[0] == "NoSuchUpload" and self._completed(key, name, upload):
                return
            raise
        self._forget(key, upload)

    def _completed(self, key: str, name: str, upload: _Upload) -> bool:
        """
        Whether an upload the service no longer has was completed by an
        earlier try whose answer was lost: the object has the ETag the
        completion gives.
        """
        if upload.completing is None:
            self._forget(key, upload)
            return False
        try:
            etag = self.client.head_object(Bucket=self.bucket, Key=name).get("ETag")
        except self._errors.ClientError as e:
            if _code(e)[0] in _MISSING:
                etag = None
            else:
                raise
        self._forget(key, upload)
        return bool(etag == upload.completing)

    @_service
    def abort_upload(self, key: str) -> None:
        self._abort_all(key, self._name(key))

    @_service
    def restart_upload(self, key: str, offset: int, upload_id: str | None = None) -> int:
        name = self._name(key)
        chunk = self._chunk_size
        listed = self._open_uploads(name)
        candidates = [upload_id] if upload_id else []
        candidates += [u for u in reversed(listed) if u != upload_id]
        found: tuple[str, dict[int, int]] | None = None
        for candidate in candidates:
            try:
                found = (candidate, self._sizes(self._list_parts(name, candidate)))
            except self._errors.ClientError as e:
                if _code(e)[0] == "NoSuchUpload":
                    continue
                raise
            break
        if found is None:
            self.start_upload(key, None)
            return 0
        chosen, sizes = found
        written, short = self._written(sizes, chunk)
        if any(size > chunk for size in sizes.values()) or (
            short is not None and max(sizes) > short
        ):
            # The parts were cut for another chunk size: start again.
            self.start_upload(key, None)
            return 0
        with self._lock:
            remembered = self._uploads.get(key)
            size = remembered.size if remembered and remembered.upload_id == chosen else None
            self._uploads[key] = _Upload(chosen, size, sizes)
        # Any other upload of the key would only be billed.
        for other in listed:
            if other != chosen:
                self._abort(name, other)
        return written

    @_service
    def delete_file(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    @_service
    def move_file(self, old_key: str, new_key: str) -> None:
        old = self._name(old_key)
        new = self._name(new_key)
        if old == new:
            return
        size = self.size(old_key)
        if size is None:
            raise StorageKeyNotFoundError(old_key)
        if size > MAX_COPY:
            # The host copies it chunk by chunk.
            raise NotImplementedError("S3 copies at most 5 GiB at once")
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=new, CopySource={"Bucket": self.bucket, "Key": old}
            )
        except self._errors.ClientError as e:
            if _code(e)[0] in _MISSING:
                raise StorageKeyNotFoundError(old_key) from None
            raise
        self.client.delete_object(Bucket=self.bucket, Key=old)

    @_service
    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @_service
    def size(self, key: str) -> int | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except self._errors.ClientError as e:
            code, status = _code(e)
            if code in _MISSING or status == 404:
                return None
            raise
        return int(response["ContentLength"])

    def close(self) -> None:
        # the client's pool of connections (a later call opens new ones)
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


verifyClass(IStorageBackend, S3Backend)

_sessions: dict[ModuleType, Any] = {}
_sessions_lock = threading.Lock()


def _make_client(boto3: ModuleType, **arguments: Any) -> Any:
    """
    A boto3 S3 client, made by a session shared by every backend: a
    session loads the service's description once, which takes a tenth of
    a second, but is not thread-safe, hence the lock.  (The clients it
    makes are thread-safe.)
    """
    with _sessions_lock:
        session = _sessions.get(boto3)
        if session is None:
            session = _sessions[boto3] = boto3.session.Session()
        return session.client("s3", **arguments)


def make_backend(
    options: dict[str, Any],
    clock: IReactorTime,
    importer: Callable[[str], ModuleType] = import_module,
) -> S3Backend:
    """
    Make the C{s3} plugin's backend (see
    L{p2pblob.interfaces.IStoragePlugin.backend}) from its options: C{bucket},
    C{endpoint_url} (empty for AWS), C{region}, C{access_key} and
    C{secret_key} (empty for boto3's own credentials), C{prefix},
    C{create_bucket} and C{addressing_style}.

    @param importer: imports a module by name (boto3's are imported only
        here).

    @raise p2pblob.errors.ConfigError: boto3 is not installed, or the
        options do not go together.
    """
    try:
        boto3 = importer("boto3")
        config = importer("botocore.config")
        exceptions = importer("botocore.exceptions")
    except ImportError:
        raise ConfigError(
            "the 's3' storage plugin needs boto3: pip install 'p2pblob[s3]'"
        ) from None
    bucket: str = options["bucket"]
    if not bucket:
        raise ConfigError("storage plugin 's3': option 'bucket' must name a bucket")
    access_key: str = options["access_key"]
    secret_key: str = options["secret_key"]
    if bool(access_key) != bool(secret_key):
        raise ConfigError("storage plugin 's3': options 'access_key' and 'secret_key' go together")
    endpoint: str = options["endpoint_url"]
    region: str = options["region"]
    settings = config.Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        # The host tries failed calls again, with pauses that grow.
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": options["addressing_style"]},
    )
    try:
        client = _make_client(
            boto3,
            endpoint_url=endpoint or None,
            region_name=region,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=settings,
        )
    except ValueError as e:
        raise ConfigError(f"storage plugin 's3': option 'endpoint_url' {e}") from None
    return S3Backend(
        client,
        exceptions,
        bucket,
        prefix=options["prefix"],
        chunk_size=options["chunk_size"],
        create_bucket=options["create_bucket"],
        region=region,
        where=endpoint or f"AWS S3 ({region})",
    )
