"""
C{p2pblob mirror}: have the node running with the data directory export a
stream to one of its mirrors (L{p2pblob.storage.mirror}), through its HTTP
API, and show the export's progress until it ends; or list the node's
mirrors and their exports.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater

from p2pblob.blob.hashing import MAX_BLOB_SIZE, blob_hash, is_blob_hash
from p2pblob.cli._client import NodeClient, find_node
from p2pblob.cli._progress import ProgressLine
from p2pblob.config import Config
from p2pblob.errors import DescriptorError, NodeClientError, NodeNotRunningError
from p2pblob.stream.descriptor import parse_sd_blob

__all__ = ["describe_mirrors", "list_mirrors", "mirror_through_node", "sd_hash_of"]

# seconds between two looks at the export's progress
POLL_INTERVAL = 0.5


def sd_hash_of(sd: str) -> str:
    """
    The sd hash of the stream named on the command line: an C{.sd} file
    (the hash of its bytes), or an sd hash.

    @raise DescriptorError: it is neither, or the file is not a descriptor.
    """
    path = Path(sd)
    if path.is_file():
        if path.stat().st_size > MAX_BLOB_SIZE:
            raise DescriptorError(f"{sd} is too large to be a stream descriptor")
        data = path.read_bytes()
        parse_sd_blob(data)
        return blob_hash(data)
    if is_blob_hash(sd.strip().lower()):
        return sd.strip().lower()
    raise DescriptorError(f"{sd}: no such file, and not an sd hash")


def _node(reactor: Any, config: Config) -> NodeClient:
    try:
        return find_node(reactor, config)
    except NodeNotRunningError as e:
        raise NodeNotRunningError(
            f"{e}; p2pblob mirror works through the node, whose --mirror options name "
            "the mirrors"
        ) from None


async def mirror_through_node(reactor: Any, config: Config, sd: str, target: str) -> int:
    """
    Have the running node export stream C{sd} to its mirror C{target},
    show the progress until the export ends, and print the name the file
    was stored under.

    @raise NodeClientError: no node runs, it refused the export, or the
        export failed (the message says why).
    """
    sd_hash = sd_hash_of(sd)
    client = _node(reactor, config)
    job = (await client.request("POST", "mirrors", {"sd_hash": sd_hash, "target": target}))["job"]
    click.echo(f"the node at {client.url} is exporting stream {sd_hash[:16]}… to mirror "
               f"{target}", err=True)
    try:
        job = await _follow(reactor, client, job)
    except CancelledError:
        click.echo("\nthe node goes on exporting; `p2pblob mirror --list` shows how far it is",
                   err=True)
        raise
    click.echo(job["key"])
    click.echo(f"mirrored {job['name']} to {target} as {job['key']} "
               f"({job['total_bytes']} bytes)", err=True)
    return 0


async def _follow(reactor: Any, client: NodeClient, job: dict[str, Any]) -> dict[str, Any]:
    """
    Poll the export until it ends; return its last state.
    """
    with ExitStack() as shown:
        line: ProgressLine | None = None
        while True:
            state = job["state"]
            if line is None and job.get("name") and job.get("total_bytes") is not None:
                line = shown.enter_context(
                    ProgressLine(f"mirroring {job['name']} to {job['target']}"))
            if line is not None and job.get("total_bytes") is not None:
                line(job["done_bytes"], job["total_bytes"])
            if state == "finished":
                return job
            if state == "failed":
                raise NodeClientError(
                    f"the node could not mirror the stream to {job['target']}: {job['error']}")
            if state == "interrupted":
                raise NodeClientError(
                    f"the export to {job['target']} did not end: {job['error']}")
            await deferLater(reactor, POLL_INTERVAL)
            try:
                job = (await client.get(f"mirrors/jobs/{job['id']}"))["job"]
            except NodeNotRunningError:
                raise NodeNotRunningError(
                    "the node stopped before the export ended; an upload under way goes on "
                    "when it starts again (p2pblob mirror --list shows it)"
                ) from None


async def list_mirrors(reactor: Any, config: Config) -> dict[str, Any]:
    """
    The running node's mirrors, their exports and the last streams
    mirrored, as the API gives them.
    """
    answer: dict[str, Any] = await _node(reactor, config).get("mirrors")
    return answer


def describe_mirrors(answer: dict[str, Any]) -> list[str]:
    """
    The lines C{p2pblob mirror --list} prints.
    """
    lines = []
    if answer.get("error"):
        lines.append(f"the mirrors cannot be used: {answer['error']}")
    for target in answer.get("targets", []):
        line = (f"mirror {target['name']} ({target['plugin']}, rule {target['rule']}): "
                f"{target['state']}")
        if target.get("mirrored") is not None:
            line += f", {target['mirrored']} stream(s) mirrored"
        if target.get("error"):
            line += f" ({target['error']})"
        lines.append(line)
    jobs = answer.get("jobs", [])
    if jobs:
        lines.append("exports:")
    for job in jobs:
        total, done = job.get("total_bytes"), job.get("done_bytes", 0)
        percent = f"{100 * done / total:5.1f}%" if total else "     -"
        name = job.get("name") or job["sd_hash"][:16]
        line = f"  #{job['id']:<4} {job['target']}  {job['state']:<11} {percent}  {name}"
        if job.get("key"):
            line += f" -> {job['key']}"
        if job.get("error"):
            line += f"  ({job['error']})"
        lines.append(line)
    history = answer.get("history", [])
    if history:
        lines.append("last mirrored:")
    for record in history:
        lines.append(f"  {record['target']}  {record['sd_hash'][:16]}  {record['key']}  "
                     f"{record['size']} bytes")
    return lines or ["this node has no mirrors (twistd p2pblob --mirror NAME=PLUGIN)"]
