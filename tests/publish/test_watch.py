"""
Tests for L{p2pblob.publish.watch}: the folder watcher over real temporary
folders, on a L{Clock}, walking inline, with a publisher whose results the
tests give (and, once, the real L{publish_file} into a real blob store).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import MAX_BLOB_SIZE
from p2pblob.blob.store import ROLE_PUBLISHED, BlobStore
from p2pblob.errors import ConfigError, DiskLimitError, StorageError, StreamError
from p2pblob.publish.watch import (
    DEFAULT_EXCLUDE,
    FolderWatcher,
    WatchRules,
    store_publisher,
)
from p2pblob.stream.descriptor import parse_sd_blob

SCAN = 10.0
SETTLE = 2.0


class FakePublisher:
    """
    A L{p2pblob.publish.watch.Publish} that records the paths it is given.
    Each call's Deferred is left for the test to fire, unless C{auto}: then
    it fires at once with a made-up sd hash.
    """

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        self.calls: list[tuple[Path, Deferred[str]]] = []
        self.count = 0

    def __call__(self, path: Path) -> Deferred[str]:
        self.count += 1
        if self.auto:
            self.calls.append((path, succeed(self.sd_hash())))
            return self.calls[-1][1]
        d: Deferred[str] = Deferred()
        self.calls.append((path, d))
        return d

    def sd_hash(self) -> str:
        return f"{self.count:096x}"

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.calls]

    def succeed_last(self) -> str:
        _, d = self.calls[-1]
        sd_hash = self.sd_hash()
        d.callback(sd_hash)
        return sd_hash

    def fail_last(self, error: Exception) -> None:
        self.calls[-1][1].errback(error)

    def fire_unfired(self) -> None:
        for _, d in self.calls:
            if not d.called:
                d.errback(StreamError("the test ended"))


class WatcherTestCase(SynchronousTestCase):
    """
    A watched folder (empty at first), a clock, a fake publisher; L{start}
    starts a watcher on them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.base = Path(self.mktemp()).absolute()
        self.folder = self.base / "watched"
        self.folder.mkdir(parents=True)
        self.state_path = self.base / "state" / "watch.sqlite"
        self.publisher = FakePublisher()
        self.announced = 0
        self.mtime = 1_700_000_000 * 10**9

    def announce(self) -> None:
        self.announced += 1

    def rules(self, **options: Any) -> WatchRules:
        options.setdefault("scan_interval", SCAN)
        options.setdefault("settle_time", SETTLE)
        return WatchRules(self.folder, **options)

    def start(self, rules: WatchRules | None = None, **options: Any) -> FolderWatcher:
        watcher = FolderWatcher(
            self.clock, run_inline, rules or self.rules(**options), self.publisher,
            self.state_path, announce=self.announce,
        )
        watcher.startService()
        self.addCleanup(self.stop, watcher)
        return watcher

    def stop(self, watcher: FolderWatcher) -> None:
        if watcher.running:
            if isinstance(self.publisher, FakePublisher):
                self.publisher.fire_unfired()
            self.successResultOf(watcher.stopService())

    def write(self, name: str, data: bytes = b"data") -> Path:
        """
        Write C{data} to the file C{name} of the folder, with a modification
        time later than that of any file written before.
        """
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.touch(path)
        return path

    def touch(self, path: Path) -> None:
        self.mtime += 10**9
        os.utime(path, ns=(self.mtime, self.mtime))

    def published(self, watcher: FolderWatcher) -> dict[str, str]:
        return {record.path: record.sd_hash for record in watcher.published_files()}

    def settle(self) -> None:
        """
        Let the settle time pass.
        """
        self.clock.advance(SETTLE)

    def next_scan(self) -> None:
        """
        Move to just after the next scan, and let files settle.
        """
        now = self.clock.seconds()
        self.clock.advance((now // SCAN + 1) * SCAN - now)
        self.settle()

    def publish_all(self, watcher: FolderWatcher) -> list[str]:
        """
        Let the files settle and publish every one asked, one after the
        other; return their paths relative to the folder, in order.
        """
        self.next_scan()
        done = []
        while self.publisher.calls and not self.publisher.calls[-1][1].called:
            done.append(self.publisher.calls[-1][0].relative_to(self.folder).as_posix())
            self.publisher.succeed_last()
        return done


class NewFileTests(WatcherTestCase):
    def test_published_after_settling(self) -> None:
        """
        A new file is published once it has stayed unchanged for the settle
        time (not only at the next scan); its sd hash is recorded, and the
        announcer is told.
        """
        path = self.write("film.mp4")
        watcher = self.start()
        self.assertEqual(self.publisher.calls, [])
        self.clock.advance(SETTLE - 0.5)
        self.assertEqual(self.publisher.calls, [])
        self.clock.advance(0.5)
        self.assertEqual(self.publisher.paths, [path])
        self.assertEqual(watcher.status()["publishing"], "film.mp4")
        self.assertEqual(self.announced, 0)
        with capturedLogs() as events:
            sd_hash = self.publisher.succeed_last()
        self.assertEqual(self.published(watcher), {"film.mp4": sd_hash})
        self.assertEqual(self.announced, 1)
        self.assertIn(
            f"Published film.mp4 as stream {sd_hash}", [formatEvent(e) for e in events]
        )
        status = watcher.status()
        self.assertEqual(
            (status["watched"], status["published"], status["pending"], status["publishing"]),
            (1, 1, 0, None),
        )

    def test_file_added_later(self) -> None:
        """
        A file added while the watcher runs is found at the next scan.
        """
        watcher = self.start()
        self.clock.advance(3)
        path = self.write("late.txt")
        self.clock.advance(SCAN - 3 - 0.1)
        self.assertEqual(self.publisher.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(watcher.status()["pending"], 1)
        self.settle()
        self.assertEqual(self.publisher.paths, [path])

    def test_file_being_written(self) -> None:
        """
        A file whose size keeps changing is not published until it stays
        the same for the settle time.
        """
        path = self.write("growing.bin", b"x" * 10)
        watcher = self.start()
        for _ in range(5):
            self.clock.advance(SETTLE - 0.5)
            with path.open("ab") as f:
                f.write(b"more")
            self.clock.advance(0.5)
            self.assertEqual(self.publisher.calls, [])
            self.assertEqual(watcher.status()["pending"], 1)
        self.settle()
        self.assertEqual(self.publisher.paths, [path])

    def test_size_stays_time_changes(self) -> None:
        """
        A file rewritten in place with the same size is not settled either.
        """
        path = self.write("same.bin")
        self.start()
        self.clock.advance(1)
        self.touch(path)
        self.clock.advance(1)
        self.assertEqual(self.publisher.calls, [])
        self.settle()
        self.assertEqual(self.publisher.paths, [path])

    def test_no_settle_time(self) -> None:
        """
        With a settle time of 0, a file is published as soon as it is seen.
        """
        path = self.write("now.txt")
        self.start(settle_time=0)
        self.assertEqual(self.publisher.paths, [path])

    def test_no_settle_time_changed_waiting(self) -> None:
        """
        With a settle time of 0, a file that changed while it waited its
        turn is published as it now is, at once.
        """
        self.write("a.txt")
        second = self.write("b.txt")
        self.start(settle_time=0)
        self.write("b.txt", b"changed")
        self.publisher.succeed_last()
        self.assertEqual(self.publisher.paths[1:], [second])

    def test_one_at_a_time(self) -> None:
        """
        Files are published one at a time, by path among those that settled
        together.
        """
        self.write("b.txt")
        self.write("a.txt")
        self.write("c/d.txt")
        watcher = self.start()
        self.settle()
        self.assertEqual(len(self.publisher.calls), 1)
        self.assertEqual(watcher.status()["pending"], 3)
        order = [self.publisher.calls[-1][0].name]
        while len(order) < 3:
            self.publisher.succeed_last()
            order.append(self.publisher.calls[-1][0].name)
        self.publisher.succeed_last()
        self.assertEqual(order, ["a.txt", "b.txt", "d.txt"])
        self.assertEqual(len(self.published(watcher)), 3)

    def test_changed_while_waiting_its_turn(self) -> None:
        """
        A file that changes while others are published before it settles
        again before it is published.
        """
        self.write("a.txt")
        second = self.write("b.txt")
        self.start()
        self.settle()
        self.assertEqual(self.publisher.paths, [self.folder / "a.txt"])
        self.touch(second)
        self.publisher.succeed_last()
        self.assertEqual(len(self.publisher.calls), 1)
        self.settle()
        self.assertEqual(self.publisher.paths[1:], [second])


class ChangeTests(WatcherTestCase):
    def test_changed_file_republished(self) -> None:
        """
        A changed file is published again; the previous stream stays
        published (the log names it).
        """
        path = self.write("doc.txt", b"one")
        watcher = self.start()
        self.settle()
        first = self.publisher.succeed_last()
        self.write("doc.txt", b"two")
        with capturedLogs() as events:
            self.next_scan()
            self.assertEqual(self.publisher.paths, [path, path])
            second = self.publisher.succeed_last()
        self.assertNotEqual(first, second)
        self.assertEqual(self.published(watcher), {"doc.txt": second})
        self.assertIn(
            f"Published the changed doc.txt as stream {second}; the stream of its "
            f"previous version, {first}, stays published",
            [formatEvent(e) for e in events],
        )
        self.assertEqual(self.announced, 2)

    def test_replaced_file_republished(self) -> None:
        """
        A file replaced by another of the same size and modification time
        (an editor's atomic save) is a new version: its inode changed.
        """
        path = self.write("doc.txt", b"one")
        watcher = self.start()
        self.settle()
        self.publisher.succeed_last()
        before = path.stat()
        temporary = self.folder / "doc.txt.tmp"
        temporary.write_bytes(b"two")
        os.utime(temporary, ns=(before.st_mtime_ns, before.st_mtime_ns))
        os.replace(temporary, path)
        self.assertNotEqual(path.stat().st_ino, before.st_ino)
        self.next_scan()
        self.assertEqual(self.publisher.paths, [path, path])
        self.publisher.succeed_last()
        self.assertEqual(watcher.status()["published"], 1)

    def test_unchanged_never_republished(self) -> None:
        """
        An unchanged file is published once, however long it is watched,
        and not again after a restart with the same state file.
        """
        self.write("a.txt")
        self.write("sub/b.txt")
        watcher = self.start()
        self.assertEqual(sorted(self.publish_all(watcher)), ["a.txt", "sub/b.txt"])
        self.clock.advance(20 * SCAN)
        self.assertEqual(len(self.publisher.calls), 2)
        before = self.published(watcher)
        self.successResultOf(watcher.stopService())

        again = self.start()
        self.assertEqual(self.published(again), before)
        self.clock.advance(20 * SCAN)
        self.assertEqual(len(self.publisher.calls), 2)
        status = again.status()
        self.assertEqual((status["watched"], status["published"], status["pending"]), (2, 2, 0))

    def test_changed_while_stopped(self) -> None:
        """
        A file changed while the watcher was stopped is republished at the
        next start; a file added meanwhile is published.
        """
        path = self.write("a.txt", b"one")
        watcher = self.start()
        self.publish_all(watcher)
        self.successResultOf(watcher.stopService())
        self.write("a.txt", b"two!")
        self.write("new.txt")
        again = self.start()
        self.assertEqual(sorted(self.publish_all(again)), ["a.txt", "new.txt"])
        self.assertEqual(self.publisher.paths[0], path)

    def test_changed_during_publish(self) -> None:
        """
        A file that changes while it is being published is published again:
        the version recorded is the one seen before.
        """
        path = self.write("a.txt", b"one")
        watcher = self.start()
        self.settle()
        self.write("a.txt", b"one, and more")
        self.publisher.succeed_last()
        self.assertEqual(watcher.status()["pending"], 1)
        self.settle()
        self.assertEqual(self.publisher.paths, [path, path])
        self.publisher.succeed_last()
        self.assertEqual(watcher.status()["pending"], 0)
        self.clock.advance(5 * SCAN)
        self.assertEqual(len(self.publisher.calls), 2)

    def test_deleted_file_forgotten(self) -> None:
        """
        A deleted file is forgotten (its stream is not touched); put back,
        it is a new file.
        """
        path = self.write("gone.txt")
        watcher = self.start()
        self.settle()
        sd_hash = self.publisher.succeed_last()
        path.unlink()
        with capturedLogs() as events:
            self.next_scan()
        self.assertEqual(self.published(watcher), {})
        self.assertIn(
            f"Forgot gone.txt: it was deleted; its stream {sd_hash} stays published",
            [formatEvent(e) for e in events],
        )
        self.assertEqual(watcher.status()["watched"], 0)
        self.write("gone.txt")
        self.next_scan()
        self.assertEqual(self.publisher.paths, [path, path])

    def test_forgotten_across_restart(self) -> None:
        """
        A file deleted while the watcher was stopped is forgotten at the
        next start, in the state file too.
        """
        path = self.write("gone.txt")
        self.start()
        self.settle()
        self.publisher.succeed_last()
        path.unlink()
        self.clock.advance(SCAN)
        db = sqlite3.connect(self.state_path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT COUNT(*) FROM published_file").fetchone(), (0,))

    def test_no_longer_selected(self) -> None:
        """
        A published file that the rules no longer select (after a restart
        with other rules) is forgotten, saying why.
        """
        self.write("a.txt")
        watcher = self.start()
        self.publish_all(watcher)
        self.successResultOf(watcher.stopService())
        with capturedLogs() as events:
            again = self.start(include=["*.mp4"])
        self.assertEqual(self.published(again), {})
        self.assertTrue(
            any("Forgot a.txt: it no longer matches the rules" in formatEvent(e) for e in events)
        )

    def test_gone_before_its_turn(self) -> None:
        """
        A file deleted while it waits its turn is not published.
        """
        self.write("a.txt")
        second = self.write("b.txt")
        watcher = self.start()
        self.settle()
        second.unlink()
        self.publisher.succeed_last()
        self.assertEqual(len(self.publisher.calls), 1)
        self.assertEqual(watcher.status()["pending"], 0)
        self.clock.advance(5 * SCAN)
        self.assertEqual(len(self.publisher.calls), 1)


class FailureTests(WatcherTestCase):
    def test_retried_next_scan(self) -> None:
        """
        A publish that fails is logged, shown in the status, and tried
        again at the next scan.
        """
        path = self.write("a.txt")
        watcher = self.start()
        self.settle()
        with capturedLogs() as events:
            self.publisher.fail_last(DiskLimitError(100, 50, 120))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("Could not publish a.txt: the blob store is at its disk-use limit", warnings[0])
        status = watcher.status()
        self.assertEqual((status["pending"], status["failing"], status["failures"]), (1, 1, 1))
        self.assertEqual(status["last_error"]["path"], "a.txt")
        self.assertIn("disk-use limit", status["last_error"]["error"])
        self.assertEqual(status["errors"][0]["attempts"], 1)
        self.clock.advance(SCAN - SETTLE - 0.1)
        self.assertEqual(len(self.publisher.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.publisher.paths, [path, path])
        sd_hash = self.publisher.succeed_last()
        status = watcher.status()
        self.assertEqual((status["pending"], status["failing"], status["published"]), (0, 0, 1))
        self.assertEqual(self.published(watcher), {"a.txt": sd_hash})

    def test_backoff(self) -> None:
        """
        A version that keeps failing is tried less and less often: at the
        next scan, then two scans later, then four...
        """
        self.write("a.txt")
        self.start()
        self.settle()
        attempts = []
        for _ in range(40):
            if self.publisher.calls and not self.publisher.calls[-1][1].called:
                attempts.append(self.clock.seconds())
                self.publisher.fail_last(StreamError("cannot read a.txt: Input/output error"))
            self.clock.advance(SCAN)
        self.assertEqual(attempts, [2.0, 12.0, 32.0, 72.0, 152.0, 312.0])

    def test_change_resets_backoff(self) -> None:
        """
        A failing file that changes is tried again once it settles.
        """
        path = self.write("a.txt")
        self.start()
        self.settle()
        self.publisher.fail_last(StreamError("no"))
        self.clock.advance(SCAN)
        self.publisher.fail_last(StreamError("no"))
        self.touch(path)
        self.clock.advance(SCAN)
        self.settle()
        self.assertEqual(len(self.publisher.calls), 3)

    def test_vanished_mid_publish(self) -> None:
        """
        A file deleted while it is being published: the failure is logged
        and reported; the next scan finds it gone and drops it; put back,
        it is published.
        """
        path = self.write("a.txt")
        watcher = self.start()
        self.settle()
        path.unlink()
        self.publisher.fail_last(
            StreamError(f"cannot read {path}: No such file or directory")
        )
        self.assertIn("No such file", watcher.status()["last_error"]["error"])
        self.clock.advance(SCAN)
        status = watcher.status()
        self.assertEqual((status["pending"], status["failing"], status["published"]), (0, 0, 0))
        self.clock.advance(5 * SCAN)
        self.assertEqual(len(self.publisher.calls), 1)
        self.write("a.txt")
        self.next_scan()
        self.assertEqual(self.publisher.paths, [path, path])

    def test_publish_raises(self) -> None:
        """
        A publisher that raises rather than failing its Deferred does not
        stop the watcher either.
        """
        def publish(path: Path) -> Deferred[str]:
            raise OSError(13, "Permission denied")

        self.publisher = publish  # type: ignore[assignment]
        self.write("a.txt")
        watcher = self.start()
        self.settle()
        self.assertEqual(watcher.status()["last_error"]["error"], "Permission denied")
        self.assertTrue(watcher.running)

    def test_state_file_unwritable(self) -> None:
        """
        A state file that cannot be written is reported; the file counts as
        published until the next start.
        """
        self.write("a.txt")
        watcher = self.start()
        self.settle()
        db = sqlite3.connect(self.state_path)
        self.addCleanup(db.close)
        db.execute("DROP TABLE published_file")  # writes fail
        db.commit()
        sd_hash = self.publisher.succeed_last()
        self.assertEqual(self.published(watcher), {"a.txt": sd_hash})
        self.assertIn("cannot write", watcher.status()["last_error"]["error"])


class RuleTests(WatcherTestCase):
    def test_include_exclude(self) -> None:
        """
        Include patterns select by name, or by path when they hold a C{/};
        exclude patterns win, and leave out whole folders.
        """
        for name in [
            "a.mp4", "b.txt", "draft-c.mp4", "docs/x.pdf", "docs/sub/y.pdf", "other/z.pdf",
            "/".join(["sub", "deep.mp4"]), "skip/e.mp4", "docs/skip/f.pdf",
        ]:
            self.write(name)
        self.publisher.auto = True
        watcher = self.start(include=["*.mp4", "docs/*.pdf"], exclude=["*draft*", "skip"])
        self.settle()
        self.assertEqual(
            sorted(self.published(watcher)),
            ["a.mp4", "docs/sub/y.pdf", "docs/x.pdf", "sub/deep.mp4"],
        )

    def test_anchored_pattern(self) -> None:
        """
        A pattern starting with C{/} is matched against the path from the
        folder.
        """
        self.write("a.txt")
        self.write("sub/a.txt")
        self.publisher.auto = True
        watcher = self.start(include=["/a.txt"])
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["a.txt"])

    def test_sizes(self) -> None:
        """
        Files outside the size bounds (inclusive) are left out.
        """
        for size in (5, 10, 100, 101):
            self.write(f"{size}.bin", b"x" * size)
        self.publisher.auto = True
        watcher = self.start(min_size=10, max_size=100)
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["10.bin", "100.bin"])
        self.assertEqual(watcher.status()["watched"], 2)

    def test_grows_into_bounds(self) -> None:
        """
        A file too small to publish is published once it is large enough.
        """
        path = self.write("a.bin", b"x")
        self.publisher.auto = True
        watcher = self.start(min_size=3)
        self.next_scan()
        self.assertEqual(self.published(watcher), {})
        self.write("a.bin", b"xyz")
        self.next_scan()
        self.assertEqual(self.publisher.paths, [path])

    def test_recursive(self) -> None:
        """
        Files in folders inside are published, unless told otherwise.
        """
        self.write("top.txt")
        self.write("a/b/c.txt")
        self.publisher.auto = True
        watcher = self.start()
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["a/b/c.txt", "top.txt"])

    def test_not_recursive(self) -> None:
        self.write("top.txt")
        self.write("a/b/c.txt")
        self.publisher.auto = True
        watcher = self.start(recursive=False)
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["top.txt"])

    def test_ignored_by_default(self) -> None:
        """
        Hidden files and folders, partial and temporary files, backups and
        p2pblob's files are left out by default.
        """
        for name in [
            ".hidden", "movie.mp4.part", "x.tmp", "notes.txt~", ".p2pblob-state",
            ".git/config", "sub/.cache/data", "keep.txt", "sub/keep.txt",
        ]:
            self.write(name)
        self.publisher.auto = True
        watcher = self.start()
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["keep.txt", "sub/keep.txt"])

    def test_state_file_inside(self) -> None:
        """
        The state file is never published, even inside the folder under a
        name the rules select.
        """
        self.state_path = self.folder / "watch.sqlite"
        self.write("a.txt")
        self.publisher.auto = True
        watcher = self.start(exclude=[])
        self.next_scan()
        self.next_scan()
        self.assertEqual(sorted(self.published(watcher)), ["a.txt"])

    def test_links_not_followed(self) -> None:
        """
        Links to files or folders, inside or outside the folder, are not
        followed; each is noted once in the log.
        """
        outside = self.base / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(b"secret")
        self.write("real.txt")
        (self.folder / "file-link.txt").symlink_to(outside / "secret.txt")
        (self.folder / "dir-link").symlink_to(outside, target_is_directory=True)
        (self.folder / "inner-link.txt").symlink_to(self.folder / "real.txt")
        (self.folder / ".hidden-link").symlink_to(outside / "secret.txt")
        self.publisher.auto = True
        with capturedLogs() as events:
            watcher = self.start()
            self.settle()
            self.clock.advance(3 * SCAN)
        self.assertEqual(sorted(self.published(watcher)), ["real.txt"])
        notes = sorted(
            e["path"] for e in events if "symbolic links" in e.get("log_format", "")
        )
        self.assertEqual(notes, ["dir-link", "file-link.txt", "inner-link.txt"])

    def test_replaced_by_link_before_publish(self) -> None:
        """
        A file replaced by a link to somewhere else while it waits its turn
        is not published through the link.
        """
        outside = self.base / "secret.txt"
        outside.write_bytes(b"secret")
        self.write("a.txt")
        second = self.write("b.txt")
        self.start()
        self.settle()
        second.unlink()
        second.symlink_to(outside)
        self.publisher.succeed_last()
        self.assertEqual(len(self.publisher.calls), 1)

    def test_folder_replaced_by_link(self) -> None:
        """
        A folder inside replaced by a link while one of its files waits its
        turn: the file is not published through the link.
        """
        outside = self.base / "outside"
        outside.mkdir()
        (outside / "b.txt").write_bytes(b"secret")
        self.write("a.txt")
        self.write("sub/b.txt")
        self.start()
        self.settle()
        (self.folder / "sub" / "b.txt").unlink()
        (self.folder / "sub").rmdir()
        (self.folder / "sub").symlink_to(outside, target_is_directory=True)
        self.publisher.succeed_last()
        self.assertEqual(len(self.publisher.calls), 1)

    def test_special_files(self) -> None:
        """
        Only regular files are published: a named pipe (which would block
        whoever opened it) is not.
        """
        if not hasattr(os, "mkfifo"):
            raise self.skipTest("no named pipes here")
        os.mkfifo(self.folder / "pipe")
        self.write("a.txt")
        self.publisher.auto = True
        watcher = self.start()
        self.settle()
        self.assertEqual(sorted(self.published(watcher)), ["a.txt"])


class FolderTests(WatcherTestCase):
    def test_missing_at_start(self) -> None:
        """
        A folder that does not exist at the start is a configuration error
        (a mistyped setting, most likely), naming the setting.
        """
        self.folder = self.base / "nowhere"
        watcher = FolderWatcher(
            self.clock, run_inline, self.rules(), self.publisher, self.state_path
        )
        e = self.assertRaises(ConfigError, watcher.startService)
        self.assertIn("watch-folder", str(e))
        self.assertIn("does not exist", str(e))
        self.assertFalse(watcher.running)
        self.assertFalse(self.state_path.exists())

    def test_not_a_folder(self) -> None:
        self.folder = self.base / "file"
        self.folder.write_bytes(b"")
        watcher = FolderWatcher(
            self.clock, run_inline, self.rules(), self.publisher, self.state_path
        )
        e = self.assertRaises(ConfigError, watcher.startService)
        self.assertIn("is not a folder", str(e))

    def test_disappears(self) -> None:
        """
        A folder that disappears later (an unmounted disk): nothing is
        forgotten, the status says why; back, nothing is republished.
        """
        self.write("a.txt")
        watcher = self.start()
        self.publish_all(watcher)
        hidden = self.base / "unmounted"
        self.folder.rename(hidden)
        with capturedLogs() as events:
            self.clock.advance(3 * SCAN)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)  # said once
        status = watcher.status()
        self.assertEqual(status["published"], 1)
        self.assertIsNone(status["last_error"]["path"])
        self.assertIn("cannot read the folder", status["last_error"]["error"])
        hidden.rename(self.folder)
        self.clock.advance(3 * SCAN)
        self.assertEqual(len(self.publisher.calls), 1)
        self.assertEqual(watcher.status()["published"], 1)

    def test_unreadable_subfolder(self) -> None:
        """
        The files of a folder inside that cannot be read are not forgotten.
        """
        self.write("sub/a.txt")
        watcher = self.start()
        self.publish_all(watcher)
        sub = self.folder / "sub"
        sub.chmod(0)
        self.addCleanup(sub.chmod, 0o755)
        try:
            os.listdir(sub)
        except PermissionError:
            pass
        else:
            raise self.skipTest("this user reads every folder (root)")
        self.clock.advance(3 * SCAN)
        self.assertEqual(watcher.status()["published"], 1)
        self.assertEqual(watcher.status()["last_error"]["path"], "sub")
        sub.chmod(0o755)
        self.clock.advance(3 * SCAN)
        self.assertEqual(len(self.publisher.calls), 1)

    def test_stop_waits_for_publish(self) -> None:
        """
        Stopping waits for the publish in progress (it is not cut short),
        records it, then closes the state file; nothing else starts.
        """
        self.write("a.txt")
        self.write("b.txt")
        watcher = self.start()
        self.settle()
        stopped = watcher.stopService()
        self.assertNoResult(stopped)
        sd_hash = self.publisher.succeed_last()
        self.successResultOf(stopped)
        self.assertEqual(len(self.publisher.calls), 1)
        self.clock.advance(5 * SCAN)
        self.assertEqual(len(self.publisher.calls), 1)
        again = self.start()
        self.assertEqual(self.published(again), {"a.txt": sd_hash})

    def test_status_before_start(self) -> None:
        watcher = FolderWatcher(
            self.clock, run_inline, self.rules(), self.publisher, self.state_path
        )
        self.assertEqual(
            watcher.status(),
            {
                "folder": str(self.folder), "running": False, "watched": 0, "published": 0,
                "pending": 0, "publishing": None, "failing": 0, "errors": [], "publishes": 0,
                "failures": 0, "last_scan": None, "last_error": None,
            },
        )

    def test_state_file_unreadable(self) -> None:
        """
        A state file that is not SQLite is a storage error at the start.
        """
        self.state_path.parent.mkdir(parents=True)
        self.state_path.write_bytes(b"not a database" * 100)
        watcher = FolderWatcher(
            self.clock, run_inline, self.rules(), self.publisher, self.state_path
        )
        self.assertRaises(StorageError, watcher.startService)


class WatchRulesTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        rules = WatchRules(Path("/srv/share"))
        self.assertEqual(rules.include, ("*",))
        self.assertEqual(rules.exclude, DEFAULT_EXCLUDE)
        self.assertEqual(
            (rules.min_size, rules.max_size, rules.recursive, rules.scan_interval,
             rules.settle_time),
            (None, None, True, 10.0, 2.0),
        )

    def test_folder_made_absolute(self) -> None:
        self.assertTrue(WatchRules(Path("relative")).folder.is_absolute())
        self.assertEqual(WatchRules(Path("~")).folder, Path.home())

    def test_selects(self) -> None:
        rules = WatchRules(Path("/w"), include=["*.jpg", "docs/*"], exclude=[".*", "tmp"],
                           max_size=100)
        self.assertTrue(rules.selects("a.jpg", 1))
        self.assertTrue(rules.selects("x/y/a.jpg", 1))
        self.assertTrue(rules.selects("docs/a/b.txt", 1))
        self.assertFalse(rules.selects("a.png", 1))
        self.assertFalse(rules.selects("a.JPG", 1))  # case sensitive
        self.assertFalse(rules.selects("a.jpg", 101))
        self.assertFalse(rules.selects(".a.jpg", 1))
        self.assertFalse(rules.selects(".x/a.jpg", 1))
        self.assertFalse(rules.selects("x/tmp/a.jpg", 1))

    def test_single_pattern(self) -> None:
        """
        A single pattern may be given as a string.
        """
        self.assertEqual(WatchRules(Path("/w"), include="*.mp4").include, ("*.mp4",))

    def test_bad_values(self) -> None:
        """
        Each bad value is a L{ConfigError} naming its setting.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            ({"folder": ""}, "watch-folder"),
            ({"folder": None}, "watch-folder"),
            ({"include": []}, "watch-include"),
            ({"include": [""]}, "watch-include"),
            ({"include": 3}, "watch-include"),
            ({"include": ["photos/"]}, "watch-include"),
            ({"exclude": [None]}, "watch-exclude"),
            ({"min_size": -1}, "watch-min-size"),
            ({"min_size": 1.5}, "watch-min-size"),
            ({"max_size": True}, "watch-max-size"),
            ({"min_size": 10, "max_size": 9}, "watch-min-size"),
            ({"recursive": "yes"}, "watch-recursive"),
            ({"scan_interval": 0}, "watch-scan-interval"),
            ({"scan_interval": float("nan")}, "watch-scan-interval"),
            ({"scan_interval": "10"}, "watch-scan-interval"),
            ({"settle_time": -1}, "watch-settle-time"),
            ({"settle_time": float("inf")}, "watch-settle-time"),
        ]
        for options, option in cases:
            with self.subTest(options=options):
                options = {"folder": Path("/w"), **options}
                e = self.assertRaises(ConfigError, WatchRules, **options)
                self.assertTrue(str(e).startswith(option + ":"), str(e))


def make_store(directory: Path) -> BlobStore:
    store = BlobStore(
        Clock(), run_inline, directory / "blobfiles", directory / "index.sqlite"
    )
    Deferred.fromCoroutine(store.start())
    return store


class RealPublishTests(WatcherTestCase):
    def test_publish_file_into_store(self) -> None:
        """
        With L{store_publisher}, a watched file becomes a published stream
        of the blob store: its sd hash is recorded, its blobs are stored.
        """
        store = make_store(self.base)
        self.addCleanup(store.stop)
        self.publisher = store_publisher(store, run_inline)  # type: ignore[assignment]
        data = os.urandom(MAX_BLOB_SIZE + 1000)
        self.write("film.mp4", data)
        watcher = self.start()
        self.settle()
        (record,) = watcher.published_files()
        self.assertEqual(record.path, "film.mp4")
        self.assertEqual(record.signature.size, len(data))
        self.assertIn((record.sd_hash, ROLE_PUBLISHED), [s[:2] for s in store.index.streams()])
        descriptor = parse_sd_blob(self.successResultOf(store.read_blob(record.sd_hash)))
        self.assertEqual(descriptor.stream_name, "film.mp4")
        blobs = store.index.stream_blobs(record.sd_hash)
        self.assertEqual(len(blobs), 3)  # the sd blob and two data blobs
        for blob_hash in blobs:
            self.assertTrue(store.has_blob(blob_hash))
        self.assertEqual(self.announced, 1)

    def test_waits_for_store(self) -> None:
        """
        Files wait for the store to open; if it cannot, they fail (and are
        tried again).
        """
        store = make_store(self.base)
        self.addCleanup(store.stop)
        ready: Deferred[None] = Deferred()
        publish = store_publisher(store, run_inline, ready)
        path = self.write("a.txt")
        waiting = publish(path)
        self.assertNoResult(waiting)
        ready.callback(None)
        sd_hash = self.successResultOf(waiting)
        self.assertTrue(store.has_blob(sd_hash))

        broken: Deferred[None] = Deferred()
        publish = store_publisher(store, run_inline, broken)
        waiting = publish(path)
        broken.errback(StorageError("the index is damaged"))
        self.failureResultOf(broken, StorageError)
        failure = self.failureResultOf(waiting, StorageError)
        self.assertIn("could not be opened: the index is damaged", str(failure.value))
