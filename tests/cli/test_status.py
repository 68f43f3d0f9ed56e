"""
C{p2pblob status}: the command asks the running node of its data directory,
through the node's HTTP API, and says plainly when no node runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob import __version__
from p2pblob.cli._status import describe_status
from tests._process import p2pblob
from tests.integration._nodes import Seeder


class StatusCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = Path(self.mktemp()).absolute()

    def test_running_node(self) -> None:
        """
        Against a running C{twistd p2pblob}, C{status} names its version,
        peer port and limits; C{--json} prints the API's answer.
        """
        node = Seeder(self.data, "--no-dht", "--max-upload", "2MB")
        self.addCleanup(node.kill)
        node.wait_for(rb"HTTP API on ")
        node.wait_for(rb"Serving blobs to peers on ")
        result = p2pblob(self.data, "status")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"p2pblob {__version__} running for", result.stdout)
        self.assertIn(f"peers: listening on {node.address}", result.stdout)
        self.assertIn("DHT: off", result.stdout)
        self.assertIn("upload 1.9 MiB/s, download no limit", result.stdout)
        result = p2pblob(self.data, "status", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout)["bandwidth"]["limits"]["max_upload"], 2_000_000)

    def test_no_node(self) -> None:
        """
        With no node running, one line says so and how to start one.
        """
        result = p2pblob(self.data, "status")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(result.stderr.strip().splitlines(), [
            f"p2pblob: error: no node is running with the data directory {self.data} "
            "(start one with: twistd -n p2pblob, or give --data-dir)"])

    def test_killed_node(self) -> None:
        """
        An C{api.json} left by a node that was killed does not count.
        """
        self.data.mkdir(parents=True)
        (self.data / "api.json").write_text(json.dumps(
            {"url": "http://127.0.0.1:9/", "pid": _dead_pid()}))
        result = p2pblob(self.data, "status")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("no node is running", result.stderr)


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


class DescribeStatusTests(SynchronousTestCase):
    def test_lines(self) -> None:
        lines = describe_status({
            "version": "1.0", "uptime": 3725.2, "data_dir": "/d",
            "peer": {"listening": "0.0.0.0:3333", "connections": 2},
            "dht": {"enabled": True, "joined": True, "contacts": 40},
            "bandwidth": {"uploaded": 2048, "downloaded": 0,
                          "limits": {"max_upload": None, "max_download": 1048576}},
            "disk": {"used": 10, "limit": None, "blobs": 1},
            "prices": {"price": 1.5, "min_price": 1.0},
            "wallet": {"balance": "98.5", "reserved": "1"},
        })
        self.assertEqual(lines, [
            "p2pblob 1.0 running for 1h 2m (data directory /d)",
            "peers: listening on 0.0.0.0:3333, 2 connection(s)",
            "DHT: joined, 40 contact(s)",
            "bandwidth: 2.0 KiB up, 0 B down; limits: upload no limit, download 1.0 MiB/s",
            "disk: 10 B in 1 blob(s), limit unlimited",
            "paid mode: 1.5 points per MiB (accepts 1 and up)",
            "wallet: 98.5 points (1 reserved)",
        ])

    def test_reach(self) -> None:
        """
        Whether peers reach the node, its mappings on the router and its
        onion service, each in a line.
        """
        lines = describe_status({"uptime": 1, "reach": {
            "reachable": True, "external_address": "100.128.0.1",
            "port_mapping": {
                "method": "upnp", "state": "mapped", "gateway": "http://10.77.0.1:5555/ctl/IPConn",
                "problem": None,
                "mappings": [{"protocol": "TCP", "external_port": 3333,
                              "internal_address": "10.77.0.2", "internal_port": 3333,
                              "lease": 3600}],
            },
            "tor": {"state": "ready", "onion_address": "abc.onion", "onion_port": 3333,
                    "problem": None},
        }})
        self.assertEqual(lines[3:6], [
            "reachable: yes, at 100.128.0.1",
            "port mapping (upnp): mapped, TCP 3333 -> 10.77.0.2:3333 on "
            "http://10.77.0.1:5555/ctl/IPConn",
            "Tor: ready, onion service abc.onion:3333",
        ])
        lines = describe_status({"uptime": 1, "reach": {
            "reachable": False, "external_address": None, "tor": None,
            "port_mapping": {"method": "upnp", "state": "unreachable", "mappings": [],
                             "gateway": None, "problem": "no UPnP gateway answered"},
        }})
        self.assertEqual(lines[3:5], [
            "reachable: no (peers cannot connect to this address; not announcing)",
            "port mapping (upnp): unreachable; no UPnP gateway answered",
        ])

    def test_unreachable_with_onion(self) -> None:
        """
        An unreachable node with an onion service on the DHT says that it
        announces that only.
        """
        reach = {
            "reachable": False, "external_address": None, "port_mapping": None,
            "tor": {"state": "ready", "onion_address": "abc.onion", "onion_port": 3333,
                    "problem": None},
        }
        lines = describe_status({"uptime": 1, "reach": reach, "dht": {"enabled": True}})
        self.assertEqual(lines[3:5], [
            "reachable: no (peers cannot connect to this address; announcing the onion "
            "service only, to p2pblob nodes that use Tor)",
            "Tor: ready, onion service abc.onion:3333",
        ])
        # (off the DHT, it announces nothing)
        lines = describe_status({"uptime": 1, "reach": reach, "dht": {"enabled": False}})
        self.assertEqual(
            lines[3], "reachable: no (peers cannot connect to this address; not announcing)"
        )

    def test_dht_not_joined(self) -> None:
        lines = describe_status({"dht": {"enabled": True, "joined": False, "contacts": 0},
                                 "uptime": 5})
        self.assertIn("DHT: not joined yet (0 contact(s))", lines)
        self.assertIn("running for 5s", lines[0])
