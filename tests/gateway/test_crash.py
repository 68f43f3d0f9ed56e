"""
Tests for what a crash of the node leaves of the S3 gateway's uploads: the
blobs an upload writes are noted in the namespace before they are written
(L{p2pblob.gateway.objects}), and at the next start
(L{p2pblob.gateway.objects.Objects.start}) the blobs of the uploads cut
short, and the streams finished but never named, are removed.

A crash is simulated by dropping the gateway and its blob store without
stopping anything, and making new ones over the same files.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.stream.crypt import PLAINTEXT_CHUNK_SIZE as CHUNK
from p2pblob.stream.writer import StreamCreator
from tests.gateway._helpers import MIN_PART, GatewayTestCase, content, md5_b64


class CrashTests(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_bucket()
        self.kept = content(CHUNK + 10, 9)
        self.put("kept", self.kept)
        # its two data blobs and its sd blob
        self.blobs = self.blob_count()
        self.assertEqual(self.blobs, 3)

    def crash(self) -> None:
        """
        The node dies in the middle of what it does: nothing is stopped,
        no connection is closed.  A new blob store and gateway open the
        same files, and the gateway starts.
        """
        if hasattr(self, "_protocols"):
            self._protocols.clear()
        dead = self.namespace
        del self.namespace
        self.addCleanup(dead.close)
        self.store = self.make_store("node")
        self.build()
        self.successResultOf(self.objects.start())

    def assertOnlyNamed(self) -> None:
        """
        The blob store holds the blobs of named objects and nothing else,
        and no draft is left.
        """
        named = set()
        for sd_hash, _, _, _ in self.store.index.streams():
            named.update(self.store.index.stream_blobs(sd_hash))
        self.assertEqual(set(self.successResultOf(self.store.verified_blobs())), named)
        self.assertEqual(self.namespace.drafts(), [])
        self.assertEqual(self.get("kept").body, self.kept)

    def test_put_cut_short(self) -> None:
        """
        The blobs a PutObject stored before the node died are removed at
        the next start; the objects named stay.
        """
        data = content(3 * CHUNK, 1)
        self.send("PUT", "/bucket/film", data, chunks=[data[:2 * CHUNK + 100]])
        self.assertEqual(self.blob_count(), self.blobs + 2)
        self.assertEqual(len(self.namespace.drafts()), 1)
        with capturedLogs() as events:
            self.crash()
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertOnlyNamed()
        self.assertEqual(self.get("film").code, "NoSuchKey")
        self.assertIn("left by an upload cut short",
                      " ".join(e.get("log_format", "") for e in events))
        # and the same PUT goes through afterwards
        self.put("film", data)
        self.assertEqual(self.get("film").body, data)

    def test_part_cut_short(self) -> None:
        """
        The blobs of an UploadPart cut short are removed at the next start;
        the parts uploaded before stay, and the upload goes on.
        """
        upload_id = self.request("POST", "/bucket/big?uploads").find("UploadId")
        first = content(CHUNK + MIN_PART, 2)
        second = content(2 * CHUNK + 3, 3)
        one = self.request("PUT", f"/bucket/big?partNumber=1&uploadId={upload_id}", first)
        self.assertEqual(one.status, 200, one.body)
        with_part = self.blob_count()
        self.send("PUT", f"/bucket/big?partNumber=2&uploadId={upload_id}", second,
                  chunks=[second[:CHUNK + 1]])
        self.assertEqual(self.blob_count(), with_part + 1)
        self.crash()
        self.assertEqual(self.blob_count(), with_part)
        self.assertOnlyNamed()
        two = self.request("PUT", f"/bucket/big?partNumber=2&uploadId={upload_id}", second)
        self.assertEqual(two.status, 200, two.body)
        parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                        for n, e in [(1, one.header("etag")), (2, two.header("etag"))])
        done = self.request("POST", f"/bucket/big?uploadId={upload_id}",
                            f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode())
        self.assertEqual(done.status, 200, done.body)
        self.assertEqual(self.get("big").body, first + second)
        self.assertOnlyNamed()

    def finish(self, data: bytes) -> str:
        """
        Put C{data} into a stream of the gateway as a PutObject does, up to
        the moment it would be named; its sd hash.
        """
        creator = self.objects.creator("unnamed")
        self.successResultOf(creator.write(data))
        finished: Any = self.successResultOf(
            Deferred.fromCoroutine(self.objects.finish(creator)))
        sd_hash: str = finished[0]
        return sd_hash

    def test_finished_not_named(self) -> None:
        """
        A stream finished, but not yet named when the node died, is removed
        at the next start.
        """
        sd_hash = self.finish(content(CHUNK + 5, 4))
        self.assertTrue(self.store.index.has_stream(sd_hash))
        self.assertEqual(self.namespace.drafts(), [])
        self.crash()
        self.assertFalse(self.store.index.has_stream(sd_hash))
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertOnlyNamed()

    def test_recorded_not_owned(self) -> None:
        """
        A stream the creator recorded in the blob store, when the node died
        before the gateway took it as its own, is removed at the next
        start.
        """
        creator = self.objects.creator("unnamed")
        self.successResultOf(creator.write(content(CHUNK + 5, 5)))
        sd_hash = self.successResultOf(creator.finish()).sd_hash
        self.assertTrue(self.store.index.has_stream(sd_hash))
        self.assertEqual(len(self.namespace.drafts()), 1)
        self.crash()
        self.assertFalse(self.store.index.has_stream(sd_hash))
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertOnlyNamed()

    def test_blobs_shared_are_kept(self) -> None:
        """
        A blob noted by an upload cut short that a recorded stream also
        uses stays.
        """
        draft = self.namespace.begin_draft(0.0)
        kept = self.store.index.streams()[0][0]
        for blob_hash in self.store.index.stream_blobs(kept):
            self.namespace.note_blob(draft, blob_hash)
        self.crash()
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertOnlyNamed()

    def test_noted_before_written(self) -> None:
        """
        Each blob of an upload is in the namespace before the blob store
        is asked to write it.
        """
        noted: list[bool] = []
        put_blob = self.store.put_blob

        def checked(data: Any, expected_hash: str | None = None) -> Any:
            drafts = self.namespace.drafts()
            noted.append(any(expected_hash in self.namespace.draft_names(d)[0]
                             for d in drafts))
            return put_blob(data, expected_hash)

        self.patch(self.store, "put_blob", checked)
        self.put("film", content(2 * CHUNK + 1, 6))
        self.assertEqual(noted, [True] * 4)
        self.assertEqual(self.namespace.drafts(), [])

    def test_failed_noting_writes_nothing(self) -> None:
        """
        If the namespace cannot note a blob, the blob is not written and
        the upload fails.
        """

        def broken(draft: int, blob_hash: str) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        self.patch(self.namespace, "note_blob", broken)
        response = self.request("PUT", "/bucket/film", content(CHUNK + 1, 7))
        self.assertEqual((response.status, response.code), (500, "InternalError"))
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertEqual(self.get("film").code, "NoSuchKey")

    def test_ended_uploads_leave_no_draft(self) -> None:
        """
        An upload that ends (put, refused, cut by its client) forgets its
        draft once its blobs are gone.
        """
        data = content(2 * CHUNK + 1, 8)
        bad = self.request("PUT", "/bucket/film", data, {"Content-MD5": md5_b64(b"other")})
        self.assertEqual(bad.code, "BadDigest")
        self.send("PUT", "/bucket/film", data, chunks=[data[:CHUNK + 1]])
        self.assertEqual(len(self.namespace.drafts()), 1)
        self.protocols[-1].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.namespace.drafts(), [])
        self.assertEqual(self.blob_count(), self.blobs)
        self.put("film", data)
        self.assertEqual(self.namespace.drafts(), [])
        self.assertEqual(self.blob_count(), self.blobs + 4)

    def test_stopped_upload(self) -> None:
        """
        An upload that a stop of the gateway cancels leaves its draft to the
        next start, which finds nothing more to remove.
        """
        data = content(2 * CHUNK, 10)
        self.send("PUT", "/bucket/film", data, chunks=[data[:CHUNK + 1]])
        self.successResultOf(self.objects.stop())
        self.assertEqual(self.blob_count(), self.blobs)
        self.assertEqual(len(self.namespace.drafts()), 1)
        with capturedLogs() as events:
            self.crash()
        self.assertOnlyNamed()
        self.assertNotIn("left by an upload cut short",
                         " ".join(e.get("log_format", "") for e in events))


class ImportCrashTests(GatewayTestCase):
    """
    An import of a stream of the network when the node dies.
    """

    def setUp(self) -> None:
        super().setUp()
        self.network: BlobStore = self.make_store("peer")
        self.waiting: list[Deferred[None]] = []
        self.fetcher = self.fetch
        self.build()
        self.make_bucket()
        creator = StreamCreator(self.network, run_inline, "film.mp4")
        self.successResultOf(creator.write(content(2 * CHUNK + 77)))
        self.sd_hash = self.successResultOf(creator.finish()).sd_hash

    def fetch(self, blob: str) -> Deferred[None]:
        """
        The descriptor comes at once; the other blobs never.
        """
        if blob != self.sd_hash:
            waiting: Deferred[None] = Deferred()
            self.waiting.append(waiting)
            return waiting
        return self.network.read_blob(blob).addCallback(
            lambda data: self.store.put_blob(data, blob).addCallback(lambda _: None))

    def test_import_cut_short(self) -> None:
        """
        The stream an import recorded (pinned, so never evicted) is removed
        at the next start if the node died before it was named.
        """
        self.send("PUT", "/bucket/film", b"", {"x-p2pblob-sd-hash": self.sd_hash})
        self.assertEqual(len(self.waiting), 1)
        self.assertTrue(self.store.index.has_stream(self.sd_hash))
        self.protocols.clear()
        dead = self.namespace
        del self.namespace
        self.addCleanup(dead.close)
        self.store = self.make_store("node")
        self.build()
        self.successResultOf(self.objects.start())
        self.assertFalse(self.store.index.has_stream(self.sd_hash))
        self.assertEqual(self.blob_count(), 0)
        self.assertEqual(self.namespace.drafts(), [])
