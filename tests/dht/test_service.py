"""
The DHT service on real UDP sockets of 127.0.0.1: its port follows the peer
server's, its node id and contacts outlive a restart, and a port it cannot
have is a clear error.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pblob.dht.constants import HASH_LENGTH
from p2pblob.dht.contacts_file import load_contacts
from p2pblob.dht.service import (
    CONTACTS_FILE,
    NODE_ID_FILE,
    DHTService,
    guessed_udp_port,
    load_node_id,
)
from p2pblob.errors import ConfigError


class GuessedPortTests(SynchronousTestCase):
    def test_lbry_rule(self) -> None:
        """
        LBRY's downloaders ping UDP 4444 + n for TCP 3333 + n (n < 67), the
        same number otherwise.
        """
        self.assertEqual(
            [guessed_udp_port(p) for p in (3333, 3340, 3399, 3400, 3332, 4444, 40000)],
            [4444, 4451, 4510, 3400, 3332, 4444, 40000],
        )


class NodeIdTests(SynchronousTestCase):
    def test_made_once_then_kept(self) -> None:
        directory = Path(self.mktemp())
        node_id = load_node_id(directory)
        self.assertEqual(len(node_id), HASH_LENGTH)
        self.assertEqual(load_node_id(directory), node_id)
        self.assertEqual((directory / NODE_ID_FILE).read_text().strip(), node_id.hex())

    def test_malformed_replaced(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / NODE_ID_FILE).write_text("not hex at all\n")
        node_id = load_node_id(directory)
        self.assertEqual(len(node_id), HASH_LENGTH)
        self.assertEqual(load_node_id(directory), node_id)

    def test_short_replaced(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / NODE_ID_FILE).write_text("abcd\n")
        self.assertEqual(len(load_node_id(directory)), HASH_LENGTH)


class _Reactor:
    """
    The real reactor, except that a service giving up does not stop it
    (it would stop the test run).
    """

    running = True

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class DHTServiceTests(TestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()

    def tcp_port(self) -> Any:
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port

    def service(self, directory: Path, peer_port: Any, **kw: Any) -> DHTService:
        service = DHTService(self.reactor, directory, succeed(peer_port), **kw)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    def test_udp_port_follows_tcp_port(self) -> None:
        """
        By default the DHT listens on the peer server's interface and port
        number (LBRY downloaders assume so); C{port} overrides it.
        """
        tcp = self.tcp_port()
        service = self.service(Path(self.mktemp()), tcp, allow_loopback=True)
        self.assertEqual(service.udp_address, ("127.0.0.1", tcp.getHost().port))
        other = self.service(Path(self.mktemp()), self.tcp_port(), port=0)
        assert other.udp_address is not None
        self.assertNotEqual(other.udp_address[1], 0)

    def test_port_taken(self) -> None:
        """
        A UDP port already in use stops the node with an error that says
        which port and what to do.
        """
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        number = taken.getsockname()[1]
        service = DHTService(self.reactor, Path(self.mktemp()), succeed(self.tcp_port()), port=number)
        failures: list[Failure] = []
        service.ready.addErrback(failures.append)
        service.startService()
        self.addCleanup(service.stopService)
        [failure] = failures
        error = failure.trap(ConfigError) and failure.value
        self.assertIn(f"UDP 127.0.0.1:{number}", str(error))
        self.assertIn("--dht-port", str(error))
        self.assertTrue(self.reactor.stopped)
        self.flushLoggedErrors()

    async def wait_until(self, condition: Any, timeout: float = 10.0) -> None:
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("timed out")
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    def test_rejoins_through_saved_contacts(self) -> Deferred[None]:
        """
        A node that joined through a bootstrap node saves its contacts when
        it stops; started again with no bootstrap node at all, it joins
        through them, with the same node id.
        """

        async def run() -> None:
            first = self.service(Path(self.mktemp()), self.tcp_port(), allow_loopback=True)
            assert first.udp_address is not None
            directory = Path(self.mktemp())
            second = self.service(
                directory, self.tcp_port(), bootstrap=[first.udp_address], allow_loopback=True
            )
            assert second.node is not None
            node_id = second.node.node_id
            await self.wait_until(lambda: second.node is not None and second.node.joined)
            await second.stopService()
            saved = load_contacts(directory / CONTACTS_FILE)
            self.assertEqual([(h, p) for h, p, _ in saved], [first.udp_address])
            # (loopback contacts saved by our node are accepted: it only
            # admitted them because it was allowed to)
            again = self.service(directory, self.tcp_port())
            assert again.node is not None
            self.assertEqual(again.node.node_id, node_id)
            self.assertEqual(again.node.bootstrap, [])
            await self.wait_until(lambda: again.node is not None and again.node.joined)

        return Deferred.fromCoroutine(run())
