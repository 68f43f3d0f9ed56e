"""
L{p2pblob.reach.UPnPPortMapper} against a real UPnP gateway: Debian's
C{miniupnpd} (nftables backend) in network namespaces this test creates
(L{tests.reach._lab}), with the mapper running in the LAN namespace and a
host in the "internet" namespace checking that the mapped ports forward.

Nothing leaves the namespaces.  The test needs root, C{ip netns}, C{nft},
C{miniupnpd} and the C{miniupnpc} module; without them it is skipped,
unless C{P2PBLOB_REQUIRE_UPNP} is set (as C{.ci/run} sets it): then it
fails.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.reach import _lab

TCP = 40123
UDP = 40124
LEASE = 6


def _need_lab(case: SynchronousTestCase) -> None:
    reason = _lab.cannot_run()
    if reason is None:
        missing = _lab.missing_tools()
        if missing:
            reason = "missing: " + ", ".join(missing)
    if reason is None:
        return
    if os.environ.get("P2PBLOB_REQUIRE_UPNP"):
        case.fail(f"the UPnP lab cannot run ({reason}) but P2PBLOB_REQUIRE_UPNP is set")
    raise case.skipTest(f"the UPnP lab cannot run: {reason}")


def _read_json(process: subprocess.Popen[str], timeout: float) -> Any:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no answer from the lab program in {timeout} s")
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"the lab program exited ({process.wait(5)})")
    return json.loads(line)


def _command(process: subprocess.Popen[str], command: str, timeout: float = 20) -> Any:
    assert process.stdin is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()
    return _read_json(process, timeout)


class MiniupnpdTests(SynchronousTestCase):
    """
    Discovery, mapping, forwarding, renewal and removal against miniupnpd.
    """

    def setUp(self) -> None:
        _need_lab(self)
        scratch = Path(self.mktemp())
        scratch.mkdir(parents=True)
        self.lab = _lab.Lab(scratch)
        self.addCleanup(self.lab.close)
        began = time.monotonic()
        self.lab.build()
        self.build_seconds = time.monotonic() - began

    def _json(self, ns: str, *args: str) -> Any:
        result = self.lab.python(ns, *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def _table(self) -> list[dict[str, Any]]:
        table: list[dict[str, Any]] = self._json(self.lab.lan, "list")
        return sorted(table, key=lambda entry: entry["external_port"])

    def test_no_gateway(self) -> None:
        """
        With no gateway on the LAN, the mapper says so (after miniupnpc's
        discovery gives up, about 4 s), keeps running, unreachable, and
        stops cleanly.
        """
        began = time.monotonic()
        mapper = self.lab.spawn_python(self.lab.lan, "mapper", str(TCP), str(UDP), str(LEASE))
        status = _read_json(mapper, 30)
        waited = time.monotonic() - began
        self.assertEqual(status["state"], "unreachable")
        self.assertFalse(status["reachable"])
        self.assertIn("no UPnP gateway answered", status["problem"])
        self.assertEqual(status["mappings"], [])
        self.assertGreater(waited, 2)
        self.assertEqual(_command(mapper, "status")["state"], "unreachable")
        self.assertEqual(_command(mapper, "stop")["state"], "stopped")
        self.assertEqual(mapper.wait(10), 0)

    def test_map_forward_renew_remove(self) -> None:
        """
        The mapper finds miniupnpd, maps both ports to its routed LAN
        address (not the first address of the host), learns the external
        address; the gateway's table and its nftables rules show the
        mappings; TCP and UDP from the internet side reach the LAN host;
        renewal keeps the mappings beyond their lease while an unrenewed one
        expires; stopping removes them, and forwarding ends.
        """
        self.lab.start_miniupnpd()
        began = time.monotonic()
        mapper = self.lab.spawn_python(self.lab.lan, "mapper", str(TCP), str(UDP), str(LEASE))
        status = _read_json(mapper, 30)
        mapped_after = time.monotonic() - began
        self.assertEqual(status["state"], "mapped", (status, self.lab.miniupnpd_log()))
        self.assertTrue(status["reachable"])
        self.assertIsNone(status["problem"])
        self.assertEqual(status["external_address"], _lab.PUBLIC_ADDRESS)
        self.assertEqual(status["lan_address"], _lab.LAN_ADDRESS)
        self.assertEqual(
            status["gateway"], f"http://{_lab.ROUTER_LAN_ADDRESS}:{_lab.HTTP_PORT}/ctl/IPConn"
        )
        self.assertEqual(
            sorted(status["mappings"], key=lambda m: m["protocol"]),
            [
                {"protocol": "TCP", "external_port": TCP, "internal_address": _lab.LAN_ADDRESS,
                 "internal_port": TCP, "lease": LEASE},
                {"protocol": "UDP", "external_port": UDP, "internal_address": _lab.LAN_ADDRESS,
                 "internal_port": UDP, "lease": LEASE},
            ],
        )

        # the gateway's own table, read by another client
        table = self._table()
        self.assertEqual(
            [(e["protocol"], e["external_port"], e["internal_address"], e["internal_port"],
              e["description"]) for e in table],
            [("TCP", TCP, _lab.LAN_ADDRESS, TCP, "p2pblob"),
             ("UDP", UDP, _lab.LAN_ADDRESS, UDP, "p2pblob")],
        )
        for entry in table:
            self.assertTrue(0 < entry["lease"] <= LEASE, entry)
        rules = self.lab.nft_rules()
        self.assertIn(f"dnat ip to {_lab.LAN_ADDRESS}:{TCP}", rules)
        self.assertIn(f"dnat ip to {_lab.LAN_ADDRESS}:{UDP}", rules)

        # forwarding, from the internet side to the router's public address
        probe = self._json(self.lab.inet, "probe", _lab.PUBLIC_ADDRESS, str(TCP), str(UDP))
        self.assertEqual(probe["tcp"], "ping over tcp")
        self.assertEqual(probe["udp"], "ping over udp")
        self.assertEqual(probe["udp_source"], [_lab.PUBLIC_ADDRESS, UDP])

        # renewal: past the lease, the mapper's entries are still there; an
        # entry nobody renews is gone
        self._json(self.lab.lan, "add", "40999", str(LEASE))
        time.sleep(LEASE + 2.5)
        table = self._table()
        self.assertEqual([e["external_port"] for e in table], [TCP, UDP], table)
        status = _command(mapper, "status")
        self.assertTrue(status["reachable"])
        self.assertEqual(len(status["mappings"]), 2)
        probe = self._json(self.lab.inet, "probe", _lab.PUBLIC_ADDRESS, str(TCP), str(UDP))
        self.assertEqual(probe["tcp"], "ping over tcp")

        # removal on stop
        stopped = _command(mapper, "stop")
        self.assertEqual(stopped["state"], "stopped")
        self.assertEqual(stopped["mappings"], [])
        self.assertEqual(mapper.wait(10), 0)
        self.assertEqual(self._table(), [])
        rules = self.lab.nft_rules()
        self.assertNotIn(f"dnat ip to {_lab.LAN_ADDRESS}:{TCP}", rules)
        self.assertNotIn(f"dnat ip to {_lab.LAN_ADDRESS}:{UDP}", rules)
        probe = self._json(self.lab.inet, "probe", _lab.PUBLIC_ADDRESS, str(TCP), str(UDP))
        self.assertTrue(probe["tcp"].startswith("error"), probe)
        self.assertTrue(probe["udp"].startswith("error"), probe)
        self.assertLess(mapped_after, 10)

    def test_private_wan_address(self) -> None:
        """
        A router whose own internet address is a private one (it sits behind
        another NAT) reports no external address and refuses every mapping
        (501 ActionFailed): the mapper ends unreachable, with no external
        address, says why, and leaves nothing mapped.
        """
        self.lab.start_miniupnpd(ext_ip=None)
        self.assertIn(
            f"Reserved / private IP address {_lab.ROUTER_WAN_ADDRESS}", self.lab.miniupnpd_log()
        )
        mapper = self.lab.spawn_python(self.lab.lan, "mapper", str(TCP), str(UDP), "60")
        status = _read_json(mapper, 30)
        self.assertEqual(
            (status["state"], status["reachable"], status["external_address"],
             status["mappings"]),
            ("unreachable", False, None, []),
            status,
        )
        self.assertEqual(
            status["gateway"], f"http://{_lab.ROUTER_LAN_ADDRESS}:{_lab.HTTP_PORT}/ctl/IPConn"
        )
        self.assertIn("does not know its internet address", status["problem"])
        self.assertEqual(self._table(), [])
        self.assertEqual(_command(mapper, "stop")["state"], "stopped")
        self.assertEqual(mapper.wait(10), 0)

    def test_conflicting_mapping(self) -> None:
        """
        When the DHT port is already mapped to another LAN host, the router
        refuses it (718 ConflictInMappingEntry): the mapper ends unreachable
        with a problem naming the port and the router's words, and leaves
        the other host's mapping alone, when it runs and when it stops.
        """
        other = "10.77.0.9"
        # without secure mode, a LAN host may map a port to another
        self.lab.start_miniupnpd(secure_mode=False)
        self._json(self.lab.lan, "add", str(UDP), "60", other, "UDP")
        theirs = ("UDP", UDP, other, UDP, "never renewed")

        mapper = self.lab.spawn_python(self.lab.lan, "mapper", str(TCP), str(UDP), "60")
        status = _read_json(mapper, 30)
        self.assertEqual((status["state"], status["reachable"]), ("unreachable", False), status)
        self.assertIn(f"UDP port {UDP}", status["problem"])
        self.assertIn("ConflictInMappingEntry", status["problem"])
        self.assertNotIn("UDP", [m["protocol"] for m in status["mappings"]])
        table = [
            (e["protocol"], e["external_port"], e["internal_address"], e["internal_port"],
             e["description"])
            for e in self._table()
        ]
        self.assertIn(theirs, table)
        self.assertNotIn(("UDP", UDP, _lab.LAN_ADDRESS, UDP, "p2pblob"), table)

        self.assertEqual(_command(mapper, "stop")["mappings"], [])
        self.assertEqual(mapper.wait(10), 0)
        self.assertEqual(
            [(e["protocol"], e["external_port"], e["internal_address"], e["internal_port"],
              e["description"]) for e in self._table()],
            [theirs],
        )
        self.assertIn("ConflictInMappingEntry", self.lab.miniupnpd_log())
