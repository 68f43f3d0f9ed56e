"""
The conformance kit run against the C{sftp} backend (L{p2pblob.storage.sftp}),
as the dropin registers it, over twisted.conch's SSH server connected in
memory (L{tests.storage_conformance._sftp_server}); and what is particular
to it: the staged file on the server, resuming from its real size, the
server's identity, logging in, lost connections, and one round trip over a
real socket.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.conch.ssh.filetransfer import FX_FAILURE, FX_PERMISSION_DENIED, SFTPError
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.plugin import IPlugin
from twisted.test.iosim import FakeAddress, FakeTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob.errors import ConfigError, DriverError, ServiceError, StorageKeyNotFoundError
from p2pblob.interfaces import IStorageBackend, IStoragePlugin
from p2pblob.storage import sftp
from p2pblob.storage._sftp import SFTPBackend, fingerprint, make_backend
from p2pblob.storage.host import StorageHost
from p2pblob.storage.local import UPLOAD_SUFFIX
from p2pblob.storage.options import parse_options
from tests.storage_conformance import StorageConformanceMixin, builtin_plugin, data
from tests.storage_conformance._sftp_server import SFTPTestServer, new_host_key

HOST = "sftp.example"
USERNAME = "p2pblob"
PASSWORD = "correct horse"
ROOT = "store"


@implementer(IPlugin, IStoragePlugin)
class _ConnectedPlugin:
    """
    The dropin's C{sftp} plugin (its name and options), whose backends
    reach the server through the endpoint given.
    """

    def __init__(self, plugin: IStoragePlugin, endpoint: IStreamClientEndpoint) -> None:
        self.name = plugin.name
        self.options = plugin.options
        self.blocking = plugin.blocking
        self._endpoint = endpoint

    def backend(self, options: dict[str, Any], clock: IReactorTime) -> IStorageBackend:
        return make_backend(options, clock, endpoint=self._endpoint)


@implementer(IStreamClientEndpoint)
class _SilentEndpoint:
    """
    Connects to a server that never says anything.
    """

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        protocol = protocolFactory.buildProtocol(FakeAddress())
        protocol.makeConnection(FakeTransport(protocol, isServer=False))
        return succeed(protocol)


class SFTPConformanceTests(StorageConformanceMixin, SynchronousTestCase):
    """
    The kit, and the C{sftp} backend's own behaviour, over an SSH server in
    memory whose files are in C{self.served}; each host made is a node
    started again, so the connections of the one before are cut.
    """

    def setUp(self) -> None:
        self.served = Path(self.mktemp())
        self.server = SFTPTestServer(self.served, username=USERNAME, password=PASSWORD)
        self.endpoint = self.server.memory_endpoint()
        self.plugin = _ConnectedPlugin(builtin_plugin(self, "sftp"), self.endpoint)
        verifyObject(IStoragePlugin, self.plugin)
        super().setUp()

    @property
    def root(self) -> Path:
        """
        The directory of the server's that the backend's C{root} names.
        """
        return self.served / ROOT

    def options(self, **changes: object) -> dict[str, object]:
        return {
            "host": HOST,
            "username": USERNAME,
            "password": PASSWORD,
            "host_key": self.server.public_key_line,
            "root": ROOT,
            **changes,
        }

    def make_host(self) -> StorageHost:
        # The node that used the connections before this one is gone.
        self.endpoint.drop_all()
        return StorageHost(self.plugin, self.options(), self.clock)

    def host_with(self, plugin: IStoragePlugin | None = None, **changes: object) -> StorageHost:
        """
        A started host, beside C{self.host}, with some options changed.
        """
        host = StorageHost(plugin or self.plugin, self.options(**changes), self.clock)
        host.startService()
        self.addCleanup(host.stopService)
        self.result(host.negotiate_chunk_size())
        return host

    def deliver(self, d: Deferred[Any]) -> None:
        """
        Move every byte there is to move between the backend and the
        server; then C{d} must have its result.
        """
        self.endpoint.flush()
        if not d.called:
            self.fail(
                f"{d!r} has no result, and no connection has anything left to deliver: it "
                "waits on the clock, or on a server that does not answer"
            )

    def result(self, d: Deferred[Any]) -> Any:
        self.deliver(d)
        return self.successResultOf(d)

    def failure(self, d: Deferred[Any], *errors: type[BaseException]) -> BaseException:
        self.deliver(d)
        return self.failureResultOf(d, *errors).value

    def staged_uploads(self) -> set[str]:
        """
        The keys of the hidden C{.NAME.p2pblob-upload} files in the server's
        directory.
        """
        return {
            path.relative_to(self.root).with_name(path.name[1 : -len(UPLOAD_SUFFIX)]).as_posix()
            for path in self.root.rglob(f".*{UPLOAD_SUFFIX}")
        }

    def crash_mid_transfer(self, journal: Path, source: Path, key: str, chunks: int) -> None:
        # The server lives in this process: a child could not reach it.
        self.crash_in_process(journal, source, key, chunks)
        self.endpoint.drop_all()

    # -- the backend's own behaviour ---------------------------------------

    def test_not_blocking(self) -> None:
        """
        The plugin's calls do not block: they answer with Deferreds.
        """
        self.assertFalse(self.host.plugin.blocking)
        self.assertIsInstance(self.host.backend, SFTPBackend)
        d = self.host.backend.exists("x")
        self.assertIsInstance(d, Deferred)
        self.assertFalse(self.result(d))

    def test_one_connection(self) -> None:
        """
        The backend connects when first used, and keeps that connection.
        """
        self.assertEqual(self.endpoint.connections, [])
        self.upload("a", data(3000))
        self.assertStored("a", data(3000))
        self.result(self.host.delete_file("a"))
        self.assertEqual(len(self.endpoint.connections), 1)

    def test_staged_next_to_target(self) -> None:
        """
        An upload is written to a hidden file next to its target, renamed
        onto it when the upload ends and removed when it is aborted.
        """
        staged = self.root / "dir" / f".file{UPLOAD_SUFFIX}"
        self.result(self.host.start_upload("dir/file", None))
        self.result(self.host.upload_chunk("dir/file", 0, b"data"))
        self.assertEqual(staged.read_bytes(), b"data")
        self.assertFalse((self.root / "dir" / "file").exists())
        self.assertEqual(self.staged_uploads(), {"dir/file"})
        self.result(self.host.end_upload("dir/file"))
        self.assertFalse(staged.exists())
        self.assertEqual((self.root / "dir" / "file").read_bytes(), b"data")

        self.result(self.host.start_upload("dir/file", None))
        self.assertTrue(staged.exists())
        self.result(self.host.abort_upload("dir/file"))
        self.assertEqual(self.staged_uploads(), set())
        self.assertEqual(sorted(p.name for p in self.root.rglob("*")), ["dir", "file"])

    def test_staged_names_refused(self) -> None:
        """
        A key cannot name a staged file.
        """
        self.failure(self.host.upload_file(f"a/.x{UPLOAD_SUFFIX}", b""), DriverError)

    def test_restart_trusts_the_server(self) -> None:
        """
        Resuming gives the size of the staged file on the server, whether
        the journal's offset is behind it or ahead of it, and even when the
        server lost some of what it was sent.
        """
        self.result(self.host.start_upload("f", None))
        self.result(self.host.upload_chunk("f", 0, b"12345"))
        self.assertEqual(self.result(self.host.restart_upload("f", 0)), 5)
        self.assertEqual(self.result(self.host.restart_upload("f", 9)), 5)

        os.truncate(self.root / f".f{UPLOAD_SUFFIX}", 3)
        self.assertEqual(self.result(self.host.restart_upload("f", 5)), 3)
        self.failure(self.host.upload_chunk("f", 5, b"6"), DriverError)

        self.host = self.open_host()
        self.assertEqual(self.result(self.host.restart_upload("f", 5)), 3)
        self.result(self.host.upload_chunk("f", 3, b"45"))
        self.result(self.host.end_upload("f"))
        self.assertStored("f", b"12345")

    def test_connection_lost_mid_chunk_retried(self) -> None:
        """
        A chunk whose connection is lost while it is sent fails with
        L{ServiceError}; the host tries it again after a pause, over a new
        connection, and the upload completes.
        """
        chunk = self.host.chunk_size
        content = data(2 * chunk + 10, seed=3)
        self.result(self.host.start_upload("lost", len(content)))
        self.result(self.host.upload_chunk("lost", 0, content[:chunk]))
        with capturedLogs() as events:
            d = self.host.upload_chunk("lost", chunk, content[chunk : 2 * chunk])
            self.endpoint.step()
            self.endpoint.step()
            self.endpoint.connections[-1].drop()
            self.assertNoResult(d)
        [retry] = [e for e in events if "error" in e]
        self.assertIn("lost the connection", str(retry["error"]))
        self.clock.advance(0.5)
        self.result(d)
        self.assertEqual(len(self.endpoint.connections), 2)
        self.result(self.host.upload_chunk("lost", 2 * chunk, content[2 * chunk :]))
        self.result(self.host.end_upload("lost"))
        self.assertStored("lost", content)
        self.assertEqual(self.staged_uploads(), set())

    def test_crash_mid_chunk_resumed(self) -> None:
        """
        After a crash in the middle of a chunk, the new host resumes from
        what the server wrote of it, not from a chunk's boundary.
        """
        chunk = self.host.chunk_size
        content = data(3 * chunk + 10, seed=4)
        self.result(self.host.start_upload("crash", len(content)))
        self.result(self.host.upload_chunk("crash", 0, content[:chunk]))
        d = self.host.upload_chunk("crash", chunk, content[chunk : 2 * chunk])
        for _ in range(3):
            self.endpoint.step()
        self.endpoint.drop_all()
        self.host.stopService()
        self.failure(d, CancelledError)
        staged = (self.root / f".crash{UPLOAD_SUFFIX}").stat().st_size
        self.assertTrue(chunk < staged < 2 * chunk, staged)

        self.host = self.open_host()
        offset = self.result(self.host.restart_upload("crash", chunk))
        self.assertEqual(offset, staged)
        self.assertAbsent("crash")
        for at in [offset, *range(2 * chunk, len(content), chunk)]:
            end = (at // chunk + 1) * chunk
            self.result(self.host.upload_chunk("crash", at, content[at:end]))
        self.result(self.host.end_upload("crash"))
        self.assertStored("crash", content)

    def test_idle_connection_lost(self) -> None:
        """
        A connection lost between calls is made again by the next call,
        which does not fail.
        """
        self.upload("kept", b"content")
        self.endpoint.drop_all()
        self.assertStored("kept", b"content")
        self.assertEqual(len(self.endpoint.connections), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unanswered_request(self) -> None:
        """
        A request the server leaves unanswered for C{timeout} seconds
        drops the connection; the call fails with L{ServiceError} and the
        host tries it again, over a new connection.
        """
        self.upload("slow", b"content")
        self.server.fail("readChunk", None)
        with capturedLogs() as events:
            d = self.host.get_file("slow")
            self.endpoint.flush()
            self.assertNoResult(d)
            self.clock.advance(29)
            self.endpoint.flush()
            self.assertNoResult(d)
            self.clock.advance(1)
            self.assertEqual(self.result(self.settled(d)), b"content")
        [retry] = [e for e in events if "error" in e]
        self.assertIn("did not answer for 30 s", str(retry["error"]))
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_connecting_times_out(self) -> None:
        """
        A server that does not complete the SSH handshake within
        C{timeout} seconds is given up with L{ServiceError}.
        """
        silent = _ConnectedPlugin(self.plugin, _SilentEndpoint())
        host = self.host_with(silent, retries=0, timeout=5)
        d = host.exists("x")
        self.assertNoResult(d)
        self.clock.advance(5)
        error = self.failureResultOf(d, ServiceError).value
        self.assertIn(f"{HOST}:22", str(error))
        self.assertIn("within 5 s", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_commit_answer_lost(self) -> None:
        """
        If the connection is lost after the server renamed the staged file
        but before it said so, trying the end of the upload again finds it
        done.
        """
        self.result(self.host.start_upload("done", 4))
        self.result(self.host.upload_chunk("done", 0, b"1234"))
        self.server.fail("posixRename", None)
        d = self.host.end_upload("done")
        self.endpoint.flush()
        self.assertNoResult(d)
        # The server did it, and the answer is lost with the connection.
        os.replace(self.root / f".done{UPLOAD_SUFFIX}", self.root / "done")
        self.endpoint.drop_all()
        self.result(self.settled(d))
        self.assertStored("done", b"1234")

    def test_overwrite_replaces_target(self) -> None:
        """
        An upload ending, or a file renamed, replaces the file of that
        name: at once with C{posix-rename@openssh.com}, else by removing it
        first (SFTP's own rename will not replace a file).
        """
        for posix_rename in [True, False]:
            self.server.posix_rename = posix_rename
            host = self.host_with()
            key = f"over/{posix_rename}"
            self.upload(key, b"old content", host)
            del self.server.calls[:]
            self.upload(key, b"new", host)
            renames = [c for c in self.server.calls if "ename" in c or c == "removeFile"]
            expected = ["posixRename"] if posix_rename else ["removeFile", "renameFile"]
            self.assertEqual(renames, expected)
            self.assertEqual((self.root / key).read_bytes(), b"new")
            self.result(host.upload_file("moved", b"moved here"))
            self.result(host.move_file("moved", key))
            self.assertEqual((self.root / key).read_bytes(), b"moved here")
            self.assertFalse((self.root / "moved").exists())

    def test_synced_before_rename(self) -> None:
        """
        When the server offers C{fsync@openssh.com}, the staged file is
        synced to its disk before it is renamed onto the target, even when
        the upload ends over another connection than the one it was
        written over.
        """
        for fsync in [True, False]:
            self.server.fsync = fsync
            host = self.host_with()
            del self.server.calls[:]
            self.upload(f"synced/{fsync}", b"abc", host)
            self.result(host.upload_file(f"whole/{fsync}", b"abc"))
            self.result(host.start_upload(f"later/{fsync}", 3))
            self.result(host.upload_chunk(f"later/{fsync}", 0, b"abc"))
            self.endpoint.connections[-1].drop()
            self.result(host.end_upload(f"later/{fsync}"))
            steps = [c for c in self.server.calls if c in ("fsync", "posixRename")]
            self.assertEqual(steps, (["fsync", "posixRename"] if fsync else ["posixRename"]) * 3)
            for name in ["synced", "whole", "later"]:
                self.assertEqual((self.root / name / str(fsync)).read_bytes(), b"abc")

    def test_directory_is_not_a_file(self) -> None:
        """
        A directory is not a file: it does not exist as one and cannot be
        read as one; a file cannot hold another.
        """
        self.upload("dir/file", b"x")
        self.assertFalse(self.result(self.host.exists("dir")))
        self.assertIsNone(self.result(self.host.size("dir")))
        self.failure(self.host.get_file("dir"), StorageKeyNotFoundError)
        self.failure(self.host.get_chunk("dir", 0, 1), StorageKeyNotFoundError)
        error = self.failure(self.host.upload_file("dir/file/under", b"y"), DriverError)
        self.assertIn("not a directory", str(error))
        self.failure(self.host.move_file("dir", "elsewhere"), StorageKeyNotFoundError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_permission_denied_not_retried(self) -> None:
        """
        A permission the server denies is a L{DriverError}, not retried.
        """
        self.server.fail("openFile", SFTPError(FX_PERMISSION_DENIED, "Permission denied"))
        error = self.failure(self.host.upload_file("denied", b"x"), DriverError)
        self.assertIn("permission denied", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_server_failure_retried(self) -> None:
        """
        The server's generic failure is a L{ServiceError}: the call is
        tried again, and succeeds.
        """
        self.server.fail("writeChunk", SFTPError(FX_FAILURE, "Failure"))
        d = self.host.upload_file("flaky", b"content")
        self.result(self.settled(d))
        self.assertStored("flaky", b"content")
        self.assertEqual(self.server.calls.count("writeChunk"), 2)

    def test_unsupported_is_not_missing(self) -> None:
        """
        A request the server does not support is a L{DriverError}: the
        host must not take it for a method the backend lacks.
        """
        self.server.fail("getAttrs", NotImplementedError("stat"))
        self.failure(self.host.exists("x"), DriverError)

    # -- the server's identity ------------------------------------------------

    def test_unknown_host_key_refused(self) -> None:
        """
        A server whose key is not the one the C{host_key} option names,
        as a key or as a fingerprint, is refused with a L{DriverError} that
        names the server and the fingerprint of the key it showed; nothing
        is sent to log in, and nothing is retried.
        """
        other = new_host_key()
        for pinned in [other.public().toString("openssh").decode(), fingerprint(other)]:
            host = self.host_with(host_key=pinned)
            error = self.failure(host.exists("x"), DriverError)
            self.assertIn(f"{HOST}:22", str(error))
            self.assertIn(fingerprint(self.server.host_key), str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(any(hasattr(p, "avatar") for p in self.server.connections))

    def test_host_key_as_fingerprint(self) -> None:
        """
        The C{host_key} option may give the key's fingerprint, as
        C{ssh-keygen -l} shows it in SHA256 or MD5.
        """
        md5 = "MD5:" + self.server.host_key.fingerprint()
        for pinned in [fingerprint(self.server.host_key), md5]:
            host = self.host_with(host_key=pinned)
            self.assertFalse(self.result(host.exists("x")))

    def test_known_hosts(self) -> None:
        """
        With a C{known_hosts} file, the server's key must be listed there
        for its name (C{[host]:port} when the port is not 22, as OpenSSH
        writes it); a different key listed for it is called a change.
        """
        known = Path(self.mktemp())
        ours = self.server.public_key_line
        theirs = new_host_key().public().toString("openssh").decode()
        cases = [
            (22, f"{HOST} {ours}", None),
            (2222, f"[{HOST}]:2222 {ours}", None),
            (22, f"elsewhere.example {ours}", "is not listed"),
            (2222, f"{HOST} {ours}", "is not listed"),
            (22, f"{HOST} {theirs}", "differs from the key"),
        ]
        for port, line, refusal in cases:
            known.write_text(f"# made by the test\n{line}\n")
            host = self.host_with(host_key="", known_hosts=str(known), port=port)
            d = host.exists("x")
            if refusal is None:
                self.assertFalse(self.result(d))
            else:
                error = self.failure(d, DriverError)
                self.assertIn(refusal, str(error))
                self.assertIn(str(known), str(error))
                self.assertIn(fingerprint(self.server.host_key), str(error))

    # -- logging in -----------------------------------------------------------

    def test_wrong_password(self) -> None:
        """
        A password the server refuses is a L{DriverError} that says who
        could not log in with what, and it is not tried again.
        """
        host = self.host_with(password="wrong")
        error = self.failure(host.exists("x"), DriverError)
        self.assertIn(repr(USERNAME), str(error))
        self.assertIn("password", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.endpoint.connections), 1)

    def test_private_key(self) -> None:
        """
        A private key the server knows logs in without a password; one it
        does not know is refused.
        """
        key = new_host_key()
        path = Path(self.mktemp())
        path.write_bytes(key.toString("openssh"))
        host = self.host_with(password="", private_key=str(path))
        error = self.failure(host.exists("x"), DriverError)
        self.assertIn("public key", str(error))

        self.server.authorized_keys.append(key.public())
        host = self.host_with(password="", private_key=str(path))
        self.result(host.upload_file("by key", b"signed in"))
        self.assertEqual((self.root / "by key").read_bytes(), b"signed in")

    # -- options ---------------------------------------------------------------

    def test_options_checked(self) -> None:
        """
        Options that cannot work are refused when the backend is made, with
        a L{ConfigError} that names the plugin and the option at fault.
        """
        plugin = builtin_plugin(self, "sftp")
        missing = "/nonexistent/p2pblob-test"
        cases = [
            ({"host_key": ""}, "'known_hosts'"),
            ({"password": ""}, "'private_key'"),
            ({"host_key": "ssh-ed25519 nonsense"}, "'host_key'"),
            ({"host_key": "", "known_hosts": missing}, "known_hosts file"),
            ({"password": "", "private_key": missing}, "private key"),
            ({"port": "70000"}, "'port'"),
            ({"host": " "}, "'host'"),
        ]
        for changes, words in cases:
            options = self.options(**changes)
            error = self.assertRaises(ConfigError, StorageHost, plugin, options, Clock())
            self.assertIn("'sftp'", str(error))
            self.assertIn(words, str(error))
        for required in ["host", "username"]:
            options = self.options()
            del options[required]
            error = self.assertRaises(ConfigError, StorageHost, plugin, options, Clock())
            self.assertIn(repr(required), str(error))

    def test_conch_missing(self) -> None:
        """
        Without twisted.conch or a library it needs, making the backend
        fails with a L{ConfigError} that says what to install.
        """

        def importer(name: str) -> Any:
            raise ImportError("No module named 'bcrypt'", name="bcrypt")

        options = parse_options(self.plugin, self.options())
        error = self.assertRaises(ConfigError, sftp.make_backend, options, Clock(), importer)
        self.assertIn("pip install 'p2pblob[sftp]'", str(error))
        self.assertIn("bcrypt", str(error))
        backend = sftp.make_backend(options, Clock())
        self.assertTrue(verifyObject(IStorageBackend, backend))


class RealSocketTests(TestCase):
    """
    The C{sftp} plugin, as the node makes it (over TCP, through the global
    reactor), against an SSH server listening on 127.0.0.1.
    """

    async def test_round_trip_over_tcp(self) -> None:
        """
        A file of several chunks uploaded to the server reads back the
        same, whole and by parts, and is on the server's disk.
        """
        served = Path(self.mktemp())
        server = SFTPTestServer(
            served, username=USERNAME, password=PASSWORD, clock=reactor, password_delay=1.0
        )
        port = server.listen(reactor)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        known = Path(self.mktemp())
        known.write_text(f"[127.0.0.1]:{number} {server.public_key_line}\n")
        options = {
            "host": "127.0.0.1",
            "port": str(number),
            "username": USERNAME,
            "password": PASSWORD,
            "known_hosts": str(known),
            "root": "/blobs",
            "chunk_size": "100000",
            "timeout": "10",
        }
        host = StorageHost(builtin_plugin(self, "sftp"), options, reactor)
        host.startService()
        self.addCleanup(host.stopService)
        self.addCleanup(server.all_closed)
        backend = host.backend
        assert isinstance(backend, SFTPBackend)
        self.addCleanup(backend.disconnect)

        await host.negotiate_chunk_size()
        chunk = host.chunk_size
        content = data(5 * chunk + 777, seed=9)
        await host.start_upload("tcp/ünïcode file", len(content))
        for offset in range(0, len(content), chunk):
            await host.upload_chunk("tcp/ünïcode file", offset, content[offset : offset + chunk])
        await host.end_upload("tcp/ünïcode file")

        self.assertEqual(await host.get_file("tcp/ünïcode file"), content)
        self.assertEqual(
            await host.get_chunk("tcp/ünïcode file", chunk + 5, chunk), content[chunk + 5 :][:chunk]
        )
        self.assertEqual(await host.size("tcp/ünïcode file"), len(content))
        self.assertEqual((served / "blobs" / "tcp" / "ünïcode file").read_bytes(), content)
        self.assertEqual(len(server.connections), 1)
