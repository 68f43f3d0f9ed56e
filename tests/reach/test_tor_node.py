"""
Real C{twistd p2pblob} nodes on a private Tor network on 127.0.0.1
(L{tests.reach._tornet}): a stream published by a node that serves its
peer port as an onion service (with a tor it launches itself) is
downloaded by a Tor-only node (through the network's client tor), byte for
byte; the Tor-only node never opens a direct connection nor sends a
datagram, which listeners set as its peer and its DHT bootstrap node would
see (while a node using Tor only for onion peers does connect to them); the
onion address survives a restart; and, restarted on a loopback DHT as a
node whose IP address peers cannot reach, the onion service node announces
its onion address only, to p2pblob nodes, so that a node using Tor finds it
through the DHT alone and downloads the stream through Tor.

Without tor, tor-gencert or txtorcon the tests are skipped, unless
C{P2PBLOB_REQUIRE_TOR} is set (as C{.ci/run} sets it): then they fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.messages import (
    ONIONS_KEY,
    P2PBLOB_KEY,
    Response,
    decode_datagram,
    encode_datagram,
    find_value,
)
from p2pblob.dht.results import FindValueResult
from tests._process import TWISTD, environment, p2pblob
from tests.integration._nodes import Seeder, publish, random_file
from tests.reach import _tornet
from tests.reach._tor_testing import need_tor

ONION_PORT = 3333
_UDP = rb"DHT node \w+\S* on UDP ([\d.]+:\d+)"
# the loopback DHT: a node to store at, the onion service node and the
# downloader, each on an address of its own (a DHT node never names peers
# on the asking node's own host); the test asks the DHT from a fourth
DHT_HOST, SEEDER_HOST, DOWNLOADER_HOST, ASKING_HOST = (
    "127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"
)


class _Trap:
    """
    A TCP listener and a UDP socket on 127.0.0.1 that count whatever
    reaches them: the direct connections and datagrams a Tor-only node
    must never send.
    """

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.connections: list[Any] = []
        self.datagrams: list[Any] = []
        self._closed = False
        for target in (self._accept, self._receive):
            threading.Thread(target=target, daemon=True).start()

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp.getsockname()[1]}"

    @property
    def udp_address(self) -> str:
        return f"127.0.0.1:{self.udp.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, peer = self.tcp.accept()
            except OSError:
                return
            self.connections.append(peer)
            connection.close()

    def _receive(self) -> None:
        while not self._closed:
            try:
                _, peer = self.udp.recvfrom(65536)
            except OSError:
                return
            self.datagrams.append(peer)

    def close(self) -> None:
        self._closed = True
        for sock in (self.tcp, self.udp):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _status(data_dir: Path) -> dict[str, Any]:
    url = json.loads((data_dir / "api.json").read_text())["url"]
    with urllib.request.urlopen(url + "api/v1/status", timeout=10) as answer:
        status: dict[str, Any] = json.load(answer)
    return status


def _ask_for_peers(udp: str, key: bytes, onions: bool) -> dict[bytes, Any]:
    """
    Ask the DHT node at C{udp} (C{host:port}) for the peers of C{key},
    from L{ASKING_HOST}, as an LBRY node asks (or, with C{onions}, as a
    p2pblob node with Tor asks); its raw result dictionary.
    """
    host, port = udp.rsplit(":", 1)
    request = find_value(os.urandom(20), os.urandom(48), key, onions=onions)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ASKING_HOST, 0))
        sock.settimeout(10)
        sock.sendto(encode_datagram(request), (host, int(port)))
        while True:
            reply = decode_datagram(sock.recvfrom(65536)[0])
            if isinstance(reply, Response) and reply.rpc_id == request.rpc_id:
                assert isinstance(reply.result, dict), reply
                return reply.result


def _peers(data_dir: Path) -> dict[str, Any]:
    url = json.loads((data_dir / "api.json").read_text())["url"]
    with urllib.request.urlopen(url + "api/v1/peers", timeout=10) as answer:
        peers: dict[str, Any] = json.load(answer)
    return peers


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


class WithoutTxtorconTests(SynchronousTestCase):
    """
    A node asked to use Tor where txtorcon cannot be imported stops at
    once, saying what to install; it starts no tor.
    """

    def test_stops_in_words(self) -> None:
        top = Path(self.mktemp()).absolute()
        hide = top / "hide"
        hide.mkdir(parents=True)
        (hide / "txtorcon.py").write_text('raise ImportError("no txtorcon in this test")\n')
        env = environment(top / "node")
        env["PYTHONPATH"] = os.pathsep.join([str(hide), env["PYTHONPATH"]])
        for mode in ("--tor", "--tor-only"):
            began = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pblob",
                 "--data-dir", str(top / "node"), "--peer-listen", "tcp:0:interface=127.0.0.1",
                 "--api-listen", "none", "--no-dht", mode],
                env=env, capture_output=True, text=True, timeout=60,
            )
            self.assertLess(time.monotonic() - began, 30)
            self.assertIn("Cannot serve peers on", result.stdout)
            self.assertIn("pip install 'p2pblob[tor]'", result.stdout, result.stdout)
            self.assertNotIn("Spawning tor", result.stdout)
            self.assertIn("Server Shut Down", result.stdout)


class TorNodesTests(SynchronousTestCase):
    """
    Two nodes exchange a stream over a private Tor network.
    """

    def setUp(self) -> None:
        need_tor(self)
        self.top = Path(self.mktemp()).absolute()
        self.top.mkdir(parents=True)
        self.network = _tornet.TorNetwork(self.top / "tornet", authorities=3, relays=1,
                                          clients=1)
        self.addCleanup(self.network.stop)
        self.network.start()

    def _tor_options(self) -> list[str]:
        options: list[str] = []
        for name, value in self.network.client_options():
            options += ["--tor-option", f"{name}={value}"]
        return options

    def _onion_seeder(self, data_dir: Path, *extra: str) -> tuple[Seeder, str]:
        """
        A node serving its blobs as an onion service (and directly), with a
        tor it launches into the private network, off the DHT unless
        C{extra} says otherwise; its onion address.
        """
        # (its direct peer port is an ephemeral one; the onion service's is
        # 3333, LBRY's, by default)
        seeder = Seeder(data_dir, "--tor", *self._tor_options(), *(extra or ["--no-dht"]))
        self.addCleanup(seeder.kill)
        match = seeder.wait_for(rb"onion service published: ([a-z2-7]{56}\.onion):(\d+)",
                                timeout=120)
        onion = match.group(1).decode("ascii")
        self.assertEqual(int(match.group(2)), ONION_PORT)
        return seeder, onion

    def test_download_through_tor_only(self) -> None:
        """
        A Tor-only node downloads a stream from an onion service, byte for
        byte, and never reaches its other peer or its bootstrap node
        directly; the onion service has the same address after a restart.
        (One test, so that one private network serves it all.)
        """
        source = random_file(self.top / "film.bin", 5_000_000)
        sd_hash, _ = publish(self.top / "a", source, self.top / "sd")
        seeder, onion = self._onion_seeder(self.top / "a")
        status = _status(self.top / "a")
        self.assertEqual(status["reach"]["tor"]["onion_address"], onion)
        self.assertEqual(status["reach"]["tor"]["state"], "ready")

        trap = _Trap()
        self.addCleanup(trap.close)
        client = self.network.clients[0]
        node = Seeder(
            self.top / "b", "--tor-only", "--tor-control", f"tcp:127.0.0.1:{client.control_port}",
            "--peer", f"{onion}:{ONION_PORT}", "--peer", trap.tcp_address,
            "--bootstrap", trap.udp_address,
        )
        self.addCleanup(node.kill)
        status = _wait("the Tor-only node's onion service",
                       lambda: (s := _status(self.top / "b"))["reach"]["tor"]["onion_address"]
                       and s, 120)
        self.assertFalse(status["dht"]["enabled"])
        # its peer server listens only on loopback, for tor
        self.assertTrue(status["peer"]["listening"].startswith("127.0.0.1:"), status["peer"])

        began = time.monotonic()
        result = p2pblob(self.top / "b", "download", sd_hash, "--output", str(self.top / "out"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        took = time.monotonic() - began
        self.assertEqual((self.top / "out" / "film.bin").read_bytes(), source.read_bytes())
        # it did try the other peer, through Tor (which will not go there)
        self.assertIn(f"Could not connect to {trap.tcp_address}: cannot connect to "
                      f"{trap.tcp_address} through Tor", node.output.decode())
        self.assertEqual(trap.connections, [], "the Tor-only node connected directly")
        self.assertEqual(trap.datagrams, [], "the Tor-only node sent a datagram directly")
        self.assertLess(took, 120)
        # (twistd ends a clean stop on SIGTERM with that signal)
        self.assertEqual(node.stop(), -signal.SIGTERM, node.output.decode()[-4000:])

        # the trap does catch direct connections: a node using Tor only for
        # onion peers connects to the other peer directly
        mixed = Seeder(
            self.top / "c", "--no-dht", "--tor", "--tor-control",
            f"tcp:127.0.0.1:{client.control_port}", "--peer", f"{onion}:{ONION_PORT}",
            "--peer", trap.tcp_address,
        )
        self.addCleanup(mixed.kill)
        mixed.wait_for(rb"onion service published", timeout=120)
        result = p2pblob(self.top / "c", "download", sd_hash, "--output", str(self.top / "out-c"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual((self.top / "out-c" / "film.bin").read_bytes(), source.read_bytes())
        self.assertNotEqual(trap.connections, [])
        self.assertEqual(mixed.stop(), -signal.SIGTERM, mixed.output.decode()[-4000:])

        # the onion service's key is kept in the data directory: restarted,
        # the seeder has the same onion address
        self.assertEqual(seeder.stop(), -signal.SIGTERM, seeder.output.decode()[-4000:])
        key = self.top / "a" / "tor" / "onion_service_key"
        self.assertEqual(key.stat().st_mode & 0o077, 0)
        self._onion_on_the_dht(sd_hash, source, onion)

    def _onion_on_the_dht(self, sd_hash: str, source: Path, onion: str) -> None:
        """
        The seeder, restarted on a loopback DHT with C{--unreachable}, has
        the same onion address and announces it, only it, to the DHT's
        p2pblob nodes; a node using Tor, given no peer, finds it there and
        downloads the stream through Tor.  Nobody learns the seeder's IP
        address: the DHT node answers an LBRY request with no peer, and the
        downloader fetched from the onion service only.
        """
        began = time.monotonic()
        dht = Seeder(self.top / "dht", "--dht-allow-loopback",
                     "--peer-listen", f"tcp:0:interface={DHT_HOST}")
        self.addCleanup(dht.kill)
        udp = dht.wait_for(_UDP).group(1).decode()
        seeder, again = self._onion_seeder(
            self.top / "a", "--unreachable", "--bootstrap", udp,
            "--peer-listen", f"tcp:0:interface={SEEDER_HOST}",
        )
        self.addCleanup(seeder.kill)
        self.assertEqual(again, onion)
        seeder.wait_for(rb"Announcing blobs on the DHT by onion service only", timeout=60)
        announced = seeder.wait_for(rb"Announced (\d+) blob", timeout=120)
        self.assertGreater(int(announced.group(1)), 0)
        # (before the onion service was published, it did not announce)
        self.assertIn(b"Not announcing blobs on the DHT", seeder.output)

        key = bytes.fromhex(sd_hash)
        endpoint = f"{onion}:{ONION_PORT}".encode()
        lbry = _ask_for_peers(udp, key, onions=False)
        self.assertEqual(lbry[P2PBLOB_KEY], 1)
        self.assertNotIn(key, lbry, "the DHT node names a peer at an IP address")
        self.assertNotIn(ONIONS_KEY, lbry)
        asked = FindValueResult.decode(_ask_for_peers(udp, key, onions=True), key)
        self.assertEqual((asked.peers, asked.onions), ([], (endpoint,)))

        client = self.network.clients[0]
        downloader = Seeder(
            self.top / "d", "--tor", "--tor-control", f"tcp:127.0.0.1:{client.control_port}",
            "--bootstrap", udp, "--peer-listen", f"tcp:0:interface={DOWNLOADER_HOST}",
        )
        self.addCleanup(downloader.kill)
        downloader.wait_for(rb"Joined the DHT", timeout=60)
        downloader.wait_for(rb"onion service published", timeout=120)
        took = time.monotonic()
        result = p2pblob(self.top / "d", "download", sd_hash, "--output", str(self.top / "out-d"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr
                         + downloader.output.decode()[-4000:])
        took = time.monotonic() - took
        self.assertEqual((self.top / "out-d" / "film.bin").read_bytes(), source.read_bytes())
        sources = {s["address"]: s for s in _peers(self.top / "d")["sources"]}
        self.assertGreater(sources[f"{onion}:{ONION_PORT}"]["bytes_served"], 0, sources)
        self.assertFalse([a for a in sources if a.startswith(f"{SEEDER_HOST}:")], sources)
        # (the downloader announces what it now holds, at its own address)
        listed = FindValueResult.decode(_ask_for_peers(udp, key, onions=False), key)
        self.assertNotIn(SEEDER_HOST, [host for host, _, _ in listed.peer_addresses()])
        for node in (downloader, seeder, dht):
            self.assertEqual(node.stop(), -signal.SIGTERM, node.output.decode()[-4000:])
        self.assertLess(took, 120)
        self.assertLess(time.monotonic() - began, 300)
