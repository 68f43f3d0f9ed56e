"""
L{p2pblob.reach.tor.TorProvider} on a private Tor network on 127.0.0.1
(L{tests.reach._tornet}): a provider that launches its own tor into the
network publishes an onion service for an echo server; a second provider,
connected to the network's client tor through its control port, reaches
that service with its client endpoint and gets the bytes back; restarted
with the same state directory, the first provider publishes the same onion
address again.

The test needs C{tor}, C{tor-gencert} and C{txtorcon}; without them it is
skipped, unless C{P2PBLOB_REQUIRE_TOR} is set (as C{.ci/run} sets it): then
it fails.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.wire import Echo
from twisted.trial.unittest import TestCase

from p2pblob.reach.tor import TorProvider
from tests.reach import _tornet
from tests.reach._tor_testing import (
    connect_with_retries,
    echo_round_trip,
    need_tor,
)

_log = Logger()

ONION_PORT = 3333
START_TIMEOUT = 120.0


class TorProviderNetworkTests(TestCase):
    """
    Two Tor providers on the private network: one launching its own tor
    and publishing an onion service, one using the network's client tor.
    """

    timeout = 400

    def setUp(self) -> None:
        need_tor(self)
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.network = _tornet.TorNetwork(directory, authorities=3, relays=1, clients=1)
        self.addCleanup(self.network.stop)
        began = time.monotonic()
        self.network.start(timeout=180)
        self.timings: dict[str, float] = {"network": time.monotonic() - began}

    def _state_dir(self) -> Path:
        # short, like the node's own (~/.p2pblob/tor): the control socket
        # then goes in the state directory itself
        path = Path(tempfile.mkdtemp(prefix="p2pblob-tor-test-"))
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    async def _timed(self, step: str, waiting: Deferred[Any]) -> Any:
        began = time.monotonic()
        result = await waiting
        self.timings[step] = time.monotonic() - began
        return result

    async def _start(self, provider: TorProvider, step: str) -> None:
        provider.startService()
        self.addCleanup(self._stop, provider)
        await self._timed(step, provider.when_ready())

    @staticmethod
    def _stop(provider: TorProvider) -> Deferred[None] | None:
        if provider.running:
            return provider.stopService()
        return None

    async def _publish(self, provider: TorProvider, step: str) -> IListeningPort:
        port: IListeningPort = await self._timed(
            step, provider.onion_endpoint(ONION_PORT).listen(Factory.forProtocol(Echo))
        )
        self.addCleanup(port.stopListening)
        return port

    async def _echo(self, endpoint: IStreamClientEndpoint, step: str) -> int:
        """
        Connect through C{endpoint} (retrying while the service settles),
        check that bytes come back, and close.

        @return: the number of connection attempts.
        """
        began = time.monotonic()
        collector, attempts = await connect_with_retries(reactor, endpoint)
        self.timings[step] = time.monotonic() - began
        await echo_round_trip(self, reactor, collector)
        await collector.closed
        return attempts

    def test_onion_round_trip_and_restart(self) -> Deferred[None]:
        """
        Bytes sent to the launched provider's onion service through the
        other provider come back; the onion address survives a restart.
        """
        return Deferred.fromCoroutine(self._round_trip_and_restart())

    async def _round_trip_and_restart(self) -> None:
        client = self.network.clients[0]
        state_dir = self._state_dir()

        launched = TorProvider(reactor, state_dir, tor_options=self.network.client_options(),
                               start_timeout=START_TIMEOUT)
        await self._start(launched, "launch")
        status = launched.status()
        self.assertEqual((status["method"], status["state"], status["problem"]),
                         ("launched", "ready", None))
        self.assertTrue(status["socks"].startswith("127.0.0.1:"), status)
        self.assertTrue((state_dir / "tor" / "control.socket").exists())

        port = await self._publish(launched, "publish")
        onion = launched.onion_address
        assert onion is not None
        self.assertEqual(len(onion), 56 + len(".onion"))
        self.assertEqual(launched.onion_port, ONION_PORT)
        self.assertEqual(port.getHost().host, "127.0.0.1")  # type: ignore[attr-defined]
        key_file = state_dir / "onion_service_key"
        self.assertEqual(key_file.stat().st_mode & 0o777, 0o600)

        connected = TorProvider(reactor, self._state_dir(),
                                control=f"tcp:127.0.0.1:{client.control_port}",
                                start_timeout=START_TIMEOUT)
        await self._start(connected, "connect")
        self.assertEqual(connected.status()["socks"], f"127.0.0.1:{client.socks_port}")
        attempts = await self._echo(connected.client_endpoint(onion, ONION_PORT), "reach")

        await self._timed("stop", launched.stopService())
        self.assertEqual(launched.status()["state"], "stopped")
        self.assertIsNone(launched.onion_address)

        again = TorProvider(reactor, state_dir, tor_options=self.network.client_options(),
                            start_timeout=START_TIMEOUT)
        await self._start(again, "relaunch")
        await self._publish(again, "republish")
        self.assertEqual(again.onion_address, onion)
        attempts_again = await self._echo(connected.client_endpoint(onion, ONION_PORT),
                                          "reach again")
        _log.info(
            "Tor provider on the private network: {timings} (connection attempts: {attempts},"
            " after the restart: {again})",
            timings=", ".join(f"{step} {took:.2f} s" for step, took in self.timings.items()),
            attempts=attempts, again=attempts_again,
        )
