"""
Finding the storage plugins installed: every L{IStoragePlugin} provided by a
dropin of C{twisted.plugins} (p2pblob's own are registered by
C{plugins/p2pblob_storage.py}, installed as
C{twisted/plugins/p2pblob_storage.py}).
"""

from __future__ import annotations

from types import ModuleType

from twisted.plugin import getPlugins

from p2pblob.errors import ConfigError, DriverError
from p2pblob.interfaces import IStoragePlugin

__all__ = ["find_plugin", "storage_plugins"]


def storage_plugins(package: ModuleType | None = None) -> dict[str, IStoragePlugin]:
    """
    The storage plugins installed, by name.

    @param package: the package of dropins to look in; by default
        C{twisted.plugins}.

    @return: each plugin under its name.
    @raise p2pblob.errors.DriverError: two plugins have the same name.
    """
    found: dict[str, IStoragePlugin] = {}
    for plugin in getPlugins(IStoragePlugin, package):
        if plugin.name in found:
            raise DriverError(
                f"two storage plugins are named {plugin.name!r}: "
                f"{found[plugin.name]!r} and {plugin!r}"
            )
        found[plugin.name] = plugin
    return found


def find_plugin(name: str, package: ModuleType | None = None) -> IStoragePlugin:
    """
    The storage plugin of a name.

    @param name: its name, as the configuration gives it.
    @param package: as for L{storage_plugins}.

    @return: the plugin.
    @raise p2pblob.errors.ConfigError: no plugin has that name; the message
        lists those there are.
    """
    plugins = storage_plugins(package)
    try:
        return plugins[name]
    except KeyError:
        known = ", ".join(sorted(plugins)) or "none"
        raise ConfigError(
            f"there is no storage plugin named {name!r} (installed: {known})"
        ) from None
