"""
C{twistd p2pblob}: options and the service maker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import IService
from twisted.python import usage

from p2pblob import __version__
from p2pblob.config import (
    DEFAULT_API_LISTEN,
    DEFAULT_DEBT_LIMIT,
    DEFAULT_DISK_LIMIT,
    DEFAULT_INITIAL_GRANT,
    DEFAULT_PEER_LISTEN,
    Config,
    default_data_dir,
    format_size,
    parse_rate,
    parse_size,
)
from p2pblob.discovery.static import parse_peer
from p2pblob.errors import ConfigError
from p2pblob.publish.manifest import check_prefix
from p2pblob.publish.watch import DEFAULT_EXCLUDE, WatchRules
from p2pblob.storage.configured import check_blob_storage, parse_assignment
from p2pblob.storage.mirror_config import (
    check_mirrors,
    mirror_targets,
    parse_mirror,
    parse_mirror_option,
    parse_mirror_rule,
)
from p2pblob.wallet.serving import HOST_DEBT_FACTOR

__all__ = ["Options", "config_from", "makeService", "peers_from"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a p2pblob node: keep verified blobs in the data directory and "
        "serve them to peers (LBRY-compatible blob exchange)."
    )
    optParameters = [
        ["data-dir", None, None,
         "Where the node keeps its blobs and index "
         "[default: $P2PBLOB_DATA_DIR or ~/.p2pblob]."],
        ["disk-limit", None, None,
         "Most bytes the blob store may use, e.g. 500MB or 20GiB; 0 for no limit. "
         "Finished downloads are evicted oldest-first to stay under it "
         f"[default: $P2PBLOB_DISK_LIMIT or {format_size(DEFAULT_DISK_LIMIT)}]."],
        ["peer-listen", None, DEFAULT_PEER_LISTEN,
         "Endpoint the peer server listens on (tcp:3333, "
         "tcp:3333:interface=127.0.0.1, ...)."],
        ["api-listen", None, DEFAULT_API_LISTEN,
         "Endpoint the HTTP API (JSON control API, dashboard, metrics) listens on; "
         "none for no API. Bound to anything but loopback it requires the token "
         "in DATA_DIR/api-token."],
        ["payment-address", None, None,
         "What the server answers when a peer asks for its payment address."],
        ["max-request-size", None, "65536",
         "Requests of this many bytes or more close the connection."],
        ["idle-timeout", None, "30",
         "Seconds a peer connection may stay idle before it is closed."],
        ["max-connections-per-ip", None, "8",
         "Simultaneous peer connections accepted from one IP address."],
        ["dht-port", None, None,
         "UDP port of the DHT [default: the port LBRY nodes expect for the peer "
         "server's TCP port: the same number, but 4444 for 3333 (up to 4510 for 3399)]."],
        ["announce", None, "all",
         "Which blobs to announce on the DHT: all, or head (the sd blob and the "
         "first data blob of each stream; far fewer announcements)."],
        ["announce-rate", None, "5",
         "Most DHT announcements started per second."],
        ["announce-concurrency", None, "4",
         "Most DHT announcements in flight at once."],
        ["max-upload", None, None,
         "Most bytes per second uploaded to peers in all, e.g. 10MB or 512KiB; "
         "0 for no limit [default: no limit]."],
        ["max-download", None, None,
         "Most bytes per second downloaded from peers in all; 0 for no limit "
         "[default: no limit]."],
        ["max-upload-per-connection", None, None,
         "Most bytes per second uploaded on each peer connection; 0 for no limit."],
        ["max-download-per-connection", None, None,
         "Most bytes per second downloaded on each peer connection; 0 for no limit."],
        ["price", None, "0",
         "Points per MiB offered for the blobs downloaded, and asked for those "
         "served; 0 is free mode (LBRY peers are only served in free mode)."],
        ["min-price", None, None,
         "Lowest offer, in points per MiB, accepted for the blobs served "
         "[default: the --price]."],
        ["debt-limit", None, f"{DEFAULT_DEBT_LIMIT:g}",
         "Points a peer may owe for blobs served before it is sent no more."],
        ["host-debt-limit", None, None,
         "Points all the clients on one host (IPv4 address or IPv6 /64) may owe in all: "
         "payment keys cost nothing to make, a host does not [default: "
         f"{HOST_DEBT_FACTOR} x the --debt-limit]."],
        ["initial-grant", None, f"{DEFAULT_INITIAL_GRANT:g}",
         "Points a new wallet starts with."],
        ["blob-storage", None, "local",
         "Storage plugin that keeps the blobs: local (files in DATA_DIR/blobfiles), "
         "s3 (an S3-compatible bucket), sftp (an SFTP server), or any installed plugin; "
         "its options are given with --blob-storage-option."],
        ["watch", None, None,
         "A folder whose files the node publishes by itself: new files once they stop "
         "changing, changed files again (see --watch-include and the like)."],
        ["watch-min-size", None, None,
         "Leave out watched files smaller than this, e.g. 1KB [default: no bound]."],
        ["watch-max-size", None, None,
         "Leave out watched files larger than this, e.g. 4GiB [default: no bound]."],
        ["watch-scan-interval", None, "10",
         "Seconds between two looks at the watched folder."],
        ["watch-settle-time", None, "2",
         "Seconds a watched file must stay unchanged before it is published."],
        ["publish-quota", None, None,
         "Most bytes each publishing prefix (files published over HTTP, under "
         "/publish/PREFIX/) may hold, pending uploads included, e.g. 50GB; 0 for no limit "
         "[default: no limit]."],
        ["publish-ttl", None, "3600",
         "Seconds a transfer key of HTTP publishing stays valid after it is issued or its "
         "last upload ended; then its files not uploaded are dropped."],
        ["s3-listen", None, None,
         "Endpoint of the S3-compatible gateway (path-style; buckets of names for "
         "streams), e.g. tcp:9000:interface=127.0.0.1 [default: none, no gateway]."],
        ["s3-quota", None, None,
         "Most bytes the gateway's objects (and multipart parts) may hold, e.g. 100GB; "
         "0 for no limit [default: no limit]."],
        ["s3-max-objects", None, None,
         "Most objects the gateway may hold [default: no limit]."],
        ["upnp-lease", None, "3600",
         "Seconds each UPnP mapping lasts on the router; renewed at half of it."],
        ["upnp-gateway", None, None,
         "The router's UPnP root description URL, e.g. http://192.168.1.1:5000/rootDesc.xml, "
         "to skip discovery [default: discover]."],
        ["external-address", None, None,
         "The IP address peers reach this node at, when its ports are forwarded by hand "
         "(the node then counts itself reachable even if UPnP fails)."],
        ["tor-control", None, None,
         "Use the running tor whose control port is at this endpoint, e.g. "
         "tcp:127.0.0.1:9051 or unix:/run/tor/control (implies --tor) [default: launch a "
         "tor of the node's own]."],
    ]
    optFlags = [
        ["no-dht", None, "Do not join the DHT (serve only peers who know this node)."],
        ["dht-allow-loopback", None,
         "Accept DHT nodes and peers on 127.0.0.0/8 (a local swarm); on by "
         "itself when a bootstrap node is on loopback."],
        ["unreachable", None,
         "Peers cannot connect to this node (no port forwarded): do not announce."],
        ["corrupt-uploads", None,
         "TESTING ONLY: damage every blob served, to test how downloaders cope."],
        ["watch-flat", None,
         "Publish only the files at the top of the watched folder, not those in "
         "folders inside it."],
        ["s3-anonymous", None,
         "The S3 gateway also takes unsigned requests, from this machine only (its "
         "--s3-listen must be bound to loopback); for development."],
        ["upnp", None,
         "Ask the LAN's router to forward the peer and DHT ports (UPnP; needs "
         "pip install 'p2pblob[upnp]'); the node does not announce itself while it cannot."],
        ["tor", None,
         "Use Tor (needs the tor program and pip install 'p2pblob[tor]'): serve the peer "
         "port as an onion service too (its key kept in DATA_DIR/tor) and reach .onion "
         "peers through Tor."],
        ["tor-only", None,
         "Connect only through Tor and listen only as an onion service: no direct "
         "connection, no DHT (implies --tor)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["peers"] = []
        self["bootstrap"] = []
        self["blob-storage-options"] = []
        self["watch-include"] = []
        self["watch-exclude"] = []
        self["mirrors"] = []
        self["mirror-options"] = []
        self["mirror-rules"] = []
        self["publish-prefixes"] = ["files"]
        self["s3-keys"] = []
        self["tor-options"] = []

    def opt_tor_option(self, value: str) -> None:
        """
        A torrc option for the tor the node launches, OPTION=VALUE (repeatable;
        repeated options are kept in order), e.g. ExcludeNodes={us}.
        """
        try:
            self["tor-options"].append(parse_assignment(value, "tor-option"))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_mirror(self, value: str) -> None:
        """
        A mirror the node exports streams to as plain files, NAME=PLUGIN
        (repeatable), e.g. backup=s3; its options are given with
        --mirror-option, its rule with --mirror-rule. p2pblob mirror SD NAME
        exports a stream to it.
        """
        self._assignment(self["mirrors"], parse_mirror, value)

    def opt_s3_key(self, value: str) -> None:
        """
        A key of the S3 gateway, ACCESS:SECRET (repeatable; also
        $P2PBLOB_S3_KEYS, comma-separated); requests are signed with it
        (AWS Signature Version 4).
        """
        self._assignment(self["s3-keys"], parse_s3_key, value)

    def opt_publish_prefix(self, value: str) -> None:
        """
        Another prefix files may be published into over HTTP, besides files
        (repeatable): /publish/NAME/ on the API (lowercase letters, digits,
        '.', '_' and '-').
        """
        try:
            prefix = check_prefix(value)
        except ValueError as e:
            raise usage.UsageError(f"publish-prefix: {e}") from None
        if prefix not in self["publish-prefixes"]:
            self["publish-prefixes"].append(prefix)

    def opt_mirror_option(self, value: str) -> None:
        """
        An option of a mirror's storage plugin, NAME:OPTION=VALUE (repeatable),
        e.g. backup:bucket=my-backups or backup:prefix=p2pblob/.
        """
        self._assignment(self["mirror-options"], parse_mirror_option, value)

    def opt_mirror_rule(self, value: str) -> None:
        """
        Which streams a mirror exports by itself, NAME=RULE: none (only those
        asked for), published, downloaded (once finished) or all [default: none].
        """
        self._assignment(self["mirror-rules"], parse_mirror_rule, value)

    def _assignment(
        self, values: list[object], parse: Callable[[str], object], value: str
    ) -> None:
        try:
            values.append(parse(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_watch_include(self, pattern: str) -> None:
        """
        Publish only the watched files whose name (or, with a /, path in the
        folder) matches this shell pattern, e.g. '*.mp4' (repeatable)
        [default: every file].
        """
        self["watch-include"].append(pattern)

    def opt_watch_exclude(self, pattern: str) -> None:
        """
        Leave out the watched files and folders matching this shell pattern
        (repeatable), besides hidden and temporary files (.*, *.part, *.tmp, *~).
        """
        self["watch-exclude"].append(pattern)

    def opt_blob_storage_option(self, value: str) -> None:
        """
        An option of the --blob-storage plugin, NAME=VALUE (repeatable), e.g.
        bucket=my-blobs or endpoint_url=https://s3.example.net (local: root=DIR).
        """
        try:
            self["blob-storage-options"].append(parse_assignment(value, "blob-storage-option"))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_bootstrap(self, value: str) -> None:
        """
        A DHT node to join through, HOST:PORT (repeatable; also
        $P2PBLOB_BOOTSTRAP, comma-separated).
        """
        try:
            self["bootstrap"].append(parse_peer(value, "bootstrap"))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_peer(self, value: str) -> None:
        """
        A peer to download from, HOST:PORT (repeatable; also $P2PBLOB_PEERS).
        """
        try:
            self["peers"].append(parse_peer(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_version(self) -> None:
        """
        Print the p2pblob version and exit.
        """
        print(f"p2pblob {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        try:
            self["config"] = config_from(
                self["data-dir"],
                self["disk-limit"],
                peer_listen=self["peer-listen"],
                api_listen=_endpoint_or_none(self["api-listen"]),
                peers=self["peers"],
                payment_address=self["payment-address"],
                max_request_size=_number(int, self["max-request-size"], "max-request-size"),
                idle_timeout=_number(float, self["idle-timeout"], "idle-timeout"),
                max_connections_per_ip=_number(
                    int, self["max-connections-per-ip"], "max-connections-per-ip"
                ),
                corrupt_uploads=bool(self["corrupt-uploads"]),
                bootstrap=self["bootstrap"],
                dht=not self["no-dht"],
                dht_port=(
                    None if self["dht-port"] is None
                    else _number(int, self["dht-port"], "dht-port")
                ),
                dht_allow_loopback=True if self["dht-allow-loopback"] else None,
                reachable=not self["unreachable"],
                announce=self["announce"],
                announce_rate=_number(float, self["announce-rate"], "announce-rate"),
                announce_concurrency=_number(
                    int, self["announce-concurrency"], "announce-concurrency"
                ),
                **_rates(self),
                price=_number(float, self["price"], "price"),
                min_price=(
                    None if self["min-price"] is None
                    else _number(float, self["min-price"], "min-price")
                ),
                debt_limit=_number(float, self["debt-limit"], "debt-limit"),
                host_debt_limit=(
                    None if self["host-debt-limit"] is None
                    else _number(float, self["host-debt-limit"], "host-debt-limit")
                ),
                initial_grant=_number(float, self["initial-grant"], "initial-grant"),
                blob_storage=self["blob-storage"],
                blob_storage_options=tuple(self["blob-storage-options"]),
                watch=_watch_rules(self),
                mirrors=mirror_targets(
                    self["mirrors"], self["mirror-options"], self["mirror-rules"]
                ),
                publish_prefixes=tuple(self["publish-prefixes"]),
                publish_quota=_size_or_none(self["publish-quota"], "publish-quota"),
                publish_ttl=_number(float, self["publish-ttl"], "publish-ttl"),
                s3_listen=(
                    None if self["s3-listen"] is None
                    else _endpoint_or_none(self["s3-listen"])
                ),
                s3_keys=s3_keys_from(self["s3-keys"]),
                s3_anonymous=bool(self["s3-anonymous"]),
                s3_quota=_size_or_none(self["s3-quota"], "s3-quota"),
                s3_max_objects=(
                    None if self["s3-max-objects"] is None
                    else _number(int, self["s3-max-objects"], "s3-max-objects")
                ),
                upnp=bool(self["upnp"]),
                upnp_lease=_number(int, self["upnp-lease"], "upnp-lease"),
                upnp_gateway=self["upnp-gateway"],
                external_address=self["external-address"],
                tor=bool(self["tor"]),
                tor_control=self["tor-control"],
                tor_only=bool(self["tor-only"]),
                tor_options=tuple(self["tor-options"]),
            )
            check_blob_storage(self["blob-storage"], self["blob-storage-options"])
            check_mirrors(self["config"].mirrors)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


_RATE_OPTIONS = (
    "max-upload", "max-download", "max-upload-per-connection", "max-download-per-connection",
)


def _rates(options: usage.Options) -> dict[str, int | None]:
    """
    The rate limits given, as L{Config} fields.
    """
    return {
        option.replace("-", "_"): None if options[option] is None
        else parse_rate(options[option], option)
        for option in _RATE_OPTIONS
    }


def _watch_rules(options: usage.Options) -> WatchRules | None:
    """
    The watched folder's rules, if a folder is given.
    """
    if options["watch"] is None:
        for option in ("watch-include", "watch-exclude", "watch-min-size", "watch-max-size"):
            if options[option]:
                raise ConfigError(f"{option} needs --watch FOLDER")
        return None
    folder = Path(options["watch"]).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"watch: {folder} is not a folder (create it, or correct the path)")
    return WatchRules(
        folder,
        include=tuple(options["watch-include"]) or ("*",),
        exclude=DEFAULT_EXCLUDE + tuple(options["watch-exclude"]),
        min_size=_size_or_none(options["watch-min-size"], "watch-min-size"),
        max_size=_size_or_none(options["watch-max-size"], "watch-max-size"),
        recursive=not options["watch-flat"],
        scan_interval=_number(float, options["watch-scan-interval"], "watch-scan-interval"),
        settle_time=_number(float, options["watch-settle-time"], "watch-settle-time"),
    )


def parse_s3_key(text: str) -> tuple[str, str]:
    """
    An S3 gateway key, C{ACCESS:SECRET}.

    @raise ConfigError: if it is not one.
    """
    access, colon, secret = text.strip().partition(":")
    if not colon or not access or not secret or any(c.isspace() for c in access):
        # (the text is not shown: it may hold a secret)
        raise ConfigError("s3-key: give ACCESS:SECRET (an access key without spaces, a colon, "
                          "a secret)")
    return access, secret


def s3_keys_from(given: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """
    The S3 gateway's keys from options, then from C{$P2PBLOB_S3_KEYS}
    (comma-separated C{ACCESS:SECRET}s; kept out of the process list).
    """
    keys = list(given)
    for text in os.environ.get("P2PBLOB_S3_KEYS", "").split(","):
        if text.strip():
            keys.append(parse_s3_key(text))
    return tuple(dict(keys).items())


def _size_or_none(text: str | None, option: str) -> int | None:
    return None if text is None else parse_size(text, option)


def _endpoint_or_none(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none", "off") else text


def _number(kind: type[int] | type[float], text: str, option: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a number") from None


def peers_from(
    given: list[tuple[str, int]], variable: str = "P2PBLOB_PEERS", option: str = "peer"
) -> tuple[tuple[str, int], ...]:
    """
    Addresses from options, then from the environment variable C{variable}
    (comma-separated C{HOST:PORT}s).
    """
    peers = list(given)
    for text in os.environ.get(variable, "").split(","):
        if text.strip():
            peers.append(parse_peer(text, f"{option} (from ${variable})"))
    return tuple(dict.fromkeys(peers))


def config_from(
    data_dir: str | None,
    disk_limit: str | None,
    *,
    peers: list[tuple[str, int]] | None = None,
    bootstrap: list[tuple[str, int]] | None = None,
    payment_address: str | None = None,
    **settings: object,
) -> Config:
    """
    A L{Config} from option values, falling back to the environment and the
    defaults; shared by C{twistd p2pblob} and the C{p2pblob} command.
    """
    if disk_limit is None:
        disk_limit = os.environ.get("P2PBLOB_DISK_LIMIT")
    limit = DEFAULT_DISK_LIMIT if disk_limit is None else parse_size(disk_limit, "disk-limit")
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if payment_address is not None:
        settings["payment_address"] = payment_address
    return Config(
        data_dir=directory,
        disk_limit=limit,
        peers=peers_from(peers or []),
        bootstrap=peers_from(bootstrap or [], "P2PBLOB_BOOTSTRAP", "bootstrap"),
        **settings,  # type: ignore[arg-type]
    )


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from p2pblob.node import make_node

    return make_node(reactor, options["config"])
