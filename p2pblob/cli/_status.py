"""
C{p2pblob status}: a running node's status (the answer of
C{GET /api/v1/status}) in lines for people.
"""

from __future__ import annotations

from typing import Any

from p2pblob.config import format_size

__all__ = ["describe_status"]


def describe_status(status: dict[str, Any]) -> list[str]:
    """
    The lines C{p2pblob status} prints for C{status}.
    """
    peer, dht = status.get("peer") or {}, status.get("dht") or {}
    bandwidth, disk = status.get("bandwidth") or {}, status.get("disk") or {}
    limits = bandwidth.get("limits") or {}
    lines = [
        f"p2pblob {status.get('version')} running for {_duration(status.get('uptime', 0))} "
        f"(data directory {status.get('data_dir')})",
        f"peers: {_listening(peer.get('listening'))}, "
        f"{peer.get('connections', 0)} connection(s)",
        f"DHT: {_dht(dht)}",
        f"bandwidth: {format_size(bandwidth.get('uploaded', 0))} up, "
        f"{format_size(bandwidth.get('downloaded', 0))} down; limits: "
        f"upload {_rate(limits.get('max_upload'))}, download {_rate(limits.get('max_download'))}",
        f"disk: {format_size(disk.get('used', 0))} in {disk.get('blobs', 0)} blob(s), "
        f"limit {format_size(disk.get('limit'))}",
    ]
    prices = status.get("prices") or {}
    if prices.get("price"):
        lines.append(f"paid mode: {prices['price']:g} points per MiB "
                     f"(accepts {prices.get('min_price', 0):g} and up)")
    wallet = status.get("wallet")
    if wallet:
        lines.append(f"wallet: {wallet.get('balance')} points "
                     f"({wallet.get('reserved')} reserved)")
    return lines


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _listening(address: str | None) -> str:
    return "not listening yet" if address is None else f"listening on {address}"


def _dht(dht: dict[str, Any]) -> str:
    if not dht.get("enabled"):
        return "off"
    contacts = dht.get("contacts", 0)
    return f"joined, {contacts} contact(s)" if dht.get("joined") else (
        f"not joined yet ({contacts} contact(s))"
    )


def _rate(rate: float | None) -> str:
    return "no limit" if rate is None else f"{format_size(int(rate))}/s"
