"""
The composition root: L{make_node} builds the node's whole service tree from
a L{Config}.  Nothing else constructs services.
"""

from __future__ import annotations

from twisted.application.service import MultiService

from p2pblob.blob.service import BlobStoreService, _Reactor
from p2pblob.config import Config

__all__ = ["Node", "make_node"]


class Node(MultiService):
    """
    A running p2pblob node.

    @ivar config: what it was built from.
    @ivar blob_store: the L{BlobStoreService}.
    """

    def __init__(self, config: Config, blob_store: BlobStoreService) -> None:
        super().__init__()
        self.config = config
        self.blob_store = blob_store
        blob_store.setServiceParent(self)


def make_node(reactor: _Reactor, config: Config) -> Node:
    """
    Build a node (not yet started) on C{reactor}.
    """
    return Node(config, BlobStoreService(reactor, config))
