"""
The file of known DHT contacts: a small SQLite database written with
L{save_contacts} and read back with L{load_contacts}, so that a restarted
node can rejoin the network without its bootstrap nodes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from twisted.logger import Logger

from p2pblob._sqlite import transaction
from p2pblob.dht.constants import HASH_LENGTH
from p2pblob.dht.contact import Contact

__all__ = ["load_contacts", "save_contacts"]

_log = Logger()

_SCHEMA_VERSION = 1

_CREATE = """
CREATE TABLE contact (
    position INTEGER PRIMARY KEY,
    node_id  BLOB NOT NULL UNIQUE,
    host     TEXT NOT NULL,
    udp_port INTEGER NOT NULL
)
"""


def _write_contacts(path: Path, rows: list[tuple[bytes, str, int]]) -> None:
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        with transaction(db):
            db.execute("DROP TABLE IF EXISTS contact")
            db.execute(_CREATE)
            db.executemany(
                "INSERT OR IGNORE INTO contact (node_id, host, udp_port) VALUES (?, ?, ?)",
                rows,
            )
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


def _remove_database(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        name.unlink(missing_ok=True)


def save_contacts(path: Path | str, contacts: Iterable[Contact]) -> int:
    """
    Replace the contacts saved in C{path} by C{contacts} that are not
    L{bad <p2pblob.dht.contact.ContactState.BAD>}, in one transaction, in
    their order.

    The file holds nothing else; if it is not a readable SQLite database it
    is deleted and written afresh.

    @return: how many contacts were saved.
    @raise sqlite3.Error: if the file cannot be written (e.g. its directory
        does not exist or is read-only).
    @raise OSError: if a corrupt file cannot be removed.
    """
    path = Path(path)
    rows = [(c.node_id, c.host, c.udp_port) for c in contacts if not c.is_bad]
    try:
        _write_contacts(path, rows)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError:
        _log.warn("Replacing the unreadable contacts file {path}", path=str(path))
        _remove_database(path)
        _write_contacts(path, rows)
    return len(rows)


def _valid_row(host: object, port: object, node_id: object) -> bool:
    return (
        isinstance(host, str)
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 < port < 65536
        and isinstance(node_id, bytes)
        and len(node_id) == HASH_LENGTH
    )


def load_contacts(path: Path | str) -> list[tuple[str, int, bytes]]:
    """
    Read the contacts saved by L{save_contacts}.

    A missing file gives no contacts.  So does an unreadable one (not an
    SQLite database, or one without our table), after a warning in the
    log; rows that are not well-formed are skipped.  The addresses are not
    checked with L{p2pblob.dht.addresses.is_valid_address}: that is for the
    caller, which knows whether loopback addresses are allowed.

    @return: C{(host, udp_port, node_id)} of each contact, in the order
        they were saved.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
            rows = db.execute(
                "SELECT host, udp_port, node_id FROM contact ORDER BY position"
            ).fetchall()
    except sqlite3.Error as error:
        _log.warn(
            "Ignoring the unreadable contacts file {path}: {error}",
            path=str(path),
            error=str(error),
        )
        return []
    return [row for row in rows if _valid_row(*row)]
