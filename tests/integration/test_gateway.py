"""
The S3 gateway against real, independent S3 clients: boto3 and the C{aws}
command line (awscli), over real sockets on 127.0.0.1.

Most tests run a whole node (L{make_node}) in this process, on the test's
reactor, and call boto3 from a thread (boto3 blocks) or C{aws} as a
subprocess.  Two run C{twistd p2pblob} processes: a multipart upload that
survives a restart of the node between its parts, and an object put on
node A and read through node B's gateway, which fetches the blobs from A
over the peer protocol.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from p2pblob.config import Config
from p2pblob.node import Node, make_node
from tests.integration._nodes import Seeder, random_file
from tests.storage_conformance._moto import missing

try:
    import boto3
    from botocore import UNSIGNED
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config as BotoConfig
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError
except ImportError:  # pragma: no cover
    boto3 = None

ACCESS, SECRET = "AKIDP2PBLOBTEST", "p2pblob-gateway-secret"
MiB = 1024 * 1024
_GATEWAY_URL = rb"S3 gateway on \S+ \((http://127\.0\.0\.1:\d+)/\)"

_T = TypeVar("_T")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def client(url: str, secret: str = SECRET, unsigned: bool = False) -> Any:
    """
    A boto3 client of the gateway at C{url}: path-style, us-east-1, no
    retries (an error is seen as it is).
    """
    if boto3 is None:
        missing("boto3")
    config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                        signature_version=UNSIGNED if unsigned else "s3v4")
    return boto3.session.Session().client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ACCESS,
        aws_secret_access_key=secret, config=config)


def error_of(call: Callable[[], Any]) -> tuple[int, str]:
    """
    The HTTP status and S3 error code C{call} fails with.
    """
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("the call did not fail")


class InProcessTestCase(TestCase):
    """
    A whole node in this process, off the DHT, with its gateway on an
    ephemeral port of 127.0.0.1.
    """

    anonymous = False
    quota: int | None = None
    max_objects: int | None = None

    async def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        config = Config(
            data_dir=self.directory / "node", dht=False, api_listen=None,
            peer_listen="tcp:0:interface=127.0.0.1",
            s3_listen="tcp:0:interface=127.0.0.1",
            s3_keys=() if self.anonymous else ((ACCESS, SECRET),),
            s3_anonymous=self.anonymous, s3_quota=self.quota,
            s3_max_objects=self.max_objects)
        self.node: Node = make_node(reactor, config)
        self.node.startService()
        self.addCleanup(self.node.stopService)
        assert self.node.gateway is not None
        port = await self.node.gateway.listening
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.s3 = client(self.url, unsigned=self.anonymous)

    def thread(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Any:
        """
        Run a blocking client call in a thread, off the reactor the node
        runs on.
        """
        return deferToThread(f, *args, **kwargs)


class Boto3Tests(InProcessTestCase):
    async def test_buckets(self) -> None:
        s3 = self.s3

        def check() -> None:
            s3.create_bucket(Bucket="photos")
            s3.create_bucket(Bucket="photos")  # (idempotent)
            self.assertEqual([b["Name"] for b in s3.list_buckets()["Buckets"]], ["photos"])
            self.assertEqual(error_of(lambda: s3.create_bucket(Bucket="Bad_Name")),
                             (400, "InvalidBucketName"))
            s3.head_bucket(Bucket="photos")
            s3.put_object(Bucket="photos", Key="k", Body=b"x")
            self.assertEqual(error_of(lambda: s3.delete_bucket(Bucket="photos")),
                             (409, "BucketNotEmpty"))
            s3.delete_object(Bucket="photos", Key="k")
            s3.delete_bucket(Bucket="photos")
            self.assertEqual(s3.list_buckets()["Buckets"], [])
            self.assertEqual(error_of(lambda: s3.head_bucket(Bucket="photos"))[0], 404)
            self.assertEqual(error_of(lambda: s3.get_bucket_acl(Bucket="x")),
                             (501, "NotImplemented"))
            self.assertEqual(error_of(lambda: s3.get_bucket_versioning(Bucket="x")),
                             (501, "NotImplemented"))
            self.assertEqual(error_of(lambda: s3.get_bucket_policy(Bucket="x")),
                             (501, "NotImplemented"))

        await self.thread(check)

    async def test_objects(self) -> None:
        s3 = self.s3
        data = os.urandom(5 * MiB)
        expires = datetime.datetime(2094, 12, 1, 16, tzinfo=datetime.timezone.utc)

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            put = s3.put_object(Bucket="bkt", Key="dir/film.bin", Body=data,
                                ContentType="video/mp4", CacheControl="max-age=60",
                                ContentDisposition="attachment", ContentEncoding="identity",
                                ContentLanguage="fr", Expires=expires,
                                Metadata={"colour": "blue", "Origin": "camera"})
            self.assertEqual(put["ETag"], f'"{_md5(data)}"')
            headers = put["ResponseMetadata"]["HTTPHeaders"]
            self.assertRegex(headers["x-p2pblob-sd-hash"], "^[0-9a-f]{96}$")
            got = s3.get_object(Bucket="bkt", Key="dir/film.bin")
            self.assertEqual(got["Body"].read(), data)
            head = s3.head_object(Bucket="bkt", Key="dir/film.bin")
            for answer in (got, head):
                self.assertEqual(answer["ContentLength"], len(data))
                self.assertEqual(answer["ETag"], f'"{_md5(data)}"')
                self.assertEqual(answer["Metadata"], {"colour": "blue", "origin": "camera"})
                self.assertEqual((answer["ContentType"], answer["CacheControl"],
                                  answer["ContentDisposition"], answer["ContentEncoding"],
                                  answer["ContentLanguage"]),
                                 ("video/mp4", "max-age=60", "attachment", "identity", "fr"))
                self.assertEqual(answer["ExpiresString"], "Wed, 01 Dec 2094 16:00:00 GMT")
                self.assertIsInstance(answer["LastModified"], datetime.datetime)
            self.assertRegex(head["ResponseMetadata"]["HTTPHeaders"]["last-modified"],
                             r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")
            overridden = s3.get_object(Bucket="bkt", Key="dir/film.bin",
                                       ResponseContentType="image/png",
                                       ResponseContentDisposition="inline",
                                       ResponseCacheControl="no-cache",
                                       ResponseContentLanguage="de")
            self.assertEqual((overridden["ContentType"], overridden["ContentDisposition"],
                              overridden["CacheControl"], overridden["ContentLanguage"]),
                             ("image/png", "inline", "no-cache", "de"))
            # (read to its end: a stream being read goes only once its reads end)
            self.assertEqual(overridden["Body"].read(), data)
            s3.delete_object(Bucket="bkt", Key="dir/film.bin")
            self.assertEqual(error_of(lambda: s3.get_object(Bucket="bkt", Key="dir/film.bin")),
                             (404, "NoSuchKey"))

        await self.thread(check)
        # nothing names the stream: its blobs are gone
        self.assertEqual(await self.node.blob_store.store.verified_blobs(), [])

    async def test_ranges_and_conditions(self) -> None:
        s3 = self.s3
        data = os.urandom(3 * MiB)

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            etag = s3.put_object(Bucket="bkt", Key="k", Body=data)["ETag"]
            ranged = s3.get_object(Bucket="bkt", Key="k", Range="bytes=2097000-2097300")
            self.assertEqual(ranged["ResponseMetadata"]["HTTPStatusCode"], 206)
            self.assertEqual(ranged["Body"].read(), data[2097000:2097301])
            self.assertEqual(ranged["ContentRange"], f"bytes 2097000-2097300/{len(data)}")
            self.assertEqual(s3.get_object(Bucket="bkt", Key="k", Range="bytes=-3")["Body"].read(),
                             data[-3:])
            self.assertEqual(error_of(lambda: s3.get_object(Bucket="bkt", Key="k",
                                                            Range=f"bytes={len(data)}-")),
                             (416, "InvalidRange"))
            past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
            future = past + datetime.timedelta(hours=2)
            s3.get_object(Bucket="bkt", Key="k", IfMatch=etag)
            self.assertEqual(error_of(lambda: s3.get_object(Bucket="bkt", Key="k", IfMatch='"x"')),
                             (412, "PreconditionFailed"))
            self.assertEqual(error_of(lambda: s3.get_object(Bucket="bkt", Key="k",
                                                            IfNoneMatch=etag))[0], 304)
            s3.get_object(Bucket="bkt", Key="k", IfNoneMatch='"x"')
            s3.get_object(Bucket="bkt", Key="k", IfModifiedSince=past)
            self.assertEqual(error_of(lambda: s3.get_object(Bucket="bkt", Key="k",
                                                            IfUnmodifiedSince=past))[0], 412)
            s3.get_object(Bucket="bkt", Key="k", IfUnmodifiedSince=future)
            self.assertEqual(error_of(lambda: s3.head_object(Bucket="bkt", Key="k",
                                                             IfNoneMatch=etag))[0], 304)

        await self.thread(check)

    async def test_digests(self) -> None:
        s3 = self.s3
        data = os.urandom(MiB)

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            wrong = hashlib.md5(b"other").digest()
            import base64

            self.assertEqual(
                error_of(lambda: s3.put_object(Bucket="bkt", Key="k", Body=data,
                                               ContentMD5=base64.b64encode(wrong).decode())),
                (400, "BadDigest"))
            self.assertEqual(
                error_of(lambda: s3.put_object(Bucket="bkt", Key="k", Body=data,
                                               ContentMD5="not-a-digest")),
                (400, "InvalidDigest"))
            self.assertEqual(
                error_of(lambda: s3.put_object(Bucket="bkt", Key="k", Body=data,
                                               ChecksumCRC32="AAAAAA==")),
                (400, "BadDigest"))
            self.assertEqual(s3.list_objects_v2(Bucket="bkt")["KeyCount"], 0)
            right = base64.b64encode(hashlib.md5(data).digest()).decode()
            put = s3.put_object(Bucket="bkt", Key="k", Body=data, ContentMD5=right)
            self.assertIn("ChecksumCRC32", put)
            got = s3.get_object(Bucket="bkt", Key="k", ChecksumMode="ENABLED")
            # (boto3 checks the body against the CRC32 the gateway gives)
            self.assertEqual(got["Body"].read(), data)
            self.assertEqual(got["ChecksumCRC32"], put["ChecksumCRC32"])

        await self.thread(check)
        # only the object that was accepted holds blobs
        self.assertEqual(len(await self.node.blob_store.store.verified_blobs()), 2)

    async def test_copy(self) -> None:
        s3 = self.s3
        data = os.urandom(MiB)

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            s3.create_bucket(Bucket="cbkt")
            etag = s3.put_object(Bucket="bkt", Key="src", Body=data, ContentType="text/plain",
                                 Metadata={"origin": "one"})["ETag"]
            source = {"Bucket": "bkt", "Key": "src"}
            copied = s3.copy_object(Bucket="cbkt", Key="same", CopySource=source)
            self.assertEqual(copied["CopyObjectResult"]["ETag"], etag)
            head = s3.head_object(Bucket="cbkt", Key="same")
            self.assertEqual((head["Metadata"], head["ContentType"]),
                             ({"origin": "one"}, "text/plain"))
            s3.copy_object(Bucket="cbkt", Key="new", CopySource=source,
                           MetadataDirective="REPLACE", Metadata={"origin": "two"},
                           ContentType="image/png")
            head = s3.head_object(Bucket="cbkt", Key="new")
            self.assertEqual((head["Metadata"], head["ContentType"]),
                             ({"origin": "two"}, "image/png"))
            past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
            for conditions, status in [({"CopySourceIfMatch": etag}, 200),
                                       ({"CopySourceIfNoneMatch": etag}, 412),
                                       ({"CopySourceIfUnmodifiedSince": past}, 412),
                                       ({"CopySourceIfModifiedSince": past}, 200)]:
                if status == 200:
                    s3.copy_object(Bucket="cbkt", Key="cond", CopySource=source, **conditions)
                else:
                    self.assertEqual(
                        error_of(lambda c=conditions: s3.copy_object(
                            Bucket="cbkt", Key="cond", CopySource=source, **c)),
                        (412, "PreconditionFailed"))
            s3.delete_object(Bucket="bkt", Key="src")
            self.assertEqual(s3.get_object(Bucket="cbkt", Key="same")["Body"].read(), data)

        blobs = None

        def count() -> int:
            return len(self.node.blob_store.store.held_blobs())

        await self.thread(check)
        blobs = count()
        # one stream for all the names: one data blob and the sd blob
        self.assertEqual(blobs, 2)

    async def test_listing(self) -> None:
        s3 = self.s3
        keys = ["sample.jpg", "photos/2006/January/sample.jpg",
                "photos/2006/February/sample2.jpg", "photos/2006/February/sample3.jpg",
                "photos/2006/February/sample4.jpg"] + [f"many/{n:03}" for n in range(25)]

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            for key in keys:
                s3.put_object(Bucket="bkt", Key=key, Body=key.encode())
            # right after the writes, without waiting
            listed = s3.list_objects(Bucket="bkt", Delimiter="/")
            self.assertEqual([c["Key"] for c in listed["Contents"]], ["sample.jpg"])
            self.assertEqual([p["Prefix"] for p in listed["CommonPrefixes"]],
                             ["many/", "photos/"])
            listed = s3.list_objects(Bucket="bkt", Prefix="p", Marker="photos/2005", MaxKeys=3)
            self.assertEqual((len(listed["Contents"]), listed["IsTruncated"]), (3, True))
            listed = s3.list_objects_v2(Bucket="bkt", Prefix="photos/2006/", Delimiter="/")
            self.assertEqual([p["Prefix"] for p in listed["CommonPrefixes"]],
                             ["photos/2006/February/", "photos/2006/January/"])
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket="bkt", Prefix="many/", PaginationConfig={"PageSize": 7})
            found = [c["Key"] for page in pages for c in page.get("Contents", [])]
            self.assertEqual(found, [f"many/{n:03}" for n in range(25)])
            pages = s3.get_paginator("list_objects").paginate(
                Bucket="bkt", PaginationConfig={"PageSize": 4})
            found = [c["Key"] for page in pages for c in page.get("Contents", [])]
            self.assertEqual(found, sorted(keys))
            listed = s3.list_objects_v2(Bucket="bkt", StartAfter="photos/", MaxKeys=2)
            self.assertEqual([c["Key"] for c in listed["Contents"]],
                             ["photos/2006/February/sample2.jpg",
                              "photos/2006/February/sample3.jpg"])
            entry = s3.list_objects_v2(Bucket="bkt", Prefix="sample")["Contents"][0]
            self.assertEqual((entry["Size"], entry["ETag"]),
                             (10, f'"{_md5(b"sample.jpg")}"'))

        await self.thread(check)

    async def test_upload_file(self) -> None:
        """
        boto3's upload_file switches to a multipart upload above 8 MiB.
        """
        source = random_file(self.directory / "big.bin", 20 * MiB)
        target = self.directory / "back.bin"
        s3 = self.s3
        # the parts go into streams as they arrive: twisted.web, which
        # spools bodies above 100 kB to a temporary file, never does
        import twisted.web.http

        def spooled(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("a request body was spooled to a temporary file")

        self.patch(twisted.web.http.tempfile, "TemporaryFile", spooled)

        def check() -> dict[str, Any]:
            s3.create_bucket(Bucket="bkt")
            s3.upload_file(str(source), "bkt", "big.bin")
            s3.download_file("bkt", "big.bin", str(target))
            return s3.head_object(Bucket="bkt", Key="big.bin")  # type: ignore[no-any-return]

        head = await self.thread(check)
        self.assertEqual(target.read_bytes(), source.read_bytes())
        self.assertEqual(head["ContentLength"], 20 * MiB)
        self.assertRegex(head["ETag"], r'^"[0-9a-f]{32}-3"$')
        # one stream: the parts' streams are gone (10 full blobs, a short one, the sd blob)
        store = self.node.blob_store.store
        self.assertEqual(len(store.index.streams()), 1)
        self.assertEqual(len(store.held_blobs()), 12)

    async def test_signatures(self) -> None:
        wrong = client(self.url, secret="not-the-secret")
        unsigned = client(self.url, unsigned=True)
        s3 = self.s3

        def check() -> None:
            self.assertEqual(error_of(wrong.list_buckets), (403, "SignatureDoesNotMatch"))
            self.assertEqual(error_of(lambda: wrong.put_object(Bucket="bkt", Key="k", Body=b"x")),
                             (403, "SignatureDoesNotMatch"))
            self.assertEqual(error_of(unsigned.list_buckets), (403, "AccessDenied"))
            s3.create_bucket(Bucket="bkt")
            s3.put_object(Bucket="bkt", Key="shared", Body=b"presigned")
            url = s3.generate_presigned_url("get_object", Params={"Bucket": "bkt",
                                                                  "Key": "shared"})
            with urllib.request.urlopen(url) as answer:
                self.assertEqual(answer.read(), b"presigned")
            last = url[-1]
            tampered = url[:-1] + ("0" if last != "0" else "1")
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(tampered)
            self.assertEqual(caught.exception.code, 403)

        await self.thread(check)


class AnonymousQuotaTests(InProcessTestCase):
    anonymous = True
    quota = 3 * MiB
    max_objects = 3

    async def test_anonymous_and_quotas(self) -> None:
        s3 = self.s3

        def check() -> None:
            s3.create_bucket(Bucket="bkt")
            s3.put_object(Bucket="bkt", Key="one", Body=os.urandom(2 * MiB))
            self.assertEqual(error_of(lambda: s3.put_object(Bucket="bkt", Key="two",
                                                            Body=os.urandom(2 * MiB))),
                             (403, "QuotaExceeded"))
            s3.put_object(Bucket="bkt", Key="two", Body=b"small")
            s3.put_object(Bucket="bkt", Key="three", Body=b"small")
            self.assertEqual(error_of(lambda: s3.put_object(Bucket="bkt", Key="four", Body=b"x")),
                             (403, "QuotaExceeded"))
            s3.delete_object(Bucket="bkt", Key="one")
            s3.put_object(Bucket="bkt", Key="four", Body=os.urandom(2 * MiB))
            self.assertEqual(s3.list_objects_v2(Bucket="bkt")["KeyCount"], 3)

        await self.thread(check)


class AwsCliTests(InProcessTestCase):
    """
    The C{aws} command line (awscli) as a separate process.
    """

    async def setUp(self) -> None:
        await super().setUp()
        program = shutil.which("aws") or str(Path(sys.executable).parent / "aws")
        if not Path(program).exists():
            missing("awscli")
        self.program = program
        config = self.directory / "aws-config"
        config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                    "AWS_CONFIG_FILE": str(config),
                    "AWS_SHARED_CREDENTIALS_FILE": str(self.directory / "no-credentials"),
                    "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"}
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            self.env.pop(name, None)

    async def aws(self, *arguments: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = await self.thread(
            subprocess.run, [self.program, "--endpoint-url", self.url, *arguments],
            env=self.env, capture_output=True, text=True, timeout=120,
            cwd=str(self.directory))
        if ok:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result

    async def test_s3_commands(self) -> None:
        small = self.directory / "small.txt"
        small.write_bytes(b"hello from aws\n")
        big = random_file(self.directory / "big.bin", 12 * MiB)
        await self.aws("s3", "mb", "s3://files")
        await self.aws("s3", "cp", str(small), "s3://files/docs/small.txt", "--only-show-errors")
        # multipart: above 8 MiB
        await self.aws("s3", "cp", str(big), "s3://files/big.bin", "--only-show-errors")
        listed = await self.aws("s3", "ls", "s3://files/")
        self.assertIn("PRE docs/", listed.stdout)
        self.assertRegex(listed.stdout, rf"\s{12 * MiB} big\.bin")
        await self.aws("s3", "cp", "s3://files/big.bin", str(self.directory / "back.bin"),
                       "--only-show-errors")
        self.assertEqual((self.directory / "back.bin").read_bytes(), big.read_bytes())
        # a copy (a multipart copy above 8 MiB): no blob is made
        store = self.node.blob_store.store
        blobs = len(store.held_blobs())
        await self.aws("s3", "cp", "s3://files/big.bin", "s3://files/copy.bin",
                       "--only-show-errors")
        self.assertEqual(len(store.held_blobs()), blobs)
        await self.aws("s3", "rm", "s3://files/docs/small.txt")
        listed = await self.aws("s3", "ls", "s3://files/", "--recursive")
        self.assertEqual(re.findall(r"\s(\S+)$", listed.stdout, re.M), ["big.bin", "copy.bin"])

    async def test_s3api_commands(self) -> None:
        body = self.directory / "body.txt"
        body.write_bytes(b"s3api body")
        await self.aws("s3api", "create-bucket", "--bucket", "api")
        put = await self.aws("s3api", "put-object", "--bucket", "api", "--key", "a/b.txt",
                             "--body", str(body), "--content-type", "text/plain",
                             "--metadata", "colour=blue")
        self.assertIn(_md5(b"s3api body"), put.stdout)
        head = await self.aws("s3api", "head-object", "--bucket", "api", "--key", "a/b.txt")
        self.assertIn('"colour": "blue"', head.stdout)
        self.assertIn('"ContentType": "text/plain"', head.stdout)
        await self.aws("s3api", "get-object", "--bucket", "api", "--key", "a/b.txt",
                       "--range", "bytes=0-4", str(self.directory / "part.txt"))
        self.assertEqual((self.directory / "part.txt").read_bytes(), b"s3api")
        listed = await self.aws("s3api", "list-objects-v2", "--bucket", "api",
                                "--delimiter", "/")
        self.assertIn('"Prefix": "a/"', listed.stdout)
        refused = await self.aws("s3api", "put-object", "--bucket", "api", "--key", "x",
                                 "--body", str(body), "--content-md5", "AAAAAAAAAAAAAAAAAAAAAA==",
                                 ok=False)
        self.assertIn("BadDigest", refused.stderr)
        not_empty = await self.aws("s3api", "delete-bucket", "--bucket", "api", ok=False)
        self.assertIn("BucketNotEmpty", not_empty.stderr)
        self.env["AWS_SECRET_ACCESS_KEY"] = "wrong"
        denied = await self.aws("s3", "ls", ok=False)
        self.assertIn("SignatureDoesNotMatch", denied.stderr)


def _blob_files(directory: Path) -> set[str]:
    """
    The names of the blob files of the node whose data directory is
    C{directory} (its temporary files excluded).
    """
    return {p.name for p in (directory / "blobfiles").iterdir() if not p.name.startswith(".")}


def _gateway(seeder: Seeder, after: int = 0) -> str:
    """
    The gateway URL C{seeder} logged (after the first C{after} bytes of its
    log).
    """
    seeder.wait_for(_GATEWAY_URL)
    found = re.compile(_GATEWAY_URL).findall(seeder.output[after:])
    return str(found[-1].decode())


class NodeProcessTests(TestCase):
    """
    C{twistd p2pblob} processes with their gateways.
    """

    def start(self, directory: Path, *extra: str) -> tuple[Seeder, str]:
        if boto3 is None:
            missing("boto3")
        seeder = Seeder(directory, "--no-dht", "--s3-listen", "tcp:0:interface=127.0.0.1",
                        *extra, env={"P2PBLOB_S3_KEYS": f"{ACCESS}:{SECRET}"})
        self.addCleanup(seeder.kill)
        return seeder, _gateway(seeder)

    def test_restart_between_parts(self) -> None:
        """
        A multipart upload goes on after the node restarts between parts.
        """
        directory = Path(self.mktemp()).absolute()
        first, second = os.urandom(5 * MiB), os.urandom(MiB)
        seeder, url = self.start(directory)
        s3 = client(url)
        s3.create_bucket(Bucket="bkt")
        upload_id = s3.create_multipart_upload(Bucket="bkt", Key="big")["UploadId"]
        one = s3.upload_part(Bucket="bkt", Key="big", UploadId=upload_id, PartNumber=1,
                             Body=first)["ETag"]
        self.assertEqual(seeder.stop(), -15, seeder.output.decode()[-2000:])
        seeder, url = self.start(directory)
        s3 = client(url)
        two = s3.upload_part(Bucket="bkt", Key="big", UploadId=upload_id, PartNumber=2,
                             Body=second)["ETag"]
        parts = s3.list_parts(Bucket="bkt", Key="big", UploadId=upload_id)["Parts"]
        self.assertEqual([p["PartNumber"] for p in parts], [1, 2])
        s3.complete_multipart_upload(
            Bucket="bkt", Key="big", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": one},
                                       {"PartNumber": 2, "ETag": two}]})
        self.assertEqual(s3.get_object(Bucket="bkt", Key="big")["Body"].read(), first + second)
        self.assertNotIn(b"Traceback", seeder.output)

    def test_killed_during_put(self) -> None:
        """
        A node killed (SIGKILL) in the middle of a large PutObject leaves
        blobs in no stream; when it starts again, they are removed before
        its gateway serves: the store holds the blobs of its named objects,
        and nothing else.
        """
        directory = Path(self.mktemp()).absolute()
        kept = os.urandom(3 * MiB)
        seeder, url = self.start(directory)
        s3 = client(url)
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="kept", Body=kept)
        named = _blob_files(directory)
        self.assertEqual(len(named), 3)
        # a 30 MiB PUT, signed by botocore, of which 12 MiB are sent
        data = os.urandom(30 * MiB)
        request = AWSRequest(method="PUT", url=f"{url}/bkt/film.bin", data=data)
        S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
        self.addCleanup(connection.close)
        connection.putrequest("PUT", "/bkt/film.bin", skip_accept_encoding=True)
        for name, value in request.headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders()
        connection.send(data[:12 * MiB])
        deadline = time.monotonic() + 60
        while len(_blob_files(directory)) < len(named) + 4:
            self.assertLess(time.monotonic(), deadline, seeder.output.decode()[-2000:])
            time.sleep(0.01)
        seeder.kill()
        self.assertEqual(seeder.process.returncode, -9)
        left = _blob_files(directory) - named
        self.assertGreaterEqual(len(left), 4)
        # the blobs were noted before they were written
        with closing(sqlite3.connect(directory / "gateway.sqlite")) as db:
            noted = {h for (h,) in db.execute("SELECT blob_hash FROM draft_blob")}
        self.assertLessEqual(left, noted)

        seeder, url = self.start(directory)
        self.assertEqual(_blob_files(directory), named)
        self.assertIn(b"left by an upload cut short", seeder.output)
        s3 = client(url)
        self.assertEqual(s3.get_object(Bucket="bkt", Key="kept")["Body"].read(), kept)
        self.assertEqual([o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]],
                         ["kept"])
        self.assertEqual(seeder.stop(), -15, seeder.output.decode()[-2000:])
        self.assertNotIn(b"Traceback", seeder.output)

    def test_read_through_another_node(self) -> None:
        """
        An object put on node A, imported on node B by its sd hash, is read
        through B's gateway: B fetches the blobs from A over the peer
        protocol.
        """
        top = Path(self.mktemp()).absolute()
        data = os.urandom(5 * MiB)
        a, url_a = self.start(top / "a")
        s3_a = client(url_a)
        s3_a.create_bucket(Bucket="bkt")
        put = s3_a.put_object(Bucket="bkt", Key="film.bin", Body=data)
        sd_hash = put["ResponseMetadata"]["HTTPHeaders"]["x-p2pblob-sd-hash"]

        b, url_b = self.start(top / "b", "--peer", a.address)
        s3_b = client(url_b)

        def import_header(request: Any, **kwargs: Any) -> None:
            request.headers["x-p2pblob-sd-hash"] = sd_hash

        s3_b.meta.events.register("before-sign.s3.PutObject", import_header)
        s3_b.create_bucket(Bucket="mirror")
        imported = s3_b.put_object(Bucket="mirror", Key="copy.bin", Body=b"")
        self.assertEqual(imported["ETag"], f'"{sd_hash}"')
        self.assertEqual(s3_b.head_object(Bucket="mirror", Key="copy.bin")["ContentLength"],
                         len(data))
        self.assertEqual(s3_b.get_object(Bucket="mirror", Key="copy.bin")["Body"].read(), data)
        # read in full: the ETag is the MD5 now
        self.assertEqual(s3_b.head_object(Bucket="mirror", Key="copy.bin")["ETag"],
                         f'"{_md5(data)}"')
        held = {p.name for p in (top / "b" / "blobfiles").iterdir()
                if not p.name.startswith(".")}
        self.assertIn(sd_hash, held)
        self.assertEqual(len(held), 4)
        self.assertNotIn(b"Traceback", a.output + b.output)
