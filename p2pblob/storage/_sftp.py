"""
The C{sftp} storage backend, over C{twisted.conch}.  Import it through
L{p2pblob.storage.sftp}, which turns a missing C{twisted.conch} into a
L{p2pblob.errors.ConfigError}.

The connection
==============

The backend connects when it is first used, through an endpoint (a
L{twisted.internet.endpoints.HostnameEndpoint} to C{host:port}, or any
L{IStreamClientEndpoint} given to L{SFTPBackend}: tests connect it in
memory).  Over that one SSH connection it opens one session channel with the
SFTP subsystem, and every call uses it; a call that finds it lost connects
again.  The steps, each of which may fail:

  1. The server's host key must be the C{host_key} option's, or be listed
     for the host in the C{known_hosts} file.  An unknown or changed key is
     refused with a L{DriverError} that names the host and the fingerprint
     the server showed, so that the user can check it and add it.
  2. The login tries the private key, then the password (also through
     C{keyboard-interactive}, which some servers use for passwords), each
     once; if the server accepts none, a L{DriverError} says what was tried.
  3. The server must start its SFTP subsystem.

All of it must be done within C{timeout} seconds, or the attempt is given
up with a L{ServiceError}; afterwards, if the server leaves requests
unanswered for C{timeout} seconds, the connection is dropped, and the calls
waiting on it fail with a L{ServiceError}.  The host tries those again, over
a new connection.

Files
=====

A key C{a/b/c} is the path C{ROOT/a/b/c} on the server, in UTF-8.  An upload
is written to C{ROOT/a/b/.c.p2pblob-upload}, in the same directory as its
target (created, with any missing parent, when the upload starts), at the
offsets given, in pieces of L{PIECE} bytes of which several are in flight
at once.  Ending the upload checks that file's size, has the server write
it to its disk (when it offers OpenSSH's C{fsync@openssh.com}), and renames
it onto the target.  SFTP version 3's rename refuses to replace a file: when
the server offers C{posix-rename@openssh.com}, it is used, and the target is
replaced all at once; otherwise the target is removed first, so that for
the time between the two requests, no file is seen under the key (a reader
then finds it missing, never half-written).  Resuming an upload asks the
server for the size of the staged file.

The staged file stays open between the chunks of an upload (it is opened
again, and its size asked, after a reconnection); the calls on one upload
run one after the other.  A file read is opened for each call.

Errors
======

  - A file the server says does not exist is a
    L{StorageKeyNotFoundError} where the contract says so, and otherwise
    a L{DriverError}.
  - A lost connection, a timeout, and the server's generic failure
    (C{SSH_FX_FAILURE}, which OpenSSH also answers for a full disk or a
    failing one) are L{ServiceError}s, retried by the host.
  - A refused host key or login, a denied permission, a request the server
    does not support, and misuse (a hole in an upload, a size that differs
    from the one announced) are L{DriverError}s, not retried.
"""

from __future__ import annotations

import os
import stat
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import md5, sha256
from typing import Any, TypeVar

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import ConchError
from twisted.conch.interfaces import IKnownHostEntry
from twisted.conch.ssh import transport as ssh_transport
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_FILE_ALREADY_EXISTS,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FileTransferClient,
    SFTPError,
)
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer
from zope.interface.verify import verifyClass

from p2pblob.errors import (
    ConfigError,
    DriverError,
    ServiceError,
    StorageKeyNotFoundError,
    StoragePluginError,
)
from p2pblob.interfaces import IStorageBackend
from p2pblob.storage.keys import split_key
from p2pblob.storage.local import UPLOAD_SUFFIX

__all__ = [
    "FSYNC",
    "IN_FLIGHT",
    "PIECE",
    "POSIX_RENAME",
    "HostKeyChecker",
    "SFTPBackend",
    "SFTPSettings",
    "fingerprint",
    "make_backend",
    "settings_from_options",
]

_log = Logger()

_T = TypeVar("_T")

PIECE = 32 * 1024
"""
The most bytes one SFTP read or write request carries.  Every server takes
requests of this size (OpenSSH's own client uses it); a chunk of the node's
is sent as several.
"""

IN_FLIGHT = 32
"""
How many read or write requests of one call are sent before waiting for
their answers.
"""

POSIX_RENAME = b"posix-rename@openssh.com"
"""
The SFTP extension that renames a file over another one, all at once.
"""

FSYNC = b"fsync@openssh.com"
"""
The SFTP extension that makes the server write an open file to its disk.
"""

_WINDOW = 1024 * 1024
_MAX_PACKET = 32 * 1024

_FX_WRITE_PROTECT = 12

# Status codes that say the request itself cannot succeed: trying it again
# would not help.  ("File already exists" and "write protect" come from
# servers that speak later versions of the protocol than 3.)
_DRIVER_CODES = frozenset(
    {FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_BAD_MESSAGE, FX_OP_UNSUPPORTED,
     FX_FILE_ALREADY_EXISTS, _FX_WRITE_PROTECT}
)  # fmt: skip

# Reasons for which the SSH transport is closed that mean the configuration
# is wrong (a key, a name, a login), as opposed to the server being busy or
# the network failing.
_DRIVER_DISCONNECTS = frozenset(
    {
        ssh_transport.DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT,
        ssh_transport.DISCONNECT_KEY_EXCHANGE_FAILED,
        ssh_transport.DISCONNECT_PROTOCOL_VERSION_NOT_SUPPORTED,
        ssh_transport.DISCONNECT_HOST_KEY_NOT_VERIFIABLE,
        ssh_transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
        ssh_transport.DISCONNECT_ILLEGAL_USER_NAME,
    }
)


# ---------------------------------------------------------------------------
# Settings and the server's identity
# ---------------------------------------------------------------------------


def fingerprint(key: Key) -> str:
    """
    A public key's fingerprint as OpenSSH shows it (C{ssh-keygen -l}).

    @return: C{"SHA256:"} and the unpadded base64 of the sha256 of the key.
    """
    digest = sha256(key.blob()).digest()
    return "SHA256:" + b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class _Pin:
    """
    The host key named by the C{host_key} option: a public key, or the
    fingerprint of one.

    @ivar kind: C{"key"}, C{"sha256"} or C{"md5"}.
    @ivar value: the key's blob, the unpadded base64 of its sha256, or the
        lowercase hexadecimal of its md5 with colons.
    """

    kind: str
    value: bytes

    @classmethod
    def parse(cls, text: str) -> _Pin:
        """
        Read the C{host_key} option: C{"ssh-ed25519 AAAA... [comment]"} (as
        in a C{.pub} file or C{ssh-keyscan}'s output, without the host
        name), C{"SHA256:..."} or C{"MD5:aa:bb:..."} (as C{ssh-keygen -l}
        shows them).

        @raise ConfigError: it is none of these.
        """
        text = text.strip()
        if text.startswith("SHA256:"):
            return cls("sha256", text[len("SHA256:") :].rstrip("=").encode("ascii"))
        if text.lower().startswith("md5:"):
            hexadecimal = text[4:].lower()
            if len(hexadecimal) == 47 and all(c in "0123456789abcdef:" for c in hexadecimal):
                return cls("md5", hexadecimal.encode("ascii"))
        else:
            try:
                key = Key.fromString(text.encode("utf-8"))
            except (BadKeyError, ValueError, TypeError, IndexError):
                pass
            else:
                if key.isPublic():
                    return cls("key", key.blob())
        raise ConfigError(
            "the 'sftp' storage plugin's option 'host_key' must be a public key "
            "('ssh-ed25519 AAAA...') or its fingerprint ('SHA256:...', as ssh-keygen -l "
            f"shows it), not {text!r:.100}"
        )

    def matches(self, key: Key) -> bool:
        blob: bytes = key.blob()
        if self.kind == "key":
            return blob == self.value
        if self.kind == "sha256":
            return fingerprint(key).encode("ascii")[len("SHA256:") :] == self.value
        digest = md5(blob).digest()
        return ":".join(f"{byte:02x}" for byte in digest).encode("ascii") == self.value


class HostKeyChecker:
    """
    Decides whether the key an SSH server shows is the one of the server
    the configuration names.

    @ivar names: the names under which C{known_hosts} lists the server:
        C{host}, or C{[host]:port} when the port is not 22, as OpenSSH
        writes them.
    """

    def __init__(
        self,
        where: str,
        names: Sequence[bytes],
        pin: _Pin | None,
        known_hosts: Sequence[IKnownHostEntry],
        known_hosts_path: str | None,
    ) -> None:
        self._where = where
        self.names = tuple(names)
        self._pin = pin
        self._known_hosts = tuple(known_hosts)
        self._known_hosts_path = known_hosts_path

    def check(self, key: Key) -> DriverError | None:
        """
        Check a server's key.

        @return: C{None} if the key is accepted, else the error that
            refuses it, naming the server and the key's fingerprint.
        """
        if self._pin is not None and self._pin.matches(key):
            return None
        reasons = []
        if self._pin is not None:
            reasons.append("is not the one the 'host_key' option names")
        if self._known_hosts_path is not None:
            listed = self._listed(key)
            if listed is None:
                return None
            reasons.append(listed)
        return DriverError(
            f"refused the SSH host key of {self._where}: its "
            f"{key.sshType().decode('ascii', 'replace')} key, {fingerprint(key)}, "
            + " and ".join(reasons)
            + ".  If it is the server's key (ask its administrator, or compare with "
            "ssh-keygen -l on the server), add it to the known_hosts file or give it as "
            "the 'host_key' option"
        )

    def _listed(self, key: Key) -> str | None:
        """
        Look the key up in C{known_hosts}: C{None} if it is listed for the
        server, else why not.
        """
        changed = False
        for entry in self._known_hosts:
            if not any(entry.matchesHost(name) for name in self.names):
                continue
            if entry.matchesKey(key):
                return None
            if getattr(entry, "keyType", None) == key.sshType():
                changed = True
        shown = " or ".join(name.decode("utf-8", "replace") for name in self.names)
        if changed:
            return (
                f"differs from the key {self._known_hosts_path} lists for {shown}: the "
                "server's key changed, or another machine answers in its place"
            )
        return f"is not listed for {shown} in {self._known_hosts_path}"


@dataclass(frozen=True)
class SFTPSettings:
    """
    The C{sftp} plugin's options, checked and ready to use.

    @ivar private_key: the key loaded from the C{private_key} file, or
        C{None}.
    @ivar root: the directory on the server that holds the files; a
        relative one is relative to the directory the server starts in
        (usually the user's home).
    """

    host: str
    port: int
    username: str
    password: str
    private_key: Key | None
    host_keys: HostKeyChecker
    root: str
    timeout: float

    @property
    def where(self) -> str:
        """
        The server, as C{host:port} (C{[host]:port} for an IPv6 address).
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _load_private_key(path: str) -> Key:
    try:
        key: Key = Key.fromFile(path)
    except OSError as e:
        raise ConfigError(
            f"the 'sftp' storage plugin cannot read the private key {path!r}: "
            f"{e.strerror or e}"
        ) from None
    except EncryptedKeyError:
        raise ConfigError(
            f"the 'sftp' storage plugin cannot use the private key {path!r}: it is "
            "protected by a passphrase; give a key without one"
        ) from None
    except (BadKeyError, ValueError) as e:
        raise ConfigError(
            f"the 'sftp' storage plugin cannot use {path!r} as a private key: {e}"
        ) from None
    if key.isPublic():
        raise ConfigError(
            f"the 'sftp' storage plugin's option 'private_key' names {path!r}, a public "
            "key; give the private key"
        )
    return key


def _load_known_hosts(path: str) -> list[IKnownHostEntry]:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(
            f"the 'sftp' storage plugin cannot read the known_hosts file {path!r}: "
            f"{e.strerror or e}"
        ) from None
    return list(KnownHostsFile.fromPath(FilePath(path)).iterentries())


def settings_from_options(options: dict[str, Any]) -> SFTPSettings:
    """
    Check the C{sftp} plugin's options together and load the files they
    name (the private key, the C{known_hosts} file, read once here).

    @param options: the options, each checked and converted by
        L{p2pblob.storage.options.parse_options}.

    @raise ConfigError: they cannot work: no way to check the server's
        identity, no way to log in, a file that cannot be read.
    """
    host: str = options["host"].strip()
    port: int = options["port"]
    username: str = options["username"]
    if not host:
        raise ConfigError("the 'sftp' storage plugin's option 'host' is empty")
    if not 0 < port < 65536:
        raise ConfigError(f"the 'sftp' storage plugin's option 'port' is {port}, not a port")
    if not username:
        raise ConfigError("the 'sftp' storage plugin's option 'username' is empty")
    password: str = options["password"]
    private_key = None
    if options["private_key"]:
        private_key = _load_private_key(os.path.expanduser(options["private_key"]))
    if not password and private_key is None:
        raise ConfigError(
            "the 'sftp' storage plugin needs the option 'password' or 'private_key' to log in"
        )
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    pin = _Pin.parse(options["host_key"]) if options["host_key"].strip() else None
    known_hosts_path = None
    entries: list[IKnownHostEntry] = []
    if options["known_hosts"]:
        known_hosts_path = os.path.expanduser(options["known_hosts"])
        entries = _load_known_hosts(known_hosts_path)
    if pin is None and known_hosts_path is None:
        raise ConfigError(
            f"the 'sftp' storage plugin needs the option 'known_hosts' (an OpenSSH "
            f"known_hosts file) or 'host_key' (the server's public key or its "
            f"fingerprint) to check that it talks to {where} itself"
        )
    names = [host.encode("utf-8")] if port == 22 else [f"[{host}]:{port}".encode()]
    checker = HostKeyChecker(where, names, pin, entries, known_hosts_path)
    return SFTPSettings(
        host=host,
        port=port,
        username=username,
        password=password,
        private_key=private_key,
        host_keys=checker,
        root=options["root"],
        timeout=float(options["timeout"]),
    )


# ---------------------------------------------------------------------------
# The SSH client: transport, login, SFTP channel
# ---------------------------------------------------------------------------


class _Session:
    """
    An SFTP channel ready for requests, over one SSH connection.

    @ivar client: the SFTP client protocol.
    @ivar alive: C{False} once the connection is lost.
    @ivar why_lost: why it was lost, in words.
    @ivar posix_rename: whether the server offers L{POSIX_RENAME}.
    @ivar fsync: whether the server offers L{FSYNC}.
    """

    def __init__(self, transport: _ClientTransport, client: _SFTPClient) -> None:
        self._transport = transport
        self._where = transport.where
        self.client = client
        self.alive = True
        self.why_lost = ""
        self.posix_rename = POSIX_RENAME in client.extensions
        self.fsync = FSYNC in client.extensions
        self._closed: list[Deferred[None]] = []

    def lost(self, why: str) -> None:
        self.alive = False
        self.why_lost = why
        _log.info(
            "storage plugin sftp: the connection to {where} is closed: {why}",
            where=self._where,
            why=why,
        )
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def close(self) -> Deferred[None]:
        """
        Close the connection.

        @return: a Deferred that fires once it is closed.
        """
        if not self.alive:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        self._transport.close("the backend was closed")
        return d


class _SFTPClient(FileTransferClient):
    """
    The SFTP protocol over the session channel, which drops the connection
    when the server leaves requests unanswered for too long.

    @ivar extensions: the extensions the server announced, by name.
    """

    def __init__(self, owner: _ClientTransport, clock: IReactorTime, timeout: float) -> None:
        super().__init__()
        self._owner = owner
        self._clock = clock
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        self.extensions: dict[bytes, bytes] = {}

    def gotServerVersion(self, serverVersion: int, extData: dict[bytes, bytes]) -> None:
        self.extensions = dict(extData)
        self._owner.sftp_ready(self)

    def sendPacket(self, kind: int, data: bytes) -> None:
        super().sendPacket(kind, data)
        self._watch(progress=False)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._watch(progress=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_watching()
        super().connectionLost(reason)

    def _watch(self, progress: bool) -> None:
        """
        Keep a timer running while requests wait for answers: started by
        the first request, pushed back whenever the server sends something,
        stopped when nothing is waiting.
        """
        if not self.openRequests:
            self._stop_watching()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._stalled)
        elif progress:
            self._timer.reset(self._timeout)

    def _stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stalled(self) -> None:
        self._timer = None
        self._owner.abort(f"the SFTP server did not answer for {self._timeout:g} s")


class _SFTPChannel(SSHChannel):
    """
    The session channel that runs the SFTP subsystem.
    """

    name = b"session"

    def __init__(self, owner: _ClientTransport, conn: SSHConnection) -> None:
        super().__init__(localWindow=_WINDOW, localMaxPacket=_MAX_PACKET, conn=conn)
        self._owner = owner
        self._client: _SFTPClient | None = None

    def channelOpen(self, specificData: bytes) -> None:
        assert self.conn is not None
        d = self.conn.sendRequest(self, b"subsystem", NS(b"sftp"), wantReply=True)
        d.addCallbacks(self._started, self._refused)

    def _started(self, ignored: object) -> None:
        self._client = self._owner.make_sftp_client()
        self._client.makeConnection(self)

    def _refused(self, reason: Failure) -> None:
        self._owner.refuse(
            DriverError(
                f"the SSH server {self._owner.where} refused to start its SFTP subsystem "
                "for us (is SFTP enabled for this user?)"
            )
        )

    def openFailed(self, reason: Exception) -> None:
        self._owner.refuse(
            ServiceError(f"the SSH server {self._owner.where} refused a session: {reason}")
        )

    def dataReceived(self, data: bytes) -> None:
        if self._client is not None:
            self._client.dataReceived(data)

    def closed(self) -> None:
        if self._client is not None:
            self._client.connectionLost(Failure(ConnectionClosed("the SFTP channel closed")))
        self._owner.abort("the SSH server closed the SFTP channel")


class _Connection(SSHConnection):
    """
    The SSH connection service, once logged in: opens the SFTP channel.
    """

    def __init__(self, owner: _ClientTransport) -> None:
        super().__init__()
        self._owner = owner

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.openChannel(_SFTPChannel(self._owner, self))


class _UserAuth(SSHUserAuthClient):
    """
    Logs in with the private key, then with the password (as C{password},
    then as the answer to C{keyboard-interactive} prompts), each tried once.

    @ivar tried: the methods tried, for the message if all fail.
    @ivar accepted: the methods the server said it accepts, last time it
        refused one.
    """

    preferredOrder = [b"publickey", b"password", b"keyboard-interactive"]

    def __init__(
        self, settings: SFTPSettings, owner: _ClientTransport, connection: _Connection
    ) -> None:
        super().__init__(settings.username.encode("utf-8"), connection)
        self._settings = settings
        self._owner = owner
        self._key_offered = False
        self._password_sent = False
        self._prompts_answered = False
        self.tried: list[str] = []
        self.accepted: list[str] = []

    def ssh_USERAUTH_FAILURE(self, packet: bytes) -> Deferred[None] | None:
        methods, _ = getNS(packet)
        self.accepted = methods.decode("ascii", "replace").split(",")
        result: Deferred[None] | None = super().ssh_USERAUTH_FAILURE(packet)
        return result

    def getPublicKey(self) -> Key | None:
        key = self._settings.private_key
        if key is None or self._key_offered:
            return None
        self._key_offered = True
        self.tried.append("public key")
        public: Key = key.public()
        return public

    def getPrivateKey(self) -> Deferred[Key]:
        key = self._settings.private_key
        if key is None:
            return defer.fail(NotImplementedError())
        return succeed(key)

    def getPassword(self, prompt: bytes | None = None) -> Deferred[bytes] | None:
        if not self._settings.password or self._password_sent:
            return None
        self._password_sent = True
        self.tried.append("password")
        return succeed(self._settings.password.encode("utf-8"))

    def auth_keyboard_interactive(self) -> bool:
        if not self._settings.password or self._prompts_answered:
            return False
        self._prompts_answered = True
        self.tried.append("keyboard-interactive")
        return super().auth_keyboard_interactive()

    def getGenericAnswers(
        self, name: bytes, instruction: bytes, prompts: list[tuple[bytes, bool]]
    ) -> Deferred[list[str]]:
        # Servers that take passwords this way ask for it in one hidden prompt.
        return succeed([self._settings.password for _ in prompts])

    def ssh_USERAUTH_PK_OK_password(self, packet: bytes) -> None:
        # The server wants the password changed: not something to do here.
        self._owner.refuse(
            DriverError(
                f"the SSH server {self._owner.where} wants a new password for "
                f"{self._settings.username!r}: change it there first"
            )
        )


class _ClientTransport(SSHClientTransport):
    """
    The client side of one SSH connection: checks the server's key, logs
    in, opens the SFTP channel, and says how it went with L{ready}.

    @ivar ready: a Deferred that fires with the L{_Session} once SFTP is
        running, or fails with the L{StoragePluginError} that stopped it;
        cancelling it drops the connection.
    @ivar problem: the error found while connecting, if any.
    """

    def __init__(self, settings: SFTPSettings, clock: IReactorTime) -> None:
        self._settings = settings
        self._clock = clock
        self.where = settings.where
        self.ready: Deferred[_Session] = Deferred(self._cancel)
        self.problem: StoragePluginError | None = None
        self._sftp_session: _Session | None = None
        self._userauth: _UserAuth | None = None
        self._gone = False
        self._why: str | None = None

    # -- the steps ----------------------------------------------------------

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        try:
            key = Key.fromString(hostKey)
        except (BadKeyError, ValueError) as e:
            problem: DriverError | None = DriverError(
                f"cannot read the SSH host key of {self.where}: {e}"
            )
        else:
            problem = self._settings.host_keys.check(key)
        if problem is None:
            return succeed(True)
        self._note(problem)
        return defer.fail(problem)

    def connectionSecure(self) -> None:
        self._userauth = _UserAuth(self._settings, self, _Connection(self))
        self.requestService(self._userauth)

    def make_sftp_client(self) -> _SFTPClient:
        return _SFTPClient(self, self._clock, self._settings.timeout)

    def sftp_ready(self, client: _SFTPClient) -> None:
        if self.ready.called:
            return
        self._sftp_session = _Session(self, client)
        self.ready.callback(self._sftp_session)

    # -- ending -------------------------------------------------------------

    def _note(self, problem: StoragePluginError) -> None:
        if self.problem is None and not self._gone:
            self.problem = problem

    def refuse(self, problem: StoragePluginError) -> None:
        """
        Give up connecting because of C{problem}.
        """
        if self._gone:
            return
        self._note(problem)
        self.sendDisconnect(ssh_transport.DISCONNECT_BY_APPLICATION, b"giving up")

    def close(self, why: str) -> None:
        """
        Close the connection cleanly (the server is told).
        """
        if not self._gone:
            self._why = self._why or why
            self.loseConnection()

    def abort(self, why: str) -> None:
        """
        Drop the connection at once.
        """
        if not self._gone and self.transport is not None:
            self._why = self._why or why
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    def _cancel(self, ready: Deferred[_Session]) -> None:
        self.abort("connecting took too long")

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if reason != ssh_transport.DISCONNECT_CONNECTION_LOST:
            self._note(self._disconnected(reason, desc, "we"))
        super().sendDisconnect(reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        text = description.decode("utf-8", "replace")
        self._why = self._why or f"the server disconnected: {text}"
        self._note(self._disconnected(reasonCode, description, "the server"))
        super().receiveError(reasonCode, description)

    def _disconnected(self, reason: int, desc: bytes | str, who: str) -> StoragePluginError:
        """
        The error to report when the connection is closed while connecting,
        with the given reason.
        """
        text = desc.decode("utf-8", "replace") if isinstance(desc, bytes) else str(desc)
        if reason == ssh_transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE:
            tried = ", ".join(self._userauth.tried) if self._userauth else ""
            accepted = ", ".join(self._userauth.accepted) if self._userauth else ""
            return DriverError(
                f"the SSH server {self.where} refused to log in {self._settings.username!r} "
                f"(tried: {tried or 'nothing'}; it accepts: {accepted or 'nothing'})"
            )
        message = f"{who} closed the SSH connection to {self.where}: {text} (reason {reason})"
        if reason in _DRIVER_DISCONNECTS:
            return DriverError(message)
        return ServiceError(message)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        why = self._why or (str(reason.value) if reason is not None else "connection lost")
        if self._sftp_session is not None:
            self._sftp_session.lost(why)
        super().connectionLost(reason)
        if not self.ready.called:
            self.ready.errback(
                self.problem
                or ServiceError(
                    f"the connection to {self.where} was lost before SFTP was ready: {why}"
                )
            )


class _ClientFactory(Factory):
    """
    Makes the client side of SSH connections.
    """

    def __init__(self, settings: SFTPSettings, clock: IReactorTime) -> None:
        self._settings = settings
        self._clock = clock

    def buildProtocol(self, addr: IAddress | None) -> _ClientTransport:
        protocol = _ClientTransport(self._settings, self._clock)
        protocol.factory = self
        return protocol


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------


@dataclass
class _Upload:
    """
    What this backend knows of an upload; the staged file on the server is
    what counts.

    @ivar expected: the size announced to C{start_upload}, or C{None}.
    @ivar handle: the staged file, open for writing, or C{None}.
    @ivar session: the session C{handle} belongs to.
    @ivar staged: the staged file's size, as the server said when it was
        opened, plus what was written since.
    @ivar committing: a rename onto the target was sent and its answer not
        received (if the connection was lost meanwhile, it may have been
        done).
    @ivar lock: held by each call on the upload, so that they happen one
        after the other.
    """

    expected: int | None = None
    handle: Any = None
    session: _Session | None = None
    staged: int = 0
    committing: bool = False
    lock: DeferredLock = field(default_factory=DeferredLock)


def _is_directory(attributes: dict[str, Any]) -> bool:
    permissions = attributes.get("permissions")
    return permissions is not None and stat.S_ISDIR(permissions)


def _is_file(attributes: dict[str, Any]) -> bool:
    # A server that does not say what a path is gets the benefit of the doubt.
    permissions = attributes.get("permissions")
    return permissions is None or stat.S_ISREG(permissions)


async def _settle(requests: Iterable[Deferred[_T]]) -> list[_T]:
    """
    Wait for requests sent together, and give their results in order, or
    raise the first one's error once all have answered.
    """
    results = []
    error: BaseException | None = None
    for request in list(requests):
        try:
            results.append(await request)
        except Exception as e:
            error = error or e
    if error is not None:
        raise error
    return results


def _read_piece(handle: Any, offset: int, length: int) -> Deferred[bytes]:
    """
    Ask for C{length} bytes at C{offset}; at the end of the file, the
    answer is C{b""}.
    """

    def end(reason: Failure) -> bytes:
        reason.trap(EOFError)
        return b""

    request: Deferred[bytes] = handle.readChunk(offset, length)
    return request.addErrback(end)


def _close_later(handle: Any) -> None:
    """
    Close a file that was only read, without waiting for the answer (the
    server answers in order, so the requests sent before are unaffected).
    """
    handle.close().addErrback(lambda reason: None)


@implementer(IStorageBackend)
class SFTPBackend:
    """
    Files on an SFTP server (see the module's description).

    Its methods return Deferreds: the plugin does not block.
    """

    def __init__(
        self, settings: SFTPSettings, clock: IReactorTime, endpoint: IStreamClientEndpoint
    ) -> None:
        """
        @param settings: the options, checked.
        @param clock: the time source for timeouts.
        @param endpoint: how to reach the server; its C{connect} is called
            each time a connection is needed.
        """
        self.settings = settings
        self._clock = clock
        self._endpoint = endpoint
        self._session: _Session | None = None
        self._waiting: list[Deferred[_Session]] = []
        self._connecting: Deferred[_Session] | None = None
        self._uploads: dict[str, _Upload] = {}
        root = settings.root
        self._prefix = "" if root in ("", ".") else root if root.endswith("/") else root + "/"

    # -- the connection -----------------------------------------------------

    def _connected(self) -> Deferred[_Session]:
        """
        The session, connecting if there is none: every call waiting
        meanwhile gets the same one.
        """
        if self._session is not None and self._session.alive:
            return succeed(self._session)
        waiter: Deferred[_Session] = Deferred()
        self._waiting.append(waiter)
        if self._connecting is None:
            self._connecting = Deferred.fromCoroutine(self._connect())
            self._connecting.addTimeout(self.settings.timeout, self._clock)
            self._connecting.addBoth(self._connection_done)
        return waiter

    async def _connect(self) -> _Session:
        factory = _ClientFactory(self.settings, self._clock)
        transport = await self._endpoint.connect(factory)
        assert isinstance(transport, _ClientTransport)
        return await transport.ready

    def _connection_done(self, result: _Session | Failure) -> None:
        self._connecting = None
        if isinstance(result, Failure):
            result = Failure(self._connection_error(result))
        else:
            self._session = result
            _log.info(
                "storage plugin sftp: connected to {where} as {user}",
                where=self.settings.where,
                user=self.settings.username,
            )
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _connection_error(self, reason: Failure) -> BaseException:
        where = self.settings.where
        error = reason.value
        if isinstance(error, StoragePluginError):
            return error
        if isinstance(error, defer.TimeoutError):
            return ServiceError(
                f"could not connect to the SSH server {where} and start SFTP within "
                f"{self.settings.timeout:g} s"
            )
        if isinstance(error, (ConnectError, ConnectionClosed)):
            return ServiceError(f"cannot connect to the SSH server {where}: {error}")
        return error  # type: ignore[return-value]

    def close(self) -> Deferred[None]:
        return self.disconnect()

    def disconnect(self) -> Deferred[None]:
        """
        Close the connection to the server, if there is one (a later call
        connects again).  The host calls it (as L{close}) when it stops.

        @return: a Deferred that fires once the connection is closed.
        """
        if self._connecting is not None:
            self._connecting.cancel()
        if self._session is None:
            return succeed(None)
        return self._session.close()

    # -- running calls ------------------------------------------------------

    def _run(self, what: str, work: Callable[[], Awaitable[_T]]) -> Deferred[_T]:
        return Deferred.fromCoroutine(self._translating(what, work))

    async def _translating(self, what: str, work: Callable[[], Awaitable[_T]]) -> _T:
        """
        Run C{work}, and report what goes wrong as this contract's errors.
        """
        where = self.settings.where
        try:
            return await work()
        except StoragePluginError:
            raise
        except SFTPError as e:
            detail = e.message or f"status {e.code}"
            if e.code == FX_PERMISSION_DENIED:
                raise DriverError(f"{what}: permission denied by {where} ({detail})") from e
            if e.code == FX_NO_SUCH_FILE:
                raise DriverError(f"{what}: no such file or directory on {where}") from e
            if e.code in _DRIVER_CODES:
                raise DriverError(f"{what}: {where} refused: {detail}") from e
            raise ServiceError(f"{what}: {where} failed: {detail}") from e
        except NotImplementedError as e:
            # The server answered "unsupported": the host must not take it
            # for a method this backend lacks.
            raise DriverError(f"{what}: {where} does not support it ({e})") from e
        except EOFError as e:
            raise ServiceError(f"{what}: {where} answered 'end of file' out of turn") from e
        except (ConnectionClosed, ConchError) as e:
            session = self._session
            why = session.why_lost if session is not None and session.why_lost else str(e)
            raise ServiceError(f"{what}: lost the connection to {where}: {why}") from e

    # -- paths --------------------------------------------------------------

    def _parts(self, key: str) -> tuple[str, ...]:
        parts = split_key(key)
        if parts[-1].endswith(UPLOAD_SUFFIX):
            raise DriverError(f"{key!r:.200} ends like a file being uploaded")
        return parts

    def _join(self, parts: Sequence[str]) -> bytes:
        return (self._prefix + "/".join(parts)).encode("utf-8")

    def _path(self, key: str) -> bytes:
        return self._join(self._parts(key))

    def _staging(self, key: str) -> bytes:
        parts = self._parts(key)
        return self._join((*parts[:-1], f".{parts[-1]}{UPLOAD_SUFFIX}"))

    def _directories(self, key: str) -> list[bytes]:
        """
        The directories that hold C{key}'s file, from the top down.
        """
        text = self._prefix + "/".join(self._parts(key)[:-1])
        lead = "/" if text.startswith("/") else ""
        names = [name for name in text.split("/") if name not in ("", ".")]
        return [(lead + "/".join(names[: n + 1])).encode("utf-8") for n in range(len(names))]

    # -- requests -----------------------------------------------------------

    async def _stat(self, session: _Session, path: bytes) -> dict[str, Any] | None:
        """
        A path's attributes, or C{None} if there is nothing there.
        """
        try:
            attributes: dict[str, Any] = await session.client.getAttrs(path, 1)
        except SFTPError as e:
            if e.code == FX_NO_SUCH_FILE:
                return None
            raise
        return attributes

    async def _make_directories(self, session: _Session, key: str) -> None:
        """
        Create the directories that hold C{key}'s file, where missing.
        """
        for directory in self._directories(key):
            attributes = await self._stat(session, directory)
            if attributes is None:
                try:
                    await session.client.makeDirectory(directory, {})
                    continue
                except SFTPError:
                    # Made meanwhile by someone else?
                    attributes = await self._stat(session, directory)
                    if attributes is None:
                        raise
            if not _is_directory(attributes):
                name = directory.decode("utf-8", "replace")
                raise DriverError(
                    f"cannot store {key!r:.200}: {name!r} is a file on "
                    f"{self.settings.where}, not a directory"
                )

    async def _read(self, handle: Any, offset: int, size: int | None) -> bytes:
        """
        Read C{size} bytes from C{offset}, or up to the end of the file if
        C{size} is C{None}; fewer at the end of the file.

        Requests go out L{IN_FLIGHT} at a time.  A server may answer a read
        with fewer bytes than asked for before the end: what follows such a
        short answer is asked again.
        """
        parts = []
        position = offset
        end = None if size is None else offset + size
        while end is None or position < end:
            batch = PIECE * IN_FLIGHT if end is None else min(end - position, PIECE * IN_FLIGHT)
            asked = [
                (at, min(PIECE, position + batch - at))
                for at in range(position, position + batch, PIECE)
            ]
            pieces = await _settle(_read_piece(handle, at, length) for at, length in asked)
            for (_, length), piece in zip(asked, pieces, strict=True):
                parts.append(piece)
                position += len(piece)
                if len(piece) < length:
                    break
            else:
                continue
            if not piece:
                break
        return b"".join(parts)

    async def _write(self, handle: Any, offset: int, data: bytes) -> None:
        """
        Write C{data} at C{offset}, L{IN_FLIGHT} requests at a time.
        """
        view = memoryview(data)
        for batch in range(0, len(data), PIECE * IN_FLIGHT):
            await _settle(
                handle.writeChunk(offset + at, bytes(view[at : at + PIECE]))
                for at in range(batch, min(len(data), batch + PIECE * IN_FLIGHT), PIECE)
            )

    async def _replace(self, session: _Session, source: bytes, target: bytes) -> None:
        """
        Rename C{source} onto C{target}, replacing any file there: at once
        with L{POSIX_RENAME}, else by removing C{target} first.
        """
        if session.posix_rename:
            await session.client.extendedRequest(POSIX_RENAME, NS(source) + NS(target))
            return
        try:
            await session.client.removeFile(target)
        except SFTPError as e:
            if e.code != FX_NO_SUCH_FILE:
                raise
        await session.client.renameFile(source, target)

    # -- uploads ------------------------------------------------------------

    def _upload(self, key: str) -> _Upload:
        return self._uploads.setdefault(key, _Upload())

    async def _locked(self, key: str, work: Callable[[_Upload], Awaitable[_T]]) -> _T:
        """
        Run C{work} on the upload of C{key}, once the calls before it on the
        same upload are done; then forget the upload if there is nothing to
        remember of it.
        """
        upload = self._upload(key)
        await upload.lock.acquire()
        try:
            return await work(upload)
        finally:
            upload.lock.release()
            idle = upload.handle is None and upload.expected is None and not upload.committing
            if idle and not upload.lock.locked and self._uploads.get(key) is upload:
                del self._uploads[key]

    async def _close_staged(self, upload: _Upload) -> None:
        handle, upload.handle, upload.session = upload.handle, None, None
        if handle is not None:
            try:
                await handle.close()
            except (ConnectionClosed, ConchError, SFTPError):
                pass

    async def _begin(self, session: _Session, key: str, upload: _Upload) -> None:
        """
        Create the staged file, empty, and keep it open.
        """
        await self._close_staged(upload)
        path = self._staging(key)
        flags = FXF_WRITE | FXF_CREAT | FXF_TRUNC
        try:
            handle = await session.client.openFile(path, flags, {})
        except SFTPError as e:
            if e.code != FX_NO_SUCH_FILE:
                raise
            await self._make_directories(session, key)
            handle = await session.client.openFile(path, flags, {})
        upload.handle, upload.session, upload.staged = handle, session, 0
        upload.committing = False

    async def _staged_handle(self, session: _Session, key: str, upload: _Upload) -> Any:
        """
        The staged file, open for writing: opened again, and its size asked,
        if the connection changed.
        """
        if upload.handle is not None and upload.session is session:
            return upload.handle
        await self._close_staged(upload)
        try:
            handle = await session.client.openFile(self._staging(key), FXF_WRITE, {})
        except SFTPError as e:
            if e.code == FX_NO_SUCH_FILE:
                raise DriverError(f"no upload of {key!r:.200} is in progress") from None
            raise
        attributes = await handle.getAttrs()
        upload.handle, upload.session, upload.staged = handle, session, attributes["size"]
        return handle

    async def _sync(self, session: _Session, key: str, upload: _Upload) -> None:
        """
        Have the server write the staged file to its disk, if it can be
        asked to (L{FSYNC}), so that the file renamed onto the target is
        whole even if the server crashes just after.
        """
        if not session.fsync:
            return
        handle = upload.handle if upload.session is session else None
        opened = None
        if handle is None:
            try:
                handle = opened = await session.client.openFile(self._staging(key), FXF_READ, {})
            except SFTPError as e:
                if e.code == FX_NO_SUCH_FILE:
                    return
                raise
        try:
            # A ClientFile keeps its handle as an SSH string, as the request needs it.
            await session.client.extendedRequest(FSYNC, handle.handle)
        finally:
            if opened is not None:
                _close_later(opened)

    async def _commit(self, session: _Session, key: str, upload: _Upload) -> None:
        """
        Check the staged file's size, have it written to the server's disk,
        and rename it onto the target.
        """
        await self._sync(session, key, upload)
        await self._close_staged(upload)
        staging, target = self._staging(key), self._path(key)
        attributes = await self._stat(session, staging)
        if attributes is None:
            if upload.committing and await self._stat(session, target) is not None:
                # The rename was done, but its answer lost with the connection.
                upload.committing = False
                return
            raise DriverError(f"no upload of {key!r:.200} is in progress")
        written = attributes["size"]
        if upload.expected is not None and written != upload.expected:
            raise DriverError(
                f"the upload of {key!r:.200} has {written} bytes, not the "
                f"{upload.expected} announced"
            )
        upload.committing = True
        await self._replace(session, staging, target)
        upload.committing = False
        upload.expected = None

    def set_chunk_size(self, size: int) -> int:
        return size

    def start_upload(self, key: str, size: int | None) -> Deferred[str | None]:
        async def start(upload: _Upload) -> None:
            session = await self._connected()
            await self._begin(session, key, upload)
            upload.expected = size

        async def work() -> None:
            self._parts(key)
            await self._locked(key, start)

        return self._run(f"starting the upload of {key!r:.200}", work)

    def upload_chunk(self, key: str, offset: int, data: bytes) -> Deferred[None]:
        async def write(upload: _Upload) -> None:
            session = await self._connected()
            handle = await self._staged_handle(session, key, upload)
            if offset > upload.staged:
                raise DriverError(
                    f"a chunk of {key!r:.200} at offset {offset} would leave a hole "
                    f"after the {upload.staged} bytes written"
                )
            await self._write(handle, offset, data)
            upload.staged = max(upload.staged, offset + len(data))

        async def work() -> None:
            self._parts(key)
            await self._locked(key, write)

        return self._run(f"writing {len(data)} bytes of {key!r:.200} at {offset}", work)

    def end_upload(self, key: str) -> Deferred[None]:
        async def end(upload: _Upload) -> None:
            session = await self._connected()
            await self._commit(session, key, upload)

        async def work() -> None:
            self._parts(key)
            await self._locked(key, end)

        return self._run(f"ending the upload of {key!r:.200}", work)

    def abort_upload(self, key: str) -> Deferred[None]:
        async def abort(upload: _Upload) -> None:
            session = await self._connected()
            await self._close_staged(upload)
            try:
                await session.client.removeFile(self._staging(key))
            except SFTPError as e:
                if e.code != FX_NO_SUCH_FILE:
                    raise
            upload.expected = None
            upload.committing = False

        async def work() -> None:
            self._parts(key)
            await self._locked(key, abort)

        return self._run(f"aborting the upload of {key!r:.200}", work)

    def restart_upload(
        self, key: str, offset: int, upload_id: str | None = None
    ) -> Deferred[int]:
        async def restart(upload: _Upload) -> int:
            # What the server holds is what is safe, whatever the journal
            # says: bytes written past the journal's offset came from the
            # same positions of the same source.
            session = await self._connected()
            attributes = await self._stat(session, self._staging(key))
            if attributes is not None:
                size: int = attributes["size"]
                if upload.session is session:
                    upload.staged = size
                return size
            await self._begin(session, key, upload)
            return 0

        async def work() -> int:
            self._parts(key)
            return await self._locked(key, restart)

        return self._run(f"resuming the upload of {key!r:.200}", work)

    def upload_file(self, key: str, data: bytes) -> Deferred[None]:
        async def store(upload: _Upload) -> None:
            session = await self._connected()
            await self._begin(session, key, upload)
            await self._write(upload.handle, 0, data)
            upload.expected = len(data)
            await self._commit(session, key, upload)

        async def work() -> None:
            self._parts(key)
            await self._locked(key, store)

        return self._run(f"storing {key!r:.200}", work)

    # -- reading ------------------------------------------------------------

    async def _open_for_reading(self, session: _Session, key: str) -> Any:
        try:
            return await session.client.openFile(self._path(key), FXF_READ, {})
        except SFTPError as e:
            if e.code == FX_NO_SUCH_FILE:
                raise StorageKeyNotFoundError(key) from None
            raise

    async def _reading(self, key: str, offset: int, size: int | None) -> bytes:
        path = self._path(key)
        session = await self._connected()
        handle = await self._open_for_reading(session, key)
        try:
            return await self._read(handle, offset, size)
        except SFTPError as e:
            # Reading a directory fails with the generic failure.
            if e.code == FX_FAILURE:
                attributes = await self._stat(session, path)
                if attributes is None or not _is_file(attributes):
                    raise StorageKeyNotFoundError(key) from None
            raise
        finally:
            _close_later(handle)

    def get_chunk(self, key: str, offset: int, size: int) -> Deferred[bytes]:
        return self._run(
            f"reading {key!r:.200} at {offset}", lambda: self._reading(key, offset, size)
        )

    def get_file(self, key: str) -> Deferred[bytes]:
        return self._run(f"reading {key!r:.200}", lambda: self._reading(key, 0, None))

    # -- files --------------------------------------------------------------

    def delete_file(self, key: str) -> Deferred[None]:
        async def work() -> None:
            path = self._path(key)
            session = await self._connected()
            try:
                await session.client.removeFile(path)
            except SFTPError as e:
                if e.code != FX_NO_SUCH_FILE:
                    raise

        return self._run(f"deleting {key!r:.200}", work)

    def move_file(self, old_key: str, new_key: str) -> Deferred[None]:
        async def work() -> None:
            old, new = self._path(old_key), self._path(new_key)
            if old == new:
                return
            session = await self._connected()
            attributes = await self._stat(session, old)
            if attributes is None or not _is_file(attributes):
                raise StorageKeyNotFoundError(old_key)
            try:
                await self._replace(session, old, new)
            except SFTPError as e:
                if e.code != FX_NO_SUCH_FILE:
                    raise
                await self._make_directories(session, new_key)
                await self._replace(session, old, new)

        return self._run(f"renaming {old_key!r:.200} to {new_key!r:.200}", work)

    async def _file_size(self, key: str) -> int | None:
        path = self._path(key)
        session = await self._connected()
        attributes = await self._stat(session, path)
        if attributes is None or not _is_file(attributes):
            return None
        size: int = attributes["size"]
        return size

    def exists(self, key: str) -> Deferred[bool]:
        async def work() -> bool:
            return await self._file_size(key) is not None

        return self._run(f"looking for {key!r:.200}", work)

    def size(self, key: str) -> Deferred[int | None]:
        return self._run(f"asking the size of {key!r:.200}", lambda: self._file_size(key))


verifyClass(IStorageBackend, SFTPBackend)


def make_backend(
    options: dict[str, Any],
    clock: IReactorTime,
    endpoint: IStreamClientEndpoint | None = None,
) -> SFTPBackend:
    """
    Make the C{sftp} plugin's backend.

    @param options: its options, each checked and converted.
    @param clock: the time source for timeouts; the node's reactor (the
        host is given it), which also makes the connections.
    @param endpoint: how to reach the server; by default, TCP to C{host}
        and C{port} through C{clock} if it is a reactor (else the global
        one: for tools that pass a bare clock).

    @raise ConfigError: the options cannot work together.
    """
    settings = settings_from_options(options)
    if endpoint is None:
        from twisted.internet.endpoints import HostnameEndpoint
        from twisted.internet.interfaces import IReactorTCP

        reactor: Any = clock
        if not IReactorTCP.providedBy(clock):
            from twisted.internet import reactor
        endpoint = HostnameEndpoint(
            reactor, settings.host, settings.port, timeout=max(1, round(settings.timeout))
        )
    return SFTPBackend(settings, clock, endpoint)
