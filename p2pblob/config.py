"""
The node's configuration: one frozen value built from command-line options
and the environment, validated once, passed to everything that needs it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from p2pblob.errors import ConfigError

if TYPE_CHECKING:
    from p2pblob.publish.watch import WatchRules
    from p2pblob.storage.mirror_config import MirrorTarget

__all__ = [
    "ANNOUNCE_POLICIES",
    "Config",
    "DEFAULT_API_LISTEN",
    "DEFAULT_DEBT_LIMIT",
    "DEFAULT_DISK_LIMIT",
    "DEFAULT_INITIAL_GRANT",
    "DEFAULT_PEER_LISTEN",
    "default_data_dir",
    "parse_rate",
    "parse_size",
    "format_size",
    "is_loopback",
]

DEFAULT_DISK_LIMIT = 20 * 1024**3
DEFAULT_PEER_LISTEN = "tcp:3333"
DEFAULT_API_LISTEN = "tcp:5279:interface=127.0.0.1"
DEFAULT_PAYMENT_ADDRESS = "p2pblob-free"
ANNOUNCE_POLICIES = ("all", "head")
DEFAULT_INITIAL_GRANT = 100.0
DEFAULT_DEBT_LIMIT = 10.0
# the most points a wallet setting may name (well within what a ledger
# counts), and the highest price (p2pblob.wallet.rates.MAX_RATE)
_MAX_POINTS = 1e12
_MAX_PRICE = 1e6

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


def parse_rate(text: str, option: str = "rate") -> int | None:
    """
    Parse a rate in bytes per second such as C{"10MB"}, C{"512KiB/s"} or
    C{"1000000"}.  C{"0"}, C{"none"} and C{"unlimited"} mean no limit
    (L{None}).

    @raise ConfigError: naming C{option}, if C{text} is not a rate.
    """
    stripped = text.strip()
    if stripped.lower().endswith("/s"):
        stripped = stripped[:-2]
    try:
        rate = parse_size(stripped, option)
    except ConfigError:
        raise ConfigError(
            f"{option}: {text!r} is not a rate in bytes per second "
            "(examples: 10MB, 512KiB/s, 0 for no limit)"
        ) from None
    if rate == 0:
        match = _SIZE.fullmatch(stripped)
        if match is not None and float(match.group(1)) == 0:
            return None  # "0.0", "0MB"
        # a fraction of a byte: too small to be meant as no limit
        raise ConfigError(f"{option}: {text!r} is less than one byte per second")
    return rate


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
    @ivar dht: whether the node joins the DHT at all.
    @ivar dht_port: the DHT's UDP port; L{None} for the one LBRY's
        downloaders guess from the peer server's TCP port (the same number,
        except 4444 + n for 3333 + n up to 3399).
    @ivar bootstrap: C{(host, port)} of DHT nodes to join through.
    @ivar dht_allow_loopback: accept DHT contacts and peers on 127.0.0.0/8
        (a local swarm); L{None} to allow them exactly when a bootstrap
        node is on loopback.
    @ivar reachable: whether peers can reach this node; an unreachable node
        does not announce its blobs.
    @ivar announce: C{"all"} blobs of every stream, or C{"head"}: the sd
        blob and the first data blob only.
    @ivar announce_rate: most announcements started per second.
    @ivar announce_concurrency: most announcements in flight.
    @ivar max_upload: bytes per second the node may upload to peers, in
        all; L{None} for no limit.
    @ivar max_download: bytes per second the node may download from peers,
        in all; L{None} for no limit.
    @ivar max_upload_per_connection: bytes per second each peer connection
        may upload; L{None} for no limit.
    @ivar max_download_per_connection: bytes per second each peer
        connection may download; L{None} for no limit.
    @ivar price: points per MiB this node offers for the blobs it
        downloads; 0 (the default) is free mode, in which the node neither
        pays nor charges.
    @ivar min_price: the lowest rate, in points per MiB, this node accepts
        for the blobs it serves; L{None} for the same as C{price}.
    @ivar debt_limit: the points a peer may owe this node before it is sent
        no more blobs.
    @ivar host_debt_limit: the points all the clients on one host (an IPv4
        address, or an IPv6 C{/64}) may owe this node in all; L{None} for
        four times C{debt_limit}
        (L{p2pblob.wallet.serving.HOST_DEBT_FACTOR}).
    @ivar initial_grant: the points a new wallet starts with.
    @ivar api_listen: the endpoint the HTTP API listens on, or L{None} for
        no API.
    @ivar blob_storage: the storage plugin that keeps the blobs: C{"local"}
        (the default) for the disk store in C{blob_dir}, or another
        installed plugin (C{"s3"}, C{"sftp"}, ...).
    @ivar blob_storage_options: C{(name, value)} pairs of that plugin's
        options, as strings (C{local} takes C{root}: another directory for
        the blob files).
    @ivar watch: the folder whose files the node publishes by itself, and
        which of them, or L{None}.
    @ivar mirrors: the storage backends the node exports streams to as
        plain files (L{p2pblob.storage.mirror}), each with its plugin, its
        options and its rule.
    @ivar s3_listen: the endpoint of the S3-compatible gateway
        (L{p2pblob.gateway.service}), or L{None} for none.
    @ivar s3_keys: the gateway's C{(access key, secret)} pairs.
    @ivar s3_anonymous: whether the gateway also takes unsigned requests
        (only on a loopback endpoint, from loopback).
    @ivar s3_quota: the most bytes the gateway's objects may hold, or
        L{None}.
    @ivar s3_max_objects: the most objects the gateway may hold, or
        L{None}.
    @ivar publish_prefixes: the prefixes (namespaces of names) files are
        published into over HTTP (L{p2pblob.publish.manifest}), C{files}
        first.
    @ivar publish_quota: the bytes each of them may hold, or L{None}.
    @ivar publish_ttl: seconds a transfer key of manifest publishing stays
        valid.
    @ivar upnp: whether the node asks the LAN's router to forward its ports
        (UPnP, L{p2pblob.reach.upnp}).
    @ivar upnp_lease: seconds each mapping lasts on the router (renewed at
        half of it).
    @ivar upnp_gateway: the router's UPnP root description URL, to skip
        discovery, or L{None}.
    @ivar external_address: the IP address peers reach this node at, if the
        user knows it (ports forwarded by hand), or L{None}.
    @ivar tor: whether the node uses Tor (L{p2pblob.reach.tor}): it serves
        its peer port as an onion service as well and reaches C{.onion}
        peers through Tor.
    @ivar tor_control: the endpoint of a running tor's control port to use,
        or L{None} to launch a tor of the node's own.
    @ivar tor_only: whether every connection goes through Tor: no direct
        connection, no listening on an IP address, no DHT (it is UDP, which
        Tor does not carry, and would show the node's address).
    @ivar tor_options: C{(option, value)} pairs of torrc options for the
        tor the node launches, in order.
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
    dht: bool = True
    dht_port: int | None = None
    bootstrap: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    dht_allow_loopback: bool | None = None
    reachable: bool = True
    announce: str = "all"
    announce_rate: float = 5.0
    announce_concurrency: int = 4
    max_upload: int | None = None
    max_download: int | None = None
    max_upload_per_connection: int | None = None
    max_download_per_connection: int | None = None
    price: float = 0.0
    min_price: float | None = None
    debt_limit: float = DEFAULT_DEBT_LIMIT
    host_debt_limit: float | None = None
    initial_grant: float = DEFAULT_INITIAL_GRANT
    api_listen: str | None = DEFAULT_API_LISTEN
    blob_storage: str = "local"
    blob_storage_options: tuple[tuple[str, str], ...] = ()
    watch: WatchRules | None = None
    mirrors: tuple[MirrorTarget, ...] = ()
    s3_listen: str | None = None
    s3_keys: tuple[tuple[str, str], ...] = ()
    s3_anonymous: bool = False
    s3_quota: int | None = None
    s3_max_objects: int | None = None
    publish_prefixes: tuple[str, ...] = ("files",)
    publish_quota: int | None = None
    publish_ttl: float = 3600.0
    upnp: bool = False
    upnp_lease: int = 3600
    upnp_gateway: str | None = None
    external_address: str | None = None
    tor: bool = False
    tor_control: str | None = None
    tor_only: bool = False
    tor_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self._check_s3()
        self._check_reach()
        if self.disk_limit is not None and self.disk_limit <= 0:
            raise ConfigError("disk-limit must be positive (or 0 for no limit)")
        if not (math.isfinite(self.publish_ttl) and self.publish_ttl > 0):
            raise ConfigError("publish-ttl must be a positive number of seconds")
        if self.publish_quota is not None and self.publish_quota <= 0:
            raise ConfigError("publish-quota must be positive (or 0 for no limit)")
        if self.max_request_size < 64:
            raise ConfigError("max-request-size must be at least 64 bytes")
        if self.idle_timeout <= 0:
            raise ConfigError("idle-timeout must be positive")
        if self.max_connections_per_ip < 1:
            raise ConfigError("max-connections-per-ip must be at least 1")
        if self.dht_port is not None and not 0 <= self.dht_port < 65536:
            raise ConfigError(f"dht-port: {self.dht_port} is not a port number (0 to 65535)")
        if self.announce not in ANNOUNCE_POLICIES:
            raise ConfigError(
                f"announce: {self.announce!r} is not a policy (all, or head: the sd blob "
                "and the first data blob)"
            )
        if not self.announce_rate > 0:
            raise ConfigError("announce-rate must be positive")
        if self.announce_concurrency < 1:
            raise ConfigError("announce-concurrency must be at least 1")
        for option, rate in (
            ("max-upload", self.max_upload),
            ("max-download", self.max_download),
            ("max-upload-per-connection", self.max_upload_per_connection),
            ("max-download-per-connection", self.max_download_per_connection),
        ):
            if rate is not None and rate <= 0:
                raise ConfigError(f"{option} must be positive (or 0 for no limit)")
        for option, points, most in (
            ("price", self.price, _MAX_PRICE),
            ("min-price", self.min_price, _MAX_PRICE),
            ("debt-limit", self.debt_limit, _MAX_POINTS),
            ("host-debt-limit", self.host_debt_limit, _MAX_POINTS),
            ("initial-grant", self.initial_grant, _MAX_POINTS),
        ):
            if points is not None and not (math.isfinite(points) and 0 <= points <= most):
                raise ConfigError(f"{option} must be a number of points from 0 to {most:g}")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"data-dir: {self.data_dir} exists and is not a directory")

    def _check_reach(self) -> None:
        self.onion_port  # noqa: B018  (says if the onion: endpoint is malformed)
        if not 60 <= self.upnp_lease <= 604800:
            raise ConfigError("upnp-lease must be from 60 seconds to a week (604800)")
        if self.external_address is not None:
            try:
                ipaddress.ip_address(self.external_address)
            except ValueError:
                raise ConfigError(
                    f"external-address: {self.external_address!r} is not an IP address"
                ) from None
        if self.onion_port is not None and (self.upnp or self.external_address is not None):
            raise ConfigError(
                f"peer-listen {self.peer_listen}: a peer server that is an onion service only "
                "has no port to map or forward: --upnp and --external-address do not apply"
            )
        if self.tor_only and (self.upnp or self.external_address is not None):
            raise ConfigError(
                "tor-only keeps this node's IP address to itself: it cannot be used with "
                "--upnp or --external-address"
            )

    @property
    def uses_tor(self) -> bool:
        """
        Whether the node runs a Tor provider: asked for with C{--tor},
        C{--tor-only}, C{--tor-control} or an C{onion:} peer endpoint.
        """
        return (self.tor or self.tor_only or self.tor_control is not None
                or self.onion_port is not None)

    @property
    def onion_port(self) -> int | None:
        """
        The port of an C{onion:PORT} peer endpoint (the peer server then
        listens as an onion service only), or L{None}.
        """
        kind, _, rest = self.peer_listen.partition(":")
        if kind.strip().lower() != "onion":
            return None
        port = rest.partition(":")[0].strip()
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"peer-listen: {self.peer_listen!r}: give the onion service's port, onion:PORT"
            )
        return int(port)

    @property
    def tor_dir(self) -> Path:
        """
        Where the Tor provider keeps its state: the onion service's key and
        the data directory of the tor it launches.
        """
        return self.data_dir / "tor"

    @property
    def download_dir(self) -> Path:
        """
        Where the node's own downloads write their files unless told
        otherwise.
        """
        return self.data_dir / "downloads"

    @property
    def downloads_state_path(self) -> Path:
        return self.data_dir / "downloads.sqlite"

    @property
    def api_token_path(self) -> Path:
        return self.data_dir / "api-token"

    @property
    def api_address_path(self) -> Path:
        """
        Where a running node says where its API is (for the C{p2pblob}
        command), removed when it stops.
        """
        return self.data_dir / "api.json"

    @property
    def blob_dir(self) -> Path:
        """
        The directory of the blob files of the C{local} blob store: its
        C{root} option, else C{DATA_DIR/blobfiles}.
        """
        root = dict(self.blob_storage_options).get("root") if self.blob_storage == "local" else None
        return Path(root).expanduser() if root else self.data_dir / "blobfiles"

    @property
    def index_path(self) -> Path:
        """
        The blob store's SQLite index: one per place blobs are kept, so
        that pointing the node at another bucket or server never makes it
        list blobs that are not there.
        """
        if self.blob_storage == "local":
            return self.data_dir / "p2pblob.sqlite"
        return self.data_dir / f"p2pblob-{self.blob_storage}-{_place(self.blob_storage_options)}.sqlite"

    @property
    def watch_state_path(self) -> Path:
        """
        What the watched folder's files were published as.
        """
        return self.data_dir / "watch.sqlite"

    @property
    def transfer_journal_path(self) -> Path:
        """
        The journal of the uploads to storage backends (mirrors), for
        resuming them.
        """
        return self.data_dir / "transfers.sqlite"

    def _check_s3(self) -> None:
        from p2pblob.http.auth import listens_on_loopback

        if self.s3_listen is None:
            if self.s3_keys or self.s3_anonymous or self.s3_quota or self.s3_max_objects:
                raise ConfigError("the s3-* options need --s3-listen ENDPOINT (e.g. "
                                  "tcp:9000:interface=127.0.0.1)")
            return
        if not self.s3_keys and not self.s3_anonymous:
            raise ConfigError("s3-listen: give the gateway's keys (--s3-key ACCESS:SECRET), "
                              "or --s3-anonymous on a loopback endpoint")
        if self.s3_anonymous and not listens_on_loopback(self.s3_listen):
            raise ConfigError(f"s3-anonymous: the gateway's endpoint {self.s3_listen!r} is not "
                              "bound to loopback (add :interface=127.0.0.1): unsigned requests "
                              "are taken from this machine only")
        if self.s3_max_objects is not None and self.s3_max_objects < 1:
            raise ConfigError("s3-max-objects must be at least 1")
        if self.s3_quota is not None and self.s3_quota <= 0:
            raise ConfigError("s3-quota must be positive (or 0 for no limit)")

    @property
    def gateway_path(self) -> Path:
        """
        The S3 gateway's buckets and names.
        """
        return self.data_dir / "gateway.sqlite"

    @property
    def publish_state_path(self) -> Path:
        """
        The names published over HTTP, and the transfers under way.
        """
        return self.data_dir / "publish.sqlite"

    @property
    def mirrors_state_path(self) -> Path:
        """
        Which streams were exported to which mirror, under which name.
        """
        return self.data_dir / "mirrors.sqlite"

    @property
    def dht_dir(self) -> Path:
        """
        The DHT's own files: the node id and the contacts saved for the
        next start.
        """
        return self.data_dir / "dht"

    @property
    def wallet_dir(self) -> Path:
        """
        The wallet's files: its key and its ledger.
        """
        return self.data_dir / "wallet"

    @property
    def wallet_key_path(self) -> Path:
        return self.wallet_dir / "key"

    @property
    def ledger_path(self) -> Path:
        return self.wallet_dir / "ledger.sqlite"

    @property
    def accepted_min_price(self) -> float:
        """
        The lowest rate accepted for blobs served (C{min_price}, else
        C{price}).
        """
        return self.price if self.min_price is None else self.min_price

    @property
    def paid_mode(self) -> bool:
        """
        Whether this node pays for what it downloads or charges for what it
        serves.
        """
        return self.price > 0 or self.accepted_min_price > 0

    @property
    def allow_loopback(self) -> bool:
        if self.dht_allow_loopback is not None:
            return self.dht_allow_loopback
        return any(is_loopback(host) for host, _ in self.bootstrap)


# options that say how to get in, not where the blobs are
_NOT_PLACE = re.compile(r"secret|password|key|token|chunk_size|retries|timeout")


def _place(options: tuple[tuple[str, str], ...]) -> str:
    """
    A short name for where a storage plugin's options put the blobs (its
    bucket, host, root, ...), leaving out credentials and tuning.
    """
    place = "\n".join(f"{name}={value}" for name, value in sorted(options)
                      if not _NOT_PLACE.search(name))
    return hashlib.sha256(place.encode("utf-8")).hexdigest()[:12]


def is_loopback(host: str) -> bool:
    """
    Whether C{host} names this machine: C{localhost} or an address of
    127.0.0.0/8 (or C{::1}).
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
