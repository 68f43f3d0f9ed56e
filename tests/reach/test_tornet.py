"""
The private Tor network of L{tests.reach._tornet} carries an onion service
end to end: txtorcon, connected to a client tor's ControlPort, publishes an
ephemeral v3 service for a local echo server, and bytes sent to the
C{.onion} through that tor's SocksPort come back.

Everything stays on 127.0.0.1.  The test needs C{tor}, C{tor-gencert} and
C{txtorcon}; without them it is skipped, unless C{P2PBLOB_REQUIRE_TOR} is
set (as CI sets it): then it fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.wire import Echo
from twisted.trial.unittest import TestCase

from tests.reach import _tornet
from tests.reach._tor_testing import (
    connect_with_retries,
    echo_round_trip,
    need_tor,
)

_log = Logger()

ONION_PORT = 80


class OnionRoundTripTests(TestCase):
    """
    An onion service on the private network, reached through Tor.
    """

    timeout = 300

    def setUp(self) -> None:
        need_tor(self)
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.network = _tornet.TorNetwork(directory, authorities=3, relays=1, clients=1)
        self.addCleanup(self.network.stop)
        began = time.monotonic()
        self.network.start(timeout=180)
        _log.info(
            "private Tor network up in {seconds:.1f} s ({steps})",
            seconds=time.monotonic() - began,
            steps=", ".join(f"{step} {took:.1f} s" for step, took in self.network.timings.items()),
        )

    def test_echo_through_onion_service(self) -> Deferred[None]:
        """
        Bytes sent to an ephemeral v3 onion service through the client's
        SocksPort reach the local echo server behind it and come back.
        """
        return Deferred.fromCoroutine(self._echo_through_onion_service())

    async def _echo_through_onion_service(self) -> None:
        import txtorcon

        client = self.network.clients[0]
        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo)
        )
        self.addCleanup(echo.stopListening)

        began = time.monotonic()
        tor = await txtorcon.connect(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", client.control_port)
        )
        self.addCleanup(tor.quit)
        connected = time.monotonic() - began

        began = time.monotonic()
        onion = await tor.create_onion_service(
            [(ONION_PORT, f"127.0.0.1:{echo.getHost().port}")], version=3
        )
        self.addCleanup(onion.remove)
        published = time.monotonic() - began
        self.assertTrue(onion.hostname.endswith(".onion"), onion.hostname)
        self.assertEqual(len(onion.hostname), 56 + len(".onion"))

        began = time.monotonic()
        collector, attempts = await connect_with_retries(
            reactor,
            txtorcon.TorClientEndpoint(
                onion.hostname, ONION_PORT,
                socks_endpoint=TCP4ClientEndpoint(reactor, "127.0.0.1", client.socks_port),
            ),
        )
        reached = time.monotonic() - began
        await echo_round_trip(self, reactor, collector)
        _log.info(
            "txtorcon.connect {connected:.2f} s, onion service published in {published:.2f} s, "
            "reached in {reached:.2f} s ({attempts} attempts)",
            connected=connected, published=published, reached=reached, attempts=attempts,
        )
