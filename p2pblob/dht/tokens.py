"""
Store tokens: proof that a node announcing a blob first asked us for it.

A C{findValue} reply carries a token made for the requester's IP address;
a C{store} must echo it.  A token is C{sha384(secret || compact_ip)}, the
secret being 48 random bytes replaced every L{TOKEN_SECRET_REFRESH} seconds
(C{spec/lbry-wire.md} section 7.5).  Like 2015 lbrynet, and unlike modern
lbry-sdk (which accepts any token), L{TokenKeeper} accepts a token made with
the current or the previous secret and nothing else; modern announcers fetch
a fresh token before every store, so this refuses no honest node.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pblob.dht.constants import HASH_LENGTH, TOKEN_SECRET_REFRESH
from p2pblob.dht.peers import compact_ip
from p2pblob.errors import DatagramError

__all__ = ["TokenKeeper", "make_token"]


def make_token(secret: bytes, host: str) -> bytes:
    """
    The token for requests from IPv4 address C{host}: C{sha384(secret ||
    compact_ip(host))}, 48 bytes.

    @raise DatagramError: if C{host} is not an IPv4 address.
    """
    return hashlib.sha384(secret + compact_ip(host)).digest()


class TokenKeeper:
    """
    Hands out tokens and checks the ones that come back, rotating the secret
    every C{interval} seconds while started.

    @ivar interval: seconds between rotations.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        secret_source: Callable[[int], bytes] = os.urandom,
        interval: float = TOKEN_SECRET_REFRESH,
    ) -> None:
        """
        @param clock: schedules the rotations.
        @param secret_source: called with 48, returns that many random bytes
            (a fixed source makes tokens predictable in tests).
        @param interval: seconds between rotations.
        """
        self.interval = interval
        self._secret_source = secret_source
        self._secret = self._new_secret()
        self._previous: bytes | None = None
        self._rotation = LoopingCall.withCount(self._rotate_elapsed)
        self._rotation.clock = clock

    def _new_secret(self) -> bytes:
        return self._secret_source(HASH_LENGTH)

    def start(self) -> None:
        """
        Rotate the secret every L{interval} seconds from now on.
        """
        if self._rotation.running:
            return
        rotations = self._rotation.start(self.interval, now=False)
        rotations.addErrback(self._rotation_failed)

    def _rotate_elapsed(self, intervals: int) -> None:
        """
        Rotate once per interval elapsed since the last rotation (more than
        one if the reactor was too busy to run us on time), so that no
        token outlives its second rotation interval.
        """
        for _ in range(min(intervals, 2)):
            self.rotate()

    def _rotation_failed(self, failure: Failure) -> None:
        self._log.failure("Rotating the DHT token secret failed; tokens no longer rotate", failure)

    def stop(self) -> None:
        """
        Stop rotating the secret; tokens already handed out stay valid.
        """
        if self._rotation.running:
            self._rotation.stop()

    def rotate(self) -> None:
        """
        Replace the secret; tokens made with the one it replaces stay valid
        until the next rotation.
        """
        self._previous = self._secret
        self._secret = self._new_secret()

    def token_for(self, host: str) -> bytes:
        """
        The token to give a requester at IPv4 address C{host}.

        @raise DatagramError: if C{host} is not an IPv4 address.
        """
        return make_token(self._secret, host)

    def verify(self, token: object, host: str) -> bool:
        """
        Whether C{token} is one we gave C{host} since the secret before the
        last rotation; the comparison takes the same time wherever the token
        differs.  Anything that is not such a token (wrong type or length, a
        host that is not IPv4) is refused.
        """
        if not isinstance(token, bytes) or len(token) != HASH_LENGTH:
            return False
        try:
            current = make_token(self._secret, host)
        except DatagramError:
            return False
        accepted = hmac.compare_digest(token, current)
        if self._previous is not None:
            previous = make_token(self._previous, host)
            accepted = hmac.compare_digest(token, previous) or accepted
        return accepted
