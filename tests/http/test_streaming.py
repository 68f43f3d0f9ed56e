"""
Tests for L{p2pblob.http.streaming}: a stream's content served over HTTP
with byte ranges, through treq's in-memory client and a real blob store.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.store import BlobStore
from p2pblob.errors import InvalidDescriptorError, NoPeersError
from p2pblob.http.streaming import (
    StreamResource,
    last_blob_plaintext_length,
    parse_range,
    satisfiable_range,
)
from p2pblob.stream.creator import publish_file
from p2pblob.stream.crypt import IV_SIZE, KEY_SIZE, decrypt_blob, encrypt_blob
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE as CHUNK
from p2pblob.stream.descriptor import BlobInfo, StreamDescriptor, parse_sd_blob

URL = "http://127.0.0.1:5279/stream/"

# three data blobs, the last one short
SIZE = 2 * CHUNK + 1000


def _content(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class StreamTestCase(SynchronousTestCase):
    """
    A real blob store in a temporary directory, L{StreamResource} over it at
    C{/stream}, and a record of which blobs it reads: C{reads} (whole blobs)
    and C{tails} (the last bytes of a blob, for the length).
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.store = BlobStore(Clock(), run_inline, self.directory / "blobfiles",
                               self.directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.reads: list[str] = []
        self.tails: list[str] = []
        self.fetched: list[str] = []
        read_blob, get_blob = self.store.read_blob, self.store.get_blob

        def reading(blob: str) -> Deferred[bytes]:
            self.reads.append(blob)
            return read_blob(blob)

        def getting(blob: str) -> Any:
            self.tails.append(blob)
            return get_blob(blob)

        self.patch(self.store, "read_blob", reading)
        self.patch(self.store, "get_blob", getting)
        self.serve()

    def serve(self, fetcher: Any = None) -> None:
        self.resource = StreamResource(self.store, fetcher)
        root = Resource()
        root.putChild(b"stream", self.resource)
        self.client = StubTreq(root)

    def publish(self, content: bytes, name: str = "holiday.mp4") -> tuple[StreamDescriptor, str]:
        """
        Publish C{content} as a file called C{name}, and forget the reads
        that took.
        """
        source = self.directory / "published" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(content)
        result = self.successResultOf(
            Deferred.fromCoroutine(publish_file(self.store, run_inline, source)))
        del self.reads[:], self.tails[:]
        return result

    def publish_big(self) -> tuple[StreamDescriptor, str, bytes]:
        content = _content(SIZE)
        descriptor, sd_hash = self.publish(content)
        self.assertEqual(len(descriptor.data_blobs), 3)
        return descriptor, sd_hash, content

    def take_out(self, descriptor: StreamDescriptor, number: int) -> bytes:
        """
        Delete data blob C{number} from the store; return its bytes.
        """
        blob = descriptor.blob_hashes[number]
        data = self.store.path_of(blob).read_bytes()
        self.successResultOf(self.store.delete_blobs([blob]))
        return data

    def get(self, sd_hash: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, Headers, bytes]:
        d = self.client.request(method, URL + sd_hash, headers=headers)
        self.client.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        headers = response.headers.copy()
        if isinstance(response.length, int) and not headers.hasHeader("content-length"):
            # the client takes Content-Length out of the headers of a body
            headers.setRawHeaders("content-length", [str(response.length)])
        return response.code, headers, body

    def read_numbers(self, descriptor: StreamDescriptor) -> tuple[list[int], list[int]]:
        """
        The numbers of the data blobs read whole, and of those whose tail
        was read.
        """
        hashes = descriptor.blob_hashes
        return ([hashes.index(h) for h in self.reads if h in hashes],
                [hashes.index(h) for h in self.tails if h in hashes])

    def assertError(self, answer: tuple[int, Headers, bytes], status: int, code: str) -> str:
        code_, headers, body = answer
        self.assertEqual(headers.getRawHeaders("content-type"),
                         ["application/json; charset=utf-8"])
        error = json.loads(body)["error"]
        self.assertEqual((code_, error["code"]), (status, code), error)
        message: str = error["message"]
        return message


class WholeContentTests(StreamTestCase):
    def test_get(self) -> None:
        """
        A GET without a range answers the whole decrypted content, with its
        length, type, name, a strong ETag and a long cache lifetime.
        """
        descriptor, sd_hash, content = self.publish_big()
        status, headers, body = self.get(sd_hash)
        self.assertEqual(status, 200)
        self.assertEqual(body, content)
        self.assertEqual(headers.getRawHeaders("content-length"), [str(SIZE)])
        self.assertEqual(headers.getRawHeaders("accept-ranges"), ["bytes"])
        self.assertEqual(headers.getRawHeaders("etag"), [f'"{sd_hash}"'])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["max-age=31536000, immutable"])
        self.assertEqual(headers.getRawHeaders("content-type"), ["video/mp4"])
        self.assertEqual(headers.getRawHeaders("content-disposition"),
                         ['inline; filename="holiday.mp4"'])
        self.assertIsNone(headers.getRawHeaders("content-range"))
        self.assertEqual(self.read_numbers(descriptor), ([0, 1, 2], [2]))

    def test_head(self) -> None:
        """
        HEAD gives GET's headers and no body, and reads only the last 32
        bytes of the last blob.
        """
        descriptor, sd_hash, _ = self.publish_big()
        status, headers, body = self.get(sd_hash, "HEAD")
        _, get_headers, _ = self.get(sd_hash)
        self.assertEqual((status, body), (200, b""))
        for name in ("content-length", "content-type", "content-disposition", "etag",
                     "accept-ranges", "cache-control"):
            self.assertEqual(headers.getRawHeaders(name), get_headers.getRawHeaders(name), name)
        self.reads.clear()
        self.tails.clear()
        self.get(sd_hash, "HEAD", {"Range": "bytes=0-10"})
        self.assertEqual(self.read_numbers(descriptor), ([], [2]))

    def test_lengths(self) -> None:
        """
        The length found from the last blob's final block is the content's,
        at sizes around the block and blob boundaries.
        """
        for size in (1, 15, 16, 17, 31, 32, 33, CHUNK - 1, CHUNK, CHUNK + 1):
            with self.subTest(size=size):
                content = _content(size, seed=size)
                _, sd_hash = self.publish(content, f"file{size}")
                _, headers, _ = self.get(sd_hash, "HEAD")
                self.assertEqual(headers.getRawHeaders("content-length"), [str(size)])
                _, _, body = self.get(sd_hash, headers={"Range": "bytes=-2"})
                self.assertEqual(body, content[-2:])

    def test_empty(self) -> None:
        """
        An empty stream is an empty body; a range of it is ignored.
        """
        _, sd_hash = self.publish(b"", "empty.txt")
        for headers in (None, {"Range": "bytes=0-10"}):
            status, answer_headers, body = self.get(sd_hash, headers=headers)
            self.assertEqual((status, body), (200, b""))
            self.assertEqual(answer_headers.getRawHeaders("content-length"), ["0"])


class RangeTests(StreamTestCase):
    """
    One range is answered with 206 and only the blobs it covers are read.
    """

    def setUp(self) -> None:
        super().setUp()
        self.descriptor, self.sd_hash, self.content = self.publish_big()

    def assertRange(self, header: str, start: int, end: int, blobs: list[int]) -> None:
        status, headers, body = self.get(self.sd_hash, headers={"Range": header})
        self.assertEqual(status, 206)
        self.assertEqual(headers.getRawHeaders("content-range"), [f"bytes {start}-{end}/{SIZE}"])
        self.assertEqual(headers.getRawHeaders("content-length"), [str(end + 1 - start)])
        self.assertEqual(body, self.content[start:end + 1])
        self.assertEqual(self.read_numbers(self.descriptor), (blobs, [2]))

    def test_inside_one_blob(self) -> None:
        self.assertRange("bytes=10-99", 10, 99, [0])

    def test_inside_middle_blob(self) -> None:
        self.assertRange(f"bytes={CHUNK}-{CHUNK + 5}", CHUNK, CHUNK + 5, [1])

    def test_straddling(self) -> None:
        self.assertRange("bytes=2097150-2097152", 2097150, 2097152, [0, 1])

    def test_suffix_in_last_blob(self) -> None:
        self.assertRange("bytes=-500", SIZE - 500, SIZE - 1, [2])

    def test_suffix_longer_than_content(self) -> None:
        """
        A suffix longer than the content selects all of it, still a 206.
        """
        self.assertRange(f"bytes=-{SIZE + 10}", 0, SIZE - 1, [0, 1, 2])

    def test_open_ended(self) -> None:
        self.assertRange(f"bytes={2 * CHUNK + 5}-", 2 * CHUNK + 5, SIZE - 1, [2])

    def test_end_past_content(self) -> None:
        self.assertRange(f"bytes=5-{SIZE * 2}", 5, SIZE - 1, [0, 1, 2])

    def test_unit_case_and_blanks(self) -> None:
        self.assertRange("Bytes=10-99 , ", 10, 99, [0])

    def test_unsatisfiable(self) -> None:
        """
        A range starting at or past the end, or an empty suffix, is a 416
        that gives the length.
        """
        for header in (f"bytes={SIZE}-", f"bytes={SIZE}-{SIZE + 5}", "bytes=-0"):
            with self.subTest(header=header):
                answer = self.get(self.sd_hash, headers={"Range": header})
                self.assertError(answer, 416, "range_not_satisfiable")
                self.assertEqual(answer[1].getRawHeaders("content-range"), [f"bytes */{SIZE}"])
        self.assertEqual(self.read_numbers(self.descriptor)[0], [])

    def test_invalid_ignored(self) -> None:
        """
        A Range header that does not parse, or asks for several ranges, is
        answered with the whole content.
        """
        for header in ("bytes=5-1", "bytes=abc", "items=0-1", "bytes=-", "bytes 0-1",
                       "bytes=0-1,5-6", "bytes=0x10-20", "bytes=" + "9" * 5000 + "-"):
            with self.subTest(header=header[:20]):
                status, headers, body = self.get(self.sd_hash, headers={"Range": header})
                self.assertEqual((status, len(body)), (200, SIZE))
                self.assertIsNone(headers.getRawHeaders("content-range"))

    def test_if_range(self) -> None:
        """
        If-Range honours the range only when it is our ETag; a weak tag or a
        date is a mismatch, answered with the whole content.
        """
        status, _, body = self.get(self.sd_hash, headers={
            "Range": "bytes=0-9", "If-Range": f'"{self.sd_hash}"'})
        self.assertEqual((status, body), (206, self.content[:10]))
        for condition in ('"other"', f'W/"{self.sd_hash}"', "Wed, 21 Oct 2015 07:28:00 GMT"):
            with self.subTest(condition=condition):
                status, _, body = self.get(self.sd_hash, headers={
                    "Range": "bytes=0-9", "If-Range": condition})
                self.assertEqual((status, len(body)), (200, SIZE))


class ConditionalTests(StreamTestCase):
    def test_not_modified(self) -> None:
        """
        If-None-Match naming our ETag, weakly or in a list, or C{*}, is a 304
        without a body, read from no data blob.
        """
        descriptor, sd_hash = self.publish(_content(100))
        for value in (f'"{sd_hash}"', "*", f'"a", W/"{sd_hash}"'):
            for method in ("GET", "HEAD"):
                with self.subTest(value=value, method=method):
                    status, headers, body = self.get(sd_hash, method, {"If-None-Match": value})
                    self.assertEqual((status, body), (304, b""))
                    self.assertEqual(headers.getRawHeaders("etag"), [f'"{sd_hash}"'])
                    self.assertIsNone(headers.getRawHeaders("content-type"))
        self.assertEqual(self.read_numbers(descriptor), ([], []))

    def test_modified(self) -> None:
        _, sd_hash = self.publish(_content(100))
        status, _, body = self.get(sd_hash, headers={"If-None-Match": '"other"'})
        self.assertEqual((status, body), (200, _content(100)))


class RefusalTests(StreamTestCase):
    def test_unknown_stream(self) -> None:
        message = self.assertError(self.get(blob_hash(b"nothing")), 404, "unknown_stream")
        self.assertIn(blob_hash(b"nothing"), message)

    def test_bad_sd_hash(self) -> None:
        for name in ("xyz", blob_hash(b"x").upper(), "", "%C3%A9"):
            with self.subTest(name=name):
                self.assertError(self.get(name), 400, "bad_sd_hash")

    def test_bad_descriptor(self) -> None:
        """
        An sd blob that is not a descriptor is a 422 with the parser's words.
        """
        blob = self.successResultOf(self.store.put_blob(b'{"stream_type": "lbryfile"}'))
        message = self.assertError(self.get(blob.blob_hash), 422, "bad_descriptor")
        expected = self.assertRaises(InvalidDescriptorError, parse_sd_blob,
                                     b'{"stream_type": "lbryfile"}')
        self.assertEqual(message, str(expected))

    def test_irregular_stream(self) -> None:
        """
        A stream whose blobs are not all full but the last cannot be served
        by ranges: 422.
        """
        key, iv = bytes(16), bytes(range(16))
        infos = []
        for number in range(2):
            blob = self.successResultOf(self.store.put_blob(encrypt_blob(key, iv, b"short")))
            infos.append(BlobInfo(number, blob.length, iv.hex(), blob.blob_hash))
        descriptor = StreamDescriptor.build("a.bin", key, "a.bin",
                                            [*infos, BlobInfo(2, 0, iv.hex())])
        sd = self.successResultOf(self.store.put_blob(descriptor.to_sd_blob()))
        message = self.assertError(self.get(sd.blob_hash), 422, "bad_stream")
        self.assertIn("blob 0", message)

    def test_damaged_blob(self) -> None:
        """
        A blob damaged on disk is not served but removed from the store.
        """
        descriptor, sd_hash, _ = self.publish_big()
        blob = descriptor.blob_hashes[0]
        path = self.store.path_of(blob)
        path.write_bytes(bytes(len(path.read_bytes())))
        self.assertError(self.get(sd_hash, headers={"Range": "bytes=0-9"}), 503, "blob_missing")
        self.assertFalse(self.store.has_blob(blob))

    def test_bug(self) -> None:
        """
        A bug is a 500 without details, and logged with its traceback.
        """
        _, sd_hash = self.publish(b"x")
        self.patch(self.store, "read_blob", lambda blob: fail(ZeroDivisionError("oops")))
        message = self.assertError(self.get(sd_hash), 500, "internal_error")
        self.assertNotIn("oops", message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_no_stream_named(self) -> None:
        d = self.client.get(URL[:-1])
        self.client.flush()
        response = self.successResultOf(d)
        answer = response.code, response.headers, self.successResultOf(response.content())
        self.assertError(answer, 404, "not_found")

    def test_more_path(self) -> None:
        _, sd_hash = self.publish(b"x")
        self.assertError(self.get(sd_hash + "/more"), 404, "not_found")

    def test_wrong_method(self) -> None:
        _, sd_hash = self.publish(b"x")
        d = self.client.request("DELETE", URL + sd_hash)
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])


class MissingBlobTests(StreamTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.descriptor, self.sd_hash, self.content = self.publish_big()

    def test_no_fetcher(self) -> None:
        """
        Without a fetcher a range that needs a missing blob is a 503, and one
        that does not is served.
        """
        self.take_out(self.descriptor, 1)
        for header in (f"bytes={CHUNK + 1}-{CHUNK + 2}", "bytes=2097150-2097152", None):
            with self.subTest(header=header):
                answer = self.get(self.sd_hash, headers={"Range": header} if header else None)
                message = self.assertError(answer, 503, "blob_missing")
                self.assertIn(self.descriptor.blob_hashes[1], message)
        status, _, body = self.get(self.sd_hash, headers={"Range": "bytes=0-99"})
        self.assertEqual((status, body), (206, self.content[:100]))
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0])

    def test_no_last_blob(self) -> None:
        """
        Without the last blob the length is unknown: even HEAD is a 503.
        """
        self.take_out(self.descriptor, 2)
        self.assertEqual(self.get(self.sd_hash, "HEAD")[0], 503)
        self.assertError(self.get(self.sd_hash, headers={"Range": "bytes=0-9"}), 503,
                         "blob_missing")

    def test_fetcher(self) -> None:
        """
        A fetcher is asked for each missing blob the answer needs, and the
        answer completes once it put them in the store.
        """
        taken = {self.descriptor.blob_hashes[n]: self.take_out(self.descriptor, n)
                 for n in (1, 2)}

        def fetcher(blob: str) -> Deferred[None]:
            self.fetched.append(blob)
            return self.store.put_blob(taken[blob], blob).addCallback(lambda _: None)

        self.serve(fetcher)
        status, _, body = self.get(self.sd_hash)
        self.assertEqual((status, body), (200, self.content))
        self.assertEqual(self.fetched, [self.descriptor.blob_hashes[n] for n in (2, 1)])

    def test_nothing_here(self) -> None:
        """
        A stream of which the node holds nothing is fetched as it is sent:
        the descriptor first, then the first blob of the range together
        with the last (for the length), then the others.
        """
        hashes = [self.sd_hash, *self.descriptor.blob_hashes]
        taken = {blob: self.store.path_of(blob).read_bytes() for blob in hashes}
        self.successResultOf(self.store.delete_blobs(hashes))
        pending: dict[str, Deferred[None]] = {}

        def fetcher(blob: str) -> Deferred[None]:
            self.fetched.append(blob)
            pending[blob] = Deferred()
            return pending[blob]

        def arrive(blob: str) -> None:
            self.successResultOf(self.store.put_blob(taken[blob], blob))
            pending.pop(blob).callback(None)

        self.serve(fetcher)
        d = self.client.get(URL + self.sd_hash, headers={"Range": f"bytes=10-{CHUNK + 9}"})
        self.client.flush()
        self.assertEqual(self.fetched, [self.sd_hash])
        arrive(self.sd_hash)
        self.client.flush()
        first, middle, last = self.descriptor.blob_hashes
        self.assertEqual(sorted(pending), sorted([last, first]))
        arrive(last)
        arrive(first)
        self.client.flush()
        self.assertEqual(list(pending), [middle])
        arrive(middle)
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 206)
        self.assertEqual(self.successResultOf(response.content()),
                         self.content[10:CHUNK + 10])

    def test_descriptor_not_found(self) -> None:
        """
        A stream whose descriptor no peer gives is a 404 that says so.
        """
        self.successResultOf(self.store.delete_blobs([self.sd_hash]))
        self.serve(lambda blob: fail(NoPeersError(1, "no peer has it")))
        message = self.assertError(self.get(self.sd_hash), 404, "unknown_stream")
        self.assertIn("no peer gave the descriptor", message)

    def test_fetcher_later(self) -> None:
        """
        The body goes out as far as the blobs at hand, and the rest once the
        fetcher brings the missing one.
        """
        data = self.take_out(self.descriptor, 1)
        pending: Deferred[None] = Deferred()
        self.serve(lambda blob: pending)
        d = self.client.get(URL + self.sd_hash)
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = response.content()
        self.assertNoResult(body)
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0])
        self.successResultOf(self.store.put_blob(data))
        pending.callback(None)
        self.client.flush()
        self.assertEqual(self.successResultOf(body), self.content)

    def test_fetch_fails_first(self) -> None:
        """
        A fetch failing before any byte of the body is sent is a 502.
        """
        self.take_out(self.descriptor, 0)
        self.serve(lambda blob: fail(RuntimeError("no peer has it")))
        message = self.assertError(self.get(self.sd_hash, headers={"Range": "bytes=0-9"}),
                                   502, "fetch_failed")
        self.assertIn("no peer has it", message)

    def test_fetch_fails_later(self) -> None:
        """
        A fetch failing once the body has begun cuts the connection: the
        client sees a short body, not a wrong one.
        """
        self.take_out(self.descriptor, 1)
        self.serve(lambda blob: fail(RuntimeError("no peer has it")))
        d = self.client.get(URL + self.sd_hash)
        self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.failureResultOf(response.content(), ResponseFailed)

    def test_fetcher_forgets(self) -> None:
        """
        A fetcher that succeeds without storing the blob is a 502.
        """
        self.take_out(self.descriptor, 2)
        self.serve(lambda blob: Deferred.fromCoroutine(_nothing()))
        self.assertError(self.get(self.sd_hash, headers={"Range": "bytes=0-9"}), 502,
                         "fetch_failed")


async def _nothing() -> None:
    return None


class NameTests(StreamTestCase):
    def assertNamed(self, name: str, content_type: str, disposition: str) -> None:
        _, sd_hash = self.publish(b"some content", name)
        _, headers, _ = self.get(sd_hash, "HEAD")
        self.assertEqual(headers.getRawHeaders("content-type"), [content_type])
        self.assertEqual(headers.getRawHeaders("content-disposition"), [disposition])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(headers.getRawHeaders("content-security-policy"), ["sandbox"])

    def test_known_type(self) -> None:
        self.assertNamed("holiday.mp4", "video/mp4", 'inline; filename="holiday.mp4"')
        self.assertNamed("notes.txt", "text/plain", 'inline; filename="notes.txt"')

    def test_unknown_type(self) -> None:
        self.assertNamed("README", "application/octet-stream", 'inline; filename="README"')
        self.assertNamed("x.tar.gz", "application/octet-stream", 'inline; filename="x.tar.gz"')

    def test_non_ascii(self) -> None:
        """
        A name beyond ASCII is given in ASCII and in UTF-8 (RFC 5987).
        """
        self.assertNamed(
            "été à Paris.mp4", "video/mp4",
            "inline; filename=\"_t_ _ Paris.mp4\"; "
            "filename*=UTF-8''%C3%A9t%C3%A9%20%C3%A0%20Paris.mp4")


class ProducerTests(StreamTestCase):
    """
    The body is written by a push producer that reads no further blob while
    the client's connection is paused and stops when the client goes.
    """

    def setUp(self) -> None:
        super().setUp()
        self.descriptor, self.sd_hash, self.content = self.publish_big()

    def render(self, fetcher: Any) -> tuple[Request, DummyChannel]:
        channel = DummyChannel()
        request = Request(channel)
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.uri = request.path = b"/stream/" + self.sd_hash.encode()
        request.prepath = []
        request.postpath = [b"stream", self.sd_hash.encode()]
        root = Resource()
        root.putChild(b"stream", StreamResource(self.store, fetcher))
        request.render(getChildForRequest(root, request))
        return request, channel

    def test_paused(self) -> None:
        data = self.take_out(self.descriptor, 0)
        pending: Deferred[None] = Deferred()
        request, channel = self.render(lambda blob: pending)
        [(producer, streaming)] = channel.transport.producers
        self.assertTrue(streaming)
        producer.pauseProducing()
        self.successResultOf(self.store.put_blob(data))
        pending.callback(None)
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0])
        producer.resumeProducing()
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0, 1, 2])
        self.assertTrue(request.finished)
        written = channel.transport.written.getvalue()
        self.assertEqual(written.split(b"\r\n\r\n", 1)[1], self.content)

    def test_fetch_ahead(self) -> None:
        """
        While a blob is sent, the next missing one is already being
        fetched, even if the client's connection is paused: the answer does
        not wait for a round of fetching between two blobs.
        """
        taken = {self.descriptor.blob_hashes[n]: self.take_out(self.descriptor, n)
                 for n in (1, 2)}
        fetched: list[str] = []

        def fetcher(blob: str) -> Deferred[None]:
            fetched.append(blob)
            return self.store.put_blob(taken[blob], blob).addCallback(lambda _: None)

        request, channel = self.render(fetcher)
        # the last blob (for the length), then blob 1 ahead of its turn,
        # each fetched once
        self.assertEqual(fetched, [self.descriptor.blob_hashes[n] for n in (2, 1)])
        self.assertTrue(request.finished)
        written = channel.transport.written.getvalue()
        self.assertEqual(written.split(b"\r\n\r\n", 1)[1], self.content)

    def test_fetched_ahead_while_paused(self) -> None:
        """
        The fetch of the next blob starts as soon as the blob before it is
        in, even while the client's connection is paused (without it, a
        paused answer would ask for nothing until the client reads on).
        """
        first, second = (self.descriptor.blob_hashes[n] for n in (0, 1))
        data = self.take_out(self.descriptor, 0)
        self.take_out(self.descriptor, 1)
        pending: dict[str, Deferred[None]] = {}

        def fetcher(blob: str) -> Deferred[None]:
            pending[blob] = Deferred()
            return pending[blob]

        request, channel = self.render(fetcher)
        self.assertEqual(list(pending), [first])
        [(producer, _)] = channel.transport.producers
        producer.pauseProducing()
        self.successResultOf(self.store.put_blob(data))
        pending[first].callback(None)
        self.assertEqual(list(pending), [first, second])
        self.assertFalse(request.finished)

    def test_client_gone(self) -> None:
        """
        After the client goes, the blob being fetched is neither read nor
        written, and the request is not finished.
        """
        data = self.take_out(self.descriptor, 1)
        pending: Deferred[None] = Deferred()
        request, channel = self.render(lambda blob: pending)
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0])
        request.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(self.store.put_blob(data))
        pending.callback(None)
        self.assertEqual(self.read_numbers(self.descriptor)[0], [0])
        self.assertFalse(request.finished)
        self.assertEqual(self.flushLoggedErrors(), [])


class ArithmeticTests(SynchronousTestCase):
    """
    The pure parts: range parsing and the length from a blob's final block.
    """

    @settings(max_examples=300, deadline=None, database=None)
    @given(key=st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE),
           iv=st.binary(min_size=IV_SIZE, max_size=IV_SIZE),
           plaintext=st.binary(max_size=300))
    def test_last_blob_length(self, key: bytes, iv: bytes, plaintext: bytes) -> None:
        """
        The length read from the final 32 bytes is the decrypted length.
        """
        blob = encrypt_blob(key, iv, plaintext)
        length = last_blob_plaintext_length(key, iv, len(blob), blob[-32:])
        self.assertEqual(length, len(decrypt_blob(key, iv, blob)))
        self.assertEqual(length, len(plaintext))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(max_size=40))
    def test_parse_anything(self, value: bytes) -> None:
        """
        Any header parses to nothing or to a range that makes sense.
        """
        spec = parse_range(value)
        if spec is not None:
            first, last = spec
            self.assertFalse(first is None and last is None)
            if first is not None and last is not None:
                self.assertLessEqual(first, last)

    @settings(max_examples=300, deadline=None, database=None)
    @given(first=st.integers(0, 10**6), length=st.integers(0, 10**6) | st.none(),
           total=st.integers(1, 10**6))
    def test_range_is_a_slice(self, first: int, length: int | None, total: int) -> None:
        """
        A range selects what the Python slice of the same bounds does.
        """
        last = None if length is None else first + length
        header = f"bytes={first}-{'' if last is None else last}".encode()
        self.assertEqual(parse_range(header), (first, last))
        span = satisfiable_range((first, last), total)
        expected = range(total)[first:None if last is None else last + 1]
        if span is None:
            self.assertEqual(len(expected), 0)
        else:
            self.assertEqual(range(span[0], span[1] + 1), expected)

    @settings(max_examples=300, deadline=None, database=None)
    @given(suffix=st.integers(0, 10**6), total=st.integers(1, 10**6))
    def test_suffix_is_a_slice(self, suffix: int, total: int) -> None:
        self.assertEqual(parse_range(f"bytes=-{suffix}".encode()), (None, suffix))
        span = satisfiable_range((None, suffix), total)
        if suffix == 0:
            self.assertIsNone(span)
        else:
            assert span is not None
            self.assertEqual(range(span[0], span[1] + 1), range(total)[-suffix:])
