"""
Fakes of C{txtorcon}, of a tor process and of its control connection, for
the tests of L{p2pblob.reach.tor} (L{tests.reach.test_tor}).

They behave as C{txtorcon} 26.6 does where the provider depends on it:
C{launch} connects once to the control socket when tor prints "Opening
Control listener" and logs an error if that fails, the launched process
protocol logs C{RuntimeError("Tor exited with error-code N")} as an error
whenever tor exits, C{create_onion_service} fires only once the descriptor
is uploaded.  C{FakesTests} checks them against the installed C{txtorcon}.
"""
from __future__ import annotations

import base64
import hashlib
import inspect
import ipaddress
import os
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress, _ProcessAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessProtocol,
    IProcessTransport,
    IReactorProcess,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Attribute, Interface, implementer

from p2pblob.errors import (
    TorUnavailableError,
)
from p2pblob.reach.tor import load_txtorcon

try:
    from txtorcon.interface import ITorControlProtocol
    from txtorcon.onion import IOnionService
except ImportError:  # the fakes still work; FakesTests says they went unchecked

    class ITorControlProtocol(Interface):  # type: ignore[no-redef]
        """Stands in for C{txtorcon.interface.ITorControlProtocol}."""

    class IOnionService(Interface):  # type: ignore[no-redef]
        """Stands in for C{txtorcon.onion.IOnionService}."""


class ITorAsUsed(Interface):
    """
    What the provider uses of a C{txtorcon.Tor}.  (C{txtorcon}'s own C{ITor}
    declares C{self} in its methods, so no class passes zope.interface's
    checks against it, not even C{txtorcon.Tor}; this one is checked
    against the fake and against C{txtorcon.Tor}.)
    """

    protocol = Attribute("the control protocol")
    process = Attribute("the process protocol of a launched tor, else None")
    version = Attribute("tor's version")

    def quit() -> Deferred[None]:
        """
        Close the control connection; have a launched tor exit.
        """

    def stream_via(host: str, port: int, tls: bool = False,
                   socks_endpoint: Any = None) -> IStreamClientEndpoint:
        """
        An endpoint that reaches C{(host, port)} through tor's SOCKS port.
        """

    def create_onion_service(ports: Any, private_key: Any = None, version: int = 3,
                             progress: Any = None, await_all_uploads: bool = False,
                             single_hop: Any = None, detach: Any = None) -> Deferred[Any]:
        """
        Publish an ephemeral onion service; fires once its descriptor is
        uploaded.
        """


VERSION = "0.4.9.11"
SOCKS = "127.0.0.1:9050"
ONION_PORT = 3333
TIMEOUT = 120.0


def bootstrap_line(percent: int, summary: str = "Done") -> str:
    tag = "done" if percent == 100 else "loading_descriptors"
    return f'NOTICE BOOTSTRAP PROGRESS={percent} TAG={tag} SUMMARY="{summary}"'


def onion_for(key: str) -> str:
    """
    The fake network's onion address for a key (the real one derives it
    from the key's public half; any function of the key will do here).
    """
    digest = hashlib.sha256(key.encode("ascii")).digest()
    return base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:56] + ".onion"


# ---------------------------------------------------------------------------
# A reactor that spawns fake processes and hands out TCP ports
# ---------------------------------------------------------------------------


@implementer(IProcessTransport)
class FakeProcessTransport:
    """
    A spawned process that does nothing until the test says it prints or
    exits.  It exits at the next reactor turn when sent C{TERM} (unless
    told to ignore it) or C{KILL}.
    """

    def __init__(self, reactor: TorTestReactor, protocol: Any, executable: str,
                 args: Any, pid: int) -> None:
        self._reactor = reactor
        self.protocol = protocol
        self.executable = executable
        self.args = list(args)
        self.pid: int | None = pid
        self.signals: list[str] = []
        self.ignore_term = False
        self.ended = False

    def exit(self, code: int | None = 0, signal: int | None = None) -> None:
        """
        The process ends with status C{code}, or killed by C{signal}.
        """
        if self.ended:
            return
        self.ended = True
        self.pid = None
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=code, signal=signal))
        self.protocol.processExited(reason)
        self.protocol.processEnded(reason)

    def signalProcess(self, signalID: str | int) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(str(signalID))
        if signalID == "KILL":
            self._reactor.callLater(0, self.exit, None, 9)
        elif signalID == "TERM" and not self.ignore_term:
            self._reactor.callLater(0, self.exit, 0)

    def closeStdin(self) -> None:
        pass

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def closeChildFD(self, descriptor: int) -> None:
        pass

    def writeToChild(self, childFD: int, data: bytes) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: Any) -> None:
        pass

    def getPeer(self) -> Any:
        return _ProcessAddress()

    def getHost(self) -> Any:
        return _ProcessAddress()


@implementer(IListeningPort)
class FakeListeningPort:
    """
    A TCP port the L{TorTestReactor} pretends to listen on.
    """

    def __init__(self, factory: Any, address: IPv4Address) -> None:
        self.factory = factory
        self.address = address
        self.listening = True

    def startListening(self) -> None:
        self.listening = True

    def stopListening(self) -> Deferred[None]:
        self.listening = False
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return self.address


@implementer(IReactorProcess)
class TorTestReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also spawns L{FakeProcessTransport}s and
    gives every TCP port it listens on a number of its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcessTransport] = []
        self.ports: list[FakeListeningPort] = []
        self._next_port = 40000

    def spawnProcess(self, processProtocol: Any, executable: Any, args: Any = (),
                     env: Any = None, path: Any = None, uid: Any = None, gid: Any = None,
                     usePTY: Any = False, childFDs: Any = None) -> FakeProcessTransport:
        transport = FakeProcessTransport(self, processProtocol, executable, args,
                                         4000 + len(self.processes))
        self.processes.append(transport)
        processProtocol.makeConnection(transport)
        return transport

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> FakeListeningPort:
        super().listenTCP(port, factory, backlog, interface)
        if port == 0:
            self._next_port += 1
            port = self._next_port
        listening = FakeListeningPort(factory, IPv4Address("TCP", interface or "0.0.0.0", port))
        self.ports.append(listening)
        return listening


def accept_unix(reactor: MemoryReactorClock, index: int = -1) -> None:
    """
    The Unix socket connection attempt C{index} succeeds.
    """
    path, factory, _, _ = reactor.unixClients[index]
    protocol = factory.buildProtocol(UNIXAddress(path))
    protocol.makeConnection(StringTransport())


def refuse_unix(reactor: MemoryReactorClock, index: int = -1) -> None:
    """
    The Unix socket connection attempt C{index} fails: nothing there yet.
    """
    path, factory, _, _ = reactor.unixClients[index]
    factory.clientConnectionFailed(None, Failure(ConnectError(string="No such file or directory")))


# ---------------------------------------------------------------------------
# A fake txtorcon
# ---------------------------------------------------------------------------


@implementer(ITorControlProtocol)
class FakeControlProtocol(Protocol):
    """
    A control connection to a fake tor: answers C{GETINFO} from L{info}
    (or holds the answers while L{hold} is set), and hangs up on C{QUIT}.
    """

    def __init__(self) -> None:
        self.version = VERSION
        self.info = {
            "status/bootstrap-phase": bootstrap_line(100),
            "net/listeners/socks": f'"{SOCKS}"',
        }
        self.hold = False
        self.held: list[Deferred[dict[str, str]]] = []
        self.asked: list[tuple[str, ...]] = []
        self.commands: list[str] = []
        self.lost = False
        self._watching: list[Deferred[None]] = []

    def get_info(self, *keys: str) -> Deferred[dict[str, str]]:
        self.asked.append(keys)
        if self.hold:
            waiter: Deferred[dict[str, str]] = Deferred()
            self.held.append(waiter)
            return waiter
        return succeed({key: self.info[key] for key in keys})

    def get_conf(self, *args: str) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def signal(self, signal_name: str) -> Deferred[Any]:
        self.commands.append(f"SIGNAL {signal_name}")
        return succeed("OK")

    def build_circuit(self, routers: Any) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def close_circuit(self, circuit: Any) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def add_event_listener(self, evt: str, callback: Any) -> Deferred[None]:
        return succeed(None)

    def quit(self) -> Deferred[str]:
        self.commands.append("QUIT")
        if not self.lost:
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.connectionLost(Failure(ConnectionDone()))
        return succeed("closing connection")

    def when_disconnected(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self.lost:
            waiter.errback(ConnectionDone())
        else:
            self._watching.append(waiter)
        return waiter

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self.lost:
            return
        self.lost = True
        watching, self._watching = self._watching, []
        for waiter in watching:
            # txtorcon's fires with a failure however the connection ended
            waiter.errback(reason)


class FakeTorProtocolFactory(Factory):
    """
    Stands for C{txtorcon.TorProtocolFactory}.
    """

    protocol = FakeControlProtocol

    def __init__(self, password_function: Callable[[], Any] = lambda: None) -> None:
        self.password_function = password_function


class FakeTorConfig:
    """
    Stands for an unattached C{txtorcon.TorConfig}: keeps the options set.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "options", {})

    def __setattr__(self, name: str, value: Any) -> None:
        self.options[name] = value


@implementer(IProcessProtocol)
class FakeTorProcess(ProcessProtocol):
    """
    Stands for C{txtorcon.TorProcessProtocol}, with its faults: it connects
    to the control socket once, when tor says it opens it, and logs an
    error when that fails or whenever tor exits.
    """

    def __init__(self, launch: FakeLaunch) -> None:
        self._launch = launch
        self._exits: list[Deferred[None]] = []
        self.cleaned_up = False
        self.attempted = False

    def outReceived(self, data: bytes) -> None:
        stdout = self._launch.kwargs["stdout"]
        if stdout is not None:
            stdout.write(data.decode("ascii"))
        if not self.attempted and b"Opening Control listener" in data:
            self.attempted = True
            connecting = self._launch.kwargs["connection_creator"]()
            connecting.addCallbacks(self._launch.connected, self._connection_failed)

    def _connection_failed(self, failure: Failure) -> None:
        log.err(failure)
        self.attempted = False

    def errReceived(self, data: bytes) -> None:
        stderr = self._launch.kwargs["stderr"]
        if stderr is not None:
            stderr.write(data)

    def quit(self) -> Deferred[None]:
        try:
            self.transport.signalProcess("TERM")  # type: ignore[union-attr]
        except ProcessExitedAlready:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._exits.append(waiter)
        return waiter

    def cleanup(self) -> None:
        self.cleaned_up = True

    def processExited(self, reason: Failure) -> None:
        exits, self._exits = self._exits, []
        for waiter in exits:
            waiter.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self.cleanup()
        error = RuntimeError(f"Tor exited with error-code {reason.value.exitCode}")
        log.err(error)
        if not self._launch.result.called:
            self._launch.result.errback(error)


class FakeLaunch:
    """
    One call of the fake C{txtorcon.launch}: a spawned fake tor, which the
    test makes print (L{say}, L{open_control}), bootstrap or exit.
    """

    def __init__(self, txtorcon: FakeTxtorcon, reactor: Any, kwargs: dict[str, Any]) -> None:
        self.txtorcon = txtorcon
        self.reactor = reactor
        self.kwargs = kwargs
        self.result: Deferred[FakeTor] = Deferred()
        self.tor: FakeTor | None = None
        self.protocol: FakeControlProtocol | None = None
        self.process = FakeTorProcess(self)
        binary = kwargs["tor_binary"]
        reactor.spawnProcess(self.process, binary, args=[binary], env={})

    @property
    def transport(self) -> FakeProcessTransport:
        transport: FakeProcessTransport = self.process.transport  # type: ignore[assignment]
        return transport

    def say(self, text: str) -> None:
        self.process.outReceived(text.encode("ascii"))

    def open_control(self) -> None:
        self.say("May 04 12:00:00.000 [notice] Opening Control listener on"
                 f" {self.kwargs['control_port'][5:]}\n")

    def connected(self, protocol: FakeControlProtocol) -> None:
        self.protocol = protocol

    def bootstrap(self, percent: int = 100, summary: str = "Done") -> None:
        self.kwargs["progress_updates"](percent, "tag", summary)
        if percent == 100 and not self.result.called:
            assert self.protocol is not None, "bootstrapped before connecting"
            self.tor = FakeTor(self.txtorcon, self.reactor, self.protocol, self.process)
            self.result.callback(self.tor)


@implementer(IOnionService)
class FakeOnionService:
    """
    Stands for C{txtorcon.EphemeralOnionService}.
    """

    def __init__(self, txtorcon: FakeTxtorcon, hostname: str, private_key: str,
                 ports: list[str]) -> None:
        self._txtorcon = txtorcon
        self.hostname = hostname
        self.private_key = private_key
        self.ports = ports
        self.removed = False

    def remove(self) -> Deferred[None]:
        self.removed = True
        self._txtorcon.onions.pop(self.hostname, None)
        return succeed(None)


@implementer(IStreamClientEndpoint)
class FakeStreamEndpoint:
    """
    What the fake C{Tor.stream_via} returns: connects at once.
    """

    def __init__(self, host: str, port: int, socks_endpoint: Any) -> None:
        self.host = host
        self.port = port
        self.socks_endpoint = socks_endpoint
        self.factories: list[Any] = []

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        self.factories.append(protocolFactory)
        return succeed(protocolFactory.buildProtocol(None))


@implementer(ITorAsUsed)
class FakeTor:
    """
    Stands for C{txtorcon.Tor}.
    """

    def __init__(self, txtorcon: FakeTxtorcon, reactor: Any, protocol: FakeControlProtocol,
                 process: FakeTorProcess | None = None) -> None:
        self._txtorcon = txtorcon
        self._reactor = reactor
        self.protocol = protocol
        self.process = process
        self.streams: list[FakeStreamEndpoint] = []

    @property
    def version(self) -> str:
        return self.protocol.version

    def quit(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._quit())

    async def _quit(self) -> None:
        await self.protocol.quit()
        if self.process is not None:
            await self.process.quit()

    def get_config(self) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def create_state(self) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def web_agent(self, pool: Any = None, socks_endpoint: Any = None,
                  tls_context_factory: Any = None) -> Any:
        raise NotImplementedError("not faked")

    def dns_resolve(self, hostname: str) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def dns_resolve_ptr(self, ip: str) -> Deferred[Any]:
        return fail(NotImplementedError("not faked"))

    def stream_via(self, host: str, port: int, tls: bool = False,
                   socks_endpoint: Any = None) -> FakeStreamEndpoint:
        try:
            numeric = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if not numeric.is_global:
                raise ValueError(f"'{host}' isn't going to work over Tor")
        endpoint = FakeStreamEndpoint(host, port, socks_endpoint)
        self.streams.append(endpoint)
        return endpoint

    def create_onion_service(self, ports: Any, private_key: Any = None, version: int = 3,
                             progress: Any = None, await_all_uploads: bool = False,
                             single_hop: Any = None, detach: Any = None) -> Deferred[Any]:
        return self._txtorcon.add_onion(ports, private_key, version, progress)


class FakeTxtorcon:
    """
    A fake C{txtorcon} module (L{module}, loaded by L{load}) and the Tor
    network its tors are on: the onion services published there.

    @ivar upload_at_once: whether a new onion service's descriptor is
        uploaded at once; if not, L{upload} does it.
    @ivar refuse: the error C{ADD_ONION} fails with, if any.
    """

    def __init__(self) -> None:
        self.launches: list[FakeLaunch] = []
        self.connected: list[FakeTor] = []
        self.onions: dict[str, FakeOnionService] = {}
        self.added: list[tuple[Any, Any, int]] = []
        self.keys_made = 0
        self.upload_at_once = True
        self.refuse: Exception | None = None
        self.found_tor: str | bytes | None = None
        self._uploads: list[tuple[FakeOnionService, Deferred[Any], Any]] = []
        module = ModuleType("txtorcon")
        module.launch = self.launch  # type: ignore[attr-defined]
        module.connect = self.connect  # type: ignore[attr-defined]
        module.TorConfig = FakeTorConfig  # type: ignore[attr-defined]
        module.TorProtocolFactory = FakeTorProtocolFactory  # type: ignore[attr-defined]
        module.util = SimpleNamespace(find_tor_binary=lambda: self.found_tor)  # type: ignore[attr-defined]
        self.module = module

    def load(self) -> ModuleType:
        return self.module

    def launch(self, reactor: Any, progress_updates: Any = None, control_port: Any = None,
               data_directory: Any = None, socks_port: Any = None,
               non_anonymous_mode: Any = None, stdout: Any = None, stderr: Any = None,
               timeout: Any = None, tor_binary: Any = None, user: Any = None,
               connection_creator: Any = None, kill_on_stderr: bool = True,
               _tor_config: Any = None) -> Deferred[FakeTor]:
        kwargs = dict(progress_updates=progress_updates, control_port=control_port,
                      data_directory=data_directory, socks_port=socks_port, stdout=stdout,
                      stderr=stderr, timeout=timeout, tor_binary=tor_binary,
                      connection_creator=connection_creator, kill_on_stderr=kill_on_stderr,
                      _tor_config=_tor_config)
        launch = FakeLaunch(self, reactor, kwargs)
        self.launches.append(launch)
        return launch.result

    def connect(self, reactor: Any, control_endpoint: Any = None,
                password_function: Any = None) -> Deferred[FakeTor]:
        connecting = control_endpoint.connect(FakeTorProtocolFactory())

        def connected(protocol: FakeControlProtocol) -> FakeTor:
            tor = FakeTor(self, reactor, protocol)
            self.connected.append(tor)
            return tor

        return connecting.addCallback(connected)

    def add_onion(self, ports: Any, private_key: Any, version: int, progress: Any) -> Deferred[Any]:
        self.added.append((ports, private_key, version))
        if self.refuse is not None:
            return fail(self.refuse)
        if private_key is None:
            self.keys_made += 1
            raw = hashlib.sha512(f"key {self.keys_made}".encode()).digest()
            key = "ED25519-V3:" + base64.b64encode(raw).decode("ascii")
        else:
            key = private_key
        hostname = onion_for(key)
        if hostname in self.onions:
            return fail(RuntimeError("550 Onion address collision"))
        lines = [f"{public} 127.0.0.1:{local}" for public, local in ports]
        service = FakeOnionService(self, hostname, key, lines)
        self.onions[hostname] = service
        uploaded: Deferred[Any] = Deferred()
        self._uploads.append((service, uploaded, progress))
        if self.upload_at_once:
            self.upload()
        return uploaded

    def upload(self) -> None:
        """
        Every onion service waiting for it gets its descriptor uploaded.
        """
        uploads, self._uploads = self._uploads, []
        for service, uploaded, progress in uploads:
            if progress is not None:
                progress(100.0, "wait_descriptor", "Successful upload to hsdir_0")
            uploaded.callback(service)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def messages(events: Any) -> list[str]:
    return [formatEvent(event) for event in events]


def installed_txtorcon(case: SynchronousTestCase) -> ModuleType:
    try:
        return load_txtorcon()
    except TorUnavailableError:
        if os.environ.get("P2PBLOB_REQUIRE_TOR"):
            case.fail("txtorcon is not installed but P2PBLOB_REQUIRE_TOR is set")
        raise case.skipTest("txtorcon is not installed") from None


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)
