"""
Transactions on SQLite connections in autocommit mode (C{isolation_level=
None}), as p2pblob opens them all: there, C{with connection} would commit
each statement on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["transaction"]


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
