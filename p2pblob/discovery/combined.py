"""
Several peer finders as one: the peers given on the command line and those
the DHT names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pblob.blob.hashing import check_blob_hash
from p2pblob.errors import InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder

__all__ = ["CombinedPeerFinder"]

_log = Logger()


@implementer(IPeerFinder)
class CombinedPeerFinder:
    """
    The peers every one of C{finders} names, each once, in the order of the
    finders.  A finder that fails is logged and left out; the others still
    count.
    """

    def __init__(self, finders: Sequence[IPeerFinder]) -> None:
        self.finders = list(finders)

    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        try:
            check_blob_hash(blob_hash)
        except InvalidBlobHashError as e:
            return fail(e)
        asked = [finder.find_peers_for_blob(blob_hash) for finder in self.finders]

        def merge(results: list[tuple[bool, Any]]) -> list[Any]:
            peers: dict[Any, None] = {}
            for ok, result in results:
                if ok:
                    peers.update(dict.fromkeys(result))
                else:
                    assert isinstance(result, Failure)
                    _log.warn("Could not look for peers: {error}", error=result.value)
            return list(peers)

        return DeferredList(asked, consumeErrors=True).addCallback(merge)
