"""
A watched folder: L{FolderWatcher} publishes the files put in a local
folder, and publishes them again when they change.

How it behaves:

  - It polls: every C{scan_interval} seconds it walks the folder (in a
    thread) and compares what it finds with what it published.  That works
    on every system and every file system, network shares included.

  - A new or changed file is published once it has kept the same size,
    modification time and inode for C{settle_time} seconds, so that a file
    still being written or copied is not published half-way.  A file still
    settling is looked at again when its time is up, not only at the next
    scan.  Just before it is published it is looked at once more; if it
    changed meanwhile, it settles again.  If it changes while it is being
    published, the version seen before is recorded, so it is published
    again once it settles.

  - One file is published at a time, in the order they settled (by path
    among those that settled together).

  - A file is republished when its size, modification time or inode
    differ from those of the version published (a changed file, or one
    replaced by an editor's atomic save).  The stream of the previous
    version is left as it was: still published, still in the store and
    announced; the log names both.  A file whose contents are rewritten
    unchanged (C{touch}) is republished too: nothing is read to compare.
    Some file systems (some network shares, FAT) do not keep inode numbers
    across mounts: their files are published again after a remount.

  - A file is never republished while it is unchanged, across restarts too:
    what was published is kept in a SQLite file (C{state_path}).

  - A deleted file (or one the rules no longer select) is forgotten, with a
    line in the log; its stream stays published.  A renamed or moved file
    is a new file: it is published again under its new name.

  - A publish that fails (the file vanished or could not be read, the disk
    limit was reached, ...) is logged with its reason, shown by
    L{FolderWatcher.status}, and tried again at the next scan; after
    repeated failures of the same version, less often (twice as long each
    time, at most an hour apart).  Nothing that happens to a file stops the
    watcher.

  - Symbolic links are not followed, neither to files nor to folders, so
    nothing outside the folder is published (a link is noted once in the
    log).  The folder itself may be a link.  Only regular files are
    published: not pipes, sockets or devices.

  - The folder must exist when the watcher starts: if it does not,
    L{FolderWatcher.startService} raises L{ConfigError} (most likely a
    mistyped setting).  If it disappears later (an unmounted disk, say),
    the watcher waits for it to come back, forgetting nothing meanwhile;
    so do folders inside it that cannot be read.

  - The state file and its journals are never published, even when they
    are inside the folder.

Patterns are shell-style (C{*}, C{?}, C{[abc]}, C{[!abc]}) and match case
sensitively.  A pattern without C{/} is matched against a name: every file
and folder inside whose name matches an exclude pattern is left out (so
C{.*} leaves out hidden folders and everything in them).  A pattern with
C{/} is matched against the whole path relative to the folder (C{*} then
also matches across C{/}): C{photos/*.jpg} selects C{photos/a.jpg} and
C{photos/2024/b.jpg}; a leading C{/} only marks a pattern as one of
paths (C{/a.txt} is the C{a.txt} at the top, not those in folders inside).
A file is published when its name or path matches an include pattern and
nothing excludes it.

Stopping the watcher waits for the publish in progress to end (a publish
cannot be cut short cleanly); a file whose turn had not come is published
at the next start.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob._threads import BlockingRunner, one_at_a_time
from p2pblob.errors import ConfigError, StorageError
from p2pblob.interfaces import IBlobStore
from p2pblob.publish._state import PublishedFile, Signature, WatchState
from p2pblob.stream.creator import publish_file

__all__ = [
    "DEFAULT_EXCLUDE",
    "FolderWatcher",
    "Publish",
    "PublishedFile",
    "WatchRules",
    "option_name",
    "store_publisher",
]

_log = Logger()

DEFAULT_EXCLUDE = (".*", "*.part", "*.tmp", "*~", ".p2pblob*")
"""
What is left out unless told otherwise: hidden files and folders, the
partial files of downloads and copies, editors' backups, p2pblob's own
files.
"""

MIN_SCAN_INTERVAL = 0.1
"""
The shortest scan interval allowed, in seconds.
"""

MAX_LISTED = 20
"""
The most failing files L{FolderWatcher.status} lists.
"""

MAX_RETRY_DELAY = 3600.0
"""
The longest a file that keeps failing waits between attempts, in seconds.
"""

Publish = Callable[[Path], Deferred[str]]
"""
Publishes the file at a path; fires with the stream's sd hash.
"""


def option_name(name: str) -> str:
    """
    The setting a field of L{WatchRules} is named by in errors
    (C{min_size} is C{watch-min-size}).
    """
    return "watch-" + name.replace("_", "-")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class WatchRules:
    """
    Which files of which folder to publish, and how often to look.

    @ivar folder: the folder watched (made absolute; C{~} is expanded).
    @ivar include: patterns of the files to publish (see the module's
        docstring); a file matching none is not.
    @ivar exclude: patterns of the files and folders to leave out, whatever
        C{include} says.
    @ivar min_size: files smaller than this many bytes are left out.
    @ivar max_size: files larger than this many bytes are left out.
    @ivar recursive: whether files in folders inside are published too.
    @ivar scan_interval: seconds between two walks of the folder.
    @ivar settle_time: seconds a file must stay unchanged before it is
        published.

    @raise ConfigError: if a value is not allowed; the message names the
        setting (L{option_name}).
    """

    folder: Path
    include: Sequence[str] = ("*",)
    exclude: Sequence[str] = DEFAULT_EXCLUDE
    min_size: int | None = None
    max_size: int | None = None
    recursive: bool = True
    scan_interval: float = 10.0
    settle_time: float = 2.0

    def __post_init__(self) -> None:
        folder: object = self.folder
        if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
            raise ConfigError(f"{option_name('folder')}: give the path of the folder to watch")
        object.__setattr__(self, "folder", Path(folder).expanduser().absolute())
        include = _patterns("include", self.include)
        if not include:
            raise ConfigError(
                f"{option_name('include')}: give at least one pattern ('*' for every file)"
            )
        object.__setattr__(self, "include", include)
        object.__setattr__(self, "exclude", _patterns("exclude", self.exclude))
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ConfigError(
                    f"{option_name(name)}: {value!r} is not a number of bytes (0 or more)"
                )
        if self.min_size is not None and self.max_size is not None and (
            self.min_size > self.max_size
        ):
            raise ConfigError(
                f"{option_name('min_size')}: {self.min_size} bytes is more than "
                f"{option_name('max_size')} ({self.max_size} bytes): no file would be published"
            )
        if not isinstance(self.recursive, bool):
            raise ConfigError(
                f"{option_name('recursive')}: {self.recursive!r} is not true or false"
            )
        interval = self.scan_interval
        if not _is_number(interval) or not math.isfinite(interval) or (
            interval < MIN_SCAN_INTERVAL
        ):
            raise ConfigError(
                f"{option_name('scan_interval')}: {interval!r} is not a number of seconds "
                f"(at least {MIN_SCAN_INTERVAL:g})"
            )
        settle = self.settle_time
        if not _is_number(settle) or not math.isfinite(settle) or settle < 0:
            raise ConfigError(
                f"{option_name('settle_time')}: {settle!r} is not a number of seconds (0 or more)"
            )

    def selects(self, path: str, size: int) -> bool:
        """
        Whether a file at C{path} (relative to the folder, with C{/} between
        names) of C{size} bytes is to be published.
        """
        names = path.split("/")
        if len(names) > 1 and not self.recursive:
            return False
        for depth in range(1, len(names)):
            if self.excludes("/".join(names[:depth])):
                return False
        return self._selects_file(path, size)

    def excludes(self, path: str) -> bool:
        """
        Whether an exclude pattern matches the file or folder at C{path}
        (relative to the folder, with C{/} between names) itself.
        """
        return _matches_any(self.exclude, path)

    def _selects_file(self, path: str, size: int) -> bool:
        # (the folders above it are known not to be excluded)
        return (
            _matches_any(self.include, path)
            and not _matches_any(self.exclude, path)
            and (self.min_size is None or size >= self.min_size)
            and (self.max_size is None or size <= self.max_size)
        )

    def describe(self) -> str:
        """
        The rules in a few words, for the log.
        """
        parts = [f"include {' '.join(self.include)}"]
        if self.exclude:
            parts.append(f"exclude {' '.join(self.exclude)}")
        if self.min_size is not None:
            parts.append(f"at least {self.min_size} bytes")
        if self.max_size is not None:
            parts.append(f"at most {self.max_size} bytes")
        if not self.recursive:
            parts.append("not in subfolders")
        return "; ".join(parts)


def _patterns(name: str, value: object) -> tuple[str, ...]:
    option = option_name(name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ConfigError(f"{option}: {value!r} is not a list of patterns")
    patterns = []
    for pattern in value:
        if not isinstance(pattern, str) or not pattern or "\0" in pattern:
            raise ConfigError(f"{option}: {pattern!r} is not a pattern")
        if pattern.endswith("/"):
            raise ConfigError(
                f"{option}: {pattern!r} ends with '/'; to name a folder give its name "
                "or its path, without the '/' at the end"
            )
        patterns.append(pattern)
    return tuple(patterns)


def _matches_any(patterns: Sequence[str], path: str) -> bool:
    name = path.rpartition("/")[2]
    return any(
        fnmatchcase(path, pattern.lstrip("/")) if "/" in pattern else fnmatchcase(name, pattern)
        for pattern in patterns
    )


# the blocking part: looking at the folder (in a thread)


class _FolderUnavailable(Exception):
    """
    The watched folder cannot be listed (it is gone, or not a folder, or
    not readable).
    """


@dataclass
class _Walk:
    """
    What a walk of the folder found.

    @ivar files: the files selected, by path.
    @ivar unselected: paths among the known ones that are there but no
        longer selected.
    @ivar links: the symbolic links skipped that would otherwise have been
        looked at.
    @ivar unreadable: the folders inside that could not be listed, by path,
        with the reason.
    """

    files: dict[str, Signature] = field(default_factory=dict)
    unselected: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def _walk(rules: WatchRules, ignored: frozenset[str], known: frozenset[str]) -> _Walk:
    """
    List the files of the folder that C{rules} select, without following
    links.

    @param ignored: paths never to select (the watcher's own files).
    @param known: paths to report in C{unselected} if they are there but not
        selected.
    @raise _FolderUnavailable: if the folder itself cannot be listed.
    """
    found = _Walk()
    folders: list[tuple[str, str]] = [("", os.fspath(rules.folder))]
    while folders:
        prefix, directory = folders.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as e:
            if not prefix:
                raise _FolderUnavailable(_reason(e)) from None
            found.unreadable[prefix[:-1]] = _reason(e)
            continue
        for entry in entries:
            path = prefix + entry.name
            try:
                if entry.is_symlink():
                    if not rules.excludes(path):
                        found.links.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    if rules.recursive and not rules.excludes(path):
                        folders.append((path + "/", entry.path))
                elif entry.is_file(follow_symlinks=False) and path not in ignored:
                    # (lstat, as _look does: the inode a listing gives may
                    # differ, on overlay file systems and on Windows)
                    info = os.lstat(entry.path)
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    if rules._selects_file(path, info.st_size):
                        found.files[path] = Signature.of(info)
                    elif path in known:
                        found.unselected.add(path)
            except OSError:
                # gone between the listing and the look at it
                continue
    return found


def _look(
    rules: WatchRules, ignored: frozenset[str], paths: list[str]
) -> dict[str, Signature | None]:
    """
    The signature of each file at C{paths}, or L{None} if it is no longer a
    regular file that C{rules} select, or is reached through a link.
    """
    found: dict[str, Signature | None] = {}
    for path in paths:
        found[path] = None
        if path in ignored or not _plain(rules.folder, path):
            continue
        try:
            info = os.lstat(rules.folder / path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and rules.selects(path, info.st_size):
            found[path] = Signature.of(info)
    return found


def _plain(folder: Path, path: str) -> bool:
    """
    Whether every folder on the way from C{folder} to C{path} is a real
    folder, not a link.
    """
    names = path.split("/")
    for depth in range(1, len(names)):
        try:
            info = os.lstat(folder.joinpath(*names[:depth]))
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            return False
    return True


def _reason(error: BaseException | None) -> str:
    """
    What went wrong, in words.
    """
    if error is None:
        return "unknown error"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# the service


@dataclass
class _Pending:
    """
    A file new or changed since it was last published.

    @ivar signature: the version last seen.
    @ivar since: when that version was first seen (clock seconds).
    @ivar failures: how many attempts at publishing this version failed.
    @ivar skip: scans to let pass before the next attempt.
    @ivar error: why the last attempt failed.
    """

    signature: Signature
    since: float
    failures: int = 0
    skip: int = 0
    error: str | None = None


class FolderWatcher(Service):
    """
    Publishes the files of a folder as they appear and change (see the
    module's docstring for how).

    @param clock: what schedules the scans.
    @param run: where the folder is walked (a thread; one walk at a time
        is asked of it).
    @param rules: which folder, which files, how often.
    @param publish: publishes a file (given its absolute path) and fires
        with its sd hash; called for one file at a time.
        L{store_publisher} makes one.
    @param state_path: the SQLite file of what was published; it may be
        inside the folder (it is never published).
    @param announce: called after each file published (to have its blobs
        announced at once), or L{None}.
    @ivar publishes: files published since the start.
    @ivar failures: attempts that failed since the start.
    """

    def __init__(
        self,
        clock: IReactorTime,
        run: BlockingRunner,
        rules: WatchRules,
        publish: Publish,
        state_path: Path,
        announce: Callable[[], object] | None = None,
    ) -> None:
        self.rules = rules
        self.state_path = state_path
        self._clock = clock
        self._run = one_at_a_time(run)
        self._publish = publish
        self._announce = announce
        self._state: WatchState | None = None
        self._ignored: frozenset[str] = frozenset()
        self._published: dict[str, PublishedFile] = {}
        self._pending: dict[str, _Pending] = {}
        # (a dict as an ordered set)
        self._queue: dict[str, None] = {}
        self._current: str | None = None
        self._scanner = LoopingCall(self._scan)
        self._scanner.clock = clock
        self._settle_call: IDelayedCall | None = None
        self._busy = 0
        self._idle: list[Deferred[None]] = []
        self._watched = 0
        self._last_scan: float | None = None
        self._last_error: dict[str, Any] | None = None
        self._folder_trouble: str | None = None
        self._noted_links: set[str] = set()
        self._noted_unreadable: set[str] = set()
        self.publishes = 0
        self.failures = 0

    # life cycle

    def startService(self) -> None:
        """
        Open the state file and start watching.

        @raise ConfigError: if the folder does not exist or is not a folder.
        @raise StorageError: if the state file cannot be opened.
        """
        folder = self.rules.folder
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise ConfigError(
                f"{option_name('folder')}: {folder} {what}; create it or correct the setting"
            )
        state = WatchState(self.state_path)
        try:
            published = state.load()
        except StorageError:
            state.close()
            raise
        self._state = state
        self._published = published
        self._pending.clear()
        self._ignored = _own_files(folder, self.state_path)
        super().startService()
        _log.info(
            "Watching {folder} ({rules}); {count} file(s) published before",
            folder=str(folder), rules=self.rules.describe(), count=len(published),
        )
        self._scanner.start(self.rules.scan_interval, now=True).addErrback(
            lambda f: _log.failure("The scans of {folder} stopped", f, folder=str(folder))
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop watching; fires once the walk and the publish in progress (it
        is not interrupted) are over and the state file is closed.
        """
        super().stopService()
        if self._scanner.running:
            self._scanner.stop()
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = None
        self._queue.clear()
        if self._current is not None:
            _log.info("Waiting for the publish of {path} to end", path=self._current)
        if self._busy:
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
        else:
            idle = succeed(None)

        def close(_: object) -> None:
            if self._state is not None:
                self._state.close()
                self._state = None

        return idle.addCallback(close)

    # what the API reads

    def status(self) -> dict[str, Any]:
        """
        How the watching goes, as JSON values:

          - C{folder}: the folder watched;
          - C{running}: whether it is watched;
          - C{watched}: files the rules selected at the last scan;
          - C{published}: files whose current version is published;
          - C{pending}: files new or changed, not yet published (settling,
            waiting their turn, being published or failing);
          - C{publishing}: the path of the file being published, or null;
          - C{failing}: files whose last attempt failed, and C{errors}:
            the first L{MAX_LISTED} of them by path, each an object with
            C{path}, C{error} (in words) and C{attempts};
          - C{publishes}, C{failures}: files published and attempts
            failed since the start;
          - C{last_scan}: when the folder was last walked (clock seconds),
            or null;
          - C{last_error}: the last thing that went wrong, or null: an
            object with C{path} (null for the folder itself), C{error} (in
            words) and C{time}.
        """
        failing = sorted(
            (path, pending) for path, pending in self._pending.items() if pending.failures
        )
        return {
            "folder": str(self.rules.folder),
            "running": bool(self.running),
            "watched": self._watched,
            "published": len(self._published),
            "pending": len(self._pending),
            "publishing": self._current,
            "failing": len(failing),
            "errors": [
                {"path": path, "error": pending.error, "attempts": pending.failures}
                for path, pending in failing[:MAX_LISTED]
            ],
            "publishes": self.publishes,
            "failures": self.failures,
            "last_scan": self._last_scan,
            "last_error": None if self._last_error is None else dict(self._last_error),
        }

    def published_files(self) -> list[PublishedFile]:
        """
        The files whose current version is published, by path.
        """
        return [self._published[path] for path in sorted(self._published)]

    # looking at the folder

    def _scan(self) -> Deferred[None]:
        walking = self._run(_walk, self.rules, self._ignored, frozenset(self._published))
        walking.addCallbacks(self._scanned, self._scan_failed)
        return self._track(walking)

    def _scanned(self, walk: _Walk) -> None:
        now = self._clock.seconds()
        if self._folder_trouble is not None:
            _log.info(
                "The watched folder {folder} can be read again", folder=str(self.rules.folder)
            )
            self._folder_trouble = None
        self._last_scan = now
        self._watched = len(walk.files)
        self._note(walk)

        def unseen(path: str) -> bool:
            # not there, rather than in a folder that could not be read
            return path not in walk.files and not any(
                path.startswith(folder + "/") for folder in walk.unreadable
            )

        for path in [path for path in self._published if unseen(path)]:
            why = "it no longer matches the rules" if path in walk.unselected else "it was deleted"
            self._forget(path, why)
        for path in [path for path in self._pending if unseen(path)]:
            _log.info("{path} is gone before it was published", path=path)
            self._drop(path)
        for path, signature in walk.files.items():
            self._observe(path, signature, now)
        self._promote(now, scanning=True)

    def _scan_failed(self, failure: Failure) -> None:
        if not failure.check(_FolderUnavailable):
            self._error(None, _reason(failure.value))
            _log.failure("Could not walk the watched folder {folder}", failure,
                         folder=str(self.rules.folder))
            return
        reason = str(failure.value)
        if reason != self._folder_trouble:
            _log.warn(
                "Cannot read the watched folder {folder} ({reason}); nothing is published "
                "or forgotten until it can be read again",
                folder=str(self.rules.folder), reason=reason,
            )
        self._folder_trouble = reason
        self._error(None, f"cannot read the folder: {reason}")

    def _note(self, walk: _Walk) -> None:
        """
        Log the links skipped and the folders that cannot be read, once each.
        """
        for path in walk.links:
            if path not in self._noted_links:
                _log.info("Skipped {path}: symbolic links are not followed", path=path)
        self._noted_links = set(walk.links)
        for path, reason in walk.unreadable.items():
            if path not in self._noted_unreadable:
                _log.warn(
                    "Cannot read the folder {path} ({reason}); its files are neither "
                    "published nor forgotten until it can be read", path=path, reason=reason,
                )
                self._error(path, f"cannot read the folder: {reason}")
        self._noted_unreadable = set(walk.unreadable)

    def _observe(self, path: str, signature: Signature, now: float) -> None:
        """
        Take in that the file at C{path} was seen with C{signature} at
        C{now}.
        """
        record = self._published.get(path)
        pending = self._pending.get(path)
        if record is not None and record.signature == signature:
            if pending is not None:
                # back to the version published
                self._drop(path)
            return
        if pending is None or pending.signature != signature:
            if pending is None:
                _log.debug(
                    "{path} is {what}; it is published once unchanged for {settle} s",
                    path=path, what="new" if record is None else "changed",
                    settle=self.rules.settle_time,
                )
            self._drop(path)
            self._pending[path] = _Pending(signature, now)

    def _promote(self, now: float, scanning: bool) -> None:
        """
        Queue the files whose turn it is: those that settled, and at a scan
        those whose retry is due; look again when the next one settles;
        publish the next file if none is being published.
        """
        due = []
        for path, pending in self._pending.items():
            if path in self._queue or path == self._current:
                continue
            if pending.failures:
                if not scanning:
                    continue
                if pending.skip:
                    pending.skip -= 1
                    continue
            elif now - pending.since < self.rules.settle_time:
                continue
            due.append(path)
        for path in sorted(due):
            self._queue[path] = None
        self._schedule_look(now)
        self._next()

    def _settling(self) -> list[str]:
        return [
            path for path, pending in self._pending.items()
            if not pending.failures and path not in self._queue and path != self._current
        ]

    def _schedule_look(self, now: float) -> None:
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = None
        settling = self._settling()
        if settling and self.running:
            due = min(self._pending[path].since for path in settling) + self.rules.settle_time
            self._settle_call = self._clock.callLater(max(due - now, 0.0), self._look_again)

    def _look_again(self) -> None:
        """
        Look at the files settling (not at the whole folder).
        """
        self._settle_call = None
        paths = sorted(self._settling())
        if not self.running or not paths:
            return
        looking = self._run(_look, self.rules, self._ignored, paths)
        looking.addCallback(self._looked)
        self._track(looking)

    def _looked(self, found: dict[str, Signature | None]) -> None:
        now = self._clock.seconds()
        for path, signature in found.items():
            if path not in self._pending:
                continue
            if signature is None:
                # gone (the next scan tells whether a published one is)
                _log.info("{path} is gone before it was published", path=path)
                self._drop(path)
            else:
                self._observe(path, signature, now)
        self._promote(now, scanning=False)

    # publishing

    def _next(self) -> None:
        """
        Publish the next file of the queue, if none is being published.
        """
        if self._current is not None or not self.running:
            return
        while self._queue:
            path = next(iter(self._queue))
            del self._queue[path]
            if path in self._pending:
                break
        else:
            return
        self._current = path
        publishing = Deferred.fromCoroutine(self._publish_one(path, self._pending[path]))
        publishing.addErrback(
            lambda f: _log.failure("Could not record the publish of {path}", f, path=path)
        )
        publishing.addBoth(self._published_one)
        self._track(publishing)

    async def _publish_one(self, path: str, pending: _Pending) -> None:
        signature = pending.signature
        found = (await self._run(_look, self.rules, self._ignored, [path]))[path]
        if found != signature:
            if self._pending.get(path) is pending:
                if found is None:
                    _log.info("{path} is gone before it was published", path=path)
                    self._drop(path)
                else:
                    self._observe(path, found, self._clock.seconds())
            return
        try:
            sd_hash = await self._publish(self.rules.folder / path)
        except Exception as e:
            self._failed(path, pending, e)
            return
        self._record(path, signature, sd_hash)
        after = (await self._run(_look, self.rules, self._ignored, [path]))[path]
        if after is not None and after != signature:
            _log.info(
                "{path} changed while it was being published; it is published again "
                "once it settles", path=path,
            )
            self._observe(path, after, self._clock.seconds())

    def _published_one(self, result: object) -> None:
        self._current = None
        if self.running:
            self._promote(self._clock.seconds(), scanning=False)

    def _failed(self, path: str, pending: _Pending, error: Exception) -> None:
        reason = _reason(error)
        self.failures += 1
        pending.failures += 1
        pending.error = reason
        # (a file that keeps failing waits twice as long each time)
        most = max(int(MAX_RETRY_DELAY / self.rules.scan_interval), 1)
        pending.skip = min(2 ** min(pending.failures - 1, 30), most) - 1
        self._error(path, reason)
        _log.warn(
            "Could not publish {path}: {reason}; trying again in about {seconds:.0f} s "
            "(attempt {attempt})",
            path=path, reason=reason, attempt=pending.failures,
            seconds=(pending.skip + 1) * self.rules.scan_interval,
        )

    def _record(self, path: str, signature: Signature, sd_hash: str) -> None:
        record = PublishedFile(path, signature, sd_hash, self._clock.seconds())
        previous = self._published.get(path)
        self._published[path] = record
        pending = self._pending.get(path)
        if pending is not None and pending.signature == signature:
            del self._pending[path]
        self.publishes += 1
        if previous is None:
            _log.info("Published {path} as stream {sd_hash}", path=path, sd_hash=sd_hash)
        else:
            _log.info(
                "Published the changed {path} as stream {sd_hash}; the stream of its "
                "previous version, {previous}, stays published",
                path=path, sd_hash=sd_hash, previous=previous.sd_hash,
            )
        if self._state is not None:
            try:
                self._state.save(record)
            except StorageError as e:
                self._error(path, str(e))
                _log.warn(
                    "Could not remember that {path} is published ({error}); it will be "
                    "published again at the next start", path=path, error=str(e),
                )
        if self._announce is not None:
            try:
                self._announce()
            except Exception:
                _log.failure("Could not have the blobs of {path} announced", path=path)

    def _forget(self, path: str, why: str) -> None:
        record = self._published.pop(path)
        _log.info(
            "Forgot {path}: {why}; its stream {sd_hash} stays published",
            path=path, why=why, sd_hash=record.sd_hash,
        )
        if self._state is not None:
            try:
                self._state.forget(path)
            except StorageError as e:
                self._error(path, str(e))
                _log.warn("Could not forget {path}: {error}", path=path, error=str(e))

    def _drop(self, path: str) -> None:
        """
        Stop waiting to publish the file at C{path} (not the publish in
        progress, if it is that file's).
        """
        self._pending.pop(path, None)
        self._queue.pop(path, None)

    def _error(self, path: str | None, reason: str) -> None:
        self._last_error = {"path": path, "error": reason, "time": self._clock.seconds()}

    def _track(self, work: Deferred[Any]) -> Deferred[None]:
        """
        Count C{work} as in progress until it is over (the stop waits for
        it); log its failure, if it fails.
        """
        self._busy += 1

        def over(result: object) -> None:
            if isinstance(result, Failure):
                _log.failure("The folder watcher failed", result)
            self._busy -= 1
            if not self._busy:
                idle, self._idle = self._idle, []
                for waiting in idle:
                    waiting.callback(None)

        return work.addBoth(over)


def _own_files(folder: Path, state_path: Path) -> frozenset[str]:
    """
    The paths, relative to C{folder}, of the state file and its journals,
    if they are inside it.
    """
    try:
        inside = state_path.resolve().relative_to(folder.resolve())
    except (OSError, ValueError):
        return frozenset()
    name = inside.as_posix()
    return frozenset(name + suffix for suffix in ("", "-journal", "-wal", "-shm"))


def store_publisher(
    store: IBlobStore, run: BlockingRunner, ready: Deferred[Any] | None = None
) -> Publish:
    """
    A L{Publish} that publishes into C{store} with L{publish_file}.

    @param run: where files are read and encrypted (threads).
    @param ready: fires once C{store} is open (L{None}: it is); files wait
        for it, or fail with L{StorageError} if it fails.
    """
    opened = ready is None
    broken: str | None = None
    waiting: list[Deferred[None]] = []

    def open_(result: object) -> object:
        nonlocal opened, broken
        opened = True
        if isinstance(result, Failure):
            broken = _reason(result.value)
        waiters = list(waiting)
        waiting.clear()
        for waiter in waiters:
            waiter.callback(None)
        return result

    if ready is not None:
        ready.addBoth(open_)

    async def publish(path: Path) -> str:
        if not opened:
            waiter: Deferred[None] = Deferred()
            waiting.append(waiter)
            await waiter
        if broken is not None:
            raise StorageError(f"the blob store could not be opened: {broken}")
        _, sd_hash = await publish_file(store, run, path)
        return sd_hash

    return lambda path: Deferred.fromCoroutine(publish(path))
