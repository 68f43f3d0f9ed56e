"""
Peers given on the command line or in the configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from p2pblob.blob.hashing import check_blob_hash
from p2pblob.errors import ConfigError, InvalidBlobHashError
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry

__all__ = ["StaticPeerFinder", "parse_peer"]


def parse_peer(text: str, option: str = "peer") -> tuple[str, int]:
    """
    C{"host:port"} or C{"[v6 address]:port"} as C{(host, port)}.

    @param option: how to name the setting in the error.
    @raise ConfigError: if C{text} is not of that form.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{option}: {text!r} is not HOST:PORT (for example 127.0.0.1:3333)")
    return host, int(port_text)


@implementer(IPeerFinder)
class StaticPeerFinder:
    """
    Claims that every peer of a fixed list has every blob; the download
    finds out which really do.
    """

    def __init__(self, registry: PeerRegistry, addresses: Iterable[tuple[str, int]]) -> None:
        self._registry = registry
        self.addresses = list(dict.fromkeys(addresses))

    def find_peers_for_blob(self, blob_hash: str) -> Deferred[list[Any]]:
        try:
            check_blob_hash(blob_hash)
        except InvalidBlobHashError as e:
            return fail(e)
        return succeed([self._registry.get(host, port) for host, port in self.addresses])
