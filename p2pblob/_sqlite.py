"""
Transactions on SQLite connections in autocommit mode (C{isolation_level=
None}), as p2pblob opens them all: there, C{with connection} would commit
each statement on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pblob.errors import StorageError

__all__ = ["open_database", "transaction"]


def open_database(
    path: Path | str,
    what: str,
    prepare: Callable[[sqlite3.Connection], None],
    damaged: str = "",
    timeout: float = 10.0,
) -> sqlite3.Connection:
    """
    Open (or make, with its directory) one of p2pblob's SQLite files, in
    autocommit mode, and prepare it (check its version, make its tables).

    @param what: what the file is, for messages ("the transfer journal").
    @param prepare: called with the connection; it may raise
        L{sqlite3.Error} or L{StorageError}.
    @param damaged: what the user may do if the file is damaged, added to
        the message in parentheses.
    @param timeout: seconds to wait for another connection's lock.

    @raise StorageError: the file cannot be opened, made or prepared; the
        message names it and says why.
    """
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, timeout=timeout)
    except (OSError, sqlite3.Error) as e:
        raise StorageError(f"cannot open {what} {path}: {e}") from None
    try:
        prepare(db)
    except sqlite3.Error as e:
        db.close()
        hint = f" ({damaged})" if damaged else ""
        raise StorageError(f"cannot use {what} {path}: {e}{hint}") from None
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """
    Run the statements of the block as one transaction on C{db}: committed
    if the block ends normally, rolled back if it raises.

    @param begin: the statement that opens it (C{"BEGIN IMMEDIATE"} takes
        the write lock at once, so that a concurrent writer waits rather
        than fails at the first write).
    """
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
