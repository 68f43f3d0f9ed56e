"""
Which payment keys have paid us from which client host, so that a host's
debt limit counts what all of them owe.

A payment key is self-issued: a client that does not mean to pay could
make a new one for each connection, or send a tiny cheque from a
throwaway key (which moves what its host owed to that key), and start
afresh each time.  So a paid-mode server also limits what a client host
(L{p2pblob.wallet.accounts.client_host}) owes in all: what it owes without
a key, plus the unpaid debt of every key that has sent a cheque or been
served from it (L{host_debt}).  L{HostKeys} remembers those keys, in a
small SQLite file beside the ledger (C{wallet/hosts.sqlite}), so that a
restart does not clear them.

Its growth is bounded: a key that owes nothing adds nothing to its host's
debt and is forgotten when the host next gains a key, and when the file is
read; a host holds at most L{MAX_KEYS_PER_HOST} keys that owe something,
and a host that has that many is served no more until some of them pay.
So the file holds, per host that owes us something, at most that many
keys: it grows as the ledger's own record of debts does.

A key is written down before the cheque that names it is credited (which
moves its host's debt to it): a crash in between leaves a key with nothing
more owed, never a debt outside its host's account.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from p2pblob._sqlite import transaction
from p2pblob.errors import LedgerError
from p2pblob.wallet.ledger import Ledger

__all__ = ["HOSTS_FILE", "MAX_KEYS_PER_HOST", "HostKeys", "host_debt", "unpaid"]

HOSTS_FILE = "hosts.sqlite"

MAX_KEYS_PER_HOST = 32

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS host_key ("
    " host TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (host, key)"
    ") WITHOUT ROWID"
)


def unpaid(ledger: Ledger, name: str) -> int:
    """
    What C{name} (a key in hex, or a host) owes us and has not paid,
    never less than 0: paying ahead covers no one else.
    """
    return max(0, ledger.expected(name) - ledger.paid_by(name))


def host_debt(ledger: Ledger, hosts: HostKeys, host: str) -> int:
    """
    What the client host C{host} owes us in all, in micro-points: its
    debt without a key, plus the unpaid debt of every key seen paying or
    served from it.
    """
    return unpaid(ledger, host) + sum(unpaid(ledger, key) for key in hosts.keys(host))


class HostKeys:
    """
    The payment keys seen from each client host, kept in the SQLite file
    at C{path} (in memory only if L{None}).

    @param owes: whether a key (in hex) owes us anything; a key that does
        not is forgotten when room is needed and when the file is read.
    """

    def __init__(self, path: Path | None, owes: Callable[[str], bool]) -> None:
        self._path = path
        self._owes = owes
        self._hosts: dict[str, set[str]] | None = None

    def _load(self) -> dict[str, set[str]]:
        if self._hosts is not None:
            return self._hosts
        hosts: dict[str, set[str]] = {}
        if self._path is not None and self._path.exists():
            with self._open() as db:
                for host, key in db.execute("SELECT host, key FROM host_key").fetchall():
                    hosts.setdefault(host, set()).add(key)
        self._hosts = hosts
        settled = [(host, key) for host, keys in hosts.items() for key in keys
                   if not self._owes(key)]
        self._forget(settled)
        return hosts

    def _open(self) -> closing[sqlite3.Connection]:
        assert self._path is not None
        try:
            db = sqlite3.connect(self._path, isolation_level=None)
            db.execute("PRAGMA synchronous = FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot open {self._path}: {e}") from None
        return closing(db)

    def _write(self, query: str, rows: list[tuple[str, str]]) -> None:
        if self._path is None or not rows:
            return
        try:
            with self._open() as db:
                with transaction(db, "BEGIN IMMEDIATE"):
                    db.executemany(query, rows)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot write {self._path}: {e}") from None

    def _forget(self, pairs: list[tuple[str, str]]) -> None:
        hosts = self._load()
        for host, key in pairs:
            keys = hosts.get(host)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del hosts[host]
        self._write("DELETE FROM host_key WHERE host = ? AND key = ?", pairs)

    def keys(self, host: str) -> frozenset[str]:
        """
        The keys (in hex) seen from C{host}.
        """
        return frozenset(self._load().get(host, ()))

    def full(self, host: str) -> bool:
        """
        Whether C{host} has L{MAX_KEYS_PER_HOST} keys that owe us something,
        so that no other key can be counted for it.
        """
        keys = self._load().get(host, set())
        return sum(1 for key in keys if self._owes(key)) >= MAX_KEYS_PER_HOST

    def add(self, host: str, key: str) -> bool:
        """
        Note that C{key} (in hex) paid or was served from C{host}; on the
        disk when this returns.  Keys of C{host} that owe nothing are
        forgotten if room is needed.

        @return: whether C{key} is now counted for C{host}: not if the host
            already has L{MAX_KEYS_PER_HOST} keys that owe something.
        """
        keys = self._load().get(host, set())
        if key in keys:
            return True
        if len(keys) >= MAX_KEYS_PER_HOST:
            self._forget([(host, k) for k in sorted(keys) if not self._owes(k)])
            keys = self._load().get(host, set())
            if len(keys) >= MAX_KEYS_PER_HOST:
                return False
        self._write("INSERT OR IGNORE INTO host_key (host, key) VALUES (?, ?)", [(host, key)])
        self._load().setdefault(host, set()).add(key)
        return True
