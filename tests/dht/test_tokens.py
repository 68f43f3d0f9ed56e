"""
Tests for L{p2pblob.dht.tokens}: tokens are made as lbry-sdk makes them
(C{vectors/dht/token_and_compact_address.json}), and L{TokenKeeper} accepts
a token for one rotation of its secret and no longer, on a fake clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.dht.constants import HASH_LENGTH, TOKEN_SECRET_REFRESH
from p2pblob.dht.messages import Response, decode_datagram
from p2pblob.dht.results import FindValueResult
from p2pblob.dht.tokens import TokenKeeper, make_token
from p2pblob.errors import DatagramError
from tests._vectors import load_json

ADDRESSES = load_json("dht", "token_and_compact_address.json")
DATAGRAMS = load_json("dht", "datagrams.json")
SECRET = bytes.fromhex(ADDRESSES["secret_hex"])
HOST = "127.0.0.1"


def secrets(first: bytes = SECRET) -> Iterator[bytes]:
    """
    C{first}, then distinct made-up secrets, 48 bytes each.
    """
    yield first
    n = 0
    while True:
        n += 1
        yield hashlib.sha384(b"test-secret-%d" % n).digest()


class SecretSource:
    """
    A secret source for L{TokenKeeper} that records how it is called.
    """

    def __init__(self, first: bytes = SECRET) -> None:
        self.sizes: list[int] = []
        self._secrets = secrets(first)

    def __call__(self, size: int) -> bytes:
        self.sizes.append(size)
        return next(self._secrets)


class MakeTokenVectorTests(SynchronousTestCase):
    """
    L{make_token} is lbry-sdk's recipe.
    """

    def test_vectors(self) -> None:
        self.assertEqual(SECRET.hex(), DATAGRAMS["token_secret_of_B_hex"])
        for case in ADDRESSES["tokens"]:
            token = make_token(SECRET, case["ip"])
            self.assertEqual(token.hex(), case["token_hex"], case["ip"])
            self.assertEqual(len(token), HASH_LENGTH)

    def test_token_in_capture(self) -> None:
        """
        The 127.0.0.1 token is the one node B handed out in the capture.
        """
        response = decode_datagram(bytes.fromhex(DATAGRAMS["steps"][2]["datagrams"][1]["hex"]))
        assert isinstance(response, Response)
        key = bytes.fromhex(DATAGRAMS["blob_key_hex"])
        self.assertEqual(
            FindValueResult.decode(response.result, key).token, make_token(SECRET, HOST)
        )

    def test_not_ipv4(self) -> None:
        for host in ["::1", "localhost", "1.2.3.256", ""]:
            self.assertRaises(DatagramError, make_token, SECRET, host)


class TokenKeeperTests(SynchronousTestCase):
    """
    L{TokenKeeper} on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.source = SecretSource()
        self.keeper = TokenKeeper(self.clock, self.source)

    def test_first_secret(self) -> None:
        """
        Tokens are made from the injected source's secret, 48 bytes asked.
        """
        self.assertEqual(self.keeper.token_for(HOST).hex(), ADDRESSES["tokens"][0]["token_hex"])
        self.assertEqual(self.source.sizes, [HASH_LENGTH])

    def test_default_source(self) -> None:
        """
        By default secrets are random: two keepers give different tokens.
        """
        other = TokenKeeper(self.clock)
        self.assertNotEqual(other.token_for(HOST), TokenKeeper(self.clock).token_for(HOST))
        self.assertTrue(other.verify(other.token_for(HOST), HOST))

    def test_verify_current(self) -> None:
        self.assertTrue(self.keeper.verify(self.keeper.token_for(HOST), HOST))

    def test_other_host(self) -> None:
        """
        A token is only good from the host it was made for.
        """
        token = self.keeper.token_for("1.2.3.4")
        self.assertFalse(self.keeper.verify(token, HOST))
        self.assertTrue(self.keeper.verify(token, "1.2.3.4"))

    def test_garbage(self) -> None:
        """
        Unlike lbry-sdk (which the vectors show accepting 48 zero bytes), we
        refuse anything that is not a token we made.
        """
        self.assertTrue(
            all(case["lbry_verify_token_accepts_garbage"] for case in ADDRESSES["tokens"])
        )
        token = self.keeper.token_for(HOST)
        for garbage in [
            b"\x00" * 48,
            token[:-1] + bytes([token[-1] ^ 1]),
            token[:47],
            token + b"\x00",
            b"",
            token.hex(),
            None,
            bytearray(token),
            make_token(b"another secret", HOST),
        ]:
            self.assertFalse(self.keeper.verify(garbage, HOST), garbage)

    def test_bad_host(self) -> None:
        """
        A host that cannot have been given a token is refused, not an error.
        """
        token = self.keeper.token_for(HOST)
        for host in ["::1", "not an address", ""]:
            self.assertFalse(self.keeper.verify(token, host))

    def test_rotation(self) -> None:
        """
        A token stays good through one rotation and is refused after the
        second.
        """
        self.keeper.start()
        token = self.keeper.token_for(HOST)
        self.clock.advance(TOKEN_SECRET_REFRESH - 1)
        self.assertEqual(self.keeper.token_for(HOST), token)
        self.clock.advance(1)
        self.assertNotEqual(self.keeper.token_for(HOST), token)
        self.assertTrue(self.keeper.verify(token, HOST))
        self.assertTrue(self.keeper.verify(self.keeper.token_for(HOST), HOST))
        self.clock.advance(TOKEN_SECRET_REFRESH)
        self.assertFalse(self.keeper.verify(token, HOST))
        self.assertEqual(len(self.source.sizes), 3)

    def test_rotate(self) -> None:
        """
        L{TokenKeeper.rotate} rotates at once, started or not.
        """
        token = self.keeper.token_for(HOST)
        self.keeper.rotate()
        self.assertTrue(self.keeper.verify(token, HOST))
        self.keeper.rotate()
        self.assertFalse(self.keeper.verify(token, HOST))

    def test_not_started(self) -> None:
        """
        Nothing is scheduled before L{TokenKeeper.start}.
        """
        token = self.keeper.token_for(HOST)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(TOKEN_SECRET_REFRESH * 10)
        self.assertTrue(self.keeper.verify(token, HOST))

    def test_stop(self) -> None:
        """
        After L{TokenKeeper.stop} nothing is scheduled and tokens stay good.
        Starting and stopping twice is harmless.
        """
        self.keeper.start()
        self.keeper.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        token = self.keeper.token_for(HOST)
        self.keeper.stop()
        self.keeper.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(TOKEN_SECRET_REFRESH * 10)
        self.assertTrue(self.keeper.verify(token, HOST))

    def test_late_rotation(self) -> None:
        """
        When the clock jumps over two rotation times at once (a busy
        reactor), both rotations happen: the token is refused.
        """
        self.keeper.start()
        token = self.keeper.token_for(HOST)
        self.clock.advance(TOKEN_SECRET_REFRESH * 2)
        self.assertFalse(self.keeper.verify(token, HOST))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_late_by_one_interval(self) -> None:
        """
        A jump over one rotation time and most of the next rotates once.
        """
        self.keeper.start()
        token = self.keeper.token_for(HOST)
        self.clock.advance(TOKEN_SECRET_REFRESH * 2 - 1)
        self.assertTrue(self.keeper.verify(token, HOST))

    def test_restart(self) -> None:
        self.keeper.start()
        self.keeper.stop()
        self.keeper.start()
        token = self.keeper.token_for(HOST)
        self.clock.advance(TOKEN_SECRET_REFRESH * 2)
        self.assertFalse(self.keeper.verify(token, HOST))

    def test_interval(self) -> None:
        keeper = TokenKeeper(self.clock, SecretSource(), interval=10)
        keeper.start()
        token = keeper.token_for(HOST)
        self.clock.advance(20)
        self.assertFalse(keeper.verify(token, HOST))

    def test_rotation_failure_logged(self) -> None:
        """
        If the secret source fails, the failure is logged and rotation
        stops; the tokens of the last secrets stay good.
        """
        calls = []

        def failing(size: int) -> bytes:
            calls.append(size)
            if len(calls) > 1:
                raise OSError("no entropy")
            return SECRET

        keeper = TokenKeeper(self.clock, failing)
        keeper.start()
        token = keeper.token_for(HOST)
        with capturedLogs() as events:
            self.clock.advance(TOKEN_SECRET_REFRESH)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(len(events), 1)
        self.assertIn("token secret", events[0]["log_format"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(keeper.verify(token, HOST))
