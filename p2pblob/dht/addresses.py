"""
Which addresses the DHT may use: public IPv4 addresses and high ports only
(spec section 7.4, "Address validation"), for DHT contacts and for the
peers the DHT hands out alike.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_valid_address"]

# Not public, although Python's ipaddress module calls them global.
_ALSO_REFUSED = (ipaddress.IPv4Network("192.88.99.0/24"),)  # 6to4 relay anycast


def is_valid_address(host: str, port: int, allow_loopback: bool) -> bool:
    """
    Whether a DHT contact or peer at C{host:port} may be used (spec section
    7.4, "Address validation").

    Only public IPv4 addresses are valid: private, shared (CGNAT),
    link-local, multicast, reserved, unspecified, documentation and
    broadcast addresses never are, whatever the configuration.  Loopback
    addresses are valid only when C{allow_loopback}, for tests and local
    swarms.  Host names and IPv6 addresses are refused.

    @param host: a dotted-quad IPv4 address.
    @param port: a TCP or UDP port, valid from 1024 to 65535.
    @param allow_loopback: whether 127.0.0.0/8 is acceptable.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        return False
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return allow_loopback
    if not address.is_global or address.is_multicast:
        return False
    return not any(address in network for network in _ALSO_REFUSED)
