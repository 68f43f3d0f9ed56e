"""
Tests for L{p2pblob.gateway.namespace}: the gateway's SQLite of buckets,
objects, multipart uploads and owned streams; listings are checked against
a model of S3's rules with hypothesis.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.gateway.namespace import Namespace, ObjectRecord, PartRecord, UploadRecord

SD1, SD2, SD3 = "1" * 96, "2" * 96, "3" * 96


def record(key: str, sd_hash: str = SD1, size: int = 1, bucket: str = "b",
           now: float = 100.0) -> ObjectRecord:
    return ObjectRecord(bucket, key, sd_hash, size, "etag", "md5", 7, "text/plain",
                        {"cache-control": "no-cache"}, {"colour": "blue"}, now, now)


def model(keys: list[str], prefix: str, delimiter: str | None,
          after: str | None) -> list[str]:
    """
    S3's listing, the slow way: every key and common prefix in order.
    """
    entries: list[str] = []
    for key in sorted(keys, key=lambda k: k.encode("utf-8")):
        if not key.startswith(prefix) or (after is not None and key <= after):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            common = prefix + rest[:rest.index(delimiter) + len(delimiter)]
            if common != after and common not in entries:
                entries.append(common)
        else:
            entries.append(key)
    return entries


class NamespaceTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.namespace = self.open()

    def open(self) -> Namespace:
        namespace = Namespace(self.path)
        self.addCleanup(namespace.close)
        return namespace


class BucketTests(NamespaceTestCase):
    def test_buckets(self) -> None:
        self.assertTrue(self.namespace.create_bucket("b", 1.0))
        self.assertFalse(self.namespace.create_bucket("b", 2.0))
        self.namespace.create_bucket("a", 3.0)
        self.assertEqual(self.namespace.buckets(), [("a", 3.0), ("b", 1.0)])
        self.namespace.put_object(record("k"))
        self.assertRaises(ValueError, self.namespace.delete_bucket, "b")
        self.namespace.delete_object("b", "k")
        self.assertEqual(self.namespace.delete_bucket("b"), [])
        self.assertFalse(self.namespace.has_bucket("b"))

    def test_survives_reopening(self) -> None:
        self.namespace.create_bucket("b", 1.0)
        self.namespace.put_object(record("k"), owned=True)
        self.namespace.close()
        again = self.open()
        self.assertEqual(again.get_object("b", "k"), record("k"))
        self.assertTrue(again.is_owned(SD1))


class ObjectTests(NamespaceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.namespace.create_bucket("b", 1.0)

    def test_replace_keeps_creation(self) -> None:
        self.assertIsNone(self.namespace.put_object(record("k", SD1, now=1.0)))
        self.assertEqual(self.namespace.put_object(record("k", SD2, now=5.0)), SD1)
        found = self.namespace.get_object("b", "k")
        assert found is not None
        self.assertEqual((found.sd_hash, found.created, found.modified), (SD2, 1.0, 5.0))

    def test_collectable(self) -> None:
        self.namespace.put_object(record("a", SD1), owned=True)
        self.namespace.put_object(record("b", SD1))
        self.namespace.put_object(record("c", SD2))
        self.namespace.delete_object("b", "a")
        self.assertEqual(self.namespace.collectable([SD1, SD2]), [])
        self.namespace.delete_object("b", "b")
        self.namespace.delete_object("b", "c")
        # SD2 was never the gateway's own
        self.assertEqual(self.namespace.collectable(), [SD1])
        self.namespace.forget_stream(SD1)
        self.assertEqual(self.namespace.collectable(), [])

    def test_learn_digests(self) -> None:
        imported = ObjectRecord("b", "i", SD3, 5, SD3, None, None, "x/y")
        self.namespace.put_object(imported)
        self.namespace.put_object(ObjectRecord("b", "j", SD3, 5, "abc-2", None, None, "x/y"))
        self.namespace.learn_digests(SD3, "f" * 32, 42)
        found = self.namespace.get_object("b", "i")
        assert found is not None
        self.assertEqual((found.etag, found.md5, found.crc32), ("f" * 32, "f" * 32, 42))
        other = self.namespace.get_object("b", "j")
        assert other is not None
        self.assertEqual((other.etag, other.md5), ("abc-2", "f" * 32))
        self.assertEqual(self.namespace.digests(SD3), ("f" * 32, 42))

    def test_usage(self) -> None:
        self.namespace.put_object(record("a", size=10))
        self.namespace.put_object(record("b", size=5))
        upload = UploadRecord("u", "b", "big", "x/y", {}, {}, 1.0)
        self.namespace.create_upload(upload)
        self.namespace.put_part(PartRecord("u", 1, SD2, 0, 100, "e", None, False, 1.0))
        self.namespace.put_part(PartRecord("u", 2, SD1, 0, 1000, "e", None, True, 1.0))
        usage = self.namespace.usage()
        self.assertEqual((usage.size, usage.objects), (115, 2))


class UploadTests(NamespaceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.namespace.create_bucket("b", 1.0)
        self.namespace.create_upload(UploadRecord("u", "b", "big", "video/mp4",
                                                  {"cache-control": "x"}, {"k": "v"}, 1.0))

    def part(self, number: int, sd_hash: str) -> PartRecord:
        return PartRecord("u", number, sd_hash, 0, 10, "e", 1, False, 2.0)

    def test_parts(self) -> None:
        self.assertIsNone(self.namespace.put_part(self.part(2, SD2)))
        self.assertIsNone(self.namespace.put_part(self.part(1, SD1)))
        self.assertEqual(self.namespace.put_part(self.part(1, SD3)), SD1)
        self.assertEqual([(p.number, p.sd_hash) for p in self.namespace.parts("u")],
                         [(1, SD3), (2, SD2)])
        self.assertEqual([p.number for p in self.namespace.parts("u", after=1)], [2])
        self.assertTrue(self.namespace.is_owned(SD3))
        self.assertTrue(self.namespace.is_referenced(SD3))

    def test_gone(self) -> None:
        self.namespace.put_part(self.part(1, SD1))
        self.assertEqual(self.namespace.delete_upload("u"), [SD1])
        self.assertRaises(KeyError, self.namespace.put_part, self.part(2, SD2))
        self.assertEqual(self.namespace.parts("u"), [])

    def test_complete(self) -> None:
        """
        The object and the end of its upload are one transaction.
        """
        self.namespace.put_part(self.part(1, SD1))
        self.namespace.put_object(record("big", SD2), owned=True, upload_id="u")
        self.assertIsNone(self.namespace.get_upload("u"))
        self.assertEqual(self.namespace.parts("u"), [])
        self.assertEqual(self.namespace.collectable([SD1]), [SD1])

    def test_listed(self) -> None:
        self.namespace.create_upload(UploadRecord("a", "b", "big", "x", {}, {}, 3.0))
        self.namespace.create_upload(UploadRecord("z", "b", "other", "x", {}, {}, 3.0))
        self.assertEqual([u.upload_id for u in self.namespace.uploads("b")], ["a", "u", "z"])
        self.assertEqual([u.upload_id for u in self.namespace.uploads("b", "oth")], ["z"])
        self.assertEqual([u.upload_id for u in self.namespace.uploads("b", "", "big", "a")],
                         ["u", "z"])
        upload = self.namespace.get_upload("u")
        assert upload is not None
        self.assertEqual((upload.headers, upload.metadata), ({"cache-control": "x"}, {"k": "v"}))


class DraftTests(NamespaceTestCase):
    """
    Streams being made or brought in: what they noted survives a crash
    (a reopening), until they are finished or forgotten.
    """

    def test_noted(self) -> None:
        first = self.namespace.begin_draft(1.0)
        second = self.namespace.begin_draft(2.0)
        self.namespace.note_blob(first, SD2)
        self.namespace.note_blob(first, SD1)
        self.namespace.note_blob(first, SD1)
        self.namespace.note_stream(first, SD3)
        self.namespace.close()
        again = self.open()
        self.assertEqual(again.drafts(), [first, second])
        self.assertEqual(again.draft_names(first), ([SD1, SD2], [SD3]))
        self.assertEqual(again.draft_names(second), ([], []))

    def test_finish(self) -> None:
        """
        A finished draft's stream is owned, and its notes are gone, in one
        transaction: nothing names it yet, so it is collectable.
        """
        draft = self.namespace.begin_draft(1.0)
        self.namespace.note_blob(draft, SD1)
        self.namespace.note_stream(draft, SD2)
        self.namespace.finish_draft(draft, SD2)
        self.assertEqual(self.namespace.drafts(), [])
        self.assertEqual(self.namespace.draft_names(draft), ([], []))
        self.assertTrue(self.namespace.is_owned(SD2))
        self.assertEqual(self.namespace.collectable(), [SD2])

    def test_forget(self) -> None:
        draft = self.namespace.begin_draft(1.0)
        self.namespace.note_blob(draft, SD1)
        self.namespace.forget_draft(draft)
        self.assertEqual((self.namespace.drafts(), self.namespace.draft_names(draft)),
                         ([], ([], [])))
        self.assertFalse(self.namespace.is_owned(SD1))

    def test_from_version_1(self) -> None:
        """
        A file of the first version (no drafts) is brought up to date, its
        names kept.
        """
        self.namespace.create_bucket("b", 1.0)
        self.namespace.close()
        db = sqlite3.connect(self.path)
        db.execute("DROP TABLE draft_blob")
        db.execute("DROP TABLE draft_stream")
        db.execute("DROP TABLE draft")
        db.execute("PRAGMA user_version=1")
        db.commit()
        db.close()
        again = self.open()
        self.assertTrue(again.has_bucket("b"))
        self.assertEqual(again.drafts(), [])
        again.note_blob(again.begin_draft(1.0), SD1)


_ALPHABET = st.sampled_from(["a", "b", "/", "-", "ü", "\U0010ffff", "\x7f"])
_KEYS = st.lists(st.text(_ALPHABET, min_size=1, max_size=6), max_size=30, unique=True)


class ListingTests(NamespaceTestCase):
    def fill(self, keys: list[str]) -> Namespace:
        namespace = Namespace(":memory:")
        self.addCleanup(namespace.close)
        namespace.create_bucket("b", 1.0)
        for key in keys:
            namespace.put_object(record(key))
        return namespace

    @settings(max_examples=200, deadline=None)
    @given(_KEYS, st.text(_ALPHABET, max_size=2), st.sampled_from([None, "/", "a", "ü/"]),
           st.integers(min_value=1, max_value=7))
    def test_pages(self, keys: list[str], prefix: str, delimiter: str | None,
                   max_keys: int) -> None:
        """
        Page after page, each from the last key or prefix of the one
        before, a listing gives what S3's rules give, each entry once.
        """
        namespace = self.fill(keys)
        seen: list[str] = []
        after = None
        while True:
            contents, prefixes, truncated, last = namespace.list_objects(
                "b", prefix, delimiter, after, max_keys)
            page = sorted([r.key for r in contents] + prefixes, key=lambda k: k.encode())
            self.assertLessEqual(len(page), max_keys)
            seen += page
            if not truncated:
                break
            self.assertEqual(len(page), max_keys)
            after = last
        self.assertEqual(seen, model(keys, prefix, delimiter, None))

    @given(_KEYS, st.text(_ALPHABET, max_size=3))
    def test_marker(self, keys: list[str], marker: str) -> None:
        namespace = self.fill(keys)
        contents, _, _, _ = namespace.list_objects("b", "", None, marker, 1000)
        self.assertEqual([r.key for r in contents], model(keys, "", None, marker))

    def test_marker_inside_prefix(self) -> None:
        """
        A marker inside a common prefix still gives that prefix, if keys
        under it follow the marker.
        """
        namespace = self.fill(["photos/2005/a", "photos/2006/b", "z"])
        _, prefixes, _, _ = namespace.list_objects("b", "", "/", "photos/2005/a", 10)
        self.assertEqual(prefixes, ["photos/"])
        _, prefixes, _, _ = namespace.list_objects("b", "", "/", "photos/", 10)
        self.assertEqual(prefixes, [])
