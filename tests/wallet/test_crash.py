"""
Crash consistency of the ledger: each transaction runs in a child process
that is killed (SIGKILL) at each of its steps in turn; the ledger is then
reopened and must be exactly as before the transaction (killed before its
commit) or exactly as after it (killed after), and consistent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.wallet.cheques import check_cheque
from p2pblob.wallet.ledger import FAULT_POINTS, Ledger
from p2pblob.wallet.wallet import Wallet
from tests._process import ROOT, environment
from tests.wallet._crash_child import GRANT, A, B, snapshot


class CrashTests(SynchronousTestCase):
    def run_child(self, directory: Path, scenario: str, kill_at: str) -> tuple[int, dict[str, Any]]:
        directory = directory.absolute()
        directory.mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-m", "tests.wallet._crash_child", str(directory), scenario, kill_at],
            cwd=ROOT,
            env=environment(directory),
            capture_output=True,
            text=True,
            timeout=60,
        )
        output: dict[str, Any] = {}
        for line in result.stdout.splitlines():
            output.update(json.loads(line))
        self.assertNotIn("Traceback", result.stderr, result.stderr)
        return result.returncode, output

    def check(self, scenario: str) -> None:
        """
        Kill the scenario's transaction at every step and check the ledger
        each time.
        """
        top = Path(self.mktemp())
        status, reference = self.run_child(top / "reference", scenario, "none")
        self.assertEqual(status, 0)
        before, after, steps = reference["before"], reference["after"], reference["steps"]
        self.assertNotEqual(before, after)
        known = {step for names in FAULT_POINTS.values() for step in names}
        self.assertTrue(set(steps) <= known, steps)
        commits = [step for step in steps if step.endswith(":committed")]
        self.assertEqual(commits, [steps[-1]])
        for number, step in enumerate(steps):
            directory = top / f"kill-{number}"
            status, output = self.run_child(directory, scenario, step)
            self.assertEqual(status, -signal.SIGKILL, step)
            self.assertEqual(output, {"before": before}, step)
            path = directory / "ledger.sqlite"
            found = snapshot(path)
            self.assertEqual(found, after if step == steps[-1] else before, step)
            ledger = Ledger(path, A, GRANT, now=2.0)
            try:
                self.assertEqual(ledger.problems(), [], step)
            finally:
                ledger.close()

    def test_create(self) -> None:
        self.check("create")

    def test_reserve(self) -> None:
        self.check("reserve")

    def test_cancel(self) -> None:
        self.check("cancel")

    def test_release(self) -> None:
        self.check("release")

    def test_pay(self) -> None:
        self.check("pay")

    def test_pay_again(self) -> None:
        self.check("pay-again")

    def test_pay_keep(self) -> None:
        self.check("pay-keep")

    def test_shrink(self) -> None:
        self.check("shrink")

    def test_deliver(self) -> None:
        self.check("deliver")

    def test_receive(self) -> None:
        self.check("receive")

    def test_receive_more(self) -> None:
        self.check("receive-more")

    def test_expect(self) -> None:
        self.check("expect")

    def test_merge(self) -> None:
        self.check("merge")

    def test_cheque_survives(self) -> None:
        """
        Killed right after the payment's commit, before anything could send
        the cheque: the restarted wallet has it waiting to be sent, and the
        rest of the reservation is released.
        """
        directory = Path(self.mktemp())
        status, _ = self.run_child(directory, "pay", "pay:committed")
        self.assertEqual(status, -signal.SIGKILL)
        wallet = Wallet(Clock(), A, directory / "ledger.sqlite", initial_grant=GRANT)
        wallet.start()
        self.addCleanup(wallet.stop)
        [cheque] = wallet.pending_cheques()
        check_cheque(cheque, B.public_key)
        self.assertEqual((cheque.total, cheque.sequence), (250, 1))
        self.assertEqual((wallet.ledger.balance(), wallet.ledger.reserved()), (750, 0))

    def test_reservation_released_after_crash(self) -> None:
        """
        Killed in the middle of a payment, the reservation it came from is
        released when the wallet starts again, and nothing was paid.
        """
        directory = Path(self.mktemp())
        status, _ = self.run_child(directory, "pay", "pay:cheque-stored")
        self.assertEqual(status, -signal.SIGKILL)
        wallet = Wallet(Clock(), A, directory / "ledger.sqlite", initial_grant=GRANT)
        wallet.start()
        self.addCleanup(wallet.stop)
        self.assertEqual(wallet.pending_cheques(), [])
        self.assertEqual((wallet.ledger.balance(), wallet.ledger.available()), (GRANT, GRANT))
