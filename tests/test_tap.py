"""
C{twistd p2pblob}: the plugin, its options, and a real daemon process.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import twisted.plugins
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.config import DEFAULT_DISK_LIMIT
from p2pblob.tap import Options
from tests._process import PLUGINS, TWISTD, environment


class PluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        if str(PLUGINS) not in twisted.plugins.__path__:
            twisted.plugins.__path__.insert(0, str(PLUGINS))
            self.addCleanup(twisted.plugins.__path__.remove, str(PLUGINS))

    def test_found_by_twistd(self) -> None:
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("p2pblob", makers)
        self.assertIs(makers["p2pblob"].options, Options)

    def test_options(self) -> None:
        options = Options()
        options.parseOptions(["--data-dir", "/tmp/somewhere", "--disk-limit", "2GiB"])
        self.assertEqual(options["config"].data_dir, Path("/tmp/somewhere"))
        self.assertEqual(options["config"].disk_limit, 2 * 1024**3)
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"].disk_limit, DEFAULT_DISK_LIMIT)

    def test_dht_options(self) -> None:
        """
        The DHT's options: by default on, UDP port = peer TCP port, no
        bootstrap node, loopback refused, every blob announced.
        """
        options = Options()
        options.parseOptions([])
        config = options["config"]
        self.assertEqual(
            (config.dht, config.dht_port, config.bootstrap, config.allow_loopback,
             config.announce, config.reachable),
            (True, None, (), False, "all", True),
        )
        options = Options()
        options.parseOptions([
            "--bootstrap", "127.0.0.1:4444", "--bootstrap", "dht.example:4444",
            "--dht-port", "5555", "--announce", "head", "--unreachable",
        ])
        config = options["config"]
        self.assertEqual(config.bootstrap, (("127.0.0.1", 4444), ("dht.example", 4444)))
        self.assertEqual(config.dht_port, 5555)
        self.assertTrue(config.allow_loopback)  # a bootstrap node on loopback
        self.assertEqual(config.announce, "head")
        self.assertFalse(config.reachable)
        options = Options()
        options.parseOptions(["--no-dht"])
        self.assertFalse(options["config"].dht)

    def test_bootstrap_from_environment(self) -> None:
        self.patch(os, "environ", {**os.environ, "P2PBLOB_BOOTSTRAP": "10.1.2.3:4444, 10.1.2.4:4444"})
        options = Options()
        options.parseOptions(["--bootstrap", "10.1.2.4:4444"])
        self.assertEqual(
            options["config"].bootstrap, (("10.1.2.4", 4444), ("10.1.2.3", 4444))
        )
        self.assertFalse(options["config"].allow_loopback)

    def test_bad_dht_options(self) -> None:
        for arguments, name in [
            (["--bootstrap", "nowhere"], "bootstrap"),
            (["--dht-port", "70000"], "dht-port"),
            (["--dht-port", "x"], "dht-port"),
            (["--announce", "some"], "announce"),
            (["--announce-rate", "0"], "announce-rate"),
            (["--announce-concurrency", "0"], "announce-concurrency"),
        ]:
            error = self.assertRaises(usage.UsageError, Options().parseOptions, arguments)
            self.assertIn(name, str(error))

    def test_bad_options(self) -> None:
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--disk-limit", "much"])
        self.assertIn("disk-limit", str(error))

    def test_rate_options(self) -> None:
        """
        Rate limits are bytes per second, given as sizes (with or without
        C{/s}); 0 or none is no limit, which is the default.
        """
        options = Options()
        options.parseOptions([])
        config = options["config"]
        self.assertEqual(
            (config.max_upload, config.max_download, config.max_upload_per_connection,
             config.max_download_per_connection),
            (None, None, None, None),
        )
        options = Options()
        options.parseOptions([
            "--max-upload", "10MB", "--max-download", "512KiB/s",
            "--max-upload-per-connection", "1000000", "--max-download-per-connection", "0",
        ])
        config = options["config"]
        self.assertEqual(
            (config.max_upload, config.max_download, config.max_upload_per_connection,
             config.max_download_per_connection),
            (10_000_000, 512 * 1024, 1_000_000, None),
        )

    def test_bad_rate_options(self) -> None:
        for arguments, name in [
            (["--max-upload", "fast"], "max-upload"),
            (["--max-download", "-1"], "max-download"),
            (["--max-upload-per-connection", "0.5"], "max-upload-per-connection"),
            (["--max-download-per-connection", "1 MB/h"], "max-download-per-connection"),
        ]:
            error = self.assertRaises(usage.UsageError, Options().parseOptions, arguments)
            self.assertIn(name, str(error))

    def test_reach_options(self) -> None:
        """
        UPnP and Tor are off by default; their options land in the config.
        """
        options = Options()
        options.parseOptions([])
        config = options["config"]
        self.assertEqual(
            (config.upnp, config.upnp_lease, config.upnp_gateway, config.external_address,
             config.uses_tor, config.tor_only, config.onion_port),
            (False, 3600, None, None, False, False, None),
        )
        options = Options()
        options.parseOptions([
            "--upnp", "--upnp-lease", "600", "--external-address", "198.51.100.7",
            "--upnp-gateway", "http://192.168.1.1:5000/rootDesc.xml",
            "--tor-control", "tcp:127.0.0.1:9051",
            "--tor-option", "DirAuthority=a0 orport=1 127.0.0.1:2 AB", "--tor-option",
            "Sandbox=0",
        ])
        config = options["config"]
        self.assertEqual(
            (config.upnp, config.upnp_lease, config.external_address, config.upnp_gateway),
            (True, 600, "198.51.100.7", "http://192.168.1.1:5000/rootDesc.xml"),
        )
        self.assertTrue(config.uses_tor)
        self.assertEqual(config.tor_control, "tcp:127.0.0.1:9051")
        self.assertEqual(config.tor_options, (("DirAuthority", "a0 orport=1 127.0.0.1:2 AB"),
                                              ("Sandbox", "0")))
        for arguments in (["--tor"], ["--tor-only"], ["--peer-listen", "onion:3333"]):
            options = Options()
            options.parseOptions(arguments)
            self.assertTrue(options["config"].uses_tor, arguments)
        options = Options()
        options.parseOptions(["--peer-listen", "onion:4000"])
        self.assertEqual(options["config"].onion_port, 4000)

    def test_bad_reach_options(self) -> None:
        for arguments, words in [
            (["--upnp-lease", "10"], "upnp-lease"),
            (["--upnp-lease", "long"], "upnp-lease"),
            (["--external-address", "my.host"], "external-address"),
            (["--tor-only", "--upnp"], "tor-only"),
            (["--tor-only", "--external-address", "198.51.100.7"], "tor-only"),
            (["--peer-listen", "onion:x"], "onion:PORT"),
            (["--peer-listen", "onion:3333", "--upnp"], "onion service only"),
            (["--tor-option", "Sandbox"], "tor-option"),
        ]:
            error = self.assertRaises(usage.UsageError, Options().parseOptions, arguments)
            self.assertIn(words, str(error))


class DaemonTests(SynchronousTestCase):
    """
    A real C{twistd -n p2pblob} process opens and reconciles its store, logs
    what it repaired, and stops cleanly on SIGTERM.
    """

    def test_start_reconcile_stop(self) -> None:
        data = Path(self.mktemp()).absolute()
        (data / "blobfiles").mkdir(parents=True)
        (data / "blobfiles" / ".incoming-0123-abc").write_bytes(b"left by a crash")
        process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pblob",
             "--data-dir", str(data), "--peer-listen", "tcp:0:interface=127.0.0.1",
             "--api-listen", "tcp:0:interface=127.0.0.1"],
            env=environment(data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        output = self.read_until(process, b"Serving blobs to peers")
        self.assertIn(b"unfinished temporary file", output)
        self.assertEqual(list((data / "blobfiles").iterdir()), [])
        self.assertTrue((data / "p2pblob.sqlite").exists())
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
        # twistd shuts down cleanly, then re-raises the signal it got, so
        # its status says "killed by SIGTERM" as a shell expects.
        self.assertEqual(process.returncode, -signal.SIGTERM, (output + rest).decode())
        self.assertIn(b"Server Shut Down", rest)

    def read_until(self, process: subprocess.Popen[bytes], marker: bytes, timeout: float = 30) -> bytes:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        output = b""
        deadline = time.monotonic() + timeout
        while marker not in output:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                self.fail(f"twistd did not log {marker!r}:\n{output.decode()}")
            if selector.select(left):
                output += process.stdout.read1(65536)  # type: ignore[attr-defined]
        return output
