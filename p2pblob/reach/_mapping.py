"""
What a port mapping is, whoever made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PortMapping"]


@dataclass(frozen=True)
class PortMapping:
    """
    One port the router forwards to this node.

    @ivar protocol: C{"TCP"} or C{"UDP"}.
    @ivar external_port: the port on the router's internet address.
    @ivar internal_address: the LAN address it forwards to (this host's).
    @ivar internal_port: the port on this host it forwards to.
    @ivar lease: how long the router keeps it without renewal, in seconds.
    """

    protocol: str
    external_port: int
    internal_address: str
    internal_port: int
    lease: int

    def as_dict(self) -> dict[str, Any]:
        """
        The mapping as JSON-serialisable data, for the API.
        """
        return {
            "protocol": self.protocol,
            "external_port": self.external_port,
            "internal_address": self.internal_address,
            "internal_port": self.internal_port,
            "lease": self.lease,
        }
