"""
An SSH server whose SFTP subsystem serves one directory, for the tests of
the C{sftp} storage backend: C{twisted.conch}'s SSH server, with a file
server of our own (conch's C{unix} one switches user ids, which needs
root), which answers as OpenSSH's C{sftp-server} does where it matters
(which errors it reports with which status, a rename that will not replace
a file, the C{posix-rename@openssh.com} and C{fsync@openssh.com}
extensions).

It is used in two ways:

  - in memory, synchronously: L{SFTPTestServer.memory_endpoint} gives an
    endpoint whose connections are L{twisted.test.iosim} pairs, moved
    along by L{MemoryEndpoint.flush};
  - over TCP on 127.0.0.1, with L{SFTPTestServer.listen}.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.interfaces import IConchUser, ISFTPFile, ISFTPServer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FileTransferServer,
    SFTPError,
)
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.session import SSHSession
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeAddress, FakeTransport, IOPump, connect
from zope.interface import implementer
from zope.interface.verify import verifyClass

__all__ = ["MemoryConnection", "MemoryEndpoint", "SFTPTestServer", "new_host_key"]

POSIX_RENAME = b"posix-rename@openssh.com"
FSYNC = b"fsync@openssh.com"

# How OpenSSH's sftp-server reports errno values (errno_to_portable).
_STATUS_BY_ERRNO = {
    **dict.fromkeys([errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP], FX_NO_SUCH_FILE),
    **dict.fromkeys([errno.EPERM, errno.EACCES, errno.EFAULT], FX_PERMISSION_DENIED),
    **dict.fromkeys([errno.ENAMETOOLONG, errno.EINVAL], FX_BAD_MESSAGE),
    errno.ENOSYS: FX_OP_UNSUPPORTED,
}


def new_host_key() -> Key:
    """
    A new Ed25519 key pair.
    """
    return Key(Ed25519PrivateKey.generate())


def _status(error: OSError) -> SFTPError:
    code = _STATUS_BY_ERRNO.get(error.errno or 0, FX_FAILURE)
    return SFTPError(code, error.strerror or str(error))


def _attributes(result: os.stat_result) -> dict[str, int]:
    return {
        "size": result.st_size,
        "uid": result.st_uid,
        "gid": result.st_gid,
        "permissions": result.st_mode,
        "atime": int(result.st_atime),
        "mtime": int(result.st_mtime),
    }


@implementer(ISFTPFile)
class DirectoryFile:
    """
    An open file of a L{DirectorySFTPServer}.
    """

    def __init__(self, server: DirectorySFTPServer, fd: int) -> None:
        self._server = server
        self._fd = fd

    def sync(self) -> Any:
        return self._server.run("fsync", lambda: os.fsync(self._fd))

    def readChunk(self, offset: int, length: int) -> Any:
        return self._server.run("readChunk", lambda: os.pread(self._fd, length, offset))

    def writeChunk(self, offset: int, data: bytes) -> Any:
        def write() -> None:
            view = memoryview(data)
            at = offset
            while view:
                done = os.pwrite(self._fd, view, at)
                view = view[done:]
                at += done

        return self._server.run("writeChunk", write)

    def getAttrs(self) -> Any:
        return self._server.run("fstat", lambda: _attributes(os.fstat(self._fd)))

    def setAttrs(self, attrs: dict[str, Any]) -> None:
        raise NotImplementedError("setting attributes")

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


verifyClass(ISFTPFile, DirectoryFile)


@implementer(ISFTPServer)
class DirectorySFTPServer:
    """
    The files of one directory, as an SFTP server sees them: C{/} and the
    directory the session starts in are that directory; a path that would
    lead out of it is refused.
    """

    def __init__(self, test_server: SFTPTestServer, avatar: object) -> None:
        self._test_server = test_server
        self.root = test_server.root
        self.avatar = avatar
        self.transfer: FileTransferServer | None = None

    def run(self, operation: str, do: Callable[[], Any]) -> Any:
        """
        Do an operation, unless the test asked for it to fail; report the
        file system's errors as C{sftp-server} does.
        """
        fault = self._test_server.next_fault(operation)
        if fault is not None:
            if isinstance(fault, Deferred):
                return fault
            raise fault
        try:
            return do()
        except OSError as e:
            raise _status(e) from e

    def _local(self, path: bytes) -> str:
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise SFTPError(FX_BAD_MESSAGE, "paths are UTF-8") from None
        relative = posixpath.normpath("/" + text).lstrip("/")
        climbed = posixpath.normpath(text.lstrip("/") or ".")
        if climbed == ".." or climbed.startswith("../"):
            raise SFTPError(FX_PERMISSION_DENIED, f"{text!r} is outside the served directory")
        local = os.path.join(self.root, relative) if relative else str(self.root)
        real = os.path.realpath(local)
        if real != os.path.realpath(self.root) and not real.startswith(
            os.path.realpath(self.root) + os.sep
        ):
            raise SFTPError(FX_PERMISSION_DENIED, f"{text!r} is outside the served directory")
        return local

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        extensions = {}
        if self._test_server.posix_rename:
            extensions[POSIX_RENAME] = b"1"
        if self._test_server.fsync:
            extensions[FSYNC] = b"1"
        return extensions

    def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> Any:
        local = self._local(filename)
        mode = os.O_RDWR if flags & FXF_READ and flags & FXF_WRITE else 0
        if not mode:
            mode = os.O_WRONLY if flags & FXF_WRITE else os.O_RDONLY
        for flag, os_flag in [
            (FXF_APPEND, os.O_APPEND),
            (FXF_CREAT, os.O_CREAT),
            (FXF_TRUNC, os.O_TRUNC),
            (FXF_EXCL, os.O_EXCL),
        ]:
            if flags & flag:
                mode |= os_flag
        return self.run(
            "openFile", lambda: DirectoryFile(self, os.open(local, mode, attrs.get("permissions", 0o644)))
        )

    def removeFile(self, filename: bytes) -> Any:
        local = self._local(filename)
        return self.run("removeFile", lambda: os.remove(local))

    def renameFile(self, oldpath: bytes, newpath: bytes) -> Any:
        old, new = self._local(oldpath), self._local(newpath)

        def rename() -> None:
            # As sftp-server does (with link and unlink): never replace a file.
            if os.path.lexists(new):
                raise SFTPError(FX_FAILURE, "Failure")
            os.rename(old, new)

        return self.run("renameFile", rename)

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Any:
        local = self._local(path)
        return self.run("makeDirectory", lambda: os.mkdir(local))

    def removeDirectory(self, path: bytes) -> Any:
        local = self._local(path)
        return self.run("removeDirectory", lambda: os.rmdir(local))

    def openDirectory(self, path: bytes) -> Any:
        local = self._local(path)

        def listing() -> _Listing:
            entries = []
            for name in sorted(os.listdir(local)):
                attributes = _attributes(os.lstat(os.path.join(local, name)))
                encoded = name.encode("utf-8", "surrogateescape")
                entries.append((encoded, encoded, attributes))
            return _Listing(entries)

        return self.run("openDirectory", listing)

    def getAttrs(self, path: bytes, followLinks: bool) -> Any:
        local = self._local(path)
        look = os.stat if followLinks else os.lstat
        return self.run("getAttrs", lambda: _attributes(look(local)))

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> None:
        raise NotImplementedError("setting attributes")

    def readLink(self, path: bytes) -> None:
        raise NotImplementedError("links")

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> None:
        raise NotImplementedError("links")

    def realPath(self, path: bytes) -> bytes:
        local = self._local(path)
        relative = os.path.relpath(local, self.root)
        return b"/" if relative == "." else ("/" + relative).encode("utf-8")

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> Any:
        if extendedName == FSYNC and self._test_server.fsync:
            handle, _ = getNS(extendedData)
            assert self.transfer is not None
            file = self.transfer.openFiles.get(handle)
            if file is None:
                raise SFTPError(FX_FAILURE, "no such handle")
            synced = file.sync()
            if isinstance(synced, Deferred):
                return synced.addCallback(lambda _: b"")
            return b""
        if extendedName != POSIX_RENAME or not self._test_server.posix_rename:
            raise NotImplementedError(extendedName.decode("ascii", "replace"))
        old, rest = getNS(extendedData)
        new, _ = getNS(rest)
        source, target = self._local(old), self._local(new)

        def rename() -> bytes:
            os.replace(source, target)
            return b""

        return self.run("posixRename", rename)


verifyClass(ISFTPServer, DirectorySFTPServer)


class _Listing:
    def __init__(self, entries: list[tuple[bytes, bytes, dict[str, int]]]) -> None:
        self._entries = iter(entries)

    def __iter__(self) -> _Listing:
        return self

    def __next__(self) -> tuple[bytes, bytes, dict[str, int]]:
        return next(self._entries)

    def close(self) -> None:
        pass


class _User(ConchUser):
    """
    A logged-in user, who may open sessions and start SFTP in them.
    """

    def __init__(self, server: SFTPTestServer) -> None:
        super().__init__()
        self._server = server
        self.channelLookup[b"session"] = SSHSession
        self.subsystemLookup[b"sftp"] = self._sftp

    def _sftp(self, data: bytes, avatar: object) -> FileTransferServer:
        files = DirectorySFTPServer(self._server, avatar)
        files.transfer = FileTransferServer(data, avatar=files)
        return files.transfer


@implementer(IRealm)
class _Realm:
    def __init__(self, server: SFTPTestServer) -> None:
        self._server = server

    def requestAvatar(self, avatarId: bytes, mind: object, *interfaces: Any) -> Any:
        assert IConchUser in interfaces
        return IConchUser, _User(self._server), lambda: None


class _UserAuthServer(SSHUserAuthServer):
    """
    The login service, on the test server's clock, with its delay after a
    wrong password.
    """

    def serviceStarted(self) -> None:
        server: SFTPTestServer = self.transport.factory.server
        self.clock = server.clock
        self.passwordDelay = server.password_delay
        super().serviceStarted()


class _ServerTransport(SSHServerTransport):
    def connectionMade(self) -> None:
        self.factory.server.opened(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.factory.server.gone(self)


class _Factory(SSHFactory):
    protocol = _ServerTransport
    services = {b"ssh-userauth": _UserAuthServer, b"ssh-connection": SSHConnection}

    def __init__(self, server: SFTPTestServer) -> None:
        self.server = server
        self.publicKeys = {server.host_key.sshType(): server.host_key.public()}
        self.privateKeys = {server.host_key.sshType(): server.host_key}
        self.primes = None
        passwords = InMemoryUsernamePasswordDatabaseDontUse(
            **{server.username: server.password.encode("utf-8")}
        )
        keys = SSHPublicKeyChecker(
            InMemorySSHKeyDB({server.username.encode("utf-8"): server.authorized_keys})
        )
        self.portal = Portal(_Realm(server), [passwords, keys])

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.server.connections.append(protocol)
        return protocol


class SFTPTestServer:
    """
    An SSH server with SFTP over the directory C{root}, and one user.

    @ivar host_key: its host key (a new Ed25519 key unless one is given).
    @ivar connections: every connection it was given, as its server-side
        protocol, in order.
    @ivar posix_rename: whether it offers C{posix-rename@openssh.com}.
    @ivar fsync: whether it offers C{fsync@openssh.com}.
    @ivar calls: the name of every file operation asked of it, in order
        (see L{fail}).
    """

    def __init__(
        self,
        root: Path,
        *,
        username: str = "p2pblob",
        password: str = "correct horse",
        authorized_keys: tuple[Key, ...] = (),
        posix_rename: bool = True,
        fsync: bool = True,
        clock: Any = None,
        password_delay: float = 0.0,
        host_key: Key | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.username = username
        self.password = password
        self.authorized_keys = list(authorized_keys)
        self.posix_rename = posix_rename
        self.fsync = fsync
        self.clock = Clock() if clock is None else clock
        self.password_delay = password_delay
        self.host_key = new_host_key() if host_key is None else host_key
        self.connections: list[_ServerTransport] = []
        self._open: set[_ServerTransport] = set()
        self._all_closed: list[Deferred[None]] = []
        self._faults: dict[str, list[BaseException | Deferred[Any]]] = {}
        self.calls: list[str] = []
        self.factory = _Factory(self)
        self.factory.doStart()

    @property
    def public_key_line(self) -> str:
        """
        The host key as C{ssh-ed25519 AAAA...}, as the C{host_key} option
        takes it.
        """
        line: bytes = self.host_key.public().toString("openssh")
        return line.decode("ascii")

    # -- faults -------------------------------------------------------------

    def fail(self, operation: str, error: BaseException | None, times: int = 1) -> None:
        """
        Make the next C{times} C{operation}s (C{"openFile"}, C{"writeChunk"},
        C{"readChunk"}, C{"fstat"}, C{"getAttrs"}, C{"removeFile"},
        C{"renameFile"}, C{"posixRename"}, C{"makeDirectory"}...) fail
        with C{error}, or, if it is C{None}, never be answered.
        """
        faults = self._faults.setdefault(operation, [])
        for _ in range(times):
            faults.append(Deferred() if error is None else error)

    def next_fault(self, operation: str) -> BaseException | Deferred[Any] | None:
        self.calls.append(operation)
        faults = self._faults.get(operation)
        return faults.pop(0) if faults else None

    # -- connections --------------------------------------------------------

    def memory_endpoint(self) -> MemoryEndpoint:
        return MemoryEndpoint(self)

    def listen(self, reactor: IReactorTCP) -> IListeningPort:
        """
        Listen on 127.0.0.1, on a port the system picks.
        """
        return reactor.listenTCP(0, self.factory, interface="127.0.0.1")

    def gone(self, protocol: _ServerTransport) -> None:
        self._open.discard(protocol)
        if not self._open:
            waiting, self._all_closed = self._all_closed, []
            for d in waiting:
                d.callback(None)

    def opened(self, protocol: _ServerTransport) -> None:
        self._open.add(protocol)

    def all_closed(self) -> Deferred[None]:
        """
        A Deferred that fires once every connection to the server is closed.
        """
        if not self._open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_closed.append(d)
        return d


class MemoryConnection:
    """
    A client and a server connected in memory.

    @ivar pump: moves their bytes.
    """

    def __init__(self, pump: IOPump, client_io: FakeTransport, server_io: FakeTransport) -> None:
        self.pump = pump
        self.client_io = client_io
        self.server_io = server_io

    @property
    def closed(self) -> bool:
        return bool(self.client_io.disconnected and self.server_io.disconnected)

    def drop(self) -> None:
        """
        Cut the connection at once, as a crash or a network failure does:
        bytes not delivered yet are lost, each side learns that the
        connection was lost.
        """
        if self.closed:
            return
        for io in (self.client_io, self.server_io):
            io.stream = []
            io.disconnecting = io.disconnected = True
        for io in (self.client_io, self.server_io):
            io.protocol.connectionLost(Failure(ConnectionLost("cut by the test")))


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects clients to the test server in memory.

    @ivar connections: every connection made, in order.
    """

    def __init__(self, server: SFTPTestServer) -> None:
        self._server = server
        self.connections: list[MemoryConnection] = []

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        client = protocolFactory.buildProtocol(FakeAddress())
        server = self._server.factory.buildProtocol(FakeAddress())
        client_io = FakeTransport(client, isServer=False)
        server_io = FakeTransport(server, isServer=True)
        pump = connect(server, server_io, client, client_io, greet=False, clock=self._server.clock)
        self.connections.append(MemoryConnection(pump, client_io, server_io))
        return succeed(client)

    def drop_all(self) -> None:
        for connection in self.connections:
            connection.drop()

    def step(self) -> bool:
        """
        Move the bytes waiting on every open connection, once.

        @return: whether anything moved.
        """
        moved = False
        for connection in self.connections:
            if not connection.closed and connection.pump.pump():
                moved = True
        return moved

    def flush(self, limit: int = 100_000) -> None:
        """
        Move bytes until no connection has any left to move.

        @raise AssertionError: they go on moving for C{limit} rounds.
        """
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError(f"still moving bytes after {limit} rounds")


verifyClass(IStreamClientEndpoint, MemoryEndpoint)
