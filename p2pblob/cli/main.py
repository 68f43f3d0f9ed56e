"""
C{p2pblob}: publish, assemble, verify, download and serve streams with a
node's data directory.

Every command runs through L{p2pblob.cli._run.run}, which opens the store
and turns errors into one line for the user and an exit status.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall

from p2pblob import __version__
from p2pblob._threads import ThreadWorker
from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.blob.store import BlobStore
from p2pblob.cli._client import find_node, running_node_url
from p2pblob.cli._daemon import describe_streams, download_through_node, list_streams
from p2pblob.cli._mirror import describe_mirrors, list_mirrors, mirror_through_node
from p2pblob.cli._network import dht_services, join_dht
from p2pblob.cli._network import peers as peers_from_options
from p2pblob.cli._progress import DownloadLine, ProgressLine
from p2pblob.cli._publish_http import publish_over_http
from p2pblob.cli._run import Options, run, run_client
from p2pblob.cli._status import describe_status
from p2pblob.cli._wallet import describe_wallet
from p2pblob.config import DEFAULT_DEBT_LIMIT, DEFAULT_PEER_LISTEN, Config, parse_rate
from p2pblob.discovery.combined import CombinedPeerFinder
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download.downloader import FileStreamDownloader, get_descriptor, tcp_connector
from p2pblob.download.manager import DEFAULT_STALL_TIMEOUT, Swarm
from p2pblob.errors import (
    BlobNotFoundError,
    ConfigError,
    DescriptorError,
    StreamError,
)
from p2pblob.interfaces import IPeerFinder
from p2pblob.peer.peer import PeerRegistry
from p2pblob.peer.service import make_server_factory
from p2pblob.ratelimit import RateLimiter
from p2pblob.stream.assembler import assemble_stream, verify_stream
from p2pblob.stream.creator import publish_file
from p2pblob.stream.descriptor import StreamDescriptor, parse_sd_blob
from p2pblob.stream.names import open_new_file, safe_file_name, unique_path
from p2pblob.tap import config_from
from p2pblob.wallet.paying import DownloadPayments
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.units import format_points
from p2pblob.wallet.wallet import open_wallet

__all__ = ["main"]


async def _load_descriptor(store: BlobStore, source: str) -> tuple[StreamDescriptor, str]:
    """
    The descriptor named on the command line: an sd file, or the sd hash of
    an sd blob in the local store.
    """
    path = Path(source)
    if path.is_file():
        if path.stat().st_size > MAX_BLOB_SIZE:
            raise DescriptorError(f"{source} is too large to be a stream descriptor")
        data = path.read_bytes()
    elif is_blob_hash(source):
        try:
            data = await store.read_blob(source)
        except BlobNotFoundError:
            raise DescriptorError(
                f"the sd blob {source} is not in the local store; "
                "download it or pass the .sd file"
            ) from None
    else:
        raise DescriptorError(f"{source}: no such file, and not an sd hash")
    return parse_sd_blob(data), blob_hash(data)


async def _publish(
    store: BlobStore, worker: ThreadWorker, file: Path, sd_out: Path
) -> tuple[StreamDescriptor, str, Path]:
    """
    Publish C{file} with a progress line and write its descriptor to
    C{sd_out} (a directory, where it is named C{FILE.sd}, or a file name),
    never overwriting; return the descriptor, sd hash and descriptor path.
    """
    if not file.is_file():
        raise StreamError(f"{file}: no such file")
    with ProgressLine(f"publishing {file.name}") as progress:
        descriptor, sd_hash = await publish_file(store, worker, file, progress=progress)
    return descriptor, sd_hash, write_descriptor(descriptor.to_sd_blob(), file.name, sd_out)


def write_descriptor(sd_blob: bytes, file_name: str, sd_out: Path) -> Path:
    """
    Write a descriptor to C{sd_out} (a directory, where it is named
    C{FILE_NAME.sd}, or a file name), never overwriting; return its path.
    """
    if sd_out.is_dir():
        directory, name = sd_out, f"{file_name}.sd"
    else:
        directory, name = sd_out.parent, sd_out.name
    try:
        path, f = open_new_file(directory, name)
    except OSError as e:
        raise StreamError(f"cannot write the descriptor in {directory}: {e.strerror}") from None
    with f:
        f.write(sd_blob)
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    metavar="DIR",
    help="The node's data directory [default: $P2PBLOB_DATA_DIR or ~/.p2pblob].",
)
@click.option(
    "--disk-limit",
    metavar="SIZE",
    help="Most bytes the blob store may use (500MB, 20GiB; 0 for no limit) "
    "[default: $P2PBLOB_DISK_LIMIT or 20 GiB].",
)
@click.option("--debug", is_flag=True, help="Show log messages and tracebacks.")
@click.version_option(__version__, "--version", prog_name="p2pblob", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, disk_limit: str | None, debug: bool) -> None:
    """
    Publish, assemble and verify p2pblob streams (LBRY-compatible).
    """
    ctx.obj = Options(data_dir, disk_limit, debug)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--sd-out",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default="current directory",
    help="Where to write FILE.sd: a directory, or a file name. Never overwrites.",
)
@click.pass_obj
def publish(options: Options, file: Path, sd_out: Path) -> None:
    """
    Encrypt FILE into blobs, store them, print the sd hash and write FILE.sd.
    When a node runs with the data directory, the node publishes it (and
    announces it at once).
    """
    if _node_running(options):

        async def through_node(reactor: Any, config: Config) -> int:
            if not file.is_file():
                raise StreamError(f"{file}: no such file")
            client = find_node(reactor, config)
            answer = await client.request("POST", "publish",
                                          {"path": str(file.expanduser().resolve())})
            path = write_descriptor(answer["sd_blob"].encode("utf-8"), file.name, sd_out)
            click.echo(answer["sd_hash"])
            click.echo(f"published {file.name} in the node at {client.url}: {answer['blobs']} "
                       f"data blob(s); descriptor written to {path}", err=True)
            return 0

        run_client(options, through_node)
        return

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        descriptor, sd_hash, path = await _publish(store, worker, file, sd_out)
        click.echo(sd_hash)
        count = len(descriptor.data_blobs)
        click.echo(f"published {file.name}: {count} data blob(s); descriptor written to {path}", err=True)
        return 0

    run(options, command)


@cli.command()
@click.argument("sd")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default="current directory",
    help="A directory (the stream's suggested name is used there) or a new file name.",
)
@click.pass_obj
def assemble(options: Options, sd: str, output: Path) -> None:
    """
    Rebuild the file of stream SD (an .sd file or an sd hash) from local blobs.
    """

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        descriptor, _ = await _load_descriptor(store, sd)
        if output.is_dir():
            destination = unique_path(output, safe_file_name(descriptor.suggested_file_name))
        else:
            destination = output
        with ProgressLine(f"assembling {destination.name}") as progress:
            size = await assemble_stream(store, worker, descriptor, destination, progress=progress)
        click.echo(str(destination))
        click.echo(f"wrote {size} bytes to {destination}", err=True)
        return 0

    run(options, command)


@cli.command()
@click.argument("sd")
@click.pass_obj
def verify(options: Options, sd: str) -> None:
    """
    Report which blobs of stream SD are present, missing or corrupt.
    Exits 0 only if the descriptor is valid and every blob is present and
    intact; corrupt blobs are removed from the store.
    """

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        descriptor, sd_hash = await _load_descriptor(store, sd)
        check = await verify_stream(store, descriptor)
        total = len(descriptor.data_blobs)
        click.echo(f"stream {descriptor.stream_name!r} (sd hash {sd_hash})")
        for blob_num, info in enumerate(descriptor.data_blobs):
            if info.blob_hash in check.missing:
                click.echo(f"  blob {blob_num} missing  {info.blob_hash}")
            elif info.blob_hash in check.corrupt:
                click.echo(f"  blob {blob_num} corrupt  {info.blob_hash} (removed from the store)")
        click.echo(
            f"{len(check.ok)} of {total} blob(s) present and intact, "
            f"{len(check.missing)} missing, {len(check.corrupt)} corrupt"
        )
        return 0 if check.complete else 1

    run(options, command)


@cli.command()
@click.argument("sd")
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    help="A peer to download from (repeatable; also $P2PBLOB_PEERS, comma-separated).",
)
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="HOST:PORT",
    help="A DHT node to join through to find peers (repeatable; also "
    "$P2PBLOB_BOOTSTRAP).  The contacts saved by the node of the same data "
    "directory are used too.",
)
@click.option("--no-dht", is_flag=True, help="Only download from the --peer peers.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default="current directory",
    help="The directory to save the file in, under the stream's suggested name "
    "(created if missing).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a peer may stay silent in the middle of an exchange.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_STALL_TIMEOUT,
    show_default=True,
    help="Give up after this many seconds without receiving a blob.",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    help="Most connections to peers at once.",
)
@click.option(
    "--max-download",
    metavar="RATE",
    default=None,
    help="Most bytes per second to download, e.g. 10MB or 512KiB; 0 for no limit "
    "[default: no limit].",
)
@click.option(
    "--price",
    "--max-price",
    "price",
    type=click.FloatRange(min=0.0, max=1e6),
    default=0.0,
    show_default=True,
    help="Points per MiB to offer peers, and pay those that accept, from the "
    "wallet of the data directory; 0 downloads for free (peers that charge "
    "more than the offer are skipped).",
)
@click.pass_context
def download(
    ctx: click.Context,
    sd: str,
    peers: tuple[str, ...],
    bootstrap: tuple[str, ...],
    no_dht: bool,
    output: Path,
    timeout: float,
    stall_timeout: float,
    connections: int,
    max_download: str | None,
    price: float,
) -> None:
    """
    Download stream SD (an .sd file or an sd hash) from peers, verify and
    decrypt it, and save it in OUTPUT.  Interrupted downloads resume: run
    the same command again and only missing blobs are fetched.

    When a node runs with the data directory, the node downloads the
    stream (with its own peers and settings) and this shows its progress.
    """
    options: Options = ctx.obj
    if _node_running(options):
        refused = [
            param.opts[0] for param in ctx.command.params
            if param.name in _STANDALONE_DOWNLOAD_OPTIONS
            and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT
        ]

        async def through_node(reactor: Any, config: Config) -> int:
            return await download_through_node(reactor, config, sd, output, refused)

        run_client(options, through_node)
        return

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        limit = None if max_download is None else parse_rate(max_download, "max-download")
        rate_limiter = None if limit is None else RateLimiter(reactor, max_download=limit)
        registry = PeerRegistry(reactor)
        addresses = peers_from_options(peers, config)
        finders: list[IPeerFinder] = []
        if addresses:
            finders.append(StaticPeerFinder(registry, addresses))
        if not no_dht:
            dht = await join_dht(reactor, config, registry, bootstrap, required=not addresses)
            if dht is not None:
                finders.append(dht)
        if not finders:
            raise ConfigError(
                "no peers to download from: give --peer HOST:PORT, or --bootstrap "
                "HOST:PORT to find them on the DHT"
            )
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StreamError(f"cannot use {output} as the output directory: {e.strerror}") from None
        source: str | bytes
        path = Path(sd)
        if path.is_file():
            if path.stat().st_size > MAX_BLOB_SIZE:
                raise DescriptorError(f"{sd} is too large to be a stream descriptor")
            source = path.read_bytes()
        elif is_blob_hash(sd):
            source = sd
        else:
            raise DescriptorError(f"{sd}: no such file, and not an sd hash")
        payments = None
        if price > 0:
            # paid mode: the wallet of the data directory pays (its ledger
            # is closed, reservations released, however the command ends)
            wallet = open_wallet(reactor, config)
            wallet.start()
            reactor.addSystemEventTrigger("before", "shutdown", wallet.stop)
            payments = DownloadPayments(wallet, price)
        swarm = Swarm(
            reactor,
            store,
            finders[0] if len(finders) == 1 else CombinedPeerFinder(finders),
            tcp_connector(reactor, reactor, timeout, rate_limiter=rate_limiter),
            max_connections=connections,
            stall_timeout=stall_timeout,
            payments=payments,
        )
        validator = await get_descriptor(swarm, source)
        # decrypting and writing the file in order is a stage of its own: it
        # must not queue behind the hashing of newly arrived blobs
        output_worker = ThreadWorker(reactor, "p2pblob-output", max_threads=1)
        output_worker.start()
        reactor.addSystemEventTrigger("after", "shutdown", output_worker.stop)
        downloader = FileStreamDownloader(swarm, worker, validator, output, output_worker)
        # Ctrl-C or SIGTERM: save what was written before the reactor stops
        trigger = reactor.addSystemEventTrigger("before", "shutdown", downloader.stop)
        name = downloader.output.file_name
        with DownloadLine(f"downloading {name}") as line:

            def show() -> None:
                status = downloader.status()
                line(status.done_bytes, status.total_bytes, status.peers)

            ticker = LoopingCall(show)
            ticker.start(0.5)
            try:
                final = await downloader.start()
            except CancelledError:
                click.echo(
                    "\nprogress saved; run the same command again to resume", err=True
                )
                raise
            finally:
                ticker.stop()
                reactor.removeSystemEventTrigger(trigger)
        if downloader.resumed_blobs:
            click.echo(f"resumed after {downloader.resumed_blobs} blob(s)", err=True)
        click.echo(str(final))
        size = final.stat().st_size
        click.echo(f"downloaded {size} bytes to {final}", err=True)
        if payments is not None:
            payments.settle()
            balance = payments.wallet.ledger.balance()
            click.echo(
                f"paid {format_points(payments.paid_micro)} points; balance "
                f"{format_points(balance)} points",
                err=True,
            )
        return 0

    run(options, command)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--listen",
    default=DEFAULT_PEER_LISTEN,
    show_default=True,
    metavar="ENDPOINT",
    help="Endpoint to serve peers on (tcp:3333, tcp:0:interface=127.0.0.1, ...).",
)
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="HOST:PORT",
    help="A DHT node to join through, to announce the blobs served (repeatable; "
    "also $P2PBLOB_BOOTSTRAP).",
)
@click.option("--no-dht", is_flag=True, help="Do not join the DHT.")
@click.option(
    "--max-upload",
    metavar="RATE",
    default=None,
    help="Most bytes per second to upload, e.g. 10MB or 512KiB; 0 for no limit "
    "[default: no limit].",
)
@click.option(
    "--price",
    type=click.FloatRange(min=0.0, max=1e6),
    default=0.0,
    show_default=True,
    help="Points per MiB to charge for the blobs served (the lowest offer accepted), "
    "paid into the wallet of the data directory; 0 serves for free, to LBRY peers too.",
)
@click.option(
    "--debt-limit",
    type=click.FloatRange(min=0.0, max=1e12),
    default=DEFAULT_DEBT_LIMIT,
    show_default=True,
    help="Points a peer may owe for blobs served before it is sent no more.",
)
@click.pass_obj
def serve(
    options: Options,
    files: tuple[Path, ...],
    listen: str,
    bootstrap: tuple[str, ...],
    no_dht: bool,
    max_upload: str | None,
    price: float,
    debt_limit: float,
) -> None:
    """
    Publish FILES (if any), then serve every blob in the store to peers
    until interrupted: a foreground node without twistd.  With a
    bootstrap node (or contacts saved by an earlier run), it joins the DHT
    and announces the blobs it serves.
    """

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        for file in files:
            _, sd_hash, sd_path = await _publish(store, worker, file, file.parent)
            click.echo(f"{sd_hash}  {file.name} (descriptor {sd_path})")
        limit = None if max_upload is None else parse_rate(max_upload, "max-upload")
        rate_limiter = None if limit is None else RateLimiter(reactor, max_upload=limit)
        wallet, rates = None, None
        if price > 0:
            # paid mode: cheques go into the wallet of the data directory
            wallet = open_wallet(reactor, replace(config, debt_limit=debt_limit))
            wallet.start()
            reactor.addSystemEventTrigger("before", "shutdown", wallet.stop)
            rates = PaymentRateManager(price)
        factory = make_server_factory(
            store,
            reactor,
            config.payment_address,
            config.max_request_size,
            config.idle_timeout,
            config.max_connections_per_ip,
            rate_limiter=rate_limiter,
            wallet=wallet,
            rates=rates,
        )
        try:
            port = await serverFromString(reactor, listen).listen(factory)
        except Exception as e:
            raise ConfigError(f"cannot serve peers on {listen}: {e}") from None
        count = len(await store.verified_blobs())
        click.echo(f"serving {count} blob(s) on {port.getHost()}; Ctrl-C to stop", err=True)
        services = [] if no_dht else dht_services(reactor, config, store, port, bootstrap)
        stopped: Deferred[None] = Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", lambda: stopped.callback(None))
        await stopped
        for service in reversed(services):
            await maybeDeferred(service.stopService)
        await maybeDeferred(port.stopListening)
        await factory.close_all()
        return 0

    run(options, command)


@cli.command()
@click.pass_obj
def wallet(options: Options) -> None:
    """
    Show the wallet: balance, reserved points, what each peer owes this
    node, and what this node has paid each peer.
    """

    async def command(
        reactor: Any, store: BlobStore, worker: ThreadWorker, config: Config
    ) -> int:
        for line in describe_wallet(config):
            click.echo(line)
        return 0

    run(options, command)


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_obj
def list_command(options: Options, as_json: bool) -> None:
    """
    List the streams the running node downloads or has downloaded: state,
    progress and name.
    """

    async def command(reactor: Any, config: Config) -> int:
        streams = await list_streams(reactor, config)
        if as_json:
            click.echo(json.dumps(streams, indent=2, sort_keys=True))
        else:
            for line in describe_streams(streams):
                click.echo(line)
        return 0

    run_client(options, command)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_obj
def status(options: Options, as_json: bool) -> None:
    """
    Show what the running node of the data directory is doing: its peers,
    the DHT, bandwidth and limits, disk use and wallet.
    """

    async def command(reactor: Any, config: Config) -> int:
        answer = await find_node(reactor, config).get("status")
        if as_json:
            click.echo(json.dumps(answer, indent=2, sort_keys=True))
        else:
            for line in describe_status(answer):
                click.echo(line)
        return 0

    run_client(options, command)


@cli.command()
@click.argument("sd", required=False)
@click.argument("target", required=False)
@click.option("--list", "listing", is_flag=True,
              help="List the node's mirrors, their exports and the last streams mirrored.")
@click.option("--json", "as_json", is_flag=True, help="With --list: print the API's answer.")
@click.pass_obj
def mirror(options: Options, sd: str | None, target: str | None, listing: bool,
           as_json: bool) -> None:
    """
    Have the running node export stream SD (an .sd file or an sd hash) to
    its mirror TARGET, as a plain file (decrypted, under the stream's
    suggested name); show the progress and print the name it is stored
    under. The node's mirrors are given to twistd p2pblob with --mirror.
    """
    if listing:
        if sd is not None:
            raise click.UsageError("--list takes no SD or TARGET")

        async def show(reactor: Any, config: Config) -> int:
            answer = await list_mirrors(reactor, config)
            if as_json:
                click.echo(json.dumps(answer, indent=2, sort_keys=True))
            else:
                for line in describe_mirrors(answer):
                    click.echo(line)
            return 0

        run_client(options, show)
        return
    if sd is None or target is None:
        raise click.UsageError("give the stream SD and the mirror TARGET (or --list)")

    async def command(reactor: Any, config: Config) -> int:
        return await mirror_through_node(reactor, config, sd, target)

    run_client(options, command)


@cli.command(name="publish-http")
@click.argument("url")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--token", envvar="P2PBLOB_TOKEN", metavar="TOKEN",
              help="The node's API token [default: $P2PBLOB_TOKEN, else the one in the data "
              "directory].")
@click.option("--resume", "resume", metavar="KEY",
              help="Go on with the files of transfer KEY (given again, in the same order) "
              "instead of sending a new manifest.")
@click.option("--cancel", "cancel", metavar="KEY",
              help="Cancel the files of transfer KEY not yet published.")
@click.option("--list", "listing", is_flag=True,
              help="List the names published in the prefix, and the files pending there.")
@click.option("--keep", is_flag=True,
              help="On Ctrl-C, keep the files not yet published pending (for --resume) "
              "instead of cancelling them.")
@click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Times an upload cut off is resumed before giving up.")
@click.pass_obj
def publish_http(options: Options, url: str, files: tuple[Path, ...], token: str | None,
                 resume: str | None, cancel: str | None, listing: bool, keep: bool,
                 retries: int) -> None:
    """
    Publish FILES into a node over HTTP, under their names: URL is the
    node's publishing prefix (http://HOST:PORT/publish/PREFIX/; the node's
    own URL for the prefix files).  The node admits all the files or none;
    each is uploaded with a progress line, checked (size, MD5) and
    published; its sd hash and name are printed.  An upload cut off is
    resumed; Ctrl-C cancels the files not yet published.
    """
    if resume is not None and cancel is not None:
        raise click.UsageError("give --resume or --cancel, not both")

    async def command(reactor: Any, config: Config) -> int:
        return await publish_over_http(reactor, config, url, files, token=token, resume=resume,
                                       cancel=cancel, listing=listing, keep=keep,
                                       retries=retries)

    run_client(options, command)


def _node_running(options: Options) -> bool:
    """
    Whether a node runs with the data directory (then commands that would
    open its store go through the node instead).
    """
    try:
        return running_node_url(config_from(options.data_dir, options.disk_limit)) is not None
    except ConfigError:
        return False  # (the command reports it)


# the options of `p2pblob download` that only a download of its own takes
_STANDALONE_DOWNLOAD_OPTIONS = (
    "peers", "bootstrap", "no_dht", "timeout", "stall_timeout", "connections",
    "max_download", "price",
)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
