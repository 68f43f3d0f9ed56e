"""
Onion endpoints for the tests: valid Tor v3 onion addresses (a made-up
public key, its checksum and version 3, as tor writes them) with a port.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["onion", "onion_address"]


def onion_address(seed: int) -> str:
    """
    The v3 onion address C{"<56 characters>.onion"} of a public key made
    from C{seed}: a different one for each seed.
    """
    key = hashlib.sha256(b"onion key %d" % seed).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + key + b"\x03").digest()[:2]
    return base64.b32encode(key + checksum + b"\x03").decode("ascii").lower() + ".onion"


def onion(seed: int, port: int = 3333) -> bytes:
    """
    The onion endpoint C{b"<address>.onion:<port>"} of L{onion_address}.
    """
    return f"{onion_address(seed)}:{port}".encode("ascii")
