"""
L{p2pblob.wallet.hosts}: the keys seen from each client host, kept on the
disk and bounded.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import DebtLimitError
from p2pblob.wallet.hosts import HOSTS_FILE, MAX_KEYS_PER_HOST, HostKeys, host_debt
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.serving import BlobCharges, host_keys
from p2pblob.wallet.units import MICRO
from tests.wallet._helpers import SEED_B, make_wallet

HOST = "192.0.2.1"


def _key(n: int) -> str:
    return f"{n:064x}"


class HostKeysTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owing: set[str] = set()

    def hosts(self) -> HostKeys:
        return HostKeys(self.path, self.owing.__contains__)

    def test_survive_reopening(self) -> None:
        """
        The keys added for a host are read again by a new L{HostKeys} on the
        same file, if they still owe something; another host has none.
        """
        hosts = self.hosts()
        self.owing.update({_key(1), _key(2)})
        self.assertTrue(hosts.add(HOST, _key(1)))
        self.assertTrue(hosts.add(HOST, _key(2)))
        self.assertTrue(hosts.add(HOST, _key(3)))
        self.assertEqual(hosts.keys(HOST), {_key(1), _key(2), _key(3)})
        again = self.hosts()
        self.assertEqual(again.keys(HOST), {_key(1), _key(2)})
        self.assertEqual(again.keys("192.0.2.7"), frozenset())

    def test_bounded_per_host(self) -> None:
        """
        A host full of keys that owe nothing makes room for a new one; a
        host with L{MAX_KEYS_PER_HOST} keys in debt takes no more and is
        L{HostKeys.full} until one of them pays.
        """
        hosts = self.hosts()
        for n in range(MAX_KEYS_PER_HOST):
            self.assertTrue(hosts.add(HOST, _key(n)))
        self.assertFalse(hosts.full(HOST))
        self.assertTrue(hosts.add(HOST, _key(1000)))
        self.assertEqual(hosts.keys(HOST), {_key(1000)})
        self.owing.update(_key(n) for n in range(MAX_KEYS_PER_HOST))
        for n in range(MAX_KEYS_PER_HOST):
            self.assertTrue(hosts.add(HOST, _key(n)))
        self.assertTrue(hosts.full(HOST))
        self.assertFalse(hosts.add(HOST, _key(2000)))
        self.assertNotIn(_key(2000), hosts.keys(HOST))
        self.assertTrue(hosts.add("192.0.2.7", _key(2000)))
        self.owing.discard(_key(0))
        self.assertFalse(hosts.full(HOST))
        self.assertTrue(hosts.add(HOST, _key(2000)))
        self.assertEqual(len(self.hosts().keys(HOST)), MAX_KEYS_PER_HOST - 1)

    def test_in_memory(self) -> None:
        """
        Without a path nothing is written.
        """
        hosts = HostKeys(None, lambda key: True)
        self.assertTrue(hosts.add(HOST, _key(1)))
        self.assertEqual(hosts.keys(HOST), {_key(1)})
        self.assertFalse(self.path.exists())


class ChargesTests(SynchronousTestCase):
    def test_host_debt_limit(self) -> None:
        """
        An explicit C{host_debt_limit} replaces the default of four debt
        limits; a host's debt is what it owes without a key plus what its
        keys owe, a key that paid ahead counting as 0.
        """
        clock = Clock()
        wallet = make_wallet(self, clock, SEED_B, grant=0, debt_limit=10 * MICRO)
        charges = BlobCharges(wallet, PaymentRateManager(1.0), host_debt_limit=3 * MICRO)
        self.assertIs(charges.hosts, host_keys(wallet))
        self.assertEqual(BlobCharges(wallet, PaymentRateManager(1.0)).host_limit(), 40 * MICRO)
        wallet.ledger.expect(HOST, 2 * MICRO, 0)
        wallet.ledger.expect(_key(1), 2 * MICRO, 0)
        charges.hosts.add(HOST, _key(1))
        charges.hosts.add(HOST, _key(2))
        self.assertEqual(host_debt(wallet.ledger, charges.hosts, HOST), 4 * MICRO)
        error = self.assertRaises(DebtLimitError, charges.check, f"{HOST}:4000")
        self.assertEqual((error.debt, error.limit), (4 * MICRO, 3 * MICRO))
        charges.check("192.0.2.7:4000")
        self.assertTrue((wallet.ledger_path.parent / HOSTS_FILE).exists())
