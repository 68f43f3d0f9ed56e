"""
Tests for L{p2pblob.http.service}: a real C{twistd p2pblob} serves its API
on 127.0.0.1, says where in the data directory, and stops cleanly.
"""

from __future__ import annotations

import json
import signal
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pblob._version import __version__
from p2pblob.http.service import url_of
from tests.integration._nodes import Seeder


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class DaemonAPITests(SynchronousTestCase):
    def test_api_of_a_running_node(self) -> None:
        """
        The node writes where its API listens to C{api.json}, answers its
        status there (naming its peer port), keeps a private token, refuses
        other host names, and removes C{api.json} when it stops.
        """
        data = Path(self.mktemp()).absolute()
        node = Seeder(data, "--no-dht")
        self.addCleanup(node.kill)
        node.wait_for(rb"HTTP API on ")
        where = json.loads((data / "api.json").read_text())
        self.assertTrue(where["url"].startswith("http://127.0.0.1:"), where)
        status, body = fetch(where["url"] + "api/v1/status")
        self.assertEqual(status, 200)
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["peer"]["listening"], f"127.0.0.1:{node.address.split(':')[1]}")
        self.assertFalse(body["dht"]["enabled"])
        with urllib.request.urlopen(where["url"] + "metrics", timeout=30) as response:
            metrics = response.read().decode()
        self.assertIn("p2pblob_blobs_served_total 0.0", metrics)
        self.assertIn("p2pblob_disk_used_bytes 0.0", metrics)
        token = data / "api-token"
        self.assertEqual(stat.S_IMODE(token.stat().st_mode), 0o600)
        status, body = fetch(where["url"] + "api/v1/status", {"Host": "attacker.example"})
        self.assertEqual((status, body["error"]["code"]), (403, "forbidden_host"))
        self.assertEqual(node.stop(), -signal.SIGTERM, node.output.decode())
        self.assertFalse((data / "api.json").exists())

    def test_endpoint_taken(self) -> None:
        """
        A node whose API endpoint cannot be had stops, and says why.
        """
        data = Path(self.mktemp()).absolute()
        first = Seeder(data / "first", "--no-dht")
        self.addCleanup(first.kill)
        first.wait_for(rb"HTTP API on ")
        url = json.loads((data / "first" / "api.json").read_text())["url"]
        port = url.rsplit(":", 1)[1].strip("/")
        second = Seeder(data / "second", "--no-dht",
                        "--api-listen", f"tcp:{port}:interface=127.0.0.1")
        self.addCleanup(second.kill)
        second.wait_for(rb"Cannot serve the HTTP API on .*--api-listen")
        # it stops by itself, without being sent a signal
        second.process.wait(60)
        self.assertFalse((data / "second" / "api.json").exists())


class URLTests(SynchronousTestCase):
    def test_url_of(self) -> None:
        class Port:
            def __init__(self, host: Any) -> None:
                self.host = host

            def getHost(self) -> Any:
                return self.host

        class Address:
            def __init__(self, host: str, port: int) -> None:
                self.host, self.port = host, port

        self.assertEqual(url_of(Port(Address("127.0.0.1", 5279))), "http://127.0.0.1:5279/")
        self.assertEqual(url_of(Port(Address("::1", 80))), "http://[::1]:80/")
        self.assertEqual(url_of(Port(Address("0.0.0.0", 81))), "http://127.0.0.1:81/")
