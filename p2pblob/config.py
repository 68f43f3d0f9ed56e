"""
The node's configuration: one frozen value built from command-line options
and the environment, validated once, passed to everything that needs it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from p2pblob.errors import ConfigError

__all__ = [
    "Config",
    "DEFAULT_DISK_LIMIT",
    "DEFAULT_PEER_LISTEN",
    "default_data_dir",
    "parse_size",
    "format_size",
]

DEFAULT_DISK_LIMIT = 20 * 1024**3
DEFAULT_PEER_LISTEN = "tcp:3333"
DEFAULT_PAYMENT_ADDRESS = "p2pblob-free"

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, option: str = "size") -> int | None:
    """
    Parse a byte count such as C{"500MB"}, C{"20GiB"} or C{"1048576"}.
    C{"0"}, C{"none"} and C{"unlimited"} mean no limit (L{None}).

    @raise ConfigError: naming C{option}, if C{text} is not a size.
    """
    if text.strip().lower() in ("0", "none", "unlimited"):
        return None
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"{option}: {text!r} is not a size (examples: 500MB, 20GiB, 0 for no limit)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def default_data_dir() -> Path:
    """
    C{$P2PBLOB_DATA_DIR}, else C{~/.p2pblob}.
    """
    configured = os.environ.get("P2PBLOB_DATA_DIR")
    return Path(configured) if configured else Path.home() / ".p2pblob"


@dataclass(frozen=True)
class Config:
    """
    @ivar data_dir: where the node keeps everything (blobs, index).
    @ivar disk_limit: bytes the blob store may use, or L{None} for no limit.
    @ivar peer_listen: the endpoint the peer server listens on.
    @ivar peers: C{(host, port)} of peers to download from besides those
        found on the DHT.
    @ivar payment_address: what the server answers to C{lbrycrd_address}.
    @ivar max_request_size: requests this long or longer close the connection.
    @ivar idle_timeout: seconds a peer connection may stay silent.
    @ivar max_connections_per_ip: simultaneous peer connections from one IP.
    @ivar corrupt_uploads: testing only: flip a byte of every blob served.
    """

    data_dir: Path
    disk_limit: int | None = DEFAULT_DISK_LIMIT
    peer_listen: str = DEFAULT_PEER_LISTEN
    peers: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    payment_address: str = DEFAULT_PAYMENT_ADDRESS
    max_request_size: int = 64 * 1024
    idle_timeout: float = 30.0
    max_connections_per_ip: int = 8
    corrupt_uploads: bool = False

    def __post_init__(self) -> None:
        if self.disk_limit is not None and self.disk_limit <= 0:
            raise ConfigError("disk-limit must be positive (or 0 for no limit)")
        if self.max_request_size < 64:
            raise ConfigError("max-request-size must be at least 64 bytes")
        if self.idle_timeout <= 0:
            raise ConfigError("idle-timeout must be positive")
        if self.max_connections_per_ip < 1:
            raise ConfigError("max-connections-per-ip must be at least 1")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"data-dir: {self.data_dir} exists and is not a directory")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobfiles"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "p2pblob.sqlite"
