"""
The behaviour L{p2pblob.interfaces.IStorageBackend} promises, written once
in L{StorageConformanceMixin} and run, through a
L{p2pblob.storage.host.StorageHost}, against every storage backend.

A backend's test case supplies C{make_host}: a new host over the same
stored files each time it is called (so that dropping a host and making
another is what a node that crashed and started again would see), whose
calls run in the calling thread and whose clock is C{self.clock}.  A
backend that can be made to fail on purpose also supplies
C{inject_failure} (by default, the method is wrapped on the backend object).
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any, TypeVar

import twisted.plugins
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.errors import ConfigError, DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.interfaces import IStorageBackend, IStoragePlugin
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.host import StorageHost
from tests._process import PLUGINS

if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object

__all__ = ["StorageConformanceMixin", "builtin_plugin", "data", "use_checkout_plugins"]

_T = TypeVar("_T")

MiB = 1024 * 1024

BAD_KEYS = ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a/", "./a", "a/./b", "a\0b"]


def use_checkout_plugins(case: SynchronousTestCase) -> None:
    """
    Let L{twisted.plugin.getPlugins} find the dropins of this checkout's
    C{plugins/}, as an installed copy finds them in C{twisted/plugins/},
    for the duration of a test.
    """
    if str(PLUGINS) not in twisted.plugins.__path__:
        twisted.plugins.__path__.insert(0, str(PLUGINS))
        case.addCleanup(twisted.plugins.__path__.remove, str(PLUGINS))


def builtin_plugin(case: SynchronousTestCase, name: str) -> IStoragePlugin:
    """
    A storage plugin registered by this checkout's dropin, found as the
    node finds it.
    """
    use_checkout_plugins(case)
    return find_plugin(name)


def data(size: int, seed: int = 0) -> bytes:
    """
    C{size} bytes that look random, the same for the same seed.
    """
    return random.Random(seed).randbytes(size)


def sha384(content: bytes) -> str:
    return hashlib.sha384(content).hexdigest()


class StorageConformanceMixin(_TestCase):
    """
    Tests every storage backend must pass.

    @ivar clock: the clock of the hosts made by C{make_host}.
    @ivar host: a started host, made in C{setUp}.
    """

    clock: Clock

    def make_host(self) -> StorageHost:
        """
        Make a host over this test's stored files, with C{self.clock}.
        """
        raise NotImplementedError()

    def inject_failure(self, call: str, times: int, error: Exception | None = None) -> None:
        """
        Make the next C{times} calls of the backend's method C{call} raise
        C{error} (by default a L{p2pblob.errors.ServiceError}).

        By default the method is replaced, on the host's backend object, by
        one that fails first; a backend with a way of its own overrides this.
        """
        backend = self.host.backend
        real = getattr(backend, call)
        left = [times]

        def failing(*arguments: object) -> object:
            if left[0] > 0:
                left[0] -= 1
                raise error or ServiceError(f"{call} failed on purpose")
            return real(*arguments)

        setattr(backend, call, failing)
        self.addCleanup(delattr, backend, call)

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.host = self.open_host()

    def open_host(self) -> StorageHost:
        host = self.make_host()
        host.startService()
        self.addCleanup(host.stopService)
        self.result(host.negotiate_chunk_size())
        return host

    def result(self, d: Deferred[_T]) -> _T:
        return self.successResultOf(d)

    def failure(self, d: Deferred[Any], *errors: type[BaseException]) -> BaseException:
        return self.failureResultOf(d, *errors).value

    def upload(self, key: str, content: bytes, host: StorageHost | None = None) -> None:
        """
        Upload a file chunk by chunk, and commit it.
        """
        host = host or self.host
        size = host.chunk_size
        self.result(host.start_upload(key, len(content)))
        for offset in range(0, len(content), size):
            self.result(host.upload_chunk(key, offset, content[offset : offset + size]))
        self.result(host.end_upload(key))

    def read_in_chunks(self, key: str) -> bytes:
        parts = []
        offset = 0
        while True:
            chunk = self.result(self.host.get_chunk(key, offset, self.host.chunk_size))
            parts.append(chunk)
            offset += len(chunk)
            if len(chunk) < self.host.chunk_size:
                return b"".join(parts)

    def assertStored(self, key: str, content: bytes) -> None:
        self.assertTrue(self.result(self.host.exists(key)))
        self.assertEqual(self.result(self.host.size(key)), len(content))
        self.assertEqual(sha384(self.result(self.host.get_file(key))), sha384(content))
        self.assertEqual(sha384(self.read_in_chunks(key)), sha384(content))

    def assertAbsent(self, key: str) -> None:
        self.assertFalse(self.result(self.host.exists(key)))
        self.assertIsNone(self.result(self.host.size(key)))
        self.failure(self.host.get_file(key), StorageKeyNotFoundError)
        self.failure(self.host.get_chunk(key, 0, 10), StorageKeyNotFoundError)

    # -- the contract ---------------------------------------------------------

    def test_provides(self) -> None:
        """
        The backend provides L{IStorageBackend}.
        """
        self.assertTrue(verifyObject(IStorageBackend, self.host.backend))

    def test_chunk_size(self) -> None:
        """
        The backend takes the default chunk size of 1 MiB.
        """
        self.assertEqual(self.host.chunk_size, MiB)

    def test_round_trips(self) -> None:
        """
        Files of 0 and 1 bytes, of exactly one chunk and of one chunk and a
        byte read back as they were uploaded, whole or chunk by chunk.
        """
        chunk = self.host.chunk_size
        for size in [0, 1, chunk, chunk + 1]:
            content = data(size, seed=size)
            self.upload(f"file-{size}", content)
            self.assertStored(f"file-{size}", content)

    def test_ten_mib(self) -> None:
        """
        A 10 MiB file reads back with the same sha384.
        """
        content = data(10 * MiB)
        self.upload("big", content)
        self.assertStored("big", content)

    def test_upload_file(self) -> None:
        """
        A file stored at once reads back the same.
        """
        self.result(self.host.upload_file("whole", b"all of it"))
        self.assertStored("whole", b"all of it")

    def test_read_past_end(self) -> None:
        """
        A read at or past the end of a file gives what is left: nothing.
        """
        self.result(self.host.upload_file("short", b"12345"))
        self.assertEqual(self.result(self.host.get_chunk("short", 3, 10)), b"45")
        self.assertEqual(self.result(self.host.get_chunk("short", 5, 10)), b"")
        self.assertEqual(self.result(self.host.get_chunk("short", 50, 10)), b"")

    def test_nested_and_unicode_keys(self) -> None:
        """
        Keys may be nested, and contain spaces and non-ASCII letters.
        """
        keys = ["sub/dir/deep/file", "ùñï©∅ð€ 1", "dossier à moi/mºˇ€Ð 1.txt"]
        for number, key in enumerate(keys):
            self.upload(key, data(100, seed=number))
        for number, key in enumerate(keys):
            self.assertStored(key, data(100, seed=number))

    def test_overwrite_shorter(self) -> None:
        """
        A file uploaded over a longer one leaves no stale tail, whether it
        is uploaded in chunks or at once.
        """
        self.upload("shrinks", data(10 * 1024, seed=1))
        self.upload("shrinks", data(1024, seed=2))
        self.assertStored("shrinks", data(1024, seed=2))
        self.result(self.host.upload_file("shrinks", b"tiny"))
        self.assertStored("shrinks", b"tiny")

    def test_delete(self) -> None:
        """
        A deleted file is gone; deleting it again does nothing.
        """
        self.upload("doomed", b"content")
        self.result(self.host.delete_file("doomed"))
        self.assertAbsent("doomed")
        self.result(self.host.delete_file("doomed"))

    def test_move(self) -> None:
        """
        A renamed file is found under its new name only, with the same
        content, replacing a file of that name; renaming to the same name
        does nothing.
        """
        content = data(3 * 1024)
        self.upload("sub/old name", content)
        self.upload("élsewhere/new name", b"replaced")
        self.result(self.host.move_file("sub/old name", "élsewhere/new name"))
        self.assertAbsent("sub/old name")
        self.assertStored("élsewhere/new name", content)
        self.result(self.host.move_file("élsewhere/new name", "élsewhere/new name"))
        self.assertStored("élsewhere/new name", content)

    def test_move_missing(self) -> None:
        """
        Renaming a file that does not exist fails.
        """
        self.failure(self.host.move_file("nothing", "something"), StorageKeyNotFoundError)
        self.assertAbsent("something")

    def test_invisible_until_end(self) -> None:
        """
        Nothing of an upload is visible before it ends: the file stored
        earlier under its key stays as it was.
        """
        self.upload("key", b"before")
        self.result(self.host.start_upload("key", 5))
        self.result(self.host.upload_chunk("key", 0, b"after"))
        self.assertStored("key", b"before")
        self.result(self.host.start_upload("fresh", None))
        self.result(self.host.upload_chunk("fresh", 0, b"new"))
        self.assertAbsent("fresh")

    def test_abort(self) -> None:
        """
        An aborted upload leaves nothing visible, and the file stored
        earlier under its key untouched; aborting again does nothing.
        """
        self.upload("kept", b"earlier")
        for key in ["kept", "never"]:
            self.result(self.host.start_upload(key, None))
            self.result(self.host.upload_chunk(key, 0, b"partial"))
            self.result(self.host.abort_upload(key))
            self.result(self.host.abort_upload(key))
        self.assertStored("kept", b"earlier")
        self.assertAbsent("never")
        self.failure(self.host.end_upload("never"), DriverError)
        self.assertAbsent("never")

    def test_chunk_rewritten(self) -> None:
        """
        Writing a chunk again at the same offset (as a retry does) leaves
        the file right.
        """
        self.result(self.host.start_upload("again", 6))
        self.result(self.host.upload_chunk("again", 0, b"abc"))
        self.result(self.host.upload_chunk("again", 0, b"abc"))
        self.result(self.host.upload_chunk("again", 3, b"def"))
        self.result(self.host.end_upload("again"))
        self.assertStored("again", b"abcdef")

    def test_misused_uploads(self) -> None:
        """
        A chunk with no upload in progress, a chunk that would leave a
        hole, and an upload that ends with another size than announced fail
        with L{DriverError}, and nothing becomes visible.
        """
        self.failure(self.host.upload_chunk("none", 0, b"x"), DriverError)
        self.failure(self.host.end_upload("none"), DriverError)
        self.result(self.host.start_upload("holes", None))
        self.failure(self.host.upload_chunk("holes", 5, b"x"), DriverError)
        self.result(self.host.start_upload("sized", 10))
        self.result(self.host.upload_chunk("sized", 0, b"12345"))
        self.failure(self.host.end_upload("sized"), DriverError)
        self.result(self.host.abort_upload("sized"))
        for key in ["none", "holes", "sized"]:
            self.assertAbsent(key)

    def test_bad_keys(self) -> None:
        """
        Keys that are empty, absolute, or that climb out of the root fail
        with L{DriverError}, and are not tried again.
        """
        for key in BAD_KEYS:
            self.failure(self.host.upload_file(key, b"x"), DriverError)
            self.failure(self.host.get_file(key), DriverError)
            self.failure(self.host.start_upload(key, None), DriverError)
            self.failure(self.host.exists(key), DriverError)
            self.failure(self.host.delete_file(key), DriverError)
            self.failure(self.host.move_file("a", key), DriverError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart_after_crash(self) -> None:
        """
        After a crash in the middle of an upload, a new host resumes it
        from what the backend really holds, not from the journal's offset,
        and the file is complete.
        """
        content = data(4 * self.host.chunk_size + 100, seed=7)
        chunk = self.host.chunk_size
        self.result(self.host.start_upload("resumed", None))
        for offset in range(0, 3 * chunk, chunk):
            self.result(self.host.upload_chunk("resumed", offset, content[offset : offset + chunk]))
        self.host.stopService()

        self.host = self.open_host()
        # The journal lags one chunk behind what was written.
        offset = self.result(self.host.restart_upload("resumed", 2 * chunk))
        self.assertEqual(offset, 3 * chunk)
        self.assertAbsent("resumed")
        for at in range(offset, len(content), chunk):
            self.result(self.host.upload_chunk("resumed", at, content[at : at + chunk]))
        self.result(self.host.end_upload("resumed"))
        self.assertStored("resumed", content)

    def test_restart_with_nothing_left(self) -> None:
        """
        Resuming an upload of which nothing is left starts it afresh at 0.
        """
        self.assertEqual(self.result(self.host.restart_upload("lost", 1000)), 0)
        self.result(self.host.upload_chunk("lost", 0, b"from the start"))
        self.result(self.host.end_upload("lost"))
        self.assertStored("lost", b"from the start")

    def test_service_error_retried(self) -> None:
        """
        A call the service fails is tried again after a pause, and the
        operation succeeds.
        """
        self.upload("flaky", b"content")
        self.inject_failure("get_file", 2)
        d = self.host.get_file("flaky")
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.result(d), b"content")

    def test_driver_error_not_retried(self) -> None:
        """
        A call that fails with L{DriverError} fails at once.
        """
        self.upload("broken", b"content")
        self.inject_failure("get_file", 1, DriverError("broken on purpose"))
        error = self.failure(self.host.get_file("broken"), DriverError)
        self.assertIn("broken on purpose", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.result(self.host.get_file("broken")), b"content")

    def test_wrong_options(self) -> None:
        """
        An unknown option or one of the wrong type stops the host from
        being made, with a message naming the plugin and the option.
        """
        plugin = self.host.plugin
        for wrong in [{"colour": "blue"}, {"chunk_size": "big"}, {"retries": "-1"}]:
            error = self.assertRaises(ConfigError, self.make_host_with, wrong)
            self.assertIn(repr(plugin.name), str(error))
            self.assertIn(repr(next(iter(wrong))), str(error))

    def make_host_with(self, options: dict[str, object]) -> StorageHost:
        """
        Make a host as C{make_host} does, with some options changed.
        """
        host = self.make_host()
        return StorageHost(host.plugin, {**host.options, **options}, self.clock)
