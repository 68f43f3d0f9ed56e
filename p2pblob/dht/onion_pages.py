"""
How the onion endpoints of a C{findValue} answer (a p2pblob extension,
L{p2pblob.dht.messages.ONIONS_KEY}) are shared out over its pages, so that
each page stays within LBRY's datagram size.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pblob.dht.bencode import bencode
from p2pblob.dht.constants import HASH_LENGTH, MAX_DATAGRAM_SIZE, RPC_ID_LENGTH, K
from p2pblob.dht.messages import ONIONS_KEY
from p2pblob.dht.results import FindValueResult

__all__ = ["onion_pages"]


# Page 0 keeps room for K contacts of the longest form, whatever the
# contacts of the moment, and every page for a page count of up to this:
# the onions of a page then depend on the stored peers and onions only.
_LONGEST_CONTACT = (bytes(HASH_LENGTH), "255.255.255.255", 65535)
_MOST_PAGES = 999_999
# a response around a result: {0: 1, 1: rpc id, 2: node id, 3: result}
_RESPONSE_SIZE = len(bencode({0: 1, 1: bytes(RPC_ID_LENGTH), 2: bytes(HASH_LENGTH), 3: b""})) - 2


def onion_pages(
    key: bytes, peers: Sequence[bytes], onions: Sequence[bytes], per_page: int = K
) -> list[list[bytes]]:
    """
    How C{onions} are shared out over the pages of a C{findValue} answer
    for C{key} that lists C{peers}, C{per_page} peers a page: each page
    holds, in order, the next onions that fit in its datagram (at most
    L{MAX_DATAGRAM_SIZE} bytes) besides its peers, at most C{per_page}.

    Page 0 keeps room for C{K} contacts and pages for a large page count,
    so that where each onion goes depends on C{key}, C{peers} and
    C{onions} alone: a requester asking for page 1 gets the onions that
    follow those of page 0, whatever happened to the routing table
    meanwhile.  (With C{K} peers, page 0 holds no onion; pages beyond
    those of peers hold C{per_page}.)

    @return: the onions of page 0, 1, ... up to the last page holding one.
    """
    token = bytes(HASH_LENGTH)
    onion_entry = len(bencode(ONIONS_KEY)) + len(bencode([]))

    def room_beside(number: int, listed: Sequence[bytes]) -> int:
        result = FindValueResult(
            token, [_LONGEST_CONTACT] * K if number == 0 else None, listed, _MOST_PAGES, True
        ).encode(key)
        return MAX_DATAGRAM_SIZE - _RESPONSE_SIZE - len(bencode(result)) - onion_entry

    # (the same for every page but 0 without peers: reckoned once)
    room_alone = room_beside(1, ())
    pages: list[list[bytes]] = []
    placed = 0
    while placed < len(onions):
        number = len(pages)
        listed = peers[number * per_page : (number + 1) * per_page]
        room = room_beside(number, listed) if number == 0 or listed else room_alone
        page: list[bytes] = []
        while placed < len(onions) and len(page) < per_page:
            size = len(bencode(onions[placed]))
            if size > room:
                break
            room -= size
            page.append(onions[placed])
            placed += 1
        if not page and not listed and number > 0:
            break  # (cannot happen: a page without peers holds per_page)
        pages.append(page)
    return pages
