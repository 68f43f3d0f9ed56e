"""
Tests for L{p2pblob.reach.tor}: the Tor provider against a fake C{txtorcon}
module (given through C{txtorcon_loader}), a fake tor process and fake
control connections, on a L{MemoryReactorClock}: no tor runs and no time
passes.  The fakes are in L{tests.reach._tor_fakes}; L{FakesTests} checks
them against the installed C{txtorcon}.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessProtocol,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface
from zope.interface.verify import verifyClass, verifyObject

import p2pblob
from p2pblob.errors import (
    OnionKeyError,
    OnionServiceError,
    TorBootstrapError,
    TorError,
    TorLostError,
    TorNotRunningError,
    TorStartError,
    TorUnavailableError,
)
from p2pblob.interfaces import ITorProvider
from p2pblob.reach._tor_control import parse_bootstrap, parse_listeners, socks_endpoint
from p2pblob.reach._tor_onion import read_key, save_key
from p2pblob.reach._tor_process import (
    RETRY_SECONDS,
    SpawnWatcher,
    Transcript,
    exit_words,
    tor_config,
)
from p2pblob.reach._tor_run import QUIT_TIMEOUT
from p2pblob.reach.tor import BOOTSTRAP_POLL_SECONDS, TorProvider, load_txtorcon

try:
    from txtorcon.interface import ITorControlProtocol
    from txtorcon.onion import IOnionService
except ImportError:  # the fakes still work; FakesTests says they went unchecked

    class ITorControlProtocol(Interface):  # type: ignore[no-redef]
        """Stands in for C{txtorcon.interface.ITorControlProtocol}."""

    class IOnionService(Interface):  # type: ignore[no-redef]
        """Stands in for C{txtorcon.onion.IOnionService}."""


from tests.reach._tor_fakes import (
    ONION_PORT,
    SOCKS,
    TIMEOUT,
    VERSION,
    FakeControlProtocol,
    FakeLaunch,
    FakeStreamEndpoint,
    FakeTor,
    FakeTorProcess,
    FakeTorProtocolFactory,
    FakeTxtorcon,
    ITorAsUsed,
    TorTestReactor,
    accept_unix,
    bootstrap_line,
    installed_txtorcon,
    messages,
    parameters,
    refuse_unix,
)


class _ProviderTestCase(SynchronousTestCase):
    """
    A fake reactor, a fake C{txtorcon} and a state directory short enough
    for a Unix socket path.
    """

    def setUp(self) -> None:
        self.reactor = TorTestReactor()
        self.txtorcon = FakeTxtorcon()
        self.state_dir = self.short_dir()

    def short_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="p2t"))
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    def provider(self, **kwargs: Any) -> TorProvider:
        kwargs.setdefault("txtorcon_loader", self.txtorcon.load)
        if "control" not in kwargs:
            kwargs.setdefault("tor_binary", sys.executable)
        kwargs.setdefault("start_timeout", TIMEOUT)
        state_dir = kwargs.pop("state_dir", self.state_dir)
        return TorProvider(self.reactor, state_dir, **kwargs)

    def launched(self, provider: TorProvider | None = None) -> tuple[TorProvider, FakeLaunch]:
        """
        A provider whose launched tor is ready.
        """
        if provider is None:
            provider = self.provider()
        provider.startService()
        launch = self.txtorcon.launches[-1]
        launch.open_control()
        accept_unix(self.reactor)
        launch.bootstrap()
        self.assertEqual(provider.status()["state"], "ready")
        return provider, launch

    def connected(self, provider: TorProvider | None = None) -> tuple[TorProvider, FakeControlProtocol]:
        """
        A provider connected to an existing, bootstrapped tor.
        """
        if provider is None:
            provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        protocol = self.accept_tcp()
        self.assertEqual(provider.status()["state"], "ready")
        return provider, protocol

    def accept_tcp(self, index: int = -1) -> FakeControlProtocol:
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        wrapper.makeConnection(StringTransport())
        protocol: FakeControlProtocol = wrapper._wrappedProtocol
        return protocol

    def stop(self, provider: TorProvider) -> None:
        """
        Stop the provider, letting a launched tor exit; it is stopped then.
        """
        stopping = provider.stopService()
        self.reactor.advance(0)
        self.assertIsNone(self.successResultOf(stopping))


# ---------------------------------------------------------------------------
# The fakes
# ---------------------------------------------------------------------------


class FakesTests(_ProviderTestCase):
    """
    The fakes provide the interfaces they stand for, and match the
    installed C{txtorcon} where the provider relies on it.
    """

    def test_fakes_provide_their_interfaces(self) -> None:
        """
        Every fake provides its interface (C{txtorcon}'s, when it has one
        that can be checked), and C{txtorcon.Tor} provides what the fake
        tor stands for.
        """
        txtorcon = installed_txtorcon(self)
        provider, launch = self.launched()
        assert launch.protocol is not None
        assert launch.tor is not None
        verifyObject(ITorAsUsed, launch.tor)
        verifyClass(ITorAsUsed, txtorcon.Tor, tentative=True)
        verifyObject(IReactorProcess, self.reactor)
        verifyObject(IReactorTime, self.reactor)
        verifyObject(IProcessTransport, launch.transport)
        verifyObject(IProcessProtocol, launch.process)
        verifyObject(ITorControlProtocol, launch.protocol)
        port = self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))
        verifyObject(IListeningPort, self.reactor.ports[-1])
        verifyObject(IOnionService, self.txtorcon.onions[port.onion_address])  # type: ignore[attr-defined]
        verifyObject(IStreamClientEndpoint, FakeStreamEndpoint("example.com", 80, None))

    def test_fakes_match_installed_txtorcon(self) -> None:
        """
        The fake functions and methods the provider calls take the same
        parameters as C{txtorcon}'s, and the module has every name the
        provider uses.
        """
        txtorcon = installed_txtorcon(self)
        # (the fake module's functions are methods of FakeTxtorcon: their
        # first parameter, self, is not the real functions')
        pairs = [
            (FakeTxtorcon.launch, txtorcon.launch, 1),
            (FakeTxtorcon.connect, txtorcon.connect, 1),
            (FakeTor.quit, txtorcon.Tor.quit, 0),
            (FakeTor.stream_via, txtorcon.Tor.stream_via, 0),
            (FakeTor.create_onion_service, txtorcon.Tor.create_onion_service, 0),
            (FakeTorProcess.quit, txtorcon.TorProcessProtocol.quit, 0),
            (FakeTorProcess.cleanup, txtorcon.TorProcessProtocol.cleanup, 0),
            (FakeTorProtocolFactory.__init__, txtorcon.TorProtocolFactory.__init__, 0),
        ]
        for fake, real, skip in pairs:
            self.assertEqual(parameters(fake)[skip:], parameters(real), fake)
        self.assertTrue(callable(txtorcon.util.find_tor_binary))
        self.assertTrue(callable(txtorcon.TorControlProtocol.when_disconnected))
        self.assertTrue(callable(txtorcon.TorControlProtocol.get_info))
        self.assertTrue(callable(txtorcon.EphemeralOnionService.remove))

    def test_tor_config_with_installed_txtorcon(self) -> None:
        """
        The configuration made for C{launch} gives tor each option on its
        command line, a repeated one as many times, in order.
        """
        txtorcon = installed_txtorcon(self)
        config = tor_config(txtorcon, [
            ("TestingTorNetwork", "1"),
            ("DirAuthority", "a orport=1 127.0.0.1:2 AAAA"),
            ("PathsNeededToBuildCircuits", "0.67"),
            ("DirAuthority", "b orport=3 127.0.0.1:4 BBBB"),
        ])
        self.assertEqual(list(config.config_args()), [
            ("TestingTorNetwork", "1"),
            ("DirAuthority", "a orport=1 127.0.0.1:2 AAAA"),
            ("DirAuthority", "b orport=3 127.0.0.1:4 BBBB"),
            ("PathsNeededToBuildCircuits", "0.67"),
        ])

    def test_provider_provides_interface(self) -> None:
        """
        L{TorProvider} provides L{ITorProvider}.
        """
        verifyClass(ITorProvider, TorProvider)
        verifyObject(ITorProvider, self.provider())
        verifyObject(ITorProvider, self.provider(control="unix:/run/tor/control"))


# ---------------------------------------------------------------------------
# txtorcon and tor missing
# ---------------------------------------------------------------------------


class UnavailableTests(_ProviderTestCase):
    """
    Without C{txtorcon} or without tor, the provider fails in words.
    """

    def test_load_txtorcon_missing(self) -> None:
        """
        L{load_txtorcon} turns an C{ImportError} into
        L{TorUnavailableError} with the pip command that installs it.
        """
        def importer(name: str) -> ModuleType:
            raise ImportError(f"No module named {name!r}")

        error = self.assertRaises(TorUnavailableError, load_txtorcon, importer)
        self.assertIn("pip install 'p2pblob[tor]'", str(error))

    def test_module_imports_without_txtorcon(self) -> None:
        """
        The module imports nothing of C{txtorcon} until it is used.
        """
        code = (
            "import sys; sys.modules['txtorcon'] = None\n"
            "import p2pblob.reach.tor\n"
            "from p2pblob.errors import TorUnavailableError\n"
            "try:\n"
            "    p2pblob.reach.tor.load_txtorcon()\n"
            "except TorUnavailableError as e:\n"
            "    print(e)\n"
        )
        root = str(Path(p2pblob.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=root)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertIn("pip install 'p2pblob[tor]'", done.stdout)

    def test_start_without_txtorcon(self) -> None:
        """
        Started without C{txtorcon}, the provider fails: its status and
        L{TorProvider.when_ready} say to install it, and the log says so
        once.
        """
        def missing() -> ModuleType:
            raise TorUnavailableError()

        provider = self.provider(txtorcon_loader=missing)
        with capturedLogs() as events:
            provider.startService()
        status = provider.status()
        self.assertEqual(status["state"], "failed")
        self.assertIn("pip install 'p2pblob[tor]'", status["problem"])
        failure = self.failureResultOf(provider.when_ready(), TorUnavailableError)
        self.assertEqual(str(failure.value), status["problem"])
        self.assertEqual(
            [m for m in messages(events) if "pip install" in m],
            [f"{status['problem']}. Nothing goes through Tor until the node is restarted."],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_named_tor_binary_missing(self) -> None:
        """
        A tor program that does not exist makes L{TorUnavailableError}
        naming it; nothing is launched.
        """
        provider = self.provider(tor_binary="/nonexistent/bin/tor")
        provider.startService()
        failure = self.failureResultOf(provider.when_ready(), TorUnavailableError)
        self.assertIn("/nonexistent/bin/tor", str(failure.value))
        self.assertEqual(provider.status()["state"], "failed")
        self.assertEqual(self.txtorcon.launches, [])

    def test_no_tor_binary_found(self) -> None:
        """
        With no tor on C{PATH} and none where C{txtorcon} looks, the error
        says to install tor.
        """
        empty = self.short_dir()
        self.patch(os, "environ", dict(os.environ, PATH=str(empty)))
        provider = self.provider(tor_binary=None)
        provider.startService()
        failure = self.failureResultOf(provider.when_ready(), TorUnavailableError)
        self.assertIn("install tor", str(failure.value))
        self.assertEqual(self.txtorcon.launches, [])

    def test_tor_binary_found_by_txtorcon(self) -> None:
        """
        With no tor on C{PATH}, the one C{txtorcon} finds (it also looks in
        C{/usr/sbin}; it gives C{bytes}) is launched.
        """
        empty = self.short_dir()
        self.patch(os, "environ", dict(os.environ, PATH=str(empty)))
        self.txtorcon.found_tor = b"/usr/sbin/tor"
        self.provider(tor_binary=None).startService()
        self.assertEqual(self.txtorcon.launches[0].kwargs["tor_binary"], "/usr/sbin/tor")


# ---------------------------------------------------------------------------
# Launching a tor
# ---------------------------------------------------------------------------


class LaunchTests(_ProviderTestCase):
    """
    A provider without a control endpoint launches a tor of its own.
    """

    def test_launch_arguments(self) -> None:
        """
        tor is launched with its data directory in the state directory
        (mode 0700), a Unix control socket there, the given program, the
        extra options (a repeated key as a list), and output kept rather
        than fatal.
        """
        options = [("TestingTorNetwork", "1"), ("DirAuthority", "a"), ("DirAuthority", "b")]
        provider = self.provider(tor_options=options)
        provider.startService()
        [launch] = self.txtorcon.launches
        data_dir = self.state_dir / "tor"
        kwargs = launch.kwargs
        self.assertEqual(kwargs["data_directory"], str(data_dir))
        self.assertEqual(kwargs["control_port"], f"unix:{data_dir / 'control.socket'}")
        self.assertEqual(kwargs["tor_binary"], sys.executable)
        self.assertFalse(kwargs["kill_on_stderr"])
        self.assertIsNone(kwargs["timeout"])
        self.assertEqual(kwargs["_tor_config"].options,
                         {"TestingTorNetwork": "1", "DirAuthority": ["a", "b"]})
        self.assertEqual(stat.S_IMODE(data_dir.stat().st_mode), 0o700)
        self.assertEqual(self.reactor.processes[0].executable, sys.executable)
        self.assertEqual(provider.status(), {
            "method": "launched", "state": "starting", "control": None,
            "onion_address": None, "onion_port": None, "socks": None, "version": None,
            "problem": None,
        })

    def test_ready(self) -> None:
        """
        Once the launched tor has bootstrapped, the provider is ready: it
        knows tor's version and SOCKS port, L{TorProvider.when_ready}
        fires, and the log says so once.
        """
        provider = self.provider()
        waiting = provider.when_ready()
        with capturedLogs() as events:
            self.launched(provider)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(provider.when_ready()))
        status = provider.status()
        self.assertEqual(status, {
            "method": "launched", "state": "ready", "control": None, "onion_address": None,
            "onion_port": None, "socks": SOCKS, "version": VERSION, "problem": None,
        })
        json.dumps(status)
        self.assertEqual(
            [m for m in messages(events) if m.startswith("Tor is ready")],
            [f"Tor is ready (launched tor {VERSION}); SOCKS port {SOCKS}"],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_control_socket_retried(self) -> None:
        """
        When the control socket is not there yet as tor says it opens it,
        the connection is tried again every 50 ms until it succeeds; no
        error is logged.
        """
        provider = self.provider()
        provider.startService()
        launch = self.txtorcon.launches[0]
        launch.open_control()
        for attempt in range(3):
            self.assertEqual(len(self.reactor.unixClients), attempt + 1)
            refuse_unix(self.reactor)
            self.reactor.advance(RETRY_SECONDS * 0.9)
            self.assertEqual(len(self.reactor.unixClients), attempt + 1)
            self.reactor.advance(RETRY_SECONDS * 0.2)
        self.assertEqual(len(self.reactor.unixClients), 4)
        self.assertEqual(
            {address for address, _, _, _ in self.reactor.unixClients},
            {str(self.state_dir / "tor" / "control.socket")},
        )
        accept_unix(self.reactor)
        launch.bootstrap()
        self.assertIsNone(self.successResultOf(provider.when_ready()))
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.unixClients), 4)

    def test_long_state_path(self) -> None:
        """
        When the state directory's path is too long for a Unix socket, the
        control socket goes in a private temporary directory, removed once
        tor has exited.
        """
        deep = self.state_dir / ("d" * 60) / ("e" * 60)
        provider, launch = self.launched(self.provider(state_dir=deep))
        socket = Path(launch.kwargs["control_port"][len("unix:"):])
        self.assertFalse(str(socket).startswith(str(deep)))
        self.assertLess(len(str(socket)), 100)
        self.assertEqual(stat.S_IMODE(socket.parent.stat().st_mode), 0o700)
        self.assertEqual(launch.kwargs["data_directory"], str(deep / "tor"))
        self.stop(provider)
        self.assertFalse(socket.parent.exists())

    def test_never_opens_control(self) -> None:
        """
        A tor that does not open its control port within the start timeout
        is stopped, and the provider fails with L{TorStartError} quoting
        what tor said.
        """
        provider = self.provider()
        provider.startService()
        launch = self.txtorcon.launches[0]
        launch.say("May 04 12:00:00.000 [notice] Tor 0.4.9.11 running on Linux.\n")
        launch.say("May 04 12:00:00.100 [warn] Something is odd.\n")
        self.reactor.advance(TIMEOUT - 1)
        self.assertEqual(provider.status()["state"], "starting")
        self.reactor.advance(1)
        self.assertEqual(launch.transport.signals, ["TERM"])
        self.reactor.advance(0)
        failure = self.failureResultOf(provider.when_ready(), TorStartError)
        self.assertIn("did not open its control port within 120 seconds", str(failure.value))
        self.assertIn("[warn] Something is odd.", str(failure.value))
        self.assertTrue(launch.process.cleaned_up)
        status = provider.status()
        self.assertEqual((status["state"], status["problem"]), ("failed", str(failure.value)))

    def test_never_opens_control_retrying(self) -> None:
        """
        Connection attempts that keep failing stop when the start times
        out, without an error logged.
        """
        provider = self.provider()
        provider.startService()
        self.txtorcon.launches[0].open_control()
        while self.reactor.seconds() < TIMEOUT:
            refuse_unix(self.reactor)
            self.reactor.advance(RETRY_SECONDS * 1.01)
        self.failureResultOf(provider.when_ready(), TorStartError)
        attempts = len(self.reactor.unixClients)
        self.assertGreater(attempts, TIMEOUT / RETRY_SECONDS * 0.9)
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.unixClients), attempts)

    def test_bootstrap_timeout(self) -> None:
        """
        A tor that connects but does not bootstrap within the start timeout
        is stopped, and the provider fails with L{TorBootstrapError} saying
        how far it got.
        """
        provider = self.provider()
        provider.startService()
        launch = self.txtorcon.launches[0]
        launch.open_control()
        accept_unix(self.reactor)
        launch.bootstrap(45, "Asking for relay descriptors")
        self.reactor.advance(TIMEOUT)
        self.reactor.advance(0)
        failure = self.failureResultOf(provider.when_ready(), TorBootstrapError)
        self.assertEqual((failure.value.progress, failure.value.summary),
                         (45, "Asking for relay descriptors"))
        self.assertIn("within 120 seconds: it got to 45% (Asking for relay descriptors)",
                      str(failure.value))
        self.assertEqual(launch.transport.signals, ["TERM"])
        self.assertTrue(launch.transport.ended)
        self.assertEqual(provider.status()["state"], "failed")

    def test_tor_exits_while_starting(self) -> None:
        """
        A tor that exits while starting makes L{TorStartError} with its
        exit status and its last complaints; C{txtorcon}'s logged error is
        avoided.
        """
        provider = self.provider()
        waiting = provider.when_ready()
        provider.startService()
        launch = self.txtorcon.launches[0]
        launch.say("May 04 12:00:00.000 [notice] Tor 0.4.9.11 running on Linux.\n"
                   "May 04 12:00:00.001 [warn] Failed to parse/validate config: Unknown"
                   " option 'Bogus'.  Failing.\n")
        launch.process.errReceived(b"[err] Reading config failed--see warnings above.\n")
        launch.transport.exit(1)
        failure = self.failureResultOf(waiting, TorStartError)
        self.assertEqual(str(failure.value), (
            "Tor could not start: tor exited with status 1 (tor said: [warn] Failed to"
            " parse/validate config: Unknown option 'Bogus'.  Failing. / [err] Reading config"
            " failed--see warnings above.)"
        ))
        self.assertTrue(launch.process.cleaned_up)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_quits_tor(self) -> None:
        """
        Stopping closes the control connection, has the launched tor exit
        and waits for it, without logging its exit as an error.
        """
        provider, launch = self.launched()
        assert launch.protocol is not None
        with capturedLogs() as events:
            stopping = provider.stopService()
            self.assertNoResult(stopping)
            self.assertEqual(launch.protocol.commands, ["QUIT"])
            self.assertEqual(launch.transport.signals, ["TERM"])
            self.reactor.advance(0)
        self.assertIsNone(self.successResultOf(stopping))
        self.assertTrue(launch.transport.ended)
        self.assertTrue(launch.process.cleaned_up)
        self.assertEqual(provider.status()["state"], "stopped")
        self.assertIsNone(provider.status()["socks"])
        self.assertEqual([m for m in messages(events) if "Tor" in m], ["Tor stopped"])
        self.failureResultOf(provider.when_ready(), TorNotRunningError)

    def test_stop_kills_stubborn_tor(self) -> None:
        """
        A launched tor that does not exit when asked is killed.
        """
        provider, launch = self.launched()
        launch.transport.ignore_term = True
        stopping = provider.stopService()
        self.reactor.advance(QUIT_TIMEOUT - 0.1)
        self.assertNoResult(stopping)
        self.assertEqual(launch.transport.signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(launch.transport.signals, ["TERM", "KILL"])
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(provider.status()["state"], "stopped")

    def test_stop_while_starting(self) -> None:
        """
        Stopped while tor starts, the provider stops tor; whatever waited
        for tor fails with L{TorNotRunningError}.
        """
        provider = self.provider()
        provider.startService()
        waiting = provider.when_ready()
        launch = self.txtorcon.launches[0]
        launch.open_control()
        stopping = provider.stopService()
        self.assertEqual(launch.transport.signals, ["TERM"])
        self.reactor.advance(0)
        self.assertIsNone(self.successResultOf(stopping))
        self.failureResultOf(waiting, TorNotRunningError)
        self.assertEqual(provider.status()["state"], "stopped")
        self.assertIsNone(provider.status()["problem"])
        self.reactor.advance(TIMEOUT)
        self.assertEqual(provider.status()["state"], "stopped")

    def test_tor_dies(self) -> None:
        """
        A launched tor that exits while ready makes the provider fail with
        L{TorLostError}.
        """
        provider, launch = self.launched()
        launch.say("May 04 12:00:00.000 [err] Something broke.\n")
        launch.transport.exit(None, 11)
        failure = self.failureResultOf(provider.when_ready(), TorLostError)
        self.assertEqual(str(failure.value), "Tor stopped working: tor was killed by signal 11"
                                             " (tor said: [err] Something broke.)")
        self.assertEqual(provider.status()["state"], "failed")
        self.stop(provider)

    def test_restart(self) -> None:
        """
        A stopped provider can be started again: it launches a new tor.
        """
        provider, _ = self.launched()
        self.stop(provider)
        self.launched(provider)
        self.assertEqual(len(self.txtorcon.launches), 2)


# ---------------------------------------------------------------------------
# Connecting to an existing tor
# ---------------------------------------------------------------------------


class ControlTests(_ProviderTestCase):
    """
    A provider with a control endpoint connects to that tor.
    """

    def test_bad_control_endpoint(self) -> None:
        """
        A control endpoint that is not an endpoint string is refused at
        once.
        """
        error = self.assertRaises(ValueError, self.provider, control="bogus:thing")
        self.assertIn("'bogus:thing'", str(error))

    def test_connect(self) -> None:
        """
        The provider connects to the control port given and is ready once
        tor says it has bootstrapped; nothing is launched.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        self.assertEqual(provider.status()["state"], "starting")
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 9051))
        self.accept_tcp()
        self.assertEqual(provider.status(), {
            "method": "control", "state": "ready", "control": "tcp:127.0.0.1:9051",
            "onion_address": None, "onion_port": None, "socks": SOCKS, "version": VERSION,
            "problem": None,
        })
        self.assertEqual(self.txtorcon.launches, [])
        self.assertEqual(self.reactor.processes, [])

    def test_unix_control(self) -> None:
        """
        A Unix socket control endpoint is connected to.
        """
        provider = self.provider(control="unix:/run/tor/control")
        provider.startService()
        [(path, _, _, _)] = self.reactor.unixClients
        self.assertEqual(path, "/run/tor/control")

    def test_waits_for_bootstrap(self) -> None:
        """
        Until tor says it has bootstrapped to 100%, the provider asks again
        every half second.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol: FakeControlProtocol = wrapper._wrappedProtocol
        protocol.info["status/bootstrap-phase"] = bootstrap_line(10, "Finishing handshake")
        wrapper.makeConnection(StringTransport())
        self.assertEqual(provider.status()["state"], "starting")
        self.reactor.advance(BOOTSTRAP_POLL_SECONDS)
        self.assertEqual(len(protocol.asked), 2)
        protocol.info["status/bootstrap-phase"] = bootstrap_line(100)
        self.reactor.advance(BOOTSTRAP_POLL_SECONDS)
        self.assertEqual(provider.status()["state"], "ready")
        self.assertEqual(protocol.asked, [("status/bootstrap-phase",)] * 3
                         + [("net/listeners/socks",)])

    def test_bootstrap_timeout(self) -> None:
        """
        A tor that does not bootstrap within the start timeout makes
        L{TorBootstrapError} with tor's own words; the control connection
        is closed.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol: FakeControlProtocol = wrapper._wrappedProtocol
        protocol.info["status/bootstrap-phase"] = (
            'WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"'
            ' WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3'
        )
        wrapper.makeConnection(StringTransport())
        self.reactor.pump([BOOTSTRAP_POLL_SECONDS] * int(TIMEOUT / BOOTSTRAP_POLL_SECONDS))
        failure = self.failureResultOf(provider.when_ready(), TorBootstrapError)
        self.assertIn("it got to 5% (Connecting to a relay: Connection refused)",
                      str(failure.value))
        self.assertEqual(protocol.commands, ["QUIT"])
        self.assertEqual(provider.status()["state"], "failed")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connection_lost_while_bootstrapping(self) -> None:
        """
        Losing the control connection before tor is ready makes
        L{TorStartError} at once; nothing is sent on the closed connection.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol: FakeControlProtocol = wrapper._wrappedProtocol
        protocol.hold = True
        wrapper.makeConnection(StringTransport())
        protocol.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(provider.when_ready(), TorStartError)
        self.assertIn("the connection to tor's control port tcp:127.0.0.1:9051 closed",
                      str(failure.value))
        self.assertEqual(protocol.commands, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_no_answer(self) -> None:
        """
        A tor that never answers makes the start time out.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        wrapper._wrappedProtocol.hold = True
        wrapper.makeConnection(StringTransport())
        self.reactor.advance(TIMEOUT)
        self.failureResultOf(provider.when_ready(), TorBootstrapError)

    def test_connection_refused(self) -> None:
        """
        A control port nobody listens on makes L{TorStartError} naming it.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        failure = self.failureResultOf(provider.when_ready(), TorStartError)
        self.assertIn("could not use tor's control port tcp:127.0.0.1:9051", str(failure.value))
        self.assertIn("Connection was refused", str(failure.value))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connect_timeout(self) -> None:
        """
        A control port that does not answer within the start timeout makes
        L{TorStartError}.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        self.reactor.advance(TIMEOUT)
        failure = self.failureResultOf(provider.when_ready(), TorStartError)
        self.assertIn("did not answer on its control port within 120 seconds",
                      str(failure.value))

    def test_connection_lost(self) -> None:
        """
        Losing the control connection while ready makes the provider fail
        with L{TorLostError}.
        """
        provider, protocol = self.connected()
        protocol.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(provider.when_ready(), TorLostError)
        self.assertIn("tcp:127.0.0.1:9051 closed", str(failure.value))
        self.stop(provider)
        self.assertEqual(protocol.commands, [])

    def test_stop(self) -> None:
        """
        Stopping closes the control connection (tor keeps running).
        """
        provider, protocol = self.connected()
        self.stop(provider)
        self.assertEqual(protocol.commands, ["QUIT"])
        self.assertEqual(provider.status()["state"], "stopped")


# ---------------------------------------------------------------------------
# The onion service
# ---------------------------------------------------------------------------


class OnionTests(_ProviderTestCase):
    """
    The onion endpoint publishes the node's onion service with a key kept
    between runs.
    """

    def setUp(self) -> None:
        super().setUp()
        self.key_path = self.state_dir / "onion_service_key"

    def test_endpoint(self) -> None:
        """
        The onion endpoint is an L{IStreamServerEndpoint}; ports must be
        1-65535.
        """
        provider = self.provider()
        verifyObject(IStreamServerEndpoint, provider.onion_endpoint(ONION_PORT))
        self.assertRaises(ValueError, provider.onion_endpoint, 0)
        self.assertRaises(ValueError, provider.onion_endpoint, 65536)

    def test_first_listen(self) -> None:
        """
        Listening before tor is ready waits; then the factory listens on
        127.0.0.1 only, tor makes a new key for the service, the key is
        saved (mode 0600), and the port comes once the descriptor is
        uploaded, with the onion address known.
        """
        self.txtorcon.upload_at_once = False
        provider = self.provider()
        factory = Factory()
        listening = provider.onion_endpoint(ONION_PORT).listen(factory)
        self.assertNoResult(listening)
        with capturedLogs() as events:
            self.launched(provider)
            [(port, listened, _, interface)] = self.reactor.tcpServers
            self.assertEqual((port, listened, interface), (0, factory, "127.0.0.1"))
            local = self.reactor.ports[0].address.port
            self.assertEqual(self.txtorcon.added, [([(ONION_PORT, local)], None, 3)])
            self.assertNoResult(listening)
            self.assertIsNone(provider.onion_address)
            self.txtorcon.upload()
        onion = self.successResultOf(listening)
        [address] = self.txtorcon.onions
        key = self.txtorcon.onions[address].private_key
        self.assertEqual((provider.onion_address, provider.onion_port), (address, ONION_PORT))
        self.assertEqual((onion.onion_address, onion.onion_port), (address, ONION_PORT))
        self.assertEqual(onion.getHost(), IPv4Address("TCP", "127.0.0.1", local))
        self.assertEqual(self.key_path.read_text(), key + "\n")
        self.assertEqual(stat.S_IMODE(self.key_path.stat().st_mode), 0o600)
        self.assertFalse(self.key_path.with_name("onion_service_key.tmp").exists())
        status = provider.status()
        self.assertEqual((status["onion_address"], status["onion_port"]), (address, ONION_PORT))
        self.assertIn(f"onion service published: {address}:{ONION_PORT}", messages(events))

    def test_same_address_after_restart(self) -> None:
        """
        A new provider with the same state directory gives tor the saved
        key: the onion address is the same.
        """
        first, _ = self.launched()
        onion = self.successResultOf(first.onion_endpoint(ONION_PORT).listen(Factory()))
        self.stop(first)
        self.assertTrue(self.txtorcon.onions == {})
        saved = self.key_path.read_text().strip()

        second, _ = self.launched(self.provider())
        again = self.successResultOf(second.onion_endpoint(ONION_PORT).listen(Factory()))
        self.assertEqual(again.onion_address, onion.onion_address)
        self.assertEqual(second.onion_address, onion.onion_address)
        self.assertEqual(self.txtorcon.added[-1][1], saved)
        self.assertEqual(self.txtorcon.keys_made, 1)
        self.assertEqual(self.key_path.read_text().strip(), saved)

    def test_corrupt_key(self) -> None:
        """
        A key file that holds no key makes L{OnionKeyError} naming the
        file; the file is left as it is, and nothing is published or left
        listening.
        """
        self.key_path.write_bytes(b"ED25519-V3:not*base64\n")
        os.utime(self.key_path, (1_000_000_000, 1_000_000_000))
        provider, _ = self.launched()
        failure = self.failureResultOf(
            provider.onion_endpoint(ONION_PORT).listen(Factory()), OnionKeyError
        )
        self.assertEqual(failure.value.path, str(self.key_path))
        self.assertIn(str(self.key_path), str(failure.value))
        self.assertIn("not base64", str(failure.value))
        self.assertEqual(self.key_path.read_bytes(), b"ED25519-V3:not*base64\n")
        self.assertEqual(self.key_path.stat().st_mtime, 1_000_000_000)
        self.assertEqual(self.txtorcon.added, [])
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertIsNone(provider.onion_address)

    def test_unreadable_key(self) -> None:
        """
        A key file that cannot be read makes L{OnionKeyError} too.
        """
        self.key_path.mkdir()
        provider, _ = self.launched()
        failure = self.failureResultOf(
            provider.onion_endpoint(ONION_PORT).listen(Factory()), OnionKeyError
        )
        self.assertIn("cannot read it", str(failure.value))
        self.assertTrue(self.key_path.is_dir())

    def test_key_not_saved(self) -> None:
        """
        When the new key cannot be saved, the service is removed again and
        listening fails with L{OnionServiceError}.
        """
        self.key_path.with_name("onion_service_key.tmp").mkdir()
        provider, _ = self.launched()
        failure = self.failureResultOf(
            provider.onion_endpoint(ONION_PORT).listen(Factory()), OnionServiceError
        )
        self.assertIn(f"could not save its key in {self.key_path}", str(failure.value))
        self.assertEqual(self.txtorcon.onions, {})
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertFalse(self.key_path.exists())
        self.assertIsNone(provider.onion_address)

    def test_tor_refuses(self) -> None:
        """
        When tor refuses the service, listening fails with
        L{OnionServiceError} and the local port is closed.
        """
        self.txtorcon.refuse = RuntimeError("512 Bad arguments")
        provider, _ = self.launched()
        failure = self.failureResultOf(
            provider.onion_endpoint(ONION_PORT).listen(Factory()), OnionServiceError
        )
        self.assertIn("tor refused it: 512 Bad arguments", str(failure.value))
        self.assertFalse(self.reactor.ports[0].listening)
        # a later attempt may succeed
        self.txtorcon.refuse = None
        self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))

    def test_one_service(self) -> None:
        """
        The node publishes one onion service at most.
        """
        provider, _ = self.launched()
        self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))
        failure = self.failureResultOf(
            provider.onion_endpoint(ONION_PORT + 1).listen(Factory()), OnionServiceError
        )
        self.assertIn("publishes one at most", str(failure.value))

    def test_listen_after_failure(self) -> None:
        """
        Listening when tor failed fails with tor's error.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        self.reactor.advance(TIMEOUT)
        self.failureResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()),
                             TorStartError)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_stop_listening(self) -> None:
        """
        Stopping the port removes the onion service from tor and closes the
        local port; the key stays.
        """
        provider, _ = self.launched()
        onion = self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))
        service = self.txtorcon.onions[onion.onion_address]
        self.assertIsNone(self.successResultOf(onion.stopListening()))
        self.assertTrue(service.removed)
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertIsNone(provider.onion_address)
        self.assertIsNone(provider.status()["onion_port"])
        self.assertTrue(self.key_path.exists())
        self.assertIsNone(self.successResultOf(onion.stopListening()))

    def test_stop_removes_service(self) -> None:
        """
        Stopping the provider removes the onion service before tor exits.
        """
        provider, launch = self.launched()
        onion = self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))
        service = self.txtorcon.onions[onion.onion_address]
        self.stop(provider)
        self.assertTrue(service.removed)
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertTrue(launch.transport.ended)
        self.assertIsNone(provider.status()["onion_address"])

    def test_stop_while_publishing(self) -> None:
        """
        Stopped while the descriptor is being uploaded, listening fails
        with L{TorNotRunningError} and the local port is closed.
        """
        self.txtorcon.upload_at_once = False
        provider, _ = self.launched()
        listening = provider.onion_endpoint(ONION_PORT).listen(Factory())
        self.stop(provider)
        self.failureResultOf(listening, TorNotRunningError)
        self.assertFalse(self.reactor.ports[0].listening)

    def test_tor_lost(self) -> None:
        """
        When tor goes away, the onion address is no longer reported, and
        stopping the port does not ask the gone tor to remove it.
        """
        provider, protocol = self.connected()
        onion = self.successResultOf(provider.onion_endpoint(ONION_PORT).listen(Factory()))
        service = self.txtorcon.onions[onion.onion_address]
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(provider.status()["onion_address"])
        self.assertIsNone(self.successResultOf(onion.stopListening()))
        self.assertFalse(service.removed)
        self.assertFalse(self.reactor.ports[0].listening)


class KeyFileTests(SynchronousTestCase):
    """
    Reading and saving the onion service key.
    """

    KEY = "ED25519-V3:" + base64.b64encode(bytes(range(64))).decode("ascii")

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def test_missing(self) -> None:
        """
        No key file: no key.
        """
        self.assertIsNone(read_key(self.path))

    def test_round_trip(self) -> None:
        """
        A saved key is read back, from a file only its owner can read.
        """
        save_key(self.path, self.KEY)
        self.assertEqual(read_key(self.path), self.KEY)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)

    def test_replaces(self) -> None:
        """
        Saving replaces an earlier file, whatever its mode.
        """
        self.path.write_text("old")
        self.path.chmod(0o644)
        save_key(self.path, self.KEY)
        self.assertEqual(self.path.read_text(), self.KEY + "\n")
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)

    def test_unpadded(self) -> None:
        """
        A key whose base64 lacks its padding is accepted.
        """
        self.path.write_text(self.KEY.rstrip("=") + "\n")
        self.assertEqual(read_key(self.path), self.KEY.rstrip("="))

    def test_bad_keys(self) -> None:
        """
        Anything but an ED25519-V3 key of 64 bytes is refused, saying why.
        """
        cases = {
            b"": "does not start with ED25519-V3:",
            b"RSA1024:abcd": "does not start with ED25519-V3:",
            b"ED25519-V3:" + base64.b64encode(bytes(32)): "32 bytes long, not 64",
            b"ED25519-V3:%%%%": "not base64",
            b"\xff\xfe": "not text",
        }
        for data, words in cases.items():
            self.path.write_bytes(data)
            error = self.assertRaises(OnionKeyError, read_key, self.path)
            self.assertIn(words, str(error))
            self.assertEqual(error.path, str(self.path))

    def test_bad_key_not_saved(self) -> None:
        """
        A key from tor that is not one is not saved.
        """
        self.assertRaises(OnionServiceError, save_key, self.path, "ED25519-V3:abc")
        self.assertFalse(self.path.exists())


# ---------------------------------------------------------------------------
# Connecting through tor
# ---------------------------------------------------------------------------


class ClientTests(_ProviderTestCase):
    """
    The client endpoint connects through tor's SOCKS port.
    """

    def test_endpoint(self) -> None:
        """
        It is an L{IStreamClientEndpoint}.
        """
        verifyObject(IStreamClientEndpoint, self.provider().client_endpoint("example.onion", 1))

    def test_before_ready(self) -> None:
        """
        Connecting before tor is ready waits for it, then connects through
        tor's SOCKS port.
        """
        provider = self.provider()
        factory = Factory.forProtocol(Protocol)
        connecting = provider.client_endpoint("abc.onion", ONION_PORT).connect(factory)
        self.assertNoResult(connecting)
        provider, launch = self.launched(provider)
        protocol = self.successResultOf(connecting)
        self.assertIsInstance(protocol, Protocol)
        assert launch.tor is not None
        [stream] = launch.tor.streams
        self.assertEqual((stream.host, stream.port, stream.factories), ("abc.onion", ONION_PORT,
                                                                       [factory]))
        self.assertIsInstance(stream.socks_endpoint, TCP4ClientEndpoint)
        self.assertEqual((stream.socks_endpoint._host, stream.socks_endpoint._port),
                         ("127.0.0.1", 9050))

    def test_after_failure(self) -> None:
        """
        Connecting when tor failed fails with tor's error.
        """
        provider = self.provider(tor_binary="/nonexistent/tor")
        provider.startService()
        self.failureResultOf(
            provider.client_endpoint("abc.onion", 1).connect(Factory()), TorUnavailableError
        )

    def test_fails_while_waiting(self) -> None:
        """
        Connections waiting for tor fail when it fails.
        """
        provider = self.provider(control="tcp:127.0.0.1:9051")
        provider.startService()
        connecting = provider.client_endpoint("abc.onion", 1).connect(Factory())
        self.reactor.advance(TIMEOUT)
        self.failureResultOf(connecting, TorStartError)

    def test_after_stop(self) -> None:
        """
        Connecting once stopped fails with L{TorNotRunningError}.
        """
        provider, _ = self.connected()
        self.stop(provider)
        self.failureResultOf(
            provider.client_endpoint("abc.onion", 1).connect(Factory()), TorNotRunningError
        )

    def test_private_address(self) -> None:
        """
        An address tor cannot reach makes a L{TorError} in words.
        """
        provider, _ = self.connected()
        failure = self.failureResultOf(
            provider.client_endpoint("192.168.1.5", 80).connect(Factory()), TorError
        )
        self.assertIn("cannot connect to 192.168.1.5:80 through Tor", str(failure.value))

    def test_cancel_wait(self) -> None:
        """
        Cancelling a connection that waits for tor stops only that wait.
        """
        provider = self.provider()
        connecting = provider.client_endpoint("abc.onion", 1).connect(Factory())
        connecting.cancel()
        self.failureResultOf(connecting)
        self.launched(provider)
        tor = self.txtorcon.launches[0].tor
        assert tor is not None
        self.assertEqual(tor.streams, [])


# ---------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------


class PartsTests(SynchronousTestCase):
    """
    The pure helpers of the provider.
    """

    def test_parse_bootstrap(self) -> None:
        """
        Bootstrap lines give tor's progress and words.
        """
        done = parse_bootstrap(bootstrap_line(100))
        self.assertEqual((done.progress, done.words), (100, "Done"))
        stuck = parse_bootstrap('WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting"'
                                ' WARNING="No route to host" REASON=NOROUTE')
        self.assertEqual((stuck.progress, stuck.words), (5, "Connecting: No route to host"))
        self.assertEqual(parse_bootstrap("").progress, 0)
        self.assertEqual(parse_bootstrap('PROGRESS=x SUMMARY="a').progress, 0)

    def test_listeners(self) -> None:
        """
        Listener lists are read, and SOCKS listeners become endpoints.
        """
        self.assertEqual(parse_listeners('"127.0.0.1:9050" "unix:/run/tor/socks"'),
                         ["127.0.0.1:9050", "unix:/run/tor/socks"])
        self.assertEqual(parse_listeners(""), [])
        reactor = MemoryReactorClock()
        self.assertEqual(socks_endpoint(reactor, "unix:/run/tor/socks")._path,  # type: ignore[union-attr]
                         "/run/tor/socks")
        self.assertEqual(socks_endpoint(reactor, "[::1]:9050")._host, "::1")  # type: ignore[union-attr]
        self.assertEqual(socks_endpoint(reactor, "127.0.0.1:9150")._port, 9150)  # type: ignore[union-attr]
        self.assertIsNone(socks_endpoint(reactor, "nonsense"))

    def test_transcript(self) -> None:
        """
        The transcript keeps tor's last complaints (or last lines), without
        time stamps, from output given in pieces, as text or bytes.
        """
        transcript = Transcript()
        self.assertIsNone(transcript.last_words())
        transcript.write("May 04 12:00:00.000 [notice] Tor starting.\nMay 04 12:00:00.0")
        transcript.write(b"01 [notice] Opening Control listener\n")
        self.assertEqual(transcript.last_words(),
                         "[notice] Tor starting. / [notice] Opening Control listener")
        transcript.write("May 04 12:00:01.000 [warn] Bad thing.\n[notice] fine\n[err] half")
        self.assertEqual(transcript.last_words(), "[warn] Bad thing. / [err] half")

    def test_exit_words(self) -> None:
        """
        Exits are told in words.
        """
        self.assertEqual(exit_words(Failure(ProcessDone(0))), "tor exited")
        self.assertEqual(exit_words(Failure(ProcessTerminated(exitCode=1))),
                         "tor exited with status 1")
        self.assertEqual(exit_words(Failure(ProcessTerminated(signal=9))),
                         "tor was killed by signal 9")

    def test_spawn_watcher(self) -> None:
        """
        The spawn watcher is the reactor, with the same interfaces, except
        that it shows the process protocol before spawning.
        """
        reactor = TorTestReactor()
        seen: list[tuple[Any, int]] = []
        watcher = SpawnWatcher(reactor, lambda protocol: seen.append((protocol,
                                                                      len(reactor.processes))))
        self.assertTrue(IReactorTime.providedBy(watcher))
        self.assertTrue(IReactorProcess.providedBy(watcher))
        self.assertIs(IReactorTime(watcher), watcher)
        protocol = ProcessProtocol()
        transport = watcher.spawnProcess(protocol, "tor", args=["tor"])
        self.assertEqual(seen, [(protocol, 0)])
        self.assertIs(reactor.processes[0], transport)
        self.assertEqual(watcher.seconds(), reactor.seconds())
        self.assertRaises(AttributeError, getattr, watcher, "nonexistent")
