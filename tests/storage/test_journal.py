"""
Tests for L{p2pblob.storage.journal}.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import StorageError
from p2pblob.storage.journal import APPLICATION_ID, JournalEntry, TransferJournal

HASH = "ab" * 48


class TransferJournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "sub" / "transfers.sqlite"
        self.journal = self.open()

    def open(self) -> TransferJournal:
        journal = TransferJournal(self.path)
        self.addCleanup(journal.close)
        return journal

    def begin(
        self, journal: TransferJournal | None = None, target: str = "blobs", key: str = "k",
        started: float = 1.0,
    ) -> JournalEntry:  # fmt: skip
        return (journal or self.journal).begin(
            target, "local", key, "file:/data/f", "3:1:2:3:4", 3000, 1024, HASH, started
        )

    def test_begin(self) -> None:
        """
        A transfer begun is listed with what it was begun with and nothing
        stored yet; the journal's directory is made.
        """
        entry = self.begin()
        self.assertEqual(
            entry,
            JournalEntry(
                entry.id, "blobs", "local", "k", "file:/data/f", "3:1:2:3:4", 3000, 0, None,
                1024, HASH, 1.0,
            ),
        )
        self.assertEqual(self.journal.open_transfers("blobs"), [entry])
        self.assertEqual(self.journal.get(entry.id), entry)

    def test_reopened(self) -> None:
        """
        Closed and opened again, the journal lists the same transfers, as
        far as they got, with their upload names.
        """
        first = self.begin(key="a")
        second = self.begin(key="b", started=2.0)
        self.journal.advance(first.id, 2048)
        self.journal.set_upload_id(second.id, "upload-7")
        self.journal.close()
        again = self.open()
        self.assertEqual(
            [(e.key, e.stored, e.upload_id) for e in again.open_transfers("blobs")],
            [("a", 2048, None), ("b", 0, "upload-7")],
        )

    def test_seen_by_another_connection(self) -> None:
        """
        Each change is committed at once: another process (here another
        connection) sees it while the journal is still open.
        """
        entry = self.begin()
        self.journal.advance(entry.id, 1024)
        other = self.open()
        [seen] = other.open_transfers("blobs")
        self.assertEqual(seen.stored, 1024)

    def test_upload_id_forgotten(self) -> None:
        """
        An upload name can be forgotten again.
        """
        entry = self.begin()
        self.journal.set_upload_id(entry.id, "x")
        self.journal.set_upload_id(entry.id, None)
        [found] = self.journal.open_transfers("blobs")
        self.assertIsNone(found.upload_id)

    def test_finish(self) -> None:
        """
        A finished transfer is forgotten; finishing it again does nothing.
        """
        entry = self.begin()
        self.journal.finish(entry.id)
        self.journal.finish(entry.id)
        self.assertEqual(self.journal.open_transfers("blobs"), [])
        self.assertIsNone(self.journal.get(entry.id))

    def test_one_per_key(self) -> None:
        """
        A transfer begun again for the same key to the same target
        replaces the open one, under a new number; the old number then
        names nothing, so that changes made through it are lost.
        """
        old = self.begin()
        new = self.begin(started=5.0)
        self.assertNotEqual(old.id, new.id)
        self.journal.advance(old.id, 100)
        self.journal.finish(old.id)
        self.assertEqual(self.journal.open_transfers("blobs"), [new])

    def test_numbers_not_reused(self) -> None:
        """
        The number of a finished transfer is not given to a later one.
        """
        entry = self.begin()
        self.journal.finish(entry.id)
        self.assertGreater(self.begin().id, entry.id)

    def test_targets_apart(self) -> None:
        """
        The same key may be open for two targets; each target lists its
        own, oldest first.
        """
        late = self.begin(target="blobs", key="z", started=9.0)
        early = self.begin(target="blobs", key="y", started=3.0)
        mirror = self.begin(target="mirror", key="z")
        self.assertEqual(self.journal.open_transfers("blobs"), [early, late])
        self.assertEqual(self.journal.open_transfers("mirror"), [mirror])
        self.assertEqual(self.journal.open_transfers("other"), [])

    def test_advance_past_size(self) -> None:
        """
        More bytes than the transfer has cannot be stored.
        """
        entry = self.begin()
        error = self.assertRaises(StorageError, self.journal.advance, entry.id, 3001)
        self.assertIn(str(self.path), str(error))

    def test_durability(self) -> None:
        """
        The file is in WAL mode; beginning a transfer waits for the disk
        (C{synchronous=FULL}), the other changes do not.
        """
        db = self.journal._db
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        entry = self.begin()
        self.assertEqual(statements[0], "PRAGMA synchronous=FULL")
        self.assertEqual(statements[-1], "PRAGMA synchronous=NORMAL")
        del statements[:]
        self.journal.advance(entry.id, 10)
        self.journal.set_upload_id(entry.id, "u")
        self.journal.finish(entry.id)
        self.assertFalse([s for s in statements if "synchronous" in s], statements)
        db.set_trace_callback(None)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        self.assertEqual(db.execute("PRAGMA synchronous").fetchone(), (1,))

    def test_damaged(self) -> None:
        """
        A file that is not an SQLite database is refused with a
        L{StorageError} that names it.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"this is not a database" * 100)
        error = self.assertRaises(StorageError, TransferJournal, path)
        self.assertIn(str(path), str(error))
        self.assertIn("damaged", str(error))

    def test_foreign(self) -> None:
        """
        Another SQLite database is not taken for a journal, nor changed.
        """
        path = Path(self.mktemp())
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x)")
        db.commit()
        db.close()
        error = self.assertRaises(StorageError, TransferJournal, path)
        self.assertIn("not a p2pblob transfer journal", str(error))
        db = sqlite3.connect(path)
        self.assertEqual(db.execute("PRAGMA application_id").fetchone(), (0,))
        db.close()

    def test_newer(self) -> None:
        """
        A journal written by a newer p2pblob is refused.
        """
        self.journal.close()
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA user_version=99")
        db.close()
        error = self.assertRaises(StorageError, TransferJournal, self.path)
        self.assertIn("newer", str(error))

    def test_marked(self) -> None:
        """
        The file is marked as a transfer journal.
        """
        db = sqlite3.connect(self.path)
        self.assertEqual(db.execute("PRAGMA application_id").fetchone(), (APPLICATION_ID,))
        db.close()

    def test_cannot_make(self) -> None:
        """
        A journal whose directory cannot be made is refused.
        """
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        error = self.assertRaises(StorageError, TransferJournal, blocker / "journal.sqlite")
        self.assertIn("cannot open the transfer journal", str(error))
