"""
C{p2pblob publish-http URL FILES...}: publish files into a node's
publishing prefix over HTTP (L{p2pblob.http.publishing}), as AccessGrid's
upload client did, with its holes fixed.

  1. Each file's size and MD5 are read (in a thread), and the manifest
     sent; the node admits all the files or none (then every refusal is
     printed, with its reason).
  2. The files are uploaded one by one, with a progress line on a terminal
     (a line at each quarter elsewhere); each published prints its sd hash
     and name on standard output.
  3. A connection that drops mid-upload is resumed: the node tells how far
     it holds the file (C{HEAD}, C{Upload-Offset}) and the rest is sent
     (C{Content-Range}), a few times, waiting a little longer each time.
  4. Ctrl-C cancels the files not yet published (C{DELETE} of the
     transfer), unless C{--keep}: then, as when the retries run out, they
     stay pending until the transfer key expires, and C{--resume KEY}
     (with the same files) goes on with them; C{--cancel KEY} drops them.

URL is the prefix's, C{http://HOST:PORT/publish/PREFIX/}, or the node's
(C{http://HOST:PORT/}: the prefix C{files}).  The API token is
C{--token}, else C{$P2PBLOB_TOKEN}, else the one in the data directory
(for a node of this machine).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import click
import treq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.web.client import FileBodyProducer, HTTPConnectionPool

from p2pblob.cli._progress import ProgressLine
from p2pblob.config import Config
from p2pblob.errors import APIRequestError, ConfigError, NodeClientError, NodeNotRunningError

__all__ = ["PublishClient", "publish_over_http", "split_url"]

# seconds the requests other than uploads may take
REQUEST_TIMEOUT = 30.0
# bytes read from a file at a time, when hashing it
_READ_SIZE = 1 << 20


def split_url(url: str) -> tuple[str, str]:
    """
    The base URL of a node and the prefix of a publishing URL:
    C{http://host:port/publish/music/} gives C{("http://host:port",
    "music")}; the node's own URL gives the prefix C{files}.

    @raise ConfigError: it is not an http(s) URL of a node or of a prefix.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} is not a node's URL (http://HOST:PORT/publish/PREFIX/)")
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = [part for part in parts.path.split("/") if part]
    if not path:
        return base, "files"
    if path[0] != "publish" or len(path) > 2:
        raise ConfigError(f"{url!r} is not a publishing URL (http://HOST:PORT/publish/PREFIX/)")
    return base, path[1] if len(path) == 2 else "files"


def _token(given: str | None, config: Config) -> str:
    if given:
        return given.strip()
    try:
        token = config.api_token_path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    if not token:
        raise ConfigError("publishing needs the node's API token: give --token (or set "
                          f"$P2PBLOB_TOKEN); a local node keeps it in {config.api_token_path}")
    return token


@dataclass
class _File:
    path: Path
    name: str
    size: int
    md5: str


def _describe(path: Path) -> _File:
    """
    A file's size and MD5, read from it.  (Runs in a thread.)
    """
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    return _File(path, path.name, size, digest.hexdigest())


class _CountingFile(io.FileIO):
    """
    A file read from an offset to its end, telling C{progress} how many
    bytes were read each time.
    """

    def __init__(self, path: Path, offset: int, progress: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self.seek(offset)
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data:
            self._progress(len(data))
        return data or b""


class _Progress:
    """
    The progress of one upload: a line redrawn on a terminal, else a line at
    each quarter.
    """

    def __init__(self, name: str, size: int, stream: TextIO | None = None) -> None:
        self._name = name
        self._size = size
        self._line = ProgressLine(f"uploading {name}", stream)
        self._stream: TextIO = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._quarter = 0
        self.done = 0

    def start(self, offset: int) -> None:
        self.done = offset
        if not self._tty:
            self._stream.write(f"uploading {self._name} ({self._size} bytes"
                               f"{f', from byte {offset}' if offset else ''})\n")
            self._stream.flush()
            self._quarter = 4 * offset // self._size if self._size else 0

    def __call__(self, count: int) -> None:
        self.done += count
        self._line(self.done, self._size)
        if not self._tty and self._size:
            quarter = 4 * self.done // self._size
            if quarter > self._quarter:
                self._quarter = quarter
                self._stream.write(f"  {self._name}: {25 * quarter}% ({self.done} bytes)\n")
                self._stream.flush()

    def finish(self) -> None:
        self._line.finish()


class _Retry(Exception):
    """
    The upload did not end, but may go on (from the node's offset).
    """


class PublishClient:
    """
    Requests to the publishing routes of the node at C{base}, under
    C{prefix}, bearing C{token}.
    """

    def __init__(self, reactor: Any, base: str, prefix: str, token: str) -> None:
        self._reactor = reactor
        self.base = base
        self.prefix = prefix
        self._headers: dict[bytes | str, bytes | str] = {
            "Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._pool = HTTPConnectionPool(reactor, persistent=False)

    def url(self, *parts: str) -> str:
        path = "/".join(quote(part, safe="") for part in parts)
        return f"{self.base}/publish/{quote(self.prefix, safe='')}/{path}"

    async def request(self, method: str, url: str, body: Any = None,
                      data: Any = None, headers: dict[str, str] | None = None,
                      timeout: float | None = REQUEST_TIMEOUT) -> tuple[int, Any, Any]:
        """
        Send a request; return its status, its headers and its JSON answer
        (L{None} for an answer without a body).

        @raise NodeNotRunningError: the node cannot be reached.
        """
        sent = dict(self._headers)
        sent.update(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            sent["Content-Type"] = "application/json"
        try:
            response = await treq.request(method, url, data=data, headers=sent,
                                          reactor=self._reactor, timeout=timeout,
                                          pool=self._pool)
            content = await response.content()
        except CancelledError:
            raise
        except Exception as e:
            raise NodeNotRunningError(f"cannot reach the node at {self.base}: {e}") from None
        try:
            answer = json.loads(content) if content else None
        except ValueError:
            raise APIRequestError(response.code, "bad_answer",
                                  f"the node answered {method} {url} with something other "
                                  f"than JSON (HTTP {response.code})") from None
        return response.code, response.headers, answer

    async def checked(self, method: str, url: str, body: Any = None) -> Any:
        """
        L{request}, with an answer of 400 or more raised.

        @raise APIRequestError: the node refused the request.
        """
        code, _, answer = await self.request(method, url, body)
        if code >= 400:
            raise _refused(method, url, code, answer)
        return answer

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


def _refused(method: str, url: str, code: int, answer: Any) -> APIRequestError:
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return APIRequestError(code, "bad_answer", f"the node refused {method} {url} "
                                                   f"(HTTP {code})")
    message = str(error.get("message"))
    files = error.get("files")
    if isinstance(files, list) and files:
        reasons = "".join(f"\n  {f.get('name')!r}: {f.get('reason')}" for f in files
                          if isinstance(f, dict))
        message = (f"the node admitted none of the files (HTTP {code}); refused:"
                   f"{reasons}")
    return APIRequestError(code, str(error.get("code")), message)


class _Publisher:
    """
    One run of the command: a transfer's files uploaded one by one.
    """

    def __init__(self, reactor: Any, client: PublishClient, url: str, retries: int,
                 keep: bool) -> None:
        self._reactor = reactor
        self._client = client
        self._url = url
        self._retries = retries
        self._keep = keep
        self.key: str | None = None
        self.files: list[_File] = []

    async def describe(self, paths: Sequence[Path]) -> None:
        pool = self._reactor.getThreadPool()
        for path in paths:
            self.files.append(await deferToThreadPool(self._reactor, pool, _describe, path))

    async def admit(self) -> list[dict[str, Any]]:
        answer = await self._client.checked("POST", self._client.url("manifest"), {
            "files": [{"name": f.name, "size": f.size, "md5": f.md5} for f in self.files]})
        self.key = answer["transfer_key"]
        click.echo(f"transfer key {self.key}: {len(self.files)} file(s) admitted into "
                   f"{answer['prefix']!r}", err=True)
        entries: list[dict[str, Any]] = answer["files"]
        return entries

    async def resume(self, key: str) -> list[dict[str, Any]]:
        """
        The files of transfer C{key}, checked against the files given.
        """
        self.key = key
        entries = []
        for number, file in enumerate(self.files):
            entry = await self._client.checked("GET", self._client.url(key, str(number)))
            if entry.get("name") != file.name or entry.get("size") != file.size or entry.get(
                    "md5") != file.md5:
                raise ConfigError(
                    f"file {number} of transfer {key} is {entry.get('name')!r} "
                    f"({entry.get('size')} bytes, MD5 {entry.get('md5')}), not {file.path} "
                    f"({file.size} bytes, MD5 {file.md5}): give the same files, in the same "
                    "order")
            entries.append(entry)
        return entries

    async def upload_all(self, entries: list[dict[str, Any]]) -> None:
        for file, entry in zip(self.files, entries, strict=True):
            if entry.get("state") == "published":
                click.echo(f"{entry['sd_hash']}  {file.name}")
                click.echo(f"{file.name} was already published", err=True)
                continue
            published = await self._upload(file, entry["upload_url"], entry.get("offset", 0))
            click.echo(f"{published['sd_hash']}  {file.name}")
            click.echo(f"published {file.name}: {published['download_url']}", err=True)

    async def _upload(self, file: _File, url: str, offset: int) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self._put(file, url, offset)
            except _Retry as e:
                attempt += 1
                if attempt > self._retries:
                    raise NodeClientError(f"the upload of {file.name} did not end: {e}") from None
                await deferLater(self._reactor, min(2.0 ** (attempt - 1), 30.0))
                offset = await self._offset(url, file)
                click.echo(f"resuming {file.name} from byte {offset} ({e})", err=True)

    async def _offset(self, url: str, file: _File) -> int:
        """
        How far the node holds C{file} (0 if it cannot say).
        """
        try:
            code, headers, _ = await self._client.request("HEAD", url)
        except NodeNotRunningError:
            return 0
        values = headers.getRawHeaders("upload-offset") if code == 200 else None
        return int(values[0]) if values and values[0].isdigit() else 0

    async def _put(self, file: _File, url: str, offset: int) -> dict[str, Any]:
        progress = _Progress(file.name, file.size)
        progress.start(offset)
        headers = {"Content-Type": "application/octet-stream"}
        if offset:
            headers["Content-Range"] = f"bytes {offset}-{file.size - 1}/{file.size}"
        try:
            source: io.IOBase = (_CountingFile(file.path, offset, progress) if file.size
                                    else io.BytesIO())
        except OSError as e:
            raise ConfigError(f"cannot read {file.path}: {e.strerror}") from None
        try:
            code, response, answer = await self._client.request(
                "PUT", url, data=FileBodyProducer(source), headers=headers, timeout=None)
        except NodeNotRunningError as e:
            raise _Retry(str(e)) from None
        finally:
            progress.finish()
            source.close()
        if code == 200:
            result: dict[str, Any] = answer
            return result
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        if code in (409, 400) and error.get("code") in ("offset_mismatch", "wrong_length"):
            raise _Retry(str(error.get("message")))
        if code in (502, 503, 504) or (code == 409 and error.get("code") == "upload_busy"):
            raise _Retry(f"HTTP {code}: {error.get('message')}")
        raise _refused("PUT", url, code, answer)

    async def cancel(self) -> None:
        """
        Cancel the files of the transfer not yet published.
        """
        if self.key is None:
            return
        try:
            answer = await self._client.checked("DELETE", self._client.url(self.key))
        except NodeClientError as e:
            click.echo(f"could not cancel transfer {self.key}: {e}", err=True)
            return
        names = ", ".join(entry["name"] for entry in answer.get("cancelled", []))
        click.echo(f"cancelled transfer {self.key}" + (f": {names}" if names else ""), err=True)

    def pending_hint(self) -> str:
        files = " ".join(quote(str(f.path), safe="/._-") for f in self.files)
        return (f"the files not yet published stay pending until the transfer key expires: "
                f"go on with `p2pblob publish-http {self._url} --resume {self.key} {files}`, "
                f"or drop them with `p2pblob publish-http {self._url} --cancel {self.key}`")


async def publish_over_http(
    reactor: Any,
    config: Config,
    url: str,
    paths: Sequence[Path],
    *,
    token: str | None = None,
    resume: str | None = None,
    cancel: str | None = None,
    listing: bool = False,
    keep: bool = False,
    retries: int = 5,
) -> int:
    """
    The C{publish-http} command (see the module's docstring).
    """
    base, prefix = split_url(url)
    client = PublishClient(reactor, base, prefix, _token(token, config))
    try:
        if listing or cancel is not None:
            if paths:
                raise ConfigError("--list and --cancel take no FILES")
            if cancel is not None:
                publisher = _Publisher(reactor, client, url, retries, keep)
                publisher.key = cancel
                await client.checked("GET", client.url(cancel, "0"))
                await publisher.cancel()
            else:
                for line in describe_listing(await client.checked("GET", client.url(""))):
                    click.echo(line)
            return 0
        if not paths:
            raise ConfigError("give the FILES to publish (or --list, or --cancel KEY)")
        publisher = _Publisher(reactor, client, url, retries, keep)
        await publisher.describe(paths)
        return await _run(reactor, publisher, resume, keep)
    finally:
        await client.close()


async def _run(reactor: Any, publisher: _Publisher, resume: str | None, keep: bool) -> int:
    """
    Admit (or resume) the files and upload them; on Ctrl-C, cancel the
    files not yet published (unless C{keep}) before the reactor stops.
    """
    work: Deferred[None] = Deferred.fromCoroutine(_upload(publisher, resume))
    cleaned: Deferred[None] = Deferred()
    stopping: list[bool] = []

    def interrupted() -> Deferred[None]:
        stopping.append(True)
        work.cancel()
        return cleaned

    trigger = reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        await work
    except CancelledError:
        if keep:
            click.echo(f"\ninterrupted; {publisher.pending_hint()}", err=True)
        else:
            click.echo("\ninterrupted; cancelling the files not yet published", err=True)
            await publisher.cancel()
        raise
    except NodeClientError as e:
        if publisher.key is not None:
            raise NodeClientError(f"{e}\n{publisher.pending_hint()}") from None
        raise
    finally:
        if not stopping:
            reactor.removeSystemEventTrigger(trigger)
        cleaned.callback(None)
    return 0


async def _upload(publisher: _Publisher, resume: str | None) -> None:
    entries = await (publisher.resume(resume) if resume else publisher.admit())
    await publisher.upload_all(entries)


def describe_listing(answer: dict[str, Any]) -> list[str]:
    """
    The lines C{publish-http --list} prints.
    """
    lines = []
    for entry in answer.get("files", []):
        if entry.get("state") == "published":
            lines.append(f"published  {entry['sd_hash'][:16]}  {entry['size']:>12}  "
                         f"{entry['name']}")
        else:
            lines.append(f"pending    {entry.get('offset', 0):>12}/{entry['size']}  "
                         f"{entry['name']}  (transfer {entry['transfer_key']})")
    return lines or [f"nothing is published in {answer.get('prefix')!r} yet"]
