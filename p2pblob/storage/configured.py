"""
Storage plugins as the node's configuration names them: C{NAME=VALUE}
options from the command line, checked at start, and the host of the blob
store's backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p2pblob.config import Config
from p2pblob.errors import ConfigError
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.host import StorageHost
from p2pblob.storage.options import parse_options

__all__ = ["blob_storage_host", "check_blob_storage", "parse_assignment"]

# what the built-in disk store takes as the `local` blob store
_LOCAL_STORE_OPTIONS = ("root",)


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """
    Split a C{NAME=VALUE} option.

    @param option: the command-line option it was given to, for the message.

    @raise ConfigError: there is no C{=}, or no name before it.
    """
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise ConfigError(f"{option}: {text!r:.200} is not NAME=VALUE")
    return name.strip(), value


def check_blob_storage(name: str, options: Iterable[tuple[str, str]]) -> None:
    """
    Check the blob store's plugin and options before the node starts.

    @raise ConfigError: the plugin is not installed, or an option is
        unknown, of the wrong kind, or missing; the message names it.
    """
    given = dict(options)
    if name == "local":
        unknown = sorted(set(given) - set(_LOCAL_STORE_OPTIONS))
        if unknown:
            raise ConfigError(
                f"the local blob store has no option {unknown[0]!r} (its option: root, "
                "the directory of the blob files)"
            )
        return
    parse_options(find_plugin(name), given)


def blob_storage_host(reactor: Any, config: Config) -> StorageHost:
    """
    The host of the backend that keeps the blobs, for any plugin but
    C{local} (whose blobs the disk store keeps itself); its blocking calls
    run in its own threads.

    @raise ConfigError: as L{check_blob_storage}.
    """
    if config.blob_storage == "local":
        raise ConfigError("the local blob store is not run through a storage host")
    plugin = find_plugin(config.blob_storage)
    return StorageHost(plugin, dict(config.blob_storage_options), reactor,
                       reactor_threads=reactor)
