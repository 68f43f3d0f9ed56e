"""
Five real C{twistd p2pblob} nodes on 127.0.0.1 find each other through the
DHT, with only one of them known to the others: a stream published on one
node is downloaded with nothing but its sd hash.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests._process import environment
from tests.integration._nodes import Seeder, publish

SIZE = 9 * 1024 * 1024  # five data blobs
_UDP = rb"DHT node \w+\S* on UDP ([\d.]+:\d+)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FiveNodesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        self.nodes: list[Seeder] = []
        self.addCleanup(self.kill_all)

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def start(self, number: int, *extra: str, bootstrap: str | None = None) -> Seeder:
        """
        Start node C{number} on its own address, 127.0.0.(10 + number): a
        DHT node never names peers on the asking node's own host (as
        LBRY's do not), so a swarm on one host would find nobody.
        """
        env = {} if bootstrap is None else {"P2PBLOB_BOOTSTRAP": bootstrap}
        node = Seeder(
            self.base / f"node{number}",
            "--peer-listen", f"tcp:0:interface=127.0.0.{10 + number}",
            *extra,
            env=env,
        )
        self.nodes.append(node)
        return node

    def download(self, data_dir: Path, sd_hash: str, bootstrap: str | None) -> Path:
        """
        Run C{p2pblob download SD_HASH} (no C{--peer}) and return the file.
        """
        output = self.base / f"out-{data_dir.name}"
        env = environment(data_dir)
        env.pop("P2PBLOB_PEERS", None)
        env.pop("P2PBLOB_BOOTSTRAP", None)
        if bootstrap is not None:
            env["P2PBLOB_BOOTSTRAP"] = bootstrap
        result = subprocess.run(
            [sys.executable, "-m", "p2pblob", "download", sd_hash, "--output", str(output),
             "--stall-timeout", "60"],
            env=env, capture_output=True, text=True, timeout=180,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("joining the DHT", result.stderr)
        return Path(result.stdout.strip())

    def test_download_by_sd_hash_through_the_dht(self) -> None:
        """
        Node 0 is the only bootstrap node; node 2 holds a stream and
        announces it; a downloader that knows only node 0 finds node 2 and
        fetches the stream.  Node 4, stopped, keeps its contacts: a download
        from its data directory, with no bootstrap node configured at all,
        joins through them; restarted without a bootstrap node, node 4
        rejoins the same way and serves what it downloaded.
        """
        source = self.base / "film.bin"
        source.write_bytes(os.urandom(SIZE))
        sd_hash, _ = publish(self.base / "node2", source, self.base / "sd")

        first = self.start(0, "--dht-allow-loopback")
        bootstrap = first.wait_for(_UDP).group(1).decode()
        others = [self.start(n, bootstrap=bootstrap) for n in range(1, 5)]
        for node in others:
            node.wait_for(rb"Joined the DHT")
        publisher = others[1]
        publisher.wait_for(rb"Announced (\d+) blob")

        path = self.download(self.base / "downloader", sd_hash, bootstrap)
        self.assertEqual(path.name, "film.bin")
        self.assertEqual(_sha256(path), _sha256(source))

        node4 = others[3]
        # (twistd ends by the signal it got, once it has shut down cleanly)
        self.assertEqual(node4.stop(), -signal.SIGTERM, node4.output.decode())
        path = self.download(node4.data_dir, sd_hash, bootstrap=None)
        self.assertEqual(_sha256(path), _sha256(source))

        # only node 4 holds its copy once node 2 is gone: the next download
        # can only come from the restarted node 4
        self.assertEqual(publisher.stop(), -signal.SIGTERM, publisher.output.decode())
        again = self.start(4)
        again.wait_for(rb"Joined the DHT")
        again.wait_for(rb"Announced (\d+) blob")
        path = self.download(self.base / "late", sd_hash, bootstrap)
        self.assertEqual(_sha256(path), _sha256(source))


class ServeOnTheDHTTests(SynchronousTestCase):
    def test_serve_announces(self) -> None:
        """
        C{p2pblob serve FILE --bootstrap NODE} joins the DHT and announces
        what it serves: a download given only the sd hash finds it.
        """
        base = Path(self.mktemp()).absolute()
        base.mkdir(parents=True)
        first = Seeder(base / "first", "--dht-allow-loopback",
                       "--peer-listen", "tcp:0:interface=127.0.0.30")
        self.addCleanup(first.kill)
        bootstrap = first.wait_for(_UDP).group(1).decode()
        source = base / "clip.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024))
        serving = subprocess.Popen(
            [sys.executable, "-m", "p2pblob", "serve", str(source),
             "--listen", "tcp:0:interface=127.0.0.31", "--bootstrap", bootstrap],
            env=environment(base / "server"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: serving.poll() is None and serving.kill())
        assert serving.stdout is not None and serving.stderr is not None
        sd_hash = serving.stdout.readline().split()[0].decode()
        said = b""
        while b"announcing" not in said:
            line = serving.stderr.readline()
            self.assertTrue(line, f"serve ended: {said.decode()}")
            said += line
        self.assertIn(b"on the DHT at UDP 127.0.0.31:", said)
        env = environment(base / "client")
        env["P2PBLOB_BOOTSTRAP"] = bootstrap
        env.pop("P2PBLOB_PEERS", None)
        result = subprocess.run(
            [sys.executable, "-m", "p2pblob", "download", sd_hash, "--output", str(base / "out"),
             "--stall-timeout", "60"],
            env=env, capture_output=True, text=True, timeout=180,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(Path(result.stdout.strip()).read_bytes(), source.read_bytes())
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=60)
        self.assertEqual(serving.returncode, 0)
