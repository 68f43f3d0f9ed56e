"""
p2pblob: a peer-to-peer blob exchange node, wire-compatible with LBRY.
"""

from p2pblob._version import __version__

__all__ = ["__version__"]
