"""
The JSON control API of a running node: L{NodeAPI}, a klein application
under C{/api/v1/}.

Every answer is a JSON object.  Errors are::

    {"error": {"code": "<stable code>", "message": "<words for the user>"}}

with a 4xx status for anything the caller can fix (unknown route or blob,
bad JSON, a setting of the wrong type), 401/403 from the request guard
(L{p2pblob.http.auth}), and 500 only for a bug in the node, which is
logged with its traceback and answered without it.

Routes so far (besides C{GET /stream/<sd hash>}, L{p2pblob.http.streaming},
C{GET /metrics}, L{p2pblob.http.metrics}, and C{/publish/}, manifest
publishing, L{p2pblob.http.publishing}, which has a guard of its own)::

    GET   /api/v1/status     version, peer port, DHT, bandwidth, disk use,
                             limits, wallet balance, prices, and the names
                             published and pending in each publishing prefix
    GET   /api/v1/blobs      the blobs held (?offset=&limit=, sorted by hash)
    GET   /api/v1/watch      the watched folder's state and published files
    GET   /api/v1/blobs/<h>  one blob: its length, or 404
    GET   /api/v1/peers      bytes moved with each peer host, and the scores of
                             the peers downloads fetch from
    GET   /api/v1/wallet     balance, reservations, debts and cheques
    GET   /api/v1/settings   the settings that may change while it runs
    PATCH /api/v1/settings   change some of them (all or none are applied)
    POST  /api/v1/publish    publish a file of this machine ({"path": …})
    GET   /api/v1/streams    the node's downloads
    POST  /api/v1/streams    start one ({"sd_hash": …} or {"sd_blob": …})
    GET   /api/v1/streams/<sd hash>            one of them
    POST  /api/v1/streams/<sd hash>/<action>   pause, resume or cancel it
    DELETE /api/v1/streams/<sd hash>?blobs=    forget it (and its blobs)
    GET   /api/v1/mirrors    the mirrors (plugin, rule, state), the exports
                             waiting, running and ended (bytes done and in all,
                             error, key stored) and the last streams mirrored
    POST  /api/v1/mirrors    export a stream ({"sd_hash": …, "target": …}):
                             202 with its job
    GET   /api/v1/mirrors/jobs/<id>            one export
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from p2pblob._threads import BlockingRunner
from p2pblob._version import __version__
from p2pblob.blob.hashing import is_blob_hash
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config, parse_rate, parse_size
from p2pblob.download.service import DownloadService
from p2pblob.errors import ConfigError, DescriptorError, DiskLimitError, UnknownStreamError
from p2pblob.http._answers import (
    APIError,
    Guarded,
    error,
    int_arg,
    json_answer,
    json_body,
    sd_hash_arg,
    setting,
    static_file,
)
from p2pblob.http.auth import RequestGuard
from p2pblob.http.streaming import Fetcher, StreamResource
from p2pblob.peer.peer import PeerRegistry
from p2pblob.ratelimit import RateLimiter
from p2pblob.storage.mirror import (
    MirrorService,
    MirrorUnavailableError,
    StreamNotHeldError,
    StreamUnfinishedError,
    UnknownMirrorError,
)
from p2pblob.stream.creator import publish_file
from p2pblob.wallet.rates import MAX_RATE
from p2pblob.wallet.units import format_points
from p2pblob.wallet.wallet import Wallet

__all__ = ["APIError", "NodeAPI", "NodeParts"]

_log = Logger()

# the most blobs one page of GET /api/v1/blobs lists
MAX_PAGE = 1000


@dataclass
class NodeParts:
    """
    What the API reads and steers: the parts of a node (L{p2pblob.node.Node}
    has them all).

    @ivar peer_address: returns where the peer server listens (C{host:port}),
        or L{None} before it does.
    @ivar dht: the L{p2pblob.dht.service.DHTService}, or L{None} off the DHT.
    @ivar run: where blocking work on blobs runs (threads), for publishing;
        L{None}: the node does not publish through the API.
    @ivar announcer: told to look at the store again after a publish.
    @ivar watcher: the L{p2pblob.publish.watch.FolderWatcher} of the
        watched folder, or L{None}.
    @ivar peer_registry: the peers the node's downloads know, with their
        scores, or L{None}.
    @ivar downloads: the node's L{DownloadService}, or L{None} (then the
        stream routes answer 404).
    @ivar fetch_blob: brings a missing blob into the store from peers (for
        streaming), or L{None}: streams are then served from local blobs
        only.
    @ivar mirrors: the node's L{MirrorService}, or L{None} (then the mirror
        routes answer 404).
    @ivar publisher: the node's L{p2pblob.publish.manifest.ManifestPublisher}
        (served under C{/publish/}, L{p2pblob.http.publishing}), or L{None}.
    @ivar reach: the node's L{p2pblob.reach.reachability.Reachability}
        (whether and where peers reach it: port mapping, Tor), or L{None}.
    """

    config: Config
    blob_store: BlobStore
    rate_limiter: RateLimiter
    wallet: Wallet | None = None
    rates: Any = None
    dht: Any = None
    peer_address: Callable[[], str | None] = lambda: None
    fetch_blob: Fetcher | None = None
    downloads: DownloadService | None = None
    peer_registry: PeerRegistry | None = None
    run: BlockingRunner | None = None
    announcer: Any = None
    watcher: Any = None
    mirrors: MirrorService | None = None
    publisher: Any = None
    reach: Any = None


# the node's prices, in points per MiB
_PRICE_SETTINGS = ("price", "min_price")
# the rate limiter's settings (and the store's disk_limit)
_RATE_SETTINGS = (
    "max_upload", "max_download", "max_upload_per_connection", "max_download_per_connection",
)


class NodeAPI:
    """
    The control API of the node made of C{parts}.
    """

    app = Klein()

    def __init__(self, parts: NodeParts, guard: RequestGuard,
                 clock: Callable[[], float] = time.time,
                 metrics: IResource | None = None) -> None:
        self.parts = parts
        self.guard = guard
        self._metrics = metrics
        self._clock = clock
        self._started = clock()
        self._streams = StreamResource(parts.blob_store, parts.fetch_blob)

    def resource(self) -> IResource:
        """
        The resource to serve: the routes behind the request guard.
        """
        return Guarded(self.app.resource(), self.guard)

    # streams

    @app.route("/stream/", branch=True, methods=["GET", "HEAD"])
    def stream(self, request: IRequest) -> IResource:
        """
        C{/stream/<sd hash>}: the stream's content, with ranges
        (L{p2pblob.http.streaming}).
        """
        return self._streams

    # the dashboard

    @app.route("/", methods=["GET", "HEAD"])
    def dashboard(self, request: IRequest) -> bytes:
        """
        The dashboard's page (L{p2pblob.http.dashboard}).
        """
        return static_file(request, "index.html")

    @app.route("/dashboard/<string:name>", methods=["GET", "HEAD"])
    def dashboard_file(self, request: IRequest, name: str) -> bytes:
        return static_file(request, name)

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics(self, request: IRequest) -> IResource:
        """
        C{/metrics}: Prometheus metrics (L{p2pblob.http.metrics}).
        """
        if self._metrics is None:
            raise APIError(404, "not_found", "this node serves no metrics")
        return self._metrics

    # publishing

    @app.route("/api/v1/publish", methods=["POST"])
    async def publish(self, request: IRequest) -> bytes:
        """
        Publish a file of this machine: C{{"path": "/absolute/path"}}.  The
        answer gives the sd hash and the descriptor's text (to save as an
        C{.sd} file).
        """
        body = json_body(request)
        path = body.get("path")
        if set(body) != {"path"} or not isinstance(path, str):
            raise APIError(400, "bad_argument", 'give {"path": "/absolute/path/of/the/file"}')
        file = Path(path)
        if not file.is_absolute():
            raise APIError(400, "bad_argument",
                           f"{path[:200]!r} is not an absolute path (the node's working "
                           "directory is not yours)")
        if not file.is_file():
            raise APIError(400, "bad_path", f"{path[:200]}: no such file")
        run = self.parts.run
        if run is None:
            raise APIError(404, "not_found", "this node does not publish files")
        try:
            descriptor, sd_hash = await publish_file(self.parts.blob_store, run, file)
        except DiskLimitError as e:
            raise APIError(507, "disk_limit", str(e)) from None
        except OSError as e:
            raise APIError(400, "bad_path", f"cannot read {path[:200]}: {e.strerror}") from None
        _log.info("Published {name} through the API: stream {sd_hash}", name=file.name,
                  sd_hash=sd_hash)
        if self.parts.announcer is not None:
            self.parts.announcer.scan()
        return json_answer(request, {
            "sd_hash": sd_hash,
            "name": file.name,
            "blobs": len(descriptor.data_blobs),
            "sd_blob": descriptor.to_sd_blob().decode("utf-8"),
        })

    # the node's downloads

    @app.route("/api/v1/streams", methods=["GET"])
    def streams(self, request: IRequest) -> bytes:
        return json_answer(request, {"streams": [info.to_json() for info in self._downloads().streams()]})

    @app.route("/api/v1/streams", methods=["POST"])
    def start_stream(self, request: IRequest) -> bytes:
        """
        Start downloading a stream: C{{"sd_hash": ...}}, or C{{"sd_blob":
        ...}} with the text of its descriptor (an C{.sd} file); and
        optionally C{"output_dir"}, where its file goes.
        """
        body = json_body(request)
        unknown = set(body) - {"sd_hash", "sd_blob", "output_dir"}
        if unknown:
            raise APIError(400, "bad_argument",
                           f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
        source: str | bytes
        if isinstance(body.get("sd_hash"), str) and "sd_blob" not in body:
            source = body["sd_hash"]
        elif isinstance(body.get("sd_blob"), str) and "sd_hash" not in body:
            source = body["sd_blob"].encode("utf-8")
        else:
            raise APIError(400, "bad_argument",
                           'give either "sd_hash" (96 hex digits) or "sd_blob" (the text of '
                           "an .sd file), as a string")
        output = body.get("output_dir")
        if output is not None and not isinstance(output, str):
            raise APIError(400, "bad_argument", '"output_dir" must be a path, as a string')
        try:
            info = self._downloads().start_download(
                source, None if output is None else Path(output).expanduser())
        except DescriptorError as e:
            raise APIError(400, "bad_descriptor", str(e)) from None
        except ConfigError as e:
            raise APIError(400, "bad_argument", str(e)) from None
        _log.info("Download of {sd_hash} started through the API", sd_hash=info.sd_hash)
        return json_answer(request, {"stream": info.to_json()})

    @app.route("/api/v1/streams/<string:sd_hash>", methods=["GET"])
    def stream_info(self, request: IRequest, sd_hash: str) -> bytes:
        return json_answer(request, {"stream": self._downloads().stream(sd_hash_arg(sd_hash)).to_json()})

    @app.route("/api/v1/streams/<string:sd_hash>/<string:action>", methods=["POST"])
    async def stream_action(self, request: IRequest, sd_hash: str, action: str) -> bytes:
        """
        C{pause}, C{resume} or C{cancel} a download.
        """
        downloads, sd_hash = self._downloads(), sd_hash_arg(sd_hash)
        if action == "pause":
            info = await downloads.pause(sd_hash)
        elif action == "resume":
            info = downloads.resume(sd_hash)
        elif action == "cancel":
            info = await downloads.cancel(sd_hash)
        else:
            raise APIError(404, "not_found",
                           f"no such action {action[:40]!r} (pause, resume or cancel)")
        return json_answer(request, {"stream": info.to_json()})

    @app.route("/api/v1/streams/<string:sd_hash>", methods=["DELETE"])
    async def delete_stream(self, request: IRequest, sd_hash: str) -> bytes:
        """
        Forget a download (C{?blobs=true}: and remove its blobs); a
        finished file is never deleted.
        """
        values = (request.args or {}).get(b"blobs") or [b"false"]
        flag = values[0].decode("ascii", "replace").lower()
        if flag not in ("true", "false", "1", "0"):
            raise APIError(400, "bad_argument", "blobs must be true or false")
        sd_hash = sd_hash_arg(sd_hash)
        await self._downloads().delete(sd_hash, delete_blobs=flag in ("true", "1"))
        return json_answer(request, {"deleted": sd_hash, "blobs_deleted": flag in ("true", "1")})

    def _downloads(self) -> DownloadService:
        downloads = self.parts.downloads
        if downloads is None:
            raise APIError(404, "no_downloads", "this node does not download streams itself")
        return downloads

    # mirrors

    @app.route("/api/v1/mirrors", methods=["GET"])
    def mirrors(self, request: IRequest) -> bytes:
        """
        The mirrors, the exports (waiting, running, and the last ones
        ended) and the last streams mirrored.
        """
        return json_answer(request, self._mirrors().status())

    @app.route("/api/v1/mirrors", methods=["POST"])
    def export_to_mirror(self, request: IRequest) -> bytes:
        """
        Export a stream to a mirror: C{{"sd_hash": ..., "target": ...}}.
        The answer (202) is the export's job, to follow with C{GET
        /api/v1/mirrors/jobs/<id>}; asking again while it waits or runs
        gives the same job.
        """
        body = json_body(request)
        sd_hash, target = body.get("sd_hash"), body.get("target")
        if set(body) != {"sd_hash", "target"} or not isinstance(sd_hash, str) or not isinstance(
            target, str
        ):
            raise APIError(400, "bad_argument",
                           'give {"sd_hash": "<96 hex digits>", "target": "<a mirror\'s name>"}')
        sd_hash = sd_hash_arg(sd_hash)
        mirrors = self._mirrors()
        try:
            job = mirrors.export(sd_hash, target)
        except UnknownMirrorError as e:
            raise APIError(404, "unknown_mirror", str(e)) from None
        except StreamNotHeldError as e:
            raise APIError(404, "unknown_stream", str(e)) from None
        except StreamUnfinishedError as e:
            raise APIError(409, "stream_unfinished", str(e)) from None
        except MirrorUnavailableError as e:
            raise APIError(409, "mirror_unavailable", str(e)) from None
        return json_answer(request, {"job": job.to_json()}, 202)

    @app.route("/api/v1/mirrors/jobs/<string:job_id>", methods=["GET"])
    def mirror_job(self, request: IRequest, job_id: str) -> bytes:
        job = self._mirrors().job(int(job_id)) if job_id.isdigit() and len(job_id) < 19 else None
        if job is None:
            raise APIError(404, "unknown_job",
                           f"this node has no export numbered {job_id[:40]!r} (it may have "
                           "ended long ago: GET /api/v1/mirrors lists those it keeps)")
        return json_answer(request, {"job": job.to_json()})

    def _mirrors(self) -> MirrorService:
        mirrors = self.parts.mirrors
        if mirrors is None:
            raise APIError(404, "no_mirrors",
                           "this node has no mirrors (twistd p2pblob --mirror NAME=PLUGIN)")
        return mirrors

    # reading

    @app.route("/api/v1/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        parts = self.parts
        limiter = parts.rate_limiter
        store = parts.blob_store
        dht = parts.dht
        body: dict[str, Any] = {
            "version": __version__,
            "uptime": round(self._clock() - self._started, 3),
            "data_dir": str(parts.config.data_dir),
            "peer": {"listening": parts.peer_address(), "connections": limiter.connections},
            "dht": {
                "enabled": dht is not None,
                "joined": bool(dht is not None and dht.joined),
                "contacts": _contacts(dht),
            },
            "bandwidth": {
                "uploaded": limiter.uploaded,
                "downloaded": limiter.downloaded,
                "limits": self._limits(),
            },
            "disk": {
                "used": store.used_bytes(),
                "limit": store.disk_limit,
                "blobs": len(store.held_blobs()),
            },
            "prices": self._prices(),
            "wallet": self._balance(),
        }
        if parts.publisher is not None:
            body["publish"] = parts.publisher.summary()
        if parts.reach is not None:
            body["reach"] = parts.reach.status()
        return json_answer(request, body)

    @app.route("/api/v1/blobs", methods=["GET"])
    def blobs(self, request: IRequest) -> bytes:
        offset = int_arg(request, "offset", 0)
        limit = int_arg(request, "limit", 100)
        if not 1 <= limit <= MAX_PAGE:
            raise APIError(400, "bad_argument", f"limit must be from 1 to {MAX_PAGE}")
        held = self.parts.blob_store.held_blobs()
        hashes = sorted(held)[offset:offset + limit]
        return json_answer(request, {
            "total": len(held),
            "offset": offset,
            "blobs": [{"hash": h, "length": held[h]} for h in hashes],
        })

    @app.route("/api/v1/blobs/<string:blob_hash>", methods=["GET"])
    def blob(self, request: IRequest, blob_hash: str) -> bytes:
        if not is_blob_hash(blob_hash):
            raise APIError(400, "bad_blob_hash",
                           f"{blob_hash[:100]!r} is not a blob hash (96 hex digits)")
        length = self.parts.blob_store.held_blobs().get(blob_hash)
        if length is None:
            raise APIError(404, "unknown_blob", f"this node does not hold blob {blob_hash}")
        return json_answer(request, {"hash": blob_hash, "length": length})

    @app.route("/api/v1/peers", methods=["GET"])
    def peers(self, request: IRequest) -> bytes:
        traffic = self.parts.rate_limiter.counters.by_peer()
        registry = self.parts.peer_registry
        now = self._clock()
        sources = [] if registry is None else sorted(
            (peer for peer in registry), key=lambda peer: (-peer.score, str(peer)))
        return json_answer(request, {
            "peers": [{"peer": peer, "uploaded": t.up, "downloaded": t.down}
                      for peer, t in sorted(traffic.items())],
            "sources": [
                {"address": str(peer), "score": peer.score, "failures": peer.failures,
                 "blobs_served": peer.blobs_served, "bytes_served": peer.bytes_served,
                 "rate": peer.rate, "available": peer.available(now)}
                for peer in sources
            ],
        })

    @app.route("/api/v1/watch", methods=["GET"])
    def watch(self, request: IRequest) -> bytes:
        """
        The watched folder: what it holds, what was published, what failed.
        """
        watcher = self.parts.watcher
        if watcher is None:
            raise APIError(404, "no_watch", "this node watches no folder (twistd p2pblob --watch)")
        return json_answer(request, {
            **watcher.status(),
            "files": [f.to_json() for f in watcher.published_files()],
        })

    @app.route("/api/v1/wallet", methods=["GET"])
    def wallet(self, request: IRequest) -> bytes:
        wallet = self.parts.wallet
        if wallet is None:
            raise APIError(404, "no_wallet", "this node has no wallet")
        summary = wallet.ledger.summary()
        return json_answer(request, {
            "key": summary.owner,
            "balance": format_points(summary.balance),
            "reserved": format_points(summary.reserved),
            "reservations": summary.reservations,
            "granted": format_points(summary.granted),
            "received": format_points(summary.received),
            "sent": format_points(summary.sent),
            "debts": [
                {"peer": row.peer, "owed": format_points(row.expected),
                 "paid": format_points(row.paid)}
                for row in summary.debts
            ],
        })

    # settings

    @app.route("/api/v1/settings", methods=["GET"])
    def settings(self, request: IRequest) -> bytes:
        return json_answer(request, self._settings())

    @app.route("/api/v1/settings", methods=["PATCH"])
    def change_settings(self, request: IRequest) -> bytes:
        changes = json_body(request)
        parsed: dict[str, int | None] = {}
        prices = self._new_prices(changes)
        for name, value in changes.items():
            if name in _RATE_SETTINGS:
                parsed[name] = setting(name, value, parse_rate)
            elif name == "disk_limit":
                parsed[name] = setting(name, value, parse_size)
            elif name not in _PRICE_SETTINGS:
                known = ", ".join((*_RATE_SETTINGS, "disk_limit", *_PRICE_SETTINGS))
                raise APIError(400, "unknown_setting",
                               f"{name[:100]!r} is not a setting that can change while the "
                               f"node runs (those are: {known})")
        if prices is not None:
            try:
                self.parts.rates.set_prices(*prices)
            except ValueError as e:
                raise APIError(400, "bad_setting", str(e)) from None
            _log.info("Prices changed to {price} (accepting {min_price} and up) through the API",
                      price=prices[0], min_price=prices[1])
        limiter = self.parts.rate_limiter
        for name, value in parsed.items():
            if name == "disk_limit":
                self.parts.blob_store.disk_limit = value
            else:
                setattr(limiter, name, value)
            _log.info("Setting {name} changed to {value} through the API",
                      name=name, value="no limit" if value is None else value)
        return json_answer(request, self._settings())

    def _new_prices(self, changes: dict[str, Any]) -> tuple[float, float] | None:
        """
        The prices C{changes} asks for (price, min_price), checked, or
        L{None} if it changes neither.  A node stays in the mode it started
        in: serving free or paid is decided when it starts.
        """
        if not set(changes) & set(_PRICE_SETTINGS):
            return None
        rates = self.parts.rates
        if rates is None:
            raise APIError(404, "not_found", "this node has no prices")
        price = changes.get("price", rates.price)
        min_price = changes.get("min_price", rates.min_price)
        for name, value in (("price", price), ("min_price", min_price)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 <= value <= MAX_RATE
            ):
                raise APIError(400, "bad_setting",
                               f"{name} must be a number of points per MiB from 0 to {MAX_RATE}")
        if (min_price > 0) != rates.paid:
            mode, other = ("paid", "free") if rates.paid else ("free", "paid")
            raise APIError(409, "restart_needed",
                           f"this node serves in {mode} mode; switching to {other} mode needs a "
                           f"restart (with --price{' 0' if rates.paid else ''})")
        return float(price), float(min_price)

    def _settings(self) -> dict[str, Any]:
        return {**self._limits(), "disk_limit": self.parts.blob_store.disk_limit,
                **self._prices()}

    def _limits(self) -> dict[str, float | None]:
        limiter = self.parts.rate_limiter
        return {name: getattr(limiter, name) for name in _RATE_SETTINGS}

    def _prices(self) -> dict[str, float]:
        rates = self.parts.rates
        if rates is None:
            return {"price": 0.0, "min_price": 0.0}
        return {"price": rates.price, "min_price": rates.min_price}

    def _balance(self) -> dict[str, str] | None:
        wallet = self.parts.wallet
        if wallet is None:
            return None
        ledger = wallet.ledger
        return {"balance": format_points(ledger.balance()),
                "reserved": format_points(ledger.reserved())}

    # errors

    @app.handle_errors(APIError)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        refusal = failure.value
        assert isinstance(refusal, APIError)
        return error(request, refusal.status, refusal.code, refusal.message)

    @app.handle_errors(UnknownStreamError)
    def _unknown_stream(self, request: IRequest, failure: Failure) -> bytes:
        return error(request, 404, "unknown_stream", str(failure.value))

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")[:200]
        return error(request, 404, "not_found", f"no such API route: {path}")

    @app.handle_errors(MethodNotAllowed)
    def _wrong_method(self, request: IRequest, failure: Failure) -> bytes:
        allowed = ", ".join(sorted(getattr(failure.value, "valid_methods", None) or []))
        if allowed:
            request.setHeader(b"allow", allowed.encode("ascii"))
        method = request.method.decode("ascii", "replace")
        return error(request, 405, "method_not_allowed",
                      f"{method} is not allowed here (allowed: {allowed or 'none'})")

    @app.handle_errors(Exception)
    def _bug(self, request: IRequest, failure: Failure) -> bytes:
        _log.failure("The API failed answering {method} {path}", failure,
                     method=request.method, path=request.path)
        return error(request, 500, "internal_error",
                      "the node failed answering this request; its log has the details")


def _contacts(dht: Any) -> int:
    node = getattr(dht, "node", None)
    return 0 if node is None else len(node.routing)
