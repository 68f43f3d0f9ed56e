"""
The C{sftp} storage backend: files on an SSH server, over its SFTP
subsystem, with C{twisted.conch} (the C{p2pblob[sftp]} extra).

This module only makes the backend; the backend itself is in
L{p2pblob.storage._sftp}, which imports C{twisted.conch} and the libraries
it needs (cryptography, bcrypt, pyasn1).  Without them, making the backend
fails with a L{p2pblob.errors.ConfigError} that says what to install,
rather than with an C{ImportError} from deep inside the plugin machinery.

How it works, in short (the details are in L{p2pblob.storage._sftp}):

  - It connects when first used, checks the server's host key against the
    C{known_hosts} file or the C{host_key} option (an unknown key is
    refused, never accepted silently), logs in with a password or a private
    key, and keeps that one SSH connection and SFTP channel for every call;
    a call that finds the connection lost reconnects.
  - An upload is written, chunk by chunk at its offset, to a hidden file
    next to its target (C{DIR/.NAME.p2pblob-upload}), renamed onto the
    target when it ends.  Resuming an upload asks the server for the size
    of that file.
  - Lost connections, timeouts and the server's generic failures are
    L{p2pblob.errors.ServiceError}s (the host retries them); a refused host
    key or login, a denied permission, and misuse are
    L{p2pblob.errors.DriverError}s.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from p2pblob.errors import ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from p2pblob.interfaces import IStorageBackend

__all__ = ["INSTALL_HINT", "make_backend"]

INSTALL_HINT = "pip install 'p2pblob[sftp]'"
"""
What to run to get the libraries the C{sftp} plugin needs.
"""

_IMPLEMENTATION = "p2pblob.storage._sftp"


def make_backend(
    options: dict[str, Any],
    clock: IReactorTime,
    importer: Callable[[str], ModuleType] = import_module,
) -> IStorageBackend:
    """
    Make the C{sftp} plugin's backend (see
    L{p2pblob.interfaces.IStoragePlugin.backend}).

    @param options: the plugin's options, checked and converted.
    @param clock: the time source for timeouts.
    @param importer: imports a module by name; tests replace it to pretend
        that C{twisted.conch}'s libraries are missing.

    @return: an L{p2pblob.storage._sftp.SFTPBackend} that connects through
        the global reactor when first used.
    @raise p2pblob.errors.ConfigError: C{twisted.conch} or a library it needs
        is not installed, or the options cannot work together.
    """
    try:
        implementation = importer(_IMPLEMENTATION)
    except ImportError as e:
        missing = e.name or "twisted.conch"
        if missing.startswith("p2pblob"):
            raise
        raise ConfigError(
            f"the 'sftp' storage plugin needs twisted.conch and the libraries it uses "
            f"({missing} is missing): {INSTALL_HINT}"
        ) from e
    backend: IStorageBackend = implementation.make_backend(options, clock)
    return backend
