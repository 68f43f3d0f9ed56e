"""
C{p2pblob wallet}, run as a user runs it, and the wallet's options of
C{twistd p2pblob}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.config import Config
from p2pblob.errors import ConfigError
from p2pblob.node import Node, make_node
from p2pblob.peer.handlers import BlobRequestHandlerFactory
from p2pblob.peer.peer import Peer
from p2pblob.tap import Options
from p2pblob.wallet.keys import NodeKey
from p2pblob.wallet.serving import BlobCharges
from p2pblob.wallet.units import MICRO
from p2pblob.wallet.wallet import open_wallet
from tests._process import p2pblob
from tests.wallet._helpers import SEED_B


def _charges(node: Node) -> BlobCharges:
    """
    What the node's peer server charges blobs by.
    """
    for factory in node.peer_server.factory.query_handler_factories:
        if isinstance(factory, BlobRequestHandlerFactory):
            assert factory.charges is not None
            return factory.charges
    raise AssertionError("the server answers no blob requests")


class WalletCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = Path(self.mktemp()).absolute()
        self.top.mkdir()
        self.data = self.top / "data"

    def test_no_wallet_yet(self) -> None:
        """
        Before the node has run, there is nothing to show, and nothing is
        made.
        """
        result = p2pblob(self.data, "wallet")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("no wallet yet", result.stdout)
        self.assertIn("100 points", result.stdout)
        self.assertFalse((self.data / "wallet").exists())

    def test_shows_ledger(self) -> None:
        """
        The command shows the key, the balance and reserved points, what
        each peer owes and what was paid to each peer.
        """
        clock = Clock()
        wallet = open_wallet(clock, Config(self.data))
        wallet.start()
        payee = NodeKey.from_seed(SEED_B)
        server = Peer("192.0.2.2", 3333)
        wallet.learn_peer_key(server, payee.public_key)
        reservation = wallet.reserve_points(server, 3)
        assert reservation is not None
        self.successResultOf(wallet.send_points(reservation, 2.5))
        wallet.add_expected_payment(Peer("192.0.2.9", 50000), 1.25)
        # a download in progress while the command runs
        wallet.reserve_points(server, 4)
        result = p2pblob(self.data, "wallet")
        wallet.stop()
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout
        self.assertIn(f"wallet key:  {wallet.public_hex}", out)
        self.assertIn("balance:     97.5 points (4 reserved by 1 download(s) in progress, "
                      "93.5 available)", out)
        self.assertIn("granted 100, received 0, paid 2.5", out)
        self.assertIn("  192.0.2.9:50000  owes 1.25 (served 1.25, paid 0)", out)
        self.assertIn(f"  {payee.public_hex}  2.5 in 1 cheque(s), 2.5 not yet acknowledged", out)

    def test_damaged(self) -> None:
        """
        A ledger that cannot be read is one line of error and status 1.
        """
        (self.data / "wallet").mkdir(parents=True)
        (self.data / "wallet" / "ledger.sqlite").write_bytes(b"x" * 4096)
        result = p2pblob(self.data, "wallet")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(result.stderr.startswith("p2pblob: error: cannot read the wallet ledger"))


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        By default the node is free, grants 100 points to a new wallet and
        lets a peer owe 10.
        """
        options = Options()
        options.parseOptions([])
        config = options["config"]
        self.assertEqual(
            (config.price, config.min_price, config.debt_limit, config.initial_grant),
            (0.0, None, 10.0, 100.0),
        )
        self.assertFalse(config.paid_mode)
        self.assertEqual(config.accepted_min_price, 0.0)
        self.assertEqual(config.ledger_path, config.data_dir / "wallet" / "ledger.sqlite")
        self.assertEqual(config.wallet_key_path, config.data_dir / "wallet" / "key")

    def test_paid(self) -> None:
        """
        One switch makes the node paid; the minimum follows the price unless
        given.
        """
        options = Options()
        options.parseOptions(["--price", "0.5", "--debt-limit", "4", "--initial-grant", "20"])
        config = options["config"]
        self.assertTrue(config.paid_mode)
        self.assertEqual((config.price, config.accepted_min_price, config.debt_limit,
                          config.initial_grant), (0.5, 0.5, 4.0, 20.0))
        options = Options()
        options.parseOptions(["--price", "1", "--min-price", "0.25"])
        self.assertEqual(options["config"].accepted_min_price, 0.25)

    def test_host_debt_limit(self) -> None:
        """
        What one host's clients may owe in all is four debt limits unless
        C{--host-debt-limit} says otherwise, and the node's server charges
        by it.
        """
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--price", "1", "--debt-limit", "2"])
        self.assertIsNone(options["config"].host_debt_limit)
        node = make_node(Clock(), options["config"])
        self.assertEqual(_charges(node).host_limit(), 8 * MICRO)
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--price", "1",
                              "--host-debt-limit", "2.5"])
        self.assertEqual(options["config"].host_debt_limit, 2.5)
        node = make_node(Clock(), options["config"])
        self.assertEqual(_charges(node).host_limit(), 2_500_000)

    def test_refused(self) -> None:
        for arguments in (["--price", "-1"], ["--price", "nan"], ["--min-price", "x"],
                          ["--debt-limit", "inf"], ["--initial-grant", "1e13"],
                          ["--host-debt-limit", "-2"],
                          ["--price", "2000000"]):
            options = Options()
            with self.assertRaises(usage.UsageError, msg=arguments):
                options.parseOptions(arguments)
        with self.assertRaises(ConfigError):
            Config(Path("x"), min_price=-1.0)
