"""
The node's HTTP service: L{APIService} serves the API (and, as they come,
the stream gateway, the dashboard, the metrics and manifest publishing) on
the configured endpoint, and tells local programs where it is.  Request
bodies the resource routes (uploads) reach it as they arrive
(L{p2pblob.http._body}).

Once it listens it writes C{api.json} in the data directory::

    {"url": "http://127.0.0.1:5279/", "pid": 1234}

which the C{p2pblob} command reads to find a running node; the file goes
away when the service stops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from p2pblob._fatal import give_up
from p2pblob.errors import P2PBlobError
from p2pblob.http._body import BodyRoute, streaming_site

__all__ = ["APIService", "url_of"]

_log = Logger()


def url_of(port: IListeningPort) -> str:
    """
    The base URL of the HTTP server listening on C{port}.
    """
    address: Any = port.getHost()
    host = getattr(address, "host", None)
    if host is None:
        return f"http+unix://{getattr(address, 'name', '')}/"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{address.port}/"


class APIService(Service):
    """
    Serve C{resource} on C{endpoint} (a server endpoint string).

    @param address_path: the file that tells local programs where the API
        is while it runs.
    @ivar listening: fires with the port once the API listens (fails if it
        cannot; the node then stops, as without its peer server).
    """

    name = "http-api"

    def __init__(
        self,
        reactor: Any,
        endpoint: str,
        resource: Callable[[], IResource],
        address_path: Path,
    ) -> None:
        self._reactor = reactor
        self.endpoint = endpoint
        self._resource = resource
        self._address_path = address_path
        self._port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        super().startService()
        try:
            resource = self._resource()
        except P2PBlobError:
            # (its API token cannot be read or made)
            self._failed(Failure())
            return
        site = streaming_site(resource, _body_route(resource))
        site.displayTracebacks = False
        listening = serverFromString(self._reactor, self.endpoint).listen(site)
        listening.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self._port = port
        url = url_of(port)
        _log.info("HTTP API on {endpoint} ({url})", endpoint=self.endpoint, url=url)
        try:
            self._write_address(url)
        except OSError as e:
            _log.warn("Cannot write {path}: {error}; the p2pblob command will not find "
                      "this node's API", path=str(self._address_path), error=e.strerror)
        self.listening.callback(port)

    def _failed(self, failure: Failure) -> None:
        give_up(_log, self._reactor, self.listening, failure,
                "Cannot serve the HTTP API on {endpoint}: {error}; stopping "
                "(use --api-listen to choose another endpoint, or none)", endpoint=self.endpoint)

    def _write_address(self, url: str) -> None:
        path = self._address_path
        partial = path.with_name(path.name + ".part")
        partial.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
        os.replace(partial, path)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return None
        try:
            self._address_path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            _log.warn("Cannot remove {path}: {error}", path=str(self._address_path),
                      error=e.strerror)
        stopped: Deferred[None] = Deferred.fromCoroutine(_stop(port))
        return stopped


def _body_route(resource: IResource) -> BodyRoute:
    """
    Where the bodies of the API's requests go: to the receivers the
    resource's C{route_body} gives as soon as a request's headers are in
    (the uploads of L{p2pblob.http.publishing}, streamed as they arrive),
    else buffered as twisted.web does.
    """
    route: BodyRoute | None = getattr(resource, "route_body", None)
    if route is not None:
        return route
    return lambda method, target, headers: None


async def _stop(port: IListeningPort) -> None:
    await maybeDeferred(port.stopListening)
