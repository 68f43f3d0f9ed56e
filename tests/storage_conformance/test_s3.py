"""
The conformance kit run against the C{s3} backend (L{p2pblob.storage.s3}),
as the dropin registers it, over moto's S3 server; and what is particular to
it: multipart uploads whose parts the service lists, resuming from them,
the 5 MiB chunks, the mapping of boto3's errors.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob.errors import ConfigError, DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.storage.host import StorageHost
from p2pblob.storage.s3 import MIN_PART, S3Backend, make_backend
from tests.storage_conformance import StorageConformanceMixin, builtin_plugin, data, sha384
from tests.storage_conformance._moto import (
    missing,
    moto_server,
    new_bucket,
    remove_bucket,
    s3_client,
    s3_options,
)

try:
    import botocore.exceptions as botocore_errors
except ImportError:
    botocore_errors = None

if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object

MiB = 1024 * 1024


class _Bucket(_TestCase):
    """
    A test over a bucket of its own of moto's S3 server, which it can look
    at directly with C{self.s3}, a boto3 client; mixed in before the
    conformance kit, whose hooks it supplies.

    @ivar prefix: the C{prefix} option of the hosts it makes.
    """

    prefix = ""
    clock: Clock

    def setUp(self) -> None:
        self.endpoint = moto_server()
        self.bucket = new_bucket(self.endpoint)
        self.addCleanup(remove_bucket, self.endpoint, self.bucket)
        self.s3 = s3_client(self.endpoint)
        super().setUp()

    def options(self, **more: object) -> dict[str, object]:
        return {**s3_options(self.endpoint, self.bucket, prefix=self.prefix), **more}

    def make_host(self) -> StorageHost:
        return StorageHost(builtin_plugin(self, "s3"), self.options(), self.clock)

    def host_with(self, **options: object) -> StorageHost:
        """
        A started host over this test's bucket, with some options changed.
        """
        host = StorageHost(builtin_plugin(self, "s3"), self.options(**options), self.clock)
        host.startService()
        self.addCleanup(host.stopService)
        self.successResultOf(host.negotiate_chunk_size())
        return host

    # -- looking at the service directly ---------------------------------

    def open_uploads(self) -> list[dict[str, Any]]:
        """
        The multipart uploads the service holds in the bucket.
        """
        paginator = self.s3.get_paginator("list_multipart_uploads")
        return [
            upload
            for page in paginator.paginate(Bucket=self.bucket)
            for upload in page.get("Uploads", [])
        ]

    def staged_uploads(self) -> set[str]:
        """
        The keys with an upload in progress, as the service lists them.
        """
        return {
            upload["Key"][len(self.prefix) :]
            for upload in self.open_uploads()
            if upload["Key"].startswith(self.prefix)
        }

    def part_sizes(self, key: str, upload_id: str) -> list[tuple[int, int]]:
        """
        The numbers and sizes of the parts the service holds of an upload.
        """
        response = self.s3.list_parts(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)
        return [(part["PartNumber"], part["Size"]) for part in response.get("Parts", [])]

    def objects(self) -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in response.get("Contents", []))


class S3ConformanceTests(_Bucket, StorageConformanceMixin, SynchronousTestCase):
    """
    The C{s3} backend, over a bucket of its own of moto's S3 server.
    """

    # -- the kit, where S3 differs -------------------------------------------

    def test_chunk_size(self) -> None:
        """
        The default chunk size of 1 MiB is raised to 5 MiB, S3's smallest
        part.
        """
        self.assertEqual(self.host.chunk_size, MIN_PART)

    def test_chunk_rewritten(self) -> None:
        """
        Writing a chunk again at the same offset (as a retry does) replaces
        its part, and the file is right.  (S3's chunks are at multiples of
        the chunk size, so this is the kit's test with whole chunks.)
        """
        chunk = self.host.chunk_size
        content = data(chunk + 3, seed=3)
        upload_id = self.result(self.host.start_upload("again", len(content)))
        self.result(self.host.upload_chunk("again", 0, content[:chunk]))
        self.result(self.host.upload_chunk("again", 0, content[:chunk]))
        self.result(self.host.upload_chunk("again", chunk, b"xyz"))
        self.result(self.host.upload_chunk("again", chunk, content[chunk:]))
        self.assertEqual(self.part_sizes("again", upload_id), [(1, chunk), (2, 3)])
        self.result(self.host.end_upload("again"))
        self.assertStored("again", content)

    # -- what is particular to S3 ---------------------------------------------

    def test_blocking(self) -> None:
        """
        The plugin says its calls block.
        """
        self.assertTrue(self.host.plugin.blocking)

    def test_one_object_per_key(self) -> None:
        """
        A file is one object, named by its key; an upload is a multipart
        upload of that object, which completes into it.
        """
        upload_id = self.result(self.host.start_upload("dir/file", None))
        self.assertIsInstance(upload_id, str)
        self.result(self.host.upload_chunk("dir/file", 0, b"data"))
        self.assertEqual(
            [(u["Key"], u["UploadId"]) for u in self.open_uploads()],
            [(self.prefix + "dir/file", upload_id)],
        )
        self.assertEqual(self.objects(), [])
        self.result(self.host.end_upload("dir/file"))
        self.assertEqual(self.staged_uploads(), set())
        self.assertEqual(self.objects(), [self.prefix + "dir/file"])
        body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + "dir/file")["Body"]
        self.assertEqual(body.read(), b"data")

    def test_start_aborts_earlier(self) -> None:
        """
        Starting an upload aborts the unfinished ones of the same key, and
        only those.
        """
        first = self.result(self.host.start_upload("key", None))
        self.result(self.host.start_upload("key-other", None))
        second = self.result(self.host.start_upload("key", None))
        self.assertNotEqual(first, second)
        uploads = {u["Key"]: u["UploadId"] for u in self.open_uploads()}
        self.assertEqual(sorted(uploads), [self.prefix + "key", self.prefix + "key-other"])
        self.assertEqual(uploads[self.prefix + "key"], second)

    def test_abort_leaves_no_upload(self) -> None:
        """
        An aborted upload is gone from the service, with its parts.
        """
        self.result(self.host.start_upload("gone", None))
        self.result(self.host.upload_chunk("gone", 0, b"partial"))
        self.assertEqual(self.staged_uploads(), {"gone"})
        self.result(self.host.abort_upload("gone"))
        self.assertEqual(self.staged_uploads(), set())
        self.assertEqual(self.objects(), [])

    def test_abort_every_upload(self) -> None:
        """
        Aborting aborts every upload of the key the service holds, even
        those this backend did not begin.
        """
        for _ in range(2):
            self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.prefix + "many")
        self.assertEqual(len(self.open_uploads()), 2)
        self.result(self.host.abort_upload("many"))
        self.assertEqual(self.open_uploads(), [])

    def test_zero_bytes(self) -> None:
        """
        An upload without chunks, of a size announced or not, stores an
        empty file (S3 completes no multipart upload without parts).
        """
        for size in [0, None]:
            key = f"empty-{size}"
            self.result(self.host.start_upload(key, size))
            self.result(self.host.end_upload(key))
            self.assertStored(key, b"")
        self.assertEqual(self.staged_uploads(), set())

    def test_parts(self) -> None:
        """
        A file of 12 MiB uploaded in chunks of 5 MiB is three parts of 5, 5
        and 2 MiB, then one object.
        """
        content = data(12 * MiB, seed=12)
        chunk = self.host.chunk_size
        upload_id = self.result(self.host.start_upload("twelve", len(content)))
        for offset in range(0, len(content), chunk):
            self.result(self.host.upload_chunk("twelve", offset, content[offset : offset + chunk]))
        self.assertEqual(
            self.part_sizes("twelve", upload_id), [(1, 5 * MiB), (2, 5 * MiB), (3, 2 * MiB)]
        )
        self.result(self.host.end_upload("twelve"))
        self.assertStored("twelve", content)
        head = self.s3.head_object(Bucket=self.bucket, Key=self.prefix + "twelve")
        self.assertTrue(head["ETag"].endswith('-3"'), head["ETag"])

    def test_chunk_rules(self) -> None:
        """
        A chunk must start at a multiple of the chunk size, be at most a
        chunk long, and follow whole chunks: else L{DriverError}, and
        nothing is sent.
        """
        chunk = self.host.chunk_size
        upload_id = self.result(self.host.start_upload("rules", None))
        self.failure(self.host.upload_chunk("rules", chunk, b"x"), DriverError)
        self.failure(self.host.upload_chunk("rules", 10, b"x"), DriverError)
        self.failure(self.host.upload_chunk("rules", 0, bytes(chunk + 1)), DriverError)
        self.result(self.host.upload_chunk("rules", 0, b"short"))
        error = self.failure(self.host.upload_chunk("rules", chunk, b"x"), DriverError)
        self.assertIn("hole", str(error))
        self.assertEqual(self.part_sizes("rules", upload_id), [(1, 5)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart_from_parts(self) -> None:
        """
        After a crash, a new host resumes from the parts the service lists,
        whether the journal is behind or ahead of them; the parts are not
        duplicated, and the object is whole.
        """
        chunk = self.host.chunk_size
        content = data(2 * chunk + 100, seed=5)
        upload_id = self.result(self.host.start_upload("resumed", len(content)))
        self.result(self.host.upload_chunk("resumed", 0, content[:chunk]))
        self.result(self.host.upload_chunk("resumed", chunk, content[chunk : 2 * chunk]))
        self.host.stopService()

        self.host = self.open_host()
        self.assertEqual(self.result(self.host.restart_upload("resumed", 0, upload_id)), 2 * chunk)
        self.host = self.open_host()
        self.assertEqual(
            self.result(self.host.restart_upload("resumed", 3 * chunk, upload_id)), 2 * chunk
        )
        self.result(self.host.upload_chunk("resumed", 2 * chunk, content[2 * chunk :]))
        self.assertEqual(self.part_sizes("resumed", upload_id), [(1, chunk), (2, chunk), (3, 100)])
        self.assertEqual(
            self.result(self.host.restart_upload("resumed", 0, upload_id)), len(content)
        )
        self.result(self.host.end_upload("resumed"))
        self.assertStored("resumed", content)
        self.assertEqual(self.staged_uploads(), set())

    def test_restart_stale_id(self) -> None:
        """
        When the journal's upload id is no longer known to the service, the
        upload of the key is looked up; when it is, that upload is resumed
        even if another of the key is newer, and the others go.
        """
        upload_id = self.result(self.host.start_upload("stale", None))
        self.result(self.host.upload_chunk("stale", 0, b"kept"))
        self.host = self.open_host()
        self.assertEqual(self.result(self.host.restart_upload("stale", 0, "no-such-upload")), 4)
        self.assertEqual([u["UploadId"] for u in self.open_uploads()], [upload_id])

        self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.prefix + "stale")
        self.assertEqual(len(self.open_uploads()), 2)
        self.host = self.open_host()
        self.assertEqual(self.result(self.host.restart_upload("stale", 0, upload_id)), 4)
        self.assertEqual([u["UploadId"] for u in self.open_uploads()], [upload_id])
        self.result(self.host.end_upload("stale"))
        self.assertStored("stale", b"kept")

    def test_restart_other_chunk_size(self) -> None:
        """
        Parts cut for another chunk size cannot be continued: the upload
        starts again at 0, and the old one is aborted.
        """
        chunk = self.host.chunk_size
        for sizes in [[100, 100], [chunk + 1]]:
            key = f"cut-{len(sizes)}"
            name = self.prefix + key
            old = self.s3.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
            for number, size in enumerate(sizes, start=1):
                self.s3.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=old, PartNumber=number, Body=bytes(size)
                )
            self.assertEqual(self.result(self.host.restart_upload(key, 200, old)), 0)
            [new] = [u["UploadId"] for u in self.open_uploads() if u["Key"] == name]
            self.assertNotEqual(new, old)
            self.assertEqual(self.part_sizes(key, new), [])

    def test_chunk_after_crash(self) -> None:
        """
        A backend that did not begin an upload continues the one the
        service holds.
        """
        self.result(self.host.start_upload("adopted", None))
        self.host = self.open_host()
        self.result(self.host.upload_chunk("adopted", 0, b"content"))
        self.result(self.host.end_upload("adopted"))
        self.assertStored("adopted", b"content")

    def test_lost_completion(self) -> None:
        """
        When the answer to the completion of an upload is lost, the host
        tries again, and the try finds the upload completed.
        """
        backend = cast(S3Backend, self.host.backend)
        lost = [1]

        def lose(**kwargs: object) -> None:
            if lost[0]:
                lost[0] -= 1
                raise botocore_errors.ConnectionClosedError(endpoint_url=self.endpoint)

        backend.client.meta.events.register("after-call.s3.CompleteMultipartUpload", lose)
        self.result(self.host.start_upload("lost", 3))
        self.result(self.host.upload_chunk("lost", 0, b"abc"))
        d = self.host.end_upload("lost")
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.result(d)
        self.assertEqual(lost, [0])
        self.assertStored("lost", b"abc")

    def test_upload_gone(self) -> None:
        """
        An upload the service no longer has (aborted elsewhere) is no upload
        in progress.
        """
        upload_id = self.result(self.host.start_upload("gone", None))
        self.s3.abort_multipart_upload(
            Bucket=self.bucket, Key=self.prefix + "gone", UploadId=upload_id
        )
        # (moto answers a part of an aborted upload with a 500, S3 with
        # NoSuchUpload: only the end is tried here.)
        error = self.failure(self.host.end_upload("gone"), DriverError)
        self.assertIn("no upload of 'gone'", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_size_checked(self) -> None:
        """
        An upload that ends with another size than announced is given up:
        the service no longer holds it.
        """
        self.result(self.host.start_upload("sized", 10))
        self.result(self.host.upload_chunk("sized", 0, b"12345"))
        error = self.failure(self.host.end_upload("sized"), DriverError)
        self.assertIn("not the 10 announced", str(error))
        self.assertEqual(self.staged_uploads(), set())
        self.assertAbsent("sized")

    def test_unreachable(self) -> None:
        """
        A service that cannot be reached fails calls with L{ServiceError}:
        they are tried again, and the last failure is passed on.
        """
        host = StorageHost(
            builtin_plugin(self, "s3"),
            self.options(endpoint_url=f"http://127.0.0.1:{closed_port()}", retries="2"),
            self.clock,
        )
        d = host.exists("file")
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.clock.advance(1)
        error = self.failure(d, ServiceError)
        self.assertIn("127.0.0.1", str(error))

    def test_missing_bucket(self) -> None:
        """
        A bucket that does not exist fails calls with L{DriverError} naming
        it and the service, not tried again.
        """
        missing = new_bucket(self.endpoint, create=False)
        host = StorageHost(builtin_plugin(self, "s3"), self.options(bucket=missing), self.clock)
        for d in [host.exists("file"), host.get_file("file"), host.upload_file("file", b"x")]:
            error = self.failure(d, DriverError)
            self.assertNotIsInstance(error, StorageKeyNotFoundError)
            self.assertIn(repr(missing), str(error))
            self.assertIn(self.endpoint, str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_create_bucket(self) -> None:
        """
        With C{create_bucket}, a missing bucket is made.
        """
        missing = new_bucket(self.endpoint, create=False)
        self.addCleanup(remove_bucket, self.endpoint, missing)
        host = StorageHost(
            builtin_plugin(self, "s3"),
            self.options(bucket=missing, create_bucket="true"),
            self.clock,
        )
        self.result(host.upload_file("file", b"made"))
        body = self.s3.get_object(Bucket=missing, Key=self.prefix + "file")["Body"]
        self.assertEqual(body.read(), b"made")

    def test_chunk_sizes(self) -> None:
        """
        A chunk size of 5 MiB or more is kept; more than 5 GiB, S3's largest
        part, is refused.
        """
        self.assertEqual(self.host_with(chunk_size="1000").chunk_size, 5 * MiB)
        self.assertEqual(self.host_with(chunk_size=str(8 * MiB)).chunk_size, 8 * MiB)
        backend = cast(S3Backend, self.host.backend)
        self.assertRaises(DriverError, backend.set_chunk_size, 6 * 1024 * MiB)

    def test_options(self) -> None:
        """
        The plugin needs a bucket, both keys of a pair of credentials or
        neither, an addressing style it knows and an endpoint that is a URL.
        """
        plugin = builtin_plugin(self, "s3")
        options = self.options()
        del options["bucket"]
        error = self.assertRaises(ConfigError, StorageHost, plugin, options, Clock())
        self.assertIn("'bucket'", str(error))
        wrong_options: list[dict[str, object]] = [
            {"bucket": ""},
            {"secret_key": ""},
            {"addressing_style": "sideways"},
            {"endpoint_url": "not a url"},
        ]
        for wrong in wrong_options:
            self.assertRaises(ConfigError, StorageHost, plugin, self.options(**wrong), Clock())


class S3PrefixTests(_Bucket, SynchronousTestCase):
    """
    With the C{prefix} option, every object name starts with it, and
    nothing else of the bucket is seen.
    """

    prefix = "blobs/"

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.host = self.host_with()

    def test_prefixed(self) -> None:
        """
        Files, uploads in progress and renamed files are objects under the
        prefix; objects outside it are not files of the backend.
        """
        host = self.host
        self.s3.put_object(Bucket=self.bucket, Key="outside", Body=b"x")
        self.assertFalse(self.successResultOf(host.exists("outside")))
        self.successResultOf(host.upload_file("whole", b"y"))
        self.successResultOf(host.start_upload("dir/part", None))
        self.successResultOf(host.upload_chunk("dir/part", 0, b"z"))
        self.assertEqual(self.staged_uploads(), {"dir/part"})
        self.assertEqual([u["Key"] for u in self.open_uploads()], ["blobs/dir/part"])
        self.successResultOf(host.end_upload("dir/part"))
        self.successResultOf(host.move_file("whole", "moved"))
        self.assertEqual(self.objects(), ["blobs/dir/part", "blobs/moved", "outside"])
        self.assertEqual(self.successResultOf(host.get_file("moved")), b"y")
        self.assertEqual(self.successResultOf(host.get_chunk("dir/part", 0, 10)), b"z")

    def test_restart(self) -> None:
        """
        An upload under the prefix is found again after a crash.
        """
        self.successResultOf(self.host.start_upload("again", None))
        self.successResultOf(self.host.upload_chunk("again", 0, b"abc"))
        host = self.host_with()
        self.assertEqual(self.successResultOf(host.restart_upload("again", 0)), 3)
        self.successResultOf(host.end_upload("again"))
        self.assertEqual(self.objects(), ["blobs/again"])


def closed_port() -> int:
    """
    A port of 127.0.0.1 nothing listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeClient:
    """
    Enough of a boto3 S3 client to make its calls fail as told.
    """

    def __init__(self, failure: BaseException | None = None, size: int = 0) -> None:
        self.failure = failure
        self.length = size

    def head_bucket(self, **kwargs: object) -> dict[str, object]:
        return {}

    def _fail(self, **kwargs: object) -> dict[str, object]:
        if self.failure is not None:
            raise self.failure
        return {"ContentLength": self.length}

    get_object = put_object = head_object = _fail


class ErrorTests(SynchronousTestCase):
    """
    What boto3 raises becomes p2pblob's errors: L{ServiceError} when trying
    again may help, L{DriverError} when it will not.
    """

    def setUp(self) -> None:
        if botocore_errors is None:
            missing("boto3")
        self.errors = botocore_errors

    def backend(self, failure: BaseException | None = None, size: int = 0) -> S3Backend:
        return S3Backend(
            FakeClient(failure, size), self.errors, "the-bucket", where="http://s3.example"
        )

    def client_error(self, code: str, status: int) -> BaseException:
        response = {
            "Error": {"Code": code, "Message": f"{code} on purpose"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return cast(BaseException, self.errors.ClientError(response, "GetObject"))

    def test_client_errors(self) -> None:
        """
        The service's error codes are mapped by meaning.
        """
        cases = [
            ("SlowDown", 503, ServiceError),
            ("InternalError", 500, ServiceError),
            ("ServiceUnavailable", 503, ServiceError),
            ("RequestTimeout", 400, ServiceError),
            ("AccessDenied", 403, DriverError),
            ("InvalidAccessKeyId", 403, DriverError),
            ("SignatureDoesNotMatch", 403, DriverError),
            ("NoSuchBucket", 404, DriverError),
            ("NoSuchKey", 404, StorageKeyNotFoundError),
            ("InvalidArgument", 400, DriverError),
        ]
        for code, status, expected in cases:
            backend = self.backend(self.client_error(code, status))
            error = self.assertRaises(expected, backend.get_file, "key")
            self.assertEqual(type(error), expected, code)
            if expected is not StorageKeyNotFoundError:
                self.assertIn("'the-bucket'", str(error))
                self.assertIn("http://s3.example", str(error))

    def test_transport_errors(self) -> None:
        """
        Connections refused, closed or timed out are L{ServiceError}s;
        missing credentials are a L{DriverError}.
        """
        e = self.errors
        for failure in [
            e.EndpointConnectionError(endpoint_url="http://s3.example"),
            e.ConnectionClosedError(endpoint_url="http://s3.example"),
            e.ReadTimeoutError(endpoint_url="http://s3.example"),
            e.ConnectTimeoutError(endpoint_url="http://s3.example"),
        ]:
            self.assertRaises(ServiceError, self.backend(failure).get_file, "key")
        error = self.assertRaises(DriverError, self.backend(e.NoCredentialsError()).get_file, "k")
        self.assertIn("access_key", str(error))

    def test_large_move(self) -> None:
        """
        A file larger than S3 copies at once is left to the host to rename
        chunk by chunk.
        """
        backend = self.backend(size=6 * 1024 * MiB)
        self.assertRaises(NotImplementedError, backend.move_file, "big", "bigger")

    def test_without_boto3(self) -> None:
        """
        Without boto3, making the backend says how to install it.
        """

        def importer(name: str) -> Any:
            raise ModuleNotFoundError(f"No module named {name!r}")

        options = {"bucket": "b", "chunk_size": MiB}
        error = self.assertRaises(ConfigError, make_backend, options, Clock(), importer)
        self.assertIn("pip install 'p2pblob[s3]'", str(error))


class ThreadedTests(TestCase):
    """
    With a reactor to run threads, the C{s3} plugin's calls run in the
    host's own threads, over one client.
    """

    async def test_round_trip_in_threads(self) -> None:
        """
        A file uploaded and read back through the threads is intact.
        """
        endpoint = moto_server()
        bucket = new_bucket(endpoint)
        self.addCleanup(remove_bucket, endpoint, bucket)
        plugin = builtin_plugin(self, "s3")
        host = StorageHost(plugin, s3_options(endpoint, bucket), reactor, reactor)
        host.startService()
        self.addCleanup(host.stopService)
        chunk = await host.negotiate_chunk_size()
        content = data(chunk + 1000)
        await host.start_upload("t/file", len(content))
        for offset in range(0, len(content), chunk):
            await host.upload_chunk("t/file", offset, content[offset : offset + chunk])
        await host.end_upload("t/file")
        self.assertEqual(sha384(await host.get_file("t/file")), sha384(content))
