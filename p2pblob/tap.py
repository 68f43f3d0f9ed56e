"""
C{twistd p2pblob}: options and the service maker.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.application.service import IService
from twisted.python import usage

from p2pblob import __version__
from p2pblob.config import DEFAULT_DISK_LIMIT, Config, default_data_dir, format_size, parse_size
from p2pblob.errors import ConfigError

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a p2pblob node: keep verified blobs in the data directory and "
        "serve them to peers."
    )
    optParameters = [
        ["data-dir", None, None,
         "Where the node keeps its blobs and index "
         "[default: $P2PBLOB_DATA_DIR or ~/.p2pblob]."],
        ["disk-limit", None, None,
         "Most bytes the blob store may use, e.g. 500MB or 20GiB; 0 for no limit. "
         "Finished downloads are evicted oldest-first to stay under it "
         f"[default: $P2PBLOB_DISK_LIMIT or {format_size(DEFAULT_DISK_LIMIT)}]."],
    ]

    def opt_version(self) -> None:
        """
        Print the p2pblob version and exit.
        """
        print(f"p2pblob {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        try:
            self["config"] = config_from(self["data-dir"], self["disk-limit"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def config_from(data_dir: str | None, disk_limit: str | None) -> Config:
    """
    A L{Config} from option values, falling back to the environment and the
    defaults; shared by C{twistd p2pblob} and the C{p2pblob} command.
    """
    if disk_limit is None:
        disk_limit = os.environ.get("P2PBLOB_DISK_LIMIT")
    limit = DEFAULT_DISK_LIMIT if disk_limit is None else parse_size(disk_limit, "disk-limit")
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    return Config(data_dir=directory, disk_limit=limit)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from p2pblob.node import make_node

    return make_node(reactor, options["config"])  # type: ignore[arg-type]
