"""
Tests for L{p2pblob.storage.discovery}: the built-in storage plugins are
found as the node finds them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pblob.errors import ConfigError
from p2pblob.interfaces import IStoragePlugin
from p2pblob.storage.discovery import find_plugin, storage_plugins
from tests.storage_conformance import use_checkout_plugins


class DiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        use_checkout_plugins(self)

    def test_builtin(self) -> None:
        """
        The dropin registers the C{local} and C{memory} plugins, which
        provide L{IStoragePlugin}.
        """
        plugins = storage_plugins()
        self.assertLessEqual({"local", "memory"}, set(plugins))
        for name, plugin in plugins.items():
            self.assertEqual(plugin.name, name)
            self.assertTrue(verifyObject(IStoragePlugin, plugin))
        self.assertTrue(plugins["local"].blocking)
        self.assertFalse(plugins["memory"].blocking)

    def test_find(self) -> None:
        self.assertEqual(find_plugin("memory").name, "memory")

    def test_unknown(self) -> None:
        """
        An unknown name is a L{ConfigError} that names it and lists the
        plugins there are.
        """
        error = self.assertRaises(ConfigError, find_plugin, "floppy")
        self.assertIn("'floppy'", str(error))
        self.assertIn("local", str(error))
        self.assertIn("memory", str(error))

    def test_memory_backends_apart(self) -> None:
        """
        Each backend of the registered C{memory} plugin starts empty.
        """
        plugin = find_plugin("memory")
        first = plugin.backend({}, None)
        first.upload_file("k", b"v")
        self.assertFalse(plugin.backend({}, None).exists("k"))
