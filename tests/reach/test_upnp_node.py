"""
A real node, C{twistd -n p2pblob --upnp}, behind the UPnP lab's router
(L{tests.reach._lab}): it runs in the LAN namespace, Debian's C{miniupnpd}
in the router namespace, and peers dial its mapped ports from the
"internet" namespace, at the router's public address.

With a gateway the node maps its peer port (and its DHT port), says so in
C{GET /api/v1/status} and C{p2pblob status}, serves peers who connect
through the mapping, and removes the mappings when it stops.  With none it
keeps running, says once why it could not map, counts itself unreachable
and does not announce.

Nothing leaves the namespaces: the node's API listens on the LAN
namespace's own loopback, and C{p2pblob status} runs there too.  Like
L{tests.reach.test_miniupnpd}, these tests are skipped without root,
C{ip netns}, C{nft}, C{miniupnpd} or C{miniupnpc}, and fail instead when
C{P2PBLOB_REQUIRE_UPNP} is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests._process import TWISTD, environment
from tests.reach import _lab
from tests.reach.test_miniupnpd import _need_lab

PEER_PORT = 40123
DHT_PORT = 40124
LEASE = 60
CONTROL_URL = f"http://{_lab.ROUTER_LAN_ADDRESS}:{_lab.HTTP_PORT}/ctl/IPConn"
ROOT_DESCRIPTION = f"http://{_lab.ROUTER_LAN_ADDRESS}:{_lab.HTTP_PORT}/rootDesc.xml"

MAPPED = re.compile(r"The router \((?P<gateway>\S+)\) forwards (?P<ports>.*) to (?P<lan>\S+);"
                    r" peers reach this node at (?P<external>\S+)\.")
NOT_MAPPED = "Could not map this node's ports on the router"
NOT_ANNOUNCING = "Not announcing blobs on the DHT"


class _Node:
    """
    C{twistd -n p2pblob --upnp} in the lab's LAN namespace, its data
    directory and log in C{scratch}.
    """

    def __init__(self, lab: _lab.Lab, scratch: Path, *extra: str) -> None:
        self.lab = lab
        self.data_dir = scratch / "node"
        (self.data_dir / "blobfiles").mkdir(parents=True)
        self.blob = b"a blob that only this node holds\n"
        self.blob_hash = hashlib.sha384(self.blob).hexdigest()
        (self.data_dir / "blobfiles" / self.blob_hash).write_bytes(self.blob)
        self.log = scratch / "node.log"
        self.process = lab.spawn(
            lab.lan,
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pblob",
             "--data-dir", str(self.data_dir), "--peer-listen", f"tcp:{PEER_PORT}",
             "--api-listen", "tcp:5279:interface=127.0.0.1",
             "--upnp", "--upnp-lease", str(LEASE), *extra],
            env=environment(self.data_dir), log=self.log, cwd=scratch,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """
        Wait until the node logs a line matching C{pattern}.
        """
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while (match := pattern.search(self.output())) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the node never logged {pattern.pattern!r} (exit status"
                    f" {self.process.poll()}):\n{self.output()}"
                )
            time.sleep(0.05)
        return match

    def cli(self, *args: str) -> str:
        """
        Run C{p2pblob --data-dir DATA_DIR ARGS} in the LAN namespace (where
        the node's API is); its standard output.
        """
        result = subprocess.run(
            ["ip", "netns", "exec", self.lab.lan, sys.executable, "-m", "p2pblob",
             "--data-dir", str(self.data_dir), *args],
            cwd=self.data_dir.parent, env=environment(self.data_dir),
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"p2pblob {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def reach(self) -> dict[str, Any]:
        """
        The C{reach} part of the node's C{GET /api/v1/status}.
        """
        reach: dict[str, Any] = json.loads(self.cli("status", "--json"))["reach"]
        return reach

    def stop(self) -> None:
        """
        SIGTERM; wait until the node has shut down (cleanly).
        """
        os.kill(self.process.pid, signal.SIGTERM)
        status = self.process.wait(30)
        output = self.output()
        if status not in (0, -signal.SIGTERM) or "Server Shut Down." not in output:
            raise AssertionError(f"the node did not stop cleanly ({status}):\n{output}")
        if "Traceback" in output or "Unhandled" in output:
            raise AssertionError(f"the node logged an error:\n{output}")


class UPnPNodeTests(SynchronousTestCase):
    """
    C{twistd p2pblob --upnp} with and without a UPnP gateway.
    """

    def setUp(self) -> None:
        _need_lab(self)
        self.scratch = Path(self.mktemp()).resolve()
        self.scratch.mkdir(parents=True)
        self.lab = _lab.Lab(self.scratch)
        self.addCleanup(self.lab.close)
        self.lab.build()

    def _json(self, ns: str, *args: str) -> Any:
        result = self.lab.python(ns, *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def _table(self) -> list[tuple[str, int, str, int, str]]:
        """
        The gateway's mappings, read by another client.
        """
        entries = self._json(self.lab.lan, "list")
        for entry in entries:
            self.assertTrue(0 < entry["lease"] <= LEASE, entry)
        return sorted(
            (e["protocol"], e["external_port"], e["internal_address"], e["internal_port"],
             e["description"])
            for e in entries
        )

    def _ask(self, node: _Node) -> dict[str, Any]:
        """
        From the internet namespace, through the mapping: which of two
        blobs the peer at the public address holds.
        """
        unknown = hashlib.sha384(b"a blob nobody holds").hexdigest()
        request = {"requested_blobs": [node.blob_hash, unknown], "blob_data_payment_rate": 0.0}
        answer: dict[str, Any] = self._json(
            self.lab.inet, "ask", _lab.PUBLIC_ADDRESS, str(PEER_PORT), json.dumps(request)
        )
        return answer

    def _port_mapping(self, mappings: list[tuple[str, int]], gateway: str = CONTROL_URL,
                      ) -> dict[str, Any]:
        return {
            "method": "upnp", "state": "mapped", "reachable": True,
            "external_address": _lab.PUBLIC_ADDRESS, "configured_address": None,
            "gateway": gateway, "lan_address": _lab.LAN_ADDRESS,
            "mappings": [
                {"protocol": protocol, "external_port": port,
                 "internal_address": _lab.LAN_ADDRESS, "internal_port": port, "lease": LEASE}
                for protocol, port in mappings
            ],
            "problem": None,
        }

    def test_maps_serves_and_unmaps(self) -> None:
        """
        Off the DHT, the node maps its peer port to its routed LAN address
        (not its first one) once it listens; the gateway's table, its
        nftables rules, the API and C{p2pblob status} all say so; a peer on
        the internet side gets an answer from the node's blob server at the
        router's public address; on SIGTERM the mapping goes and the port
        no longer forwards.
        """
        self.lab.start_miniupnpd()
        began = time.monotonic()
        node = _Node(self.lab, self.scratch, "--no-dht")
        mapped = node.wait_for(MAPPED, 20)
        mapped_after = time.monotonic() - began
        self.assertEqual(
            mapped.groupdict(),
            {"gateway": CONTROL_URL, "ports": f"TCP port {PEER_PORT}",
             "lan": _lab.LAN_ADDRESS, "external": _lab.PUBLIC_ADDRESS},
        )

        self.assertEqual(
            self._table(), [("TCP", PEER_PORT, _lab.LAN_ADDRESS, PEER_PORT, "p2pblob")]
        )
        self.assertIn(f"dnat ip to {_lab.LAN_ADDRESS}:{PEER_PORT}", self.lab.nft_rules())

        self.assertEqual(
            node.reach(),
            {"reachable": True, "external_address": _lab.PUBLIC_ADDRESS,
             "port_mapping": self._port_mapping([("TCP", PEER_PORT)]), "tor": None},
        )
        lines = node.cli("status").splitlines()
        self.assertIn(f"reachable: yes, at {_lab.PUBLIC_ADDRESS}", lines)
        self.assertIn(
            f"port mapping (upnp): mapped, TCP {PEER_PORT} -> {_lab.LAN_ADDRESS}:{PEER_PORT}"
            f" on {CONTROL_URL}",
            lines,
        )

        # a peer on the internet side, through the mapping, to this node's
        # blob server
        answer = self._ask(node)["answer"]
        self.assertEqual(
            (answer["available_blobs"], answer["blob_data_payment_rate"]),
            ([node.blob_hash], "RATE_ACCEPTED"),
        )

        node.stop()
        self.assertEqual(self._table(), [])
        self.assertNotIn(f"dnat ip to {_lab.LAN_ADDRESS}:{PEER_PORT}", self.lab.nft_rules())
        self.assertIn("error", self._ask(node))
        self.assertLess(mapped_after, 10)

    def test_maps_dht_port_too(self) -> None:
        """
        On the DHT, the node maps its DHT port (UDP) as well as its peer
        port, through the gateway it is given (no discovery); a DHT ping from
        the internet side to the public address gets its pong, and a
        findValue for a blob it holds names it at its external address;
        both mappings go on SIGTERM.
        """
        self.lab.start_miniupnpd()
        node = _Node(self.lab, self.scratch, "--dht-port", str(DHT_PORT),
                     "--upnp-gateway", ROOT_DESCRIPTION)
        mapped = node.wait_for(MAPPED, 10)
        self.assertEqual(mapped.group("ports"), f"TCP port {PEER_PORT} and UDP port {DHT_PORT}")
        self.assertEqual(
            self._table(),
            [("TCP", PEER_PORT, _lab.LAN_ADDRESS, PEER_PORT, "p2pblob"),
             ("UDP", DHT_PORT, _lab.LAN_ADDRESS, DHT_PORT, "p2pblob")],
        )
        rules = self.lab.nft_rules()
        self.assertIn(f"dnat ip to {_lab.LAN_ADDRESS}:{PEER_PORT}", rules)
        self.assertIn(f"dnat ip to {_lab.LAN_ADDRESS}:{DHT_PORT}", rules)
        reach = node.reach()
        self.assertEqual(
            reach["port_mapping"],
            self._port_mapping([("TCP", PEER_PORT), ("UDP", DHT_PORT)]),
        )
        self.assertTrue(reach["reachable"])
        self.assertEqual(
            self._json(self.lab.inet, "dhtping", _lab.PUBLIC_ADDRESS, str(DHT_PORT)),
            {"result": "pong", "source": [_lab.PUBLIC_ADDRESS, DHT_PORT]},
        )
        # asked for a blob it holds, its DHT names the node itself at its
        # external address, the peer port mapped there
        self.assertEqual(
            self._json(self.lab.inet, "dhtfind", _lab.PUBLIC_ADDRESS, str(DHT_PORT),
                       node.blob_hash),
            {"peers": [[_lab.PUBLIC_ADDRESS, PEER_PORT]]},
        )
        node.stop()
        self.assertEqual(self._table(), [])

    def test_no_gateway(self) -> None:
        """
        With no gateway on the LAN the node keeps running: once discovery
        gives up it says once in its log why it could not map, and its
        status says unreachable, with the problem in words.
        """
        began = time.monotonic()
        node = _Node(self.lab, self.scratch, "--no-dht")
        node.wait_for(NOT_MAPPED, 30)
        waited = time.monotonic() - began
        self.assertGreater(waited, 2)
        self.assertIsNone(node.process.poll())

        reach = node.reach()
        self.assertFalse(reach["reachable"])
        self.assertIsNone(reach["external_address"])
        mapping = reach["port_mapping"]
        self.assertEqual(
            (mapping["state"], mapping["reachable"], mapping["mappings"], mapping["gateway"]),
            ("unreachable", False, [], None),
        )
        self.assertIn("no UPnP gateway answered on the local network", mapping["problem"])
        lines = node.cli("status").splitlines()
        self.assertIn(
            "reachable: no (peers cannot connect to this address; not announcing)", lines
        )
        self.assertIn(f"port mapping (upnp): unreachable; {mapping['problem']}", lines)

        output = node.output()
        self.assertEqual(output.count(NOT_MAPPED), 1, output)
        self.assertIn(mapping["problem"], output)
        self.assertIn("does not announce itself", output)
        node.stop()
        self.assertLess(waited, 15)

    def test_unreachable_node_does_not_announce(self) -> None:
        """
        A node on the DHT whose ports are not mapped (no gateway) counts
        itself unreachable and says it does not announce.
        """
        node = _Node(self.lab, self.scratch, "--dht-port", str(DHT_PORT))
        line = node.wait_for(NOT_ANNOUNCING + r": (.*)", 20)
        self.assertIn("peers cannot connect to this node's address", line.group(1))
        reach = node.reach()
        self.assertFalse(reach["reachable"])
        self.assertIsNone(reach["external_address"])
        self.assertEqual(reach["port_mapping"]["mappings"], [])
        self.assertNotIn("Announcing blobs on the DHT again", node.output())
        node.stop()
