"""
The C{p2pblob} commands that go through the node running with the data
directory (L{p2pblob.cli._client}): C{ls}, and C{download} when such a node
runs, which then downloads in the node and shows the node's progress.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater

from p2pblob.blob.hashing import MAX_BLOB_SIZE, is_blob_hash
from p2pblob.cli._client import NodeClient, find_node
from p2pblob.cli._progress import DownloadLine
from p2pblob.config import Config
from p2pblob.errors import ConfigError, DescriptorError, StreamError

__all__ = ["describe_streams", "download_through_node", "list_streams"]

# seconds between two looks at the node's progress
POLL_INTERVAL = 0.5


async def download_through_node(
    reactor: Any, config: Config, sd: str, output: Path, refused: list[str]
) -> int:
    """
    Have the running node download stream C{sd} (an C{.sd} file or an sd
    hash) into C{output}, and show its progress until it is done.

    @param refused: the options given that only a download of its own
        takes (the node downloads with its own peers and settings).
    """
    if refused:
        raise ConfigError(
            f"a node is running with the data directory {config.data_dir}; it downloads with "
            f"its own peers and settings, so {', '.join(refused)} cannot be used here "
            "(stop the node, or give another --data-dir)"
        )
    client = find_node(reactor, config)
    body: dict[str, str] = {"output_dir": str(output.expanduser().resolve())}
    path = Path(sd)
    if path.is_file():
        if path.stat().st_size > MAX_BLOB_SIZE:
            raise DescriptorError(f"{sd} is too large to be a stream descriptor")
        try:
            body["sd_blob"] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise DescriptorError(f"{sd} is not a stream descriptor (not text)") from None
    elif is_blob_hash(sd.strip().lower()):
        body["sd_hash"] = sd.strip().lower()
    else:
        raise DescriptorError(f"{sd}: no such file, and not an sd hash")
    info = (await client.request("POST", "streams", body))["stream"]
    sd_hash = info["sd_hash"]
    click.echo(f"the node at {client.url} is downloading stream {sd_hash[:16]}…", err=True)
    try:
        return await _follow(reactor, client, sd_hash, info)
    except CancelledError:
        click.echo("\nthe node goes on downloading; `p2pblob ls` shows how far it is", err=True)
        raise


async def _follow(reactor: Any, client: NodeClient, sd_hash: str, info: dict[str, Any]) -> int:
    with ExitStack() as shown:
        line: DownloadLine | None = None
        while True:
            state = info["state"]
            if line is None and info.get("name"):
                line = shown.enter_context(DownloadLine(f"downloading {info['name']}"))
            if line is not None and info.get("total_bytes"):
                line(info["done_bytes"], info["total_bytes"], info["peers"])
            if state == "finished":
                break
            if state == "failed":
                raise StreamError(f"the node could not download the stream: {info['error']}")
            if state in ("paused", "cancelled"):
                raise StreamError(f"the download was {state} on the node; resume it there "
                                  "(or run this command again)")
            await deferLater(reactor, POLL_INTERVAL)
            info = (await client.get(f"streams/{sd_hash}"))["stream"]
    click.echo(info["output"])
    return 0


async def list_streams(reactor: Any, config: Config) -> list[dict[str, Any]]:
    """
    The running node's downloads, as the API gives them.
    """
    answer = await find_node(reactor, config).get("streams")
    streams: list[dict[str, Any]] = answer["streams"]
    return streams


def describe_streams(streams: list[dict[str, Any]]) -> list[str]:
    """
    The lines C{p2pblob ls} prints: one per stream.
    """
    if not streams:
        return ["no streams: start one with p2pblob download SD"]
    lines = []
    for stream in streams:
        total, done = stream.get("total_bytes"), stream.get("done_bytes", 0)
        percent = f"{100 * done / total:5.1f}%" if total else "     -"
        name = stream.get("name") or "(descriptor not fetched yet)"
        line = f"{stream['sd_hash'][:16]}  {stream['state']:<9}  {percent}  {name}"
        if stream.get("state") == "finished" and stream.get("output"):
            line += f"  -> {stream['output']}"
        if stream.get("error"):
            line += f"  ({stream['error']})"
        lines.append(line)
    return lines
