"""
How the C{p2pblob} command talks to a running node: L{find_node} reads
where the node of a data directory serves its HTTP API (C{api.json}, which
the node writes while it runs), and L{NodeClient} makes JSON requests to
it with treq, sending the data directory's API token, and turns the API's
errors into L{APIRequestError}s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import treq
from twisted.internet.error import ConnectError, ConnectionRefusedError

from p2pblob.config import Config
from p2pblob.errors import APIRequestError, NodeNotRunningError

__all__ = ["NodeClient", "find_node", "running_node_url"]

# seconds a request to the node may take
REQUEST_TIMEOUT = 30.0


def running_node_url(config: Config) -> str | None:
    """
    The base URL of the API of the node running with C{config}'s data
    directory, or L{None} if none is (no C{api.json}, or the process that
    wrote it is gone: it was killed).
    """
    try:
        where = json.loads(config.api_address_path.read_text())
    except (OSError, ValueError):
        return None
    url, pid = where.get("url"), where.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or not _alive(pid):
        return None
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # (another user's process: it is there)
    return True


def find_node(reactor: Any, config: Config) -> NodeClient:
    """
    A client of the node running with C{config}'s data directory.

    @raise NodeNotRunningError: none is.
    """
    url = running_node_url(config)
    if url is None:
        raise NodeNotRunningError(
            f"no node is running with the data directory {config.data_dir} "
            "(start one with: twistd -n p2pblob, or give --data-dir)"
        )
    return NodeClient(reactor, url, _token(config.api_token_path))


def _token(path: Path) -> str | None:
    try:
        return path.read_text("ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


class NodeClient:
    """
    JSON requests to the API at C{url} (its base, C{http://host:port/}).
    """

    def __init__(self, reactor: Any, url: str, token: str | None = None) -> None:
        self._reactor = reactor
        self.url = url
        self._headers: dict[bytes | str, bytes | str] = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """
        Send C{method} to C{path} (under C{/api/v1/}) with C{body} as JSON;
        return the parsed answer.

        @raise NodeNotRunningError: the node cannot be reached.
        @raise APIRequestError: the node refused the request.
        """
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        url = f"{self.url}api/v1/{path.lstrip('/')}"
        try:
            response = await treq.request(method, url, data=data, headers=headers,
                                          reactor=self._reactor, timeout=REQUEST_TIMEOUT)
            content = await response.content()
        except (ConnectError, ConnectionRefusedError) as e:
            raise NodeNotRunningError(f"cannot reach the node's API at {self.url}: {e}") from None
        try:
            answer = json.loads(content)
        except ValueError:
            raise APIRequestError(response.code, "bad_answer",
                                  f"the node answered {method} {url} with something other "
                                  f"than JSON (HTTP {response.code})") from None
        if response.code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            if not isinstance(error, dict):
                raise APIRequestError(response.code, "bad_answer",
                                      f"the node refused {method} {url} (HTTP {response.code})")
            raise APIRequestError(response.code, str(error.get("code")),
                                  str(error.get("message")))
        return answer
