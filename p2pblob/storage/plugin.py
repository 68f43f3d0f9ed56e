"""
A storage plugin whose backend's code is imported only when it is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2pblob.interfaces import IStorageBackend, IStoragePlugin
from p2pblob.storage.options import Option

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["StoragePlugin"]


@implementer(IPlugin, IStoragePlugin)
class StoragePlugin:
    """
    A storage plugin that names its backend by where it lives, so that
    declaring the plugin in a dropin costs no import of the backend (or of
    the SDK it needs), as twistd's C{ServiceMaker} does for services.

    @ivar factory: where the backend's factory is, as C{"module:name"}; the
        factory is called with the options and the clock, like
        L{IStoragePlugin.backend}.
    """

    def __init__(
        self,
        name: str,
        factory: str,
        options: tuple[Option, ...] = (),
        blocking: bool = False,
    ) -> None:
        module, _, attribute = factory.partition(":")
        if not module or not attribute:
            raise ValueError(f"factory {factory!r} is not 'module:name'")
        self.name = name
        self.factory = factory
        self.options = options
        self.blocking = blocking

    def __repr__(self) -> str:
        return f"<StoragePlugin {self.name!r} from {self.factory}>"

    def backend(self, options: dict[str, Any], clock: IReactorTime) -> IStorageBackend:
        module, _, attribute = self.factory.partition(":")
        make = getattr(import_module(module), attribute)
        backend = make(options, clock)
        verifyObject(IStorageBackend, backend)
        return backend  # type: ignore[no-any-return]
