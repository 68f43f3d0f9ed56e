"""
The node's onion service and its key, and the endpoints the Tor provider
hands out.

The key is what makes the onion address: tor makes one the first time the
service is published (C{ADD_ONION NEW:ED25519-V3}), the node keeps it in a
file only its user can read, and gives it back to tor at every later start,
so that the address stays the same.  A key file that cannot be read is an
error, never a reason to make a new key: that would change the address.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from p2pblob._durable import write_private_file
from p2pblob.errors import OnionKeyError, OnionServiceError

__all__ = [
    "KEY_PREFIX",
    "OnionEndpoint",
    "OnionPort",
    "TorClientEndpoint",
    "publish_onion",
    "read_key",
    "save_key",
]

_log = Logger()

KEY_PREFIX = "ED25519-V3:"

# an ed25519 key in tor's expanded form: a 32-byte scalar and 32 bytes of
# hash prefix
_KEY_BYTES = 64

# the only address the local end of the onion service listens on
LOOPBACK = "127.0.0.1"

# how long removing the service from tor may take before giving up on it
REMOVE_TIMEOUT = 10.0


def _check_key(text: str) -> str | None:
    """
    Why C{text} is not an onion service key, or C{None} if it is one.
    """
    if not text.startswith(KEY_PREFIX):
        return f"it does not start with {KEY_PREFIX}"
    blob = text[len(KEY_PREFIX):]
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "its key is not base64"
    if len(raw) != _KEY_BYTES:
        return f"its key is {len(raw)} bytes long, not {_KEY_BYTES}"
    return None


def read_key(path: Path) -> str | None:
    """
    The saved onion service key, as tor takes it (C{"ED25519-V3:..."}).

    @return: the key, or C{None} if the file does not exist.

    @raise OnionKeyError: the file cannot be read or holds no key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OnionKeyError(str(path), f"cannot read it: {e.strerror or e}") from e
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise OnionKeyError(str(path), "it is not text") from None
    problem = _check_key(text)
    if problem is not None:
        raise OnionKeyError(str(path), problem)
    return text


def save_key(path: Path, key: str) -> None:
    """
    Keep the onion service key in C{path}, readable by this user only
    (mode 0600): written to a temporary file, flushed to the disk, then
    renamed over C{path}, so that the file is never found half written.

    @raise OnionServiceError: it could not be saved.
    """
    problem = _check_key(key)
    if problem is not None:
        raise OnionServiceError(f"tor gave an onion service key that is unusable: {problem}")
    try:
        write_private_file(path, (key + "\n").encode("ascii"))
    except OSError as e:
        raise OnionServiceError(
            f"could not save its key in {path}: {e.strerror or e}"
        ) from e


@implementer(IListeningPort)
class OnionPort:
    """
    A published onion service: the local TCP port on 127.0.0.1 that tor
    forwards the service's connections to, and the service itself.

    @ivar onion_address: the service's address, C{"....onion"}.
    @ivar onion_port: its virtual port.
    """

    def __init__(
        self,
        clock: Any,
        local: IListeningPort,
        service: Any,
        onion_port: int,
        removed: Callable[[OnionPort], None],
    ) -> None:
        """
        @param clock: bounds the time removal may take.
        @param local: the local port.
        @param service: the C{txtorcon} onion service (with C{hostname} and
            C{remove()}).
        @param onion_port: its virtual port.
        @param removed: called once the service is removed.
        """
        self._clock = clock
        self._local = local
        self._service: Any = service
        self._removed = removed
        self._stopped: Deferred[None] | None = None
        self.onion_address: str = service.hostname
        self.onion_port = onion_port

    @property
    def local_port(self) -> int:
        """
        The port on 127.0.0.1 that tor forwards connections to.
        """
        port: int = self._local.getHost().port  # type: ignore[attr-defined]
        return port

    def tor_gone(self) -> None:
        """
        Tor went away, and the service with it: stopping will not ask tor
        to remove it.
        """
        self._service = None

    # -- IListeningPort ----------------------------------------------------

    def startListening(self) -> None:
        """
        It listens from the start; nothing to do.
        """

    def stopListening(self) -> Deferred[None]:
        """
        Remove the onion service from tor (C{DEL_ONION}), then stop the
        local port.

        @return: a Deferred that fires with C{None} once both are done; it
            does not fail (a tor that cannot remove the service is logged).
        """
        if self._stopped is None:
            self._stopped = Deferred.fromCoroutine(self._stop())
            return self._stopped
        return succeed(None)

    def getHost(self) -> IAddress:
        return self._local.getHost()

    async def _stop(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            removing: Deferred[Any] = maybeDeferred(service.remove)
            removing.addTimeout(REMOVE_TIMEOUT, self._clock)
            try:
                await removing
            except Exception as e:
                _log.warn(
                    "Could not remove the onion service {address} from tor: {error}",
                    address=self.onion_address,
                    error=str(e) or type(e).__name__,
                )
        await maybeDeferred(self._local.stopListening)
        self._removed(self)


async def publish_onion(
    reactor: Any,
    tor: Any,
    key_path: Path,
    onion_port: int,
    factory: IProtocolFactory,
    removed: Callable[[OnionPort], None],
) -> OnionPort:
    """
    Serve C{factory} as a version 3 onion service: listen on a free port of
    127.0.0.1, have tor forward the service's virtual port C{onion_port}
    there, with the key saved in C{key_path} (or a new one, then saved),
    and wait until tor has uploaded the service's descriptor.

    @param reactor: an L{twisted.internet.interfaces.IReactorTCP} and
        L{twisted.internet.interfaces.IReactorTime}.
    @param tor: a ready C{txtorcon.Tor}.
    @param removed: called when the service is removed.

    @raise OnionKeyError: the key file is unusable (it is left as it is).
    @raise OnionServiceError: tor refused the service, or its new key could
        not be saved.

    Cancelled while tor uploads the descriptor, the local port is closed,
    but the service stays with tor until the control connection closes
    (C{txtorcon} gives nothing back to remove it with); a new key made for
    it is not saved.
    """
    key = read_key(key_path)
    local: IListeningPort = reactor.listenTCP(0, factory, interface=LOOPBACK)
    local_port = local.getHost().port  # type: ignore[attr-defined]
    try:
        service = await tor.create_onion_service(
            [(onion_port, local_port)], private_key=key, version=3
        )
    except CancelledError:
        await maybeDeferred(local.stopListening)
        raise
    except Exception as e:
        await maybeDeferred(local.stopListening)
        whose = f" (with the key in {key_path})" if key is not None else ""
        raise OnionServiceError(f"tor refused it{whose}: {e}") from e
    if key is None:
        try:
            save_key(key_path, service.private_key)
        except OnionServiceError:
            await OnionPort(reactor, local, service, onion_port, _ignore).stopListening()
            raise
    return OnionPort(reactor, local, service, onion_port, removed)


def _ignore(port: OnionPort) -> None:
    """
    Nobody needs to know that this port was removed.
    """


@implementer(IStreamServerEndpoint)
class OnionEndpoint:
    """
    Listens as the node's onion service (see
    L{p2pblob.interfaces.ITorProvider.onion_endpoint}).
    """

    def __init__(self, listen: Callable[[IProtocolFactory], Deferred[IListeningPort]]) -> None:
        self._listen = listen

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._listen(protocolFactory)


@implementer(IStreamClientEndpoint)
class TorClientEndpoint:
    """
    Connects to a host through tor once tor is ready (see
    L{p2pblob.interfaces.ITorProvider.client_endpoint}).
    """

    def __init__(
        self,
        route: Callable[[str, int], Deferred[IStreamClientEndpoint]],
        host: str,
        port: int,
    ) -> None:
        """
        @param route: waits for tor, then gives the endpoint that reaches
            C{(host, port)} through it.
        """
        self._route = route
        self.host = host
        self.port = port

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> Any:
        endpoint = await self._route(self.host, self.port)
        return await endpoint.connect(factory)

    def __repr__(self) -> str:
        return f"<TorClientEndpoint {self.host}:{self.port}>"
