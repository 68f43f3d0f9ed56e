"""
The twistd plugin for C{twistd p2pblob}; the real work is in L{p2pblob.tap},
imported only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

p2pblob = ServiceMaker(
    "p2pblob",
    "p2pblob.tap",
    "A peer-to-peer blob exchange node, wire-compatible with LBRY.",
    "p2pblob",
)
