"""
Being reachable from the internet: asking the router to forward this node's
ports (L{UPnPPortMapper}) and knowing the address peers reach it at.
"""

from p2pblob.reach._mapping import PortMapping
from p2pblob.reach.upnp import UPnPPortMapper, load_miniupnpc

__all__ = ["PortMapping", "UPnPPortMapper", "load_miniupnpc"]
