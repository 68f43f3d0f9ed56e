"""
The storage plugins that come with p2pblob.  Each backend's code is
imported only when the plugin is used, so its options are declared here.
"""

from p2pblob.storage.options import Option
from p2pblob.storage.plugin import StoragePlugin

local = StoragePlugin(
    "local",
    "p2pblob.storage.local:make_backend",
    (Option("root", "str", help="The directory that holds the files."),),
    blocking=True,
)

memory = StoragePlugin("memory", "p2pblob.testing:make_memory_backend")
