"""
The process that crash tests kill: it sets up a ledger, then runs one
transaction with the fault hook armed, and kills itself with SIGKILL when
the transaction reaches the named step.

    python -m tests.wallet._crash_child DIRECTORY SCENARIO STEP

It prints JSON lines on stdout: C{{"before": ...}} once set up (the ledger
as L{snapshot} reads it), then, if it was not killed, C{{"after": ...}} and
C{{"steps": [...]}}, the steps the armed transaction went through.  With
STEP C{none} it is never killed.  Everything is deterministic (fixed keys
and times), so every run of a scenario starts from the same state.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pblob.wallet.cheques import issue_cheque
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.ledger import Ledger

A = NodeKey.from_seed(bytes(range(32)))
B = NodeKey.from_seed(bytes(range(32, 64)))
ADDRESS = "192.0.2.1:50123"
GRANT = 1_000
NOW = 1.0


def snapshot(path: Path) -> dict[str, Any]:
    """
    Every row of every table of the ledger at C{path}, read as a separate
    process would (an empty dict if the ledger has no tables).
    """
    if not path.exists():
        return {}
    db = sqlite3.connect(str(path))
    try:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )]
        state: dict[str, Any] = {}
        for table in tables:
            rows = db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            state[table] = [
                [value.hex() if isinstance(value, bytes) else value for value in row]
                for row in rows
            ]
        return state
    finally:
        db.close()


Scenario = Callable[[Ledger], Callable[[Ledger], object]]
"""
A scenario sets up the ledger it is given and returns the operation to run
with the fault hook armed, on the ledger opened again.
"""


def _create(setup: Ledger) -> Callable[[Ledger], object]:
    # never called: this scenario's transaction is the making of the ledger
    return lambda ledger: None


def _reserve(setup: Ledger) -> Callable[[Ledger], object]:
    return lambda ledger: ledger.reserve("peer", 300, NOW)


def _cancel(setup: Ledger) -> Callable[[Ledger], object]:
    rid = setup.reserve("peer", 300, NOW)
    return lambda ledger: ledger.cancel(rid or 0)


def _release(setup: Ledger) -> Callable[[Ledger], object]:
    setup.reserve("peer", 300, NOW)
    setup.reserve("other", 200, NOW)
    return lambda ledger: ledger.release_reservations()


def _pay(setup: Ledger) -> Callable[[Ledger], object]:
    rid = setup.reserve("peer", 300, NOW)
    return lambda ledger: ledger.pay(rid or 0, 250, B.public_key, NOW)


def _pay_again(setup: Ledger) -> Callable[[Ledger], object]:
    first = setup.reserve("peer", 100, NOW)
    setup.pay(first or 0, 100, B.public_key, NOW)
    rid = setup.reserve("peer", 300, NOW)
    return lambda ledger: ledger.pay(rid or 0, 300, B.public_key, NOW)


def _pay_keep(setup: Ledger) -> Callable[[Ledger], object]:
    rid = setup.reserve("peer", 300, NOW)
    return lambda ledger: ledger.pay(rid or 0, 120, B.public_key, NOW, keep=150)


def _shrink(setup: Ledger) -> Callable[[Ledger], object]:
    rid = setup.reserve("peer", 300, NOW)
    return lambda ledger: ledger.shrink(rid or 0, 100)


def _deliver(setup: Ledger) -> Callable[[Ledger], object]:
    rid = setup.reserve("peer", 100, NOW)
    cheque = setup.pay(rid or 0, 100, B.public_key, NOW)
    return lambda ledger: ledger.delivered(cheque)


def _receive(setup: Ledger) -> Callable[[Ledger], object]:
    setup.expect(ADDRESS, 500, NOW)
    cheque = issue_cheque(B, A.public_key, 250, 1)
    return lambda ledger: ledger.receive(cheque, NOW, bind=ADDRESS)


def _receive_more(setup: Ledger) -> Callable[[Ledger], object]:
    setup.receive(issue_cheque(B, A.public_key, 250, 1), NOW)
    cheque = issue_cheque(B, A.public_key, 400, 3)
    return lambda ledger: ledger.receive(cheque, NOW)


def _expect(setup: Ledger) -> Callable[[Ledger], object]:
    setup.expect("peer", 10, NOW)
    return lambda ledger: ledger.expect("peer", 42, NOW)


def _merge(setup: Ledger) -> Callable[[Ledger], object]:
    setup.expect(ADDRESS, 7, NOW)
    setup.expect(B.public_hex, 5, NOW)
    return lambda ledger: ledger.merge_expected(ADDRESS, B.public_hex, NOW)


SCENARIOS: dict[str, Scenario] = {
    "create": _create,
    "reserve": _reserve,
    "cancel": _cancel,
    "release": _release,
    "pay": _pay,
    "pay-again": _pay_again,
    "pay-keep": _pay_keep,
    "shrink": _shrink,
    "deliver": _deliver,
    "receive": _receive,
    "receive-more": _receive_more,
    "expect": _expect,
    "merge": _merge,
}


def main(directory: Path, scenario: str, kill_at: str) -> None:
    path = directory / "ledger.sqlite"
    steps: list[str] = []
    armed = False

    def fault(step: str) -> None:
        if armed:
            steps.append(step)
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    def open_ledger() -> Ledger:
        return Ledger(path, A, GRANT, NOW, fault)

    def emit(key: str, value: object) -> None:
        sys.stdout.write(json.dumps({key: value}) + "\n")
        sys.stdout.flush()

    operation = None
    if scenario != "create":
        setup = open_ledger()
        operation = SCENARIOS[scenario](setup)
        setup.close()
    emit("before", snapshot(path))
    armed = True
    ledger = open_ledger()  # "create" is killed in here
    if operation is not None:
        operation(ledger)
        ledger.sync()  # payments are written here
    armed = False
    ledger.close()
    emit("after", snapshot(path))
    emit("steps", steps)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
