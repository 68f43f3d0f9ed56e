"""
Tor for the node: L{TorProvider} launches a tor of the node's own (its
state kept in the node's state directory, so that its guards and
directory information survive restarts), or connects to an existing tor's
control port; then publishes the node's onion service, with a key kept
between runs so that the C{.onion} address stays the same, and connects to
peers through tor's SOCKS port.

It is a service.  Starting tor, or connecting to it, happens in the
background; L{TorProvider.when_ready} waits for it, and so do the endpoints
the provider hands out, so they may be used before tor is ready.  Failing
is not an error of the service: it says why once, in words, in the log and
in L{TorProvider.status}, and everything that waits for tor fails with a
L{p2pblob.errors.TorError} saying the same.

C{txtorcon} is optional (C{pip install 'p2pblob[tor]'}) and imported only
when the service starts.  How a tor is launched, and the C{txtorcon} faults
worked around doing so, are in L{p2pblob.reach._tor_process}.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.errors import (
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
from p2pblob.reach._tor_onion import (
    OnionEndpoint,
    OnionPort,
    TorClientEndpoint,
    publish_onion,
)
from p2pblob.reach._tor_process import exit_words
from p2pblob.reach._tor_run import TorRun, close_run, launch_tor

__all__ = ["TorProvider", "load_txtorcon"]

_log = Logger()

# how often a tor's bootstrap progress is asked for while it is not ready
BOOTSTRAP_POLL_SECONDS = 0.5


def load_txtorcon(
    importer: Callable[[str], ModuleType] = importlib.import_module,
) -> ModuleType:
    """
    Import C{txtorcon}.

    @raise TorUnavailableError: it is not installed.
    """
    try:
        return importer("txtorcon")
    except ImportError:
        raise TorUnavailableError() from None


@implementer(ITorProvider)
class TorProvider(Service):
    """
    Tor for the node: a launched tor or an existing one, the node's onion
    service, and connections through tor.

    @ivar onion_address: the onion service's address, or C{None}.
    @ivar onion_port: its virtual port, or C{None}.
    @ivar problem: why Tor cannot be used, in words, or C{None}.
    """

    def __init__(
        self,
        reactor: Any,
        state_dir: Path,
        *,
        control: str | None = None,
        tor_binary: str | None = None,
        tor_options: Sequence[tuple[str, str]] = (),
        start_timeout: float = 120.0,
        txtorcon_loader: Callable[[], ModuleType] = load_txtorcon,
    ) -> None:
        """
        @param reactor: the reactor (time, TCP, Unix sockets, processes).
        @param state_dir: where the onion service key is kept (in
            C{onion_service_key}) and, for a launched tor, its data
            directory (C{tor}).
        @param control: a client endpoint string for an existing tor's
            control port (C{"tcp:127.0.0.1:9051"},
            C{"unix:/run/tor/control"}), or C{None} to launch a tor.
        @param tor_binary: the tor program to launch; C{None} to look for
            it.
        @param tor_options: more torrc options for a launched tor, as
            C{(key, value)} pairs in order (a key may repeat).
        @param start_timeout: how long tor may take to start (or be
            connected to) and bootstrap, in seconds.
        @param txtorcon_loader: imports C{txtorcon} (or gives a fake).

        @raise ValueError: C{control} is not an endpoint string, or
            C{start_timeout} is not positive.
        """
        if start_timeout <= 0:
            raise ValueError(f"the Tor start timeout must be positive, not {start_timeout}")
        self._control_endpoint: IStreamClientEndpoint | None = None
        if control is not None:
            try:
                self._control_endpoint = clientFromString(reactor, control)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{control!r} is not a client endpoint for tor's control port: {e}"
                ) from e
        self._reactor = reactor
        self._state_dir = Path(state_dir)
        self._control = control
        self._tor_binary = tor_binary
        self._tor_options = tuple(tor_options)
        self._start_timeout = start_timeout
        self._load = txtorcon_loader
        self.onion_address: str | None = None
        self.onion_port: int | None = None
        self.problem: str | None = None
        self._state = "stopped"
        self._ever_started = False
        self._error: TorError | None = None
        self._run: TorRun | None = None
        self._tor: Any = None
        self._version: str | None = None
        self._socks: str | None = None
        self._socks_endpoint: IStreamClientEndpoint | None = None
        self._waiting: list[Deferred[None]] = []
        self._publishing: Deferred[IListeningPort] | None = None
        self._published: OnionPort | None = None

    @property
    def method(self) -> str:
        """
        C{"launched"} for a tor of the node's own, C{"control"} for an
        existing one.
        """
        return "launched" if self._control is None else "control"

    # -- ITorProvider ------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._ever_started = True
        self._error = None
        self.problem = None
        run = self._run = TorRun()
        self._state = "starting"
        if self._control is None:
            _log.info(
                "Starting Tor: launching a tor of this node's own (its state is in {path})",
                path=str(self._data_dir),
            )
        else:
            _log.info("Starting Tor: connecting to tor's control port {control}",
                      control=self._control)
        run.watchdog = self._reactor.callLater(self._start_timeout, self._timed_out, run)
        run.starting = Deferred.fromCoroutine(self._start(run))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    def when_ready(self) -> Deferred[None]:
        if self._state == "ready":
            return succeed(None)
        if self._state == "failed" and self._error is not None:
            return fail(self._error)
        if self._state == "stopped" and self._ever_started:
            return fail(TorNotRunningError())
        waiter: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        return waiter

    def onion_endpoint(self, port: int) -> IStreamServerEndpoint:
        if not 0 < port < 65536:
            raise ValueError(f"an onion service port must be 1-65535, not {port}")

        def listen(factory: IProtocolFactory) -> Deferred[IListeningPort]:
            return self._listen_onion(port, factory)

        return OnionEndpoint(listen)

    def client_endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        return TorClientEndpoint(self._route, host, port)

    def status(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "state": self._state,
            "control": self._control,
            "onion_address": self.onion_address,
            "onion_port": self.onion_port,
            "socks": self._socks,
            "version": self._version,
            "problem": self.problem,
        }

    # -- starting ----------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        return self._state_dir / "tor"

    async def _start(self, run: TorRun) -> None:
        try:
            txtorcon = self._load()
            if self._control_endpoint is None:
                tor = await launch_tor(
                    self._reactor, txtorcon, run, self._tor_binary, self._data_dir,
                    self._tor_options, lambda reason: self._tor_exited(run, reason),
                )
            else:
                tor = await self._connect(txtorcon)
            run.tor = tor
            run.phase = "bootstrapping"
            tor.protocol.when_disconnected().addBoth(self._disconnected, run)
            await self._bootstrap(tor, run)
            run.phase = "asking"
            listeners = await tor.protocol.get_info("net/listeners/socks")
        except Exception as e:
            # (a start cancelled by its watchdog, by tor exiting or by
            # stopping fails with whatever the cancelled call makes of it)
            if run.error is not None:
                error: TorError = run.error
            elif isinstance(e, TorError):
                error = e
            elif isinstance(e, CancelledError):
                error = TorNotRunningError()
            else:
                error = TorStartError(str(e) or type(e).__name__, run.last_words())
        else:
            run.phase = "done"
            self._ready(run, tor, parse_listeners(listeners.get("net/listeners/socks", "")))
            return
        finally:
            if run.watchdog is not None and run.watchdog.active():
                run.watchdog.cancel()
        run.phase = "done"
        await close_run(self._reactor, run)
        if self._run is run and self.running:
            self._failed(error)

    async def _connect(self, txtorcon: ModuleType) -> Any:
        try:
            return await txtorcon.connect(self._reactor, self._control_endpoint)
        except CancelledError:
            raise
        except Exception as e:
            raise TorStartError(
                f"could not use tor's control port {self._control}: {str(e) or type(e).__name__}"
            ) from e

    async def _bootstrap(self, tor: Any, run: TorRun) -> None:
        while True:
            answer = await tor.protocol.get_info("status/bootstrap-phase")
            phase = parse_bootstrap(answer.get("status/bootstrap-phase", ""))
            if phase.progress != run.progress:
                _log.debug("Tor bootstrapped {progress}%: {words}",
                           progress=phase.progress, words=phase.words)
            run.progress, run.summary = phase.progress, phase.words
            if phase.progress >= 100:
                return
            await deferLater(self._reactor, BOOTSTRAP_POLL_SECONDS)

    def _timed_out(self, run: TorRun) -> None:
        words = run.last_words()
        if run.phase == "connecting":
            what = "open its control port" if self._control is None else "answer on its control port"
            run.error = TorStartError(
                f"tor did not {what} within {self._start_timeout:g} seconds", words
            )
        elif run.phase == "bootstrapping":
            run.error = TorBootstrapError(self._start_timeout, run.progress, run.summary, words)
        else:
            run.error = TorStartError(
                f"tor did not answer within {self._start_timeout:g} seconds", words
            )
        if run.starting is not None:
            run.starting.cancel()

    def _tor_exited(self, run: TorRun, reason: Failure) -> None:
        words = exit_words(reason)
        run.ended(words)
        if run.quitting:
            return
        if run.phase != "done":
            run.error = TorStartError(words, run.last_words())
            if run.starting is not None:
                run.starting.cancel()
        elif self._run is run and self._state == "ready":
            self._lost(run, TorLostError(f"{words}{_said(run.last_words())}"))

    def _ready(self, run: TorRun, tor: Any, listeners: list[str]) -> None:
        self._tor = tor
        self._version = None if tor.version is None else str(tor.version)
        self._socks = listeners[0] if listeners else None
        self._socks_endpoint = None
        if self._socks is not None:
            self._socks_endpoint = socks_endpoint(self._reactor, self._socks)
        self._state = "ready"
        self.problem = None
        if self._control is None:
            where = f"launched tor {self._version}"
        else:
            where = f"tor {self._version} at {self._control}"
        _log.info("Tor is ready ({where}); SOCKS port {socks}", where=where, socks=self._socks)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def _disconnected(self, result: object, run: TorRun) -> None:
        run.disconnected = True
        if run.quitting:
            return
        if run.process is not None:
            reason = "tor closed its control connection"
        else:
            reason = f"the connection to tor's control port {self._control} closed"
        if run.phase != "done":
            run.error = TorStartError(reason, run.last_words())
            if run.starting is not None:
                run.starting.cancel()
        elif self._run is run and self._state == "ready":
            self._lost(run, TorLostError(reason))

    def _lost(self, run: TorRun, error: TorLostError) -> None:
        run.tor = None
        self._tor = None
        self._socks_endpoint = None
        if self._published is not None:
            self._published.tor_gone()
        self.onion_address = None
        self.onion_port = None
        self._failed(error)

    def _failed(self, error: TorError) -> None:
        self._error = error
        self.problem = str(error)
        self._state = "failed"
        _log.error(
            "{problem}. Nothing goes through Tor until the node is restarted.",
            problem=self.problem,
        )
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(error)

    # -- stopping ----------------------------------------------------------

    async def _stop(self) -> None:
        run = self._run
        if run is not None and run.starting is not None:
            if run.phase != "done":
                run.error = TorNotRunningError("Tor was stopped before it was ready")
                run.starting.cancel()
            # (it never fails; once started, it has already closed tor)
            await run.starting
        if self._publishing is not None:
            self._publishing.cancel()
        if self._published is not None:
            await self._published.stopListening()
        if run is not None and not run.closed:
            await close_run(self._reactor, run)
        self._tor = None
        self._socks_endpoint = None
        self._socks = None
        if self._state != "stopped":
            _log.info("Tor stopped")
        self._state = "stopped"
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(TorNotRunningError())

    # -- onion service and connections -------------------------------------

    def _listen_onion(self, port: int, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        if self._publishing is not None or self._published is not None:
            return fail(OnionServiceError(
                "this node already publishes one (it publishes one at most)"
            ))
        publishing = Deferred.fromCoroutine(self._publish(port, factory))
        self._publishing = publishing

        def done(result: object) -> object:
            if self._publishing is publishing:
                self._publishing = None
            return result

        publishing.addBoth(done)
        return publishing

    async def _publish(self, port: int, factory: IProtocolFactory) -> IListeningPort:
        try:
            await self.when_ready()
            _log.info("Publishing the onion service on port {port} (tor uploads its"
                      " descriptor; this takes a few seconds)", port=port)
            onion = await publish_onion(
                self._reactor, self._tor, self._state_dir / "onion_service_key", port,
                factory, self._unpublished,
            )
        except CancelledError:
            if not self.running:
                raise TorNotRunningError() from None
            raise
        except OnionServiceError as e:
            _log.error("{problem}", problem=str(e))
            raise
        self._published = onion
        self.onion_address = onion.onion_address
        self.onion_port = port
        _log.info("onion service published: {address}:{port}", address=onion.onion_address,
                  port=port)
        return onion

    def _unpublished(self, onion: OnionPort) -> None:
        if self._published is onion:
            self._published = None
            self.onion_address = None
            self.onion_port = None
        _log.info("onion service {address} removed", address=onion.onion_address)

    def _route(self, host: str, port: int) -> Deferred[IStreamClientEndpoint]:
        async def route() -> IStreamClientEndpoint:
            await self.when_ready()
            try:
                endpoint: IStreamClientEndpoint = self._tor.stream_via(
                    host, port, socks_endpoint=self._socks_endpoint
                )
            except ValueError as e:
                raise TorError(f"cannot connect to {host}:{port} through Tor: {e}") from e
            return endpoint

        return Deferred.fromCoroutine(route())


def _said(last_words: str | None) -> str:
    return f" (tor said: {last_words})" if last_words else ""
