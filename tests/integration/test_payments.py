"""
Paid mode between real processes on 127.0.0.1: a C{twistd p2pblob --price}
seeder and a C{p2pblob download --price} downloader move exactly the cost
of the blobs from one ledger to the other; a client that never pays is cut
off at the debt limit, and forged or replayed cheques are refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.peer.wire import JSONObjectFramer
from p2pblob.stream.descriptor import parse_sd_blob
from p2pblob.wallet.cheques import issue_cheque
from p2pblob.wallet.exchange import CHEQUE_QUERY, DEBT_LIMIT_REACHED, PAYMENT_KEY_QUERY
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.summary import read_summary
from p2pblob.wallet.units import MICRO, blob_cost, to_micro
from tests._process import environment, p2pblob
from tests.integration._nodes import Seeder, publish, start_download

SIZE = 20 * 1024 * 1024
RATE = "1.5"
GRANT = 100 * MICRO


def _balance(data_dir: Path) -> int:
    summary = read_summary(data_dir / "wallet" / "ledger.sqlite")
    assert summary is not None
    return summary.balance


class _RawClient:
    """
    A modified client on a real socket: it asks for blobs and sends what
    cheques the test gives it, and never pays on its own.
    """

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps(request).encode())
        framer = JSONObjectFramer(65536)
        parsed = None
        while parsed is None:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            parsed = framer.feed(data)
        response, rest = parsed
        incoming = response.get("incoming_blob")
        if isinstance(incoming, dict) and "length" in incoming:
            remaining = incoming["length"] - len(rest)
            while remaining > 0:
                chunk = self.sock.recv(min(remaining, 1 << 20))
                assert chunk
                remaining -= len(chunk)
        return response

    def close(self) -> None:
        self.sock.close()


class PaidProcessesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        self.source = self.base / "video.bin"
        self.source.write_bytes(os.urandom(SIZE))
        self.seed_dir = self.base / "seed"
        self.sd_hash, self.sd_file = publish(self.seed_dir, self.source, self.base / "sd")
        self.descriptor = parse_sd_blob(self.sd_file.read_bytes())

    def start_seeder(self, *extra: str) -> Seeder:
        seeder = Seeder(self.seed_dir, "--price", RATE, *extra)
        self.addCleanup(seeder.kill)
        return seeder

    def test_paid_download_moves_exact_points(self) -> None:
        """
        After a 20 MiB download at RATE, the downloader's balance fell and
        the seeder's rose by exactly the sum of C{blob_cost} over the blobs,
        as read from both ledgers.
        """
        seeder = self.start_seeder()
        downloader_dir = self.base / "downloader"
        process = start_download(downloader_dir, self.sd_file, [seeder.address],
                                 self.base / "out", "--price", RATE)
        out, err = process.communicate(timeout=300)
        self.assertEqual(process.returncode, 0, err.decode())
        self.assertEqual((self.base / "out" / "video.bin").read_bytes(), self.source.read_bytes())
        rate = to_micro(RATE)
        cost = sum(blob_cost(info.length, rate) for info in self.descriptor.data_blobs)
        self.assertEqual(_balance(downloader_dir), GRANT - cost)
        self.assertEqual(_balance(self.seed_dir), GRANT + cost)
        shown = p2pblob(downloader_dir, "wallet")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("balance:", shown.stdout)

    def test_serve_command_paid_and_limited(self) -> None:
        """
        C{p2pblob serve --price R --max-upload RATE} charges like the
        daemon, and uploads no faster than the limit.
        """
        serving = subprocess.Popen(
            [sys.executable, "-m", "p2pblob", "serve", "--listen", "tcp:0:interface=127.0.0.1",
             "--no-dht", "--price", RATE, "--max-upload", "8MB"],
            env=environment(self.seed_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: serving.poll() is None and serving.kill())
        assert serving.stderr is not None
        line = serving.stderr.readline().decode()
        found = re.search(r"port=(\d+)", line)
        assert found is not None, line
        downloader_dir = self.base / "downloader"
        started = time.monotonic()
        process = start_download(downloader_dir, self.sd_file, [f"127.0.0.1:{found.group(1)}"],
                                 self.base / "out", "--price", RATE)
        _, err = process.communicate(timeout=300)
        elapsed = time.monotonic() - started
        self.assertEqual(process.returncode, 0, err.decode())
        # 20 MiB at 8 MB/s: 2.6 s, less what the buckets hold at the start
        self.assertGreater(elapsed, 2.0)
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=60)
        self.assertEqual(serving.returncode, 0)
        rate = to_micro(RATE)
        cost = sum(blob_cost(info.length, rate) for info in self.descriptor.data_blobs)
        self.assertEqual(_balance(downloader_dir), GRANT - cost)
        self.assertEqual(_balance(self.seed_dir), GRANT + cost)

    def test_free_downloader_gets_nothing_from_paid_seeder(self) -> None:
        """
        A free download (offer 0) from a paid seeder fails with one clear
        line: the peer refused the price.
        """
        seeder = self.start_seeder()
        process = start_download(self.base / "free", self.sd_file, [seeder.address],
                                 self.base / "out", "--stall-timeout", "3")
        _, err = process.communicate(timeout=120)
        self.assertNotEqual(process.returncode, 0)
        self.assertIn(b"refused our price offer", err)

    def test_non_payer_cut_off_and_bad_cheques(self) -> None:
        """
        A client that never pays gets C{DEBT_LIMIT_REACHED} once it owes
        more than the limit, and the seeder logs why; reconnecting does not
        help (its host owes the debt, not the connection), but paying does:
        a cheque for what it owes, beside the next blob request, gets it
        served again.  A forged cheque and a replayed one credit nothing
        and are answered with an error.
        """
        seeder = self.start_seeder("--debt-limit", "3")
        client = _RawClient(seeder.address)
        self.addCleanup(client.close)
        blobs = [info.blob_hash for info in self.descriptor.data_blobs]

        def blob_request(blob_hash: str) -> dict[str, Any]:
            return {"requested_blobs": [blob_hash], "blob_data_payment_rate": float(RATE),
                    "requested_blob": blob_hash, PAYMENT_KEY_QUERY: True}

        answers = [client.ask(blob_request(blob_hash)) for blob_hash in blobs[:3]]
        self.assertIn("length", answers[0]["incoming_blob"])
        self.assertIn("length", answers[1]["incoming_blob"])
        self.assertEqual(answers[2]["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        seeder.wait_for(rb"Refusing blob .* no more blobs until it pays")
        payee = bytes.fromhex(answers[0][PAYMENT_KEY_QUERY])
        client.close()

        again = _RawClient(seeder.address)
        self.addCleanup(again.close)
        answer = again.ask(blob_request(blobs[2]))
        self.assertEqual(answer["incoming_blob"], {"error": DEBT_LIMIT_REACHED})
        seeder.wait_for(rb"(?s)Refusing blob .*Refusing blob \S+ to \S+: peer 127\.0\.0\.1 owes")

        me = NodeKey.generate()
        owed = sum(blob_cost(info.length, to_micro(RATE)) for info in self.descriptor.data_blobs[:2])
        cheque = issue_cheque(me, payee, owed, 1).to_wire()
        answer = again.ask({**blob_request(blobs[2]), CHEQUE_QUERY: cheque})
        self.assertEqual(answer[CHEQUE_QUERY], {"total": owed, "sequence": 1})
        self.assertEqual(answer["incoming_blob"]["blob_hash"], blobs[2])
        seeder.wait_for(rb"paid its debt; it is served again")

        forged = issue_cheque(me, payee, 50 * MICRO, 2).to_wire()
        forged["payer"] = NodeKey.generate().public_hex
        response = again.ask({"requested_blobs": [], CHEQUE_QUERY: forged})
        self.assertEqual(response[CHEQUE_QUERY]["error"], "FORGED_CHEQUE")
        replay = again.ask({"requested_blobs": [], CHEQUE_QUERY: cheque})[CHEQUE_QUERY]
        self.assertEqual(replay["error"], "STALE_CHEQUE")
        again.close()
        seeder.stop()
        self.assertEqual(_balance(self.seed_dir), GRANT + owed)
