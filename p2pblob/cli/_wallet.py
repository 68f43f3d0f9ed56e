"""
What C{p2pblob wallet} prints: the ledger of the data directory, read
without changing it (the node may be running).
"""

from __future__ import annotations

from p2pblob.config import Config
from p2pblob.wallet.summary import read_summary
from p2pblob.wallet.units import format_points, to_micro

__all__ = ["describe_wallet"]


def describe_wallet(config: Config) -> list[str]:
    """
    The lines that describe the wallet: its key, its balance and reserved
    points, what each peer owes this node and what this node has promised
    each peer it pays (amounts in points).

    @raise p2pblob.errors.LedgerError: the ledger cannot be read.
    """
    summary = read_summary(config.ledger_path)
    if summary is None:
        grant = format_points(to_micro(config.initial_grant))
        return [
            "no wallet yet: it is made the first time the node runs, with "
            f"{grant} points (--initial-grant)"
        ]
    lines = [
        f"wallet key:  {summary.owner}",
        f"balance:     {format_points(summary.balance)} points "
        f"({format_points(summary.reserved)} reserved by {summary.reservations} "
        f"download(s) in progress, {format_points(summary.available)} available)",
        f"in all:      granted {format_points(summary.granted)}, received "
        f"{format_points(summary.received)}, paid {format_points(summary.sent)}",
        "owed to us:",
    ]
    debts = [debt for debt in summary.debts if debt.expected or debt.paid]
    for debt in debts:
        lines.append(
            f"  {debt.peer}  owes {format_points(debt.owes)} "
            f"(served {format_points(debt.expected)}, paid {format_points(debt.paid)})"
        )
    if not debts:
        lines.append("  nothing")
    lines.append("paid by us:")
    for row in summary.payments:
        lines.append(
            f"  {row.payee}  {format_points(row.total)} in {row.sequence} cheque(s), "
            f"{format_points(row.undelivered)} not yet acknowledged"
        )
    if not summary.payments:
        lines.append("  nothing")
    return lines
