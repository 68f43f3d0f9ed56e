"""
The conformance kit run against the C{local} backend
(L{p2pblob.storage.local}), as the dropin registers it, and what is
particular to it: the staged file on disk, resuming from its real size,
its threads.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob.errors import ConfigError, DriverError
from p2pblob.storage.host import StorageHost
from p2pblob.storage.local import UPLOAD_SUFFIX
from tests.storage_conformance import StorageConformanceMixin, builtin_plugin, data


class LocalConformanceTests(StorageConformanceMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        super().setUp()

    def make_host(self) -> StorageHost:
        return StorageHost(builtin_plugin(self, "local"), {"root": str(self.root)}, self.clock)

    def staged_uploads(self) -> set[str]:
        """
        The keys of the hidden C{.NAME.p2pblob-upload} files under the root.
        """
        return {
            path.relative_to(self.root).with_name(path.name[1 : -len(UPLOAD_SUFFIX)]).as_posix()
            for path in self.root.rglob(f".*{UPLOAD_SUFFIX}")
        }

    def test_blocking(self) -> None:
        """
        The plugin says its calls block.
        """
        self.assertTrue(self.host.plugin.blocking)

    def test_staged_next_to_target(self) -> None:
        """
        An upload is written to a hidden file next to its target, which is
        renamed into place when the upload ends and removed when it is
        aborted.
        """
        staged = self.root / "dir" / f".file{UPLOAD_SUFFIX}"
        self.successResultOf(self.host.start_upload("dir/file", None))
        self.successResultOf(self.host.upload_chunk("dir/file", 0, b"data"))
        self.assertEqual(staged.read_bytes(), b"data")
        self.assertFalse((self.root / "dir" / "file").exists())
        self.successResultOf(self.host.end_upload("dir/file"))
        self.assertFalse(staged.exists())
        self.assertEqual((self.root / "dir" / "file").read_bytes(), b"data")

        self.successResultOf(self.host.start_upload("dir/file", None))
        self.assertTrue(staged.exists())
        self.successResultOf(self.host.abort_upload("dir/file"))
        self.assertFalse(staged.exists())
        self.assertEqual(sorted(p.name for p in self.root.rglob("*")), ["dir", "file"])

    def test_restart_trusts_the_disk(self) -> None:
        """
        Resuming gives the size of the staged file, whether the journal's
        offset is behind it or ahead of it (bytes it counted never reached
        the disk).
        """
        self.successResultOf(self.host.start_upload("f", None))
        self.successResultOf(self.host.upload_chunk("f", 0, b"12345"))
        self.assertEqual(self.successResultOf(self.host.restart_upload("f", 0)), 5)
        self.assertEqual(self.successResultOf(self.host.restart_upload("f", 9)), 5)

    def test_upload_names_refused(self) -> None:
        """
        A key cannot name a staged file.
        """
        self.failureResultOf(self.host.upload_file(f".x{UPLOAD_SUFFIX}", b""), DriverError)

    def test_directory_is_not_a_file(self) -> None:
        """
        A directory is not a file: it does not exist as one, and cannot be
        read, written over or deleted as one.
        """
        self.upload("dir/file", b"x")
        self.assertFalse(self.successResultOf(self.host.exists("dir")))
        self.assertIsNone(self.successResultOf(self.host.size("dir")))
        self.failureResultOf(self.host.get_file("dir"), DriverError)
        self.failureResultOf(self.host.upload_file("dir", b"y"), DriverError)
        self.failureResultOf(self.host.delete_file("dir"), DriverError)
        self.failureResultOf(self.host.upload_file("dir/file/under", b"y"), DriverError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_root_required(self) -> None:
        """
        The C{root} option must be given.
        """
        plugin = builtin_plugin(self, "local")
        error = self.assertRaises(ConfigError, StorageHost, plugin, {}, Clock())
        self.assertIn("'local'", str(error))
        self.assertIn("'root'", str(error))


class ThreadedTests(TestCase):
    """
    With a reactor to run threads, the C{local} plugin's calls run in the
    host's own threads.
    """

    async def test_round_trip_in_threads(self) -> None:
        """
        A file uploaded and read back through the threads is intact.
        """
        root = Path(self.mktemp())
        plugin = builtin_plugin(self, "local")
        host = StorageHost(plugin, {"root": str(root), "chunk_size": "1000"}, reactor, reactor)
        host.startService()
        self.addCleanup(host.stopService)
        await host.negotiate_chunk_size()
        content = data(5500)
        await host.start_upload("t/file", len(content))
        for offset in range(0, len(content), host.chunk_size):
            await host.upload_chunk("t/file", offset, content[offset : offset + host.chunk_size])
        await host.end_upload("t/file")
        self.assertEqual(await host.get_file("t/file"), content)
        self.assertEqual((root / "t" / "file").read_bytes(), content)
