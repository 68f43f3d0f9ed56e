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
        *_reach(status.get("reach"), on_dht=bool(dht.get("enabled"))),
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


def _reach(reach: dict[str, Any] | None, on_dht: bool = False) -> list[str]:
    """
    Whether and where peers reach the node: a line, and one for its port
    mapping and its onion service if it has them.  An unreachable node
    C{on_dht} with an onion service announces that only.
    """
    if not reach:
        return []
    address = reach.get("external_address")
    if reach.get("reachable"):
        line = "reachable: yes" + (f", at {address}" if address else "")
    elif on_dht and (reach.get("tor") or {}).get("onion_address"):
        line = ("reachable: no (peers cannot connect to this address; announcing the onion "
                "service only, to p2pblob nodes that use Tor)")
    else:
        line = "reachable: no (peers cannot connect to this address; not announcing)"
    lines = [line]
    mapping = reach.get("port_mapping")
    if mapping:
        ports = ", ".join(
            f"{m['protocol']} {m['external_port']} -> {m['internal_address']}:"
            f"{m['internal_port']}"
            for m in mapping.get("mappings") or []
        )
        text = f"port mapping ({mapping.get('method')}): {mapping.get('state')}"
        if ports:
            text += f", {ports}"
        if mapping.get("gateway"):
            text += f" on {mapping['gateway']}"
        if mapping.get("problem"):
            text += f"; {mapping['problem']}"
        lines.append(text)
    tor = reach.get("tor")
    if tor:
        text = f"Tor: {tor.get('state')}"
        if tor.get("onion_address"):
            text += f", onion service {tor['onion_address']}:{tor.get('onion_port')}"
        if tor.get("problem"):
            text += f"; {tor['problem']}"
        lines.append(text)
    return lines


def _rate(rate: float | None) -> str:
    return "no limit" if rate is None else f"{format_size(int(rate))}/s"
