"""
The ledger's tables, and the steps of its transactions that crash tests can
stop at.  See L{p2pblob.wallet.ledger} for what the tables mean.
"""

from __future__ import annotations

__all__ = ["APPLICATION_ID", "FAULT_POINTS", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x70326277  # "p2bw"

SCHEMA = (
    """CREATE TABLE account (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        owner      TEXT NOT NULL,
        balance    INTEGER NOT NULL CHECK (balance >= 0),
        granted    INTEGER NOT NULL CHECK (granted >= 0),
        created_on REAL NOT NULL)""",
    """CREATE TABLE reservation (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        peer       TEXT NOT NULL,
        amount     INTEGER NOT NULL CHECK (amount >= 0),
        created_on REAL NOT NULL)""",
    """CREATE TABLE payee (
        payee              TEXT PRIMARY KEY,
        total              INTEGER NOT NULL CHECK (total >= 0),
        sequence           INTEGER NOT NULL CHECK (sequence >= 1),
        signature          BLOB NOT NULL,
        delivered_total    INTEGER NOT NULL DEFAULT 0,
        delivered_sequence INTEGER NOT NULL DEFAULT 0,
        updated_on         REAL NOT NULL)""",
    """CREATE TABLE payer (
        payer       TEXT PRIMARY KEY,
        total       INTEGER NOT NULL CHECK (total >= 0),
        sequence    INTEGER NOT NULL CHECK (sequence >= 1),
        signature   BLOB NOT NULL,
        received_on REAL NOT NULL)""",
    """CREATE TABLE expected (
        peer       TEXT PRIMARY KEY,
        amount     INTEGER NOT NULL CHECK (amount >= 0),
        updated_on REAL NOT NULL)""",
)

FAULT_POINTS: dict[str, tuple[str, ...]] = {
    "create": ("create:schema", "create:account", "create:committed"),
    "release": ("release:deleted", "release:committed"),
    "reserve": ("reserve:checked", "reserve:inserted", "reserve:committed"),
    "cancel": ("cancel:deleted", "cancel:committed"),
    "shrink": ("shrink:updated", "shrink:committed"),
    "pay": (
        "pay:begin",
        "pay:reservation-released",
        "pay:balance-debited",
        "pay:cheque-stored",
        "pay:committed",
    ),
    "receive": (
        "receive:verified",
        "receive:payer-updated",
        "receive:credited",
        "receive:merged",
        "receive:committed",
    ),
    "expect": ("expect:added", "expect:committed"),
    "merge": ("merge:removed", "merge:added", "merge:committed"),
    "deliver": ("deliver:marked", "deliver:committed"),
}
"""
The steps of each transaction at which the C{fault} hook is called; the
last step of each comes right after its commit.
"""
