"""
What the announcer announces, read from the blob store.

The holdings of an L{p2pblob.discovery.announcer.Announcer} are the streams
a node holds, each as its sd hash and the hashes of those of its data blobs
the node holds (L{store_holdings} reads them from a blob store); its policy
(L{POLICIES}) picks which of each stream's blobs to announce
(L{blobs_to_announce}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pblob.blob.store import BlobStore

__all__ = ["POLICIES", "blobs_to_announce", "store_holdings"]

POLICIES = ("all", "head")
"""
What to announce of each stream: C{"all"} its blobs, or C{"head"}: the sd
blob and the first data blob (a downloader that finds those can ask the same
peers for the rest).
"""


def blobs_to_announce(
    holdings: Iterable[tuple[str, Sequence[str]]], policy: str
) -> tuple[list[str], list[str]]:
    """
    The blobs to announce of the streams in C{holdings} (each an sd hash and
    its data blob hashes in stream order, or a list that starts with the sd
    hash itself), as C{policy} picks them.

    @return: the heads (each stream's sd blob, then its first data blob if
        any), and the rest of the data blobs, each in stream order.
    """
    heads: list[str] = []
    rest: list[str] = []
    for sd_hash, blob_hashes in holdings:
        data = list(blob_hashes)
        if data and data[0] == sd_hash:
            del data[0]
        if policy == "head":
            del data[1:]
        heads.append(sd_hash)
        if data:
            heads.append(data[0])
            rest.extend(data[1:])
    return heads, rest


def store_holdings(store: BlobStore) -> Callable[[], list[tuple[str, list[str]]]]:
    """
    Holdings for an L{p2pblob.discovery.announcer.Announcer}, read from a
    started blob store: every stream it records whose sd blob it holds, with
    those of the stream's data blobs it holds (so a download still running
    announces what it has so far), in stream order.

    A stream whose sd blob is gone (evicted) is left out, data blobs and
    all.  The function raises L{p2pblob.errors.StorageError} while the store
    is not started; the announcer then keeps its schedule and tries again
    at its next scan.
    """

    def holdings() -> list[tuple[str, list[str]]]:
        index = store.index
        has_blob = store.has_blob
        result = []
        for sd_hash, _role, _finished, _pinned in index.streams():
            if not has_blob(sd_hash):
                continue
            blobs = [h for h in index.stream_blobs(sd_hash) if h != sd_hash and has_blob(h)]
            result.append((sd_hash, blobs))
        return result

    return holdings
