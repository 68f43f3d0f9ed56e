"""
The S3-compatible gateway's own endpoint: L{GatewayService} (C{twistd
p2pblob --s3-listen tcp:9000:interface=127.0.0.1 --s3-key ACCESS:SECRET}).

Buckets are local namespaces of names (C{DATA_DIR/gateway.sqlite}); an
object is a name for a stream.  Path-style addressing only
(C{http://host:port/bucket/key}); region C{us-east-1}.

Operations (anything else is answered C{501 NotImplemented}, naming it):

  - the service: ListBuckets;
  - buckets: CreateBucket (idempotent; S3's naming rules), HeadBucket,
    DeleteBucket (C{409 BucketNotEmpty} while it holds objects; multipart
    uploads left in it are aborted), GetBucketLocation, ListObjects and
    ListObjectsV2 (C{prefix}, C{delimiter} and C{CommonPrefixes},
    C{marker}, C{max-keys} up to 1000, C{start-after},
    C{continuation-token}, C{encoding-type=url}; read-after-write
    consistent), ListMultipartUploads, DeleteObjects;
  - objects: PutObject (publishes: encrypts into blobs as the body
    arrives, announces), GetObject and HeadObject (decrypt, fetching
    missing blobs from peers; one C{Range}: 206, or 416 C{InvalidRange};
    C{If-Match}, C{If-None-Match}, C{If-Modified-Since},
    C{If-Unmodified-Since}; C{response-*} overrides), DeleteObject,
    CopyObject (a zero-copy alias: a new name for the same stream;
    C{x-amz-metadata-directive} COPY or REPLACE;
    C{x-amz-copy-source-if-*}), and the import of a stream of the network
    (a PutObject with C{x-p2pblob-sd-hash} and an empty body);
  - multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
    ListParts, CompleteMultipartUpload, AbortMultipartUpload
    (L{p2pblob.gateway.multipart});
  - the reserved bucket C{blobs}: C{GET}/C{HEAD /blobs/<sha384>} is the raw
    blob (fetched from peers if missing), C{PUT} stores one if the body's
    sha384 is the key, C{GET /blobs} lists the blobs held.

Headers: C{x-amz-meta-*} (2 KB at most) and C{Content-Type},
C{Cache-Control}, C{Content-Disposition}, C{Content-Encoding},
C{Content-Language}, C{Expires} are stored and given back; every object
answer carries C{x-p2pblob-sd-hash}; dates are RFC 1123 GMT; ETags are
quoted.  C{Content-MD5} (malformed: C{InvalidDigest}; wrong: C{BadDigest})
and C{x-amz-checksum-crc32} are checked before anything is named, and
C{x-amz-content-sha256} and aws-chunked bodies as SigV4 says
(L{p2pblob.gateway.sigv4}).

ETags: the quoted MD5 of the content; for a multipart upload, S3's form
(the MD5 of the parts' MD5s, C{-}, their number); for a stream imported by
sd hash, its quoted sd hash until it is first read in full, then its MD5
(conditions accept either).

Crashes: the blobs of an object or a part being put are noted in the
namespace before they are written; at start, before the gateway listens,
those of the uploads a crash cut short are removed, and so are the streams
finished but never named (L{p2pblob.gateway.objects.Objects.start}).

Authentication: SigV4 (header or presigned URL) with the configured keys;
unsigned requests only with C{--s3-anonymous}, which needs a loopback
endpoint, and then only from loopback.  Quotas (C{--s3-quota} bytes of
objects and uploaded parts, C{--s3-max-objects}) and a full blob store are
answered C{403 QuotaExceeded}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from p2pblob._fatal import give_up
from p2pblob._threads import BlockingRunner
from p2pblob.errors import P2PBlobError
from p2pblob.gateway.multipart import MIN_PART_SIZE, Multipart
from p2pblob.gateway.namespace import Namespace
from p2pblob.gateway.objects import Objects
from p2pblob.gateway.resource import S3Gateway
from p2pblob.http._blobs import Fetcher
from p2pblob.http.service import url_of
from p2pblob.interfaces import IBlobStore

__all__ = ["GatewayService"]

_log = Logger()


class _Connections(WrappingFactory):
    """
    The gateway's site, with its open connections, so that a stop can
    close them (clients keep theirs open between requests).
    """

    def __init__(self, site: Any) -> None:
        super().__init__(site)
        self._closed: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Protocol) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            closed, self._closed = self._closed, []
            for waiting in closed:
                waiting.callback(None)

    def close_all(self) -> Deferred[None]:
        """
        Close every connection; fires once they are closed.
        """
        if not self.protocols:
            return Deferred.fromCoroutine(_nothing())
        waiting: Deferred[None] = Deferred()
        self._closed.append(waiting)
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        return waiting


async def _nothing() -> None:
    return None


class GatewayService(Service):
    """
    Serve the S3 gateway on C{endpoint} once the blob store is open.

    @param store_ready: fires once the blob store serves (the gateway
        listens only then).
    @param has_stream: whether the blob store records a stream.
    @param announce: told after a publish or an import.
    @ivar listening: fires with the port once the gateway listens (fails
        if it cannot; the node then stops).
    @ivar gateway: the L{S3Gateway}, while the service runs.
    """

    name = "s3-gateway"

    def __init__(self, reactor: Any, endpoint: str, store: IBlobStore, run: BlockingRunner,
                 namespace_path: Path, *, store_ready: Deferred[Any] | None = None,
                 fetcher: Fetcher | None = None,
                 has_stream: Callable[[str], bool] = lambda sd_hash: False,
                 announce: Callable[[], None] = lambda: None,
                 keys: dict[str, str] | None = None, anonymous: bool = False,
                 quota: int | None = None, max_objects: int | None = None,
                 min_part_size: int = MIN_PART_SIZE) -> None:
        self._reactor = reactor
        self.endpoint = endpoint
        self._store = store
        self._run = run
        self._namespace_path = namespace_path
        self._store_ready = store_ready
        self._fetcher = fetcher
        self._has_stream = has_stream
        self._announce = announce
        self._keys = dict(keys or {})
        self._anonymous = anonymous
        self._quota = quota
        self._max_objects = max_objects
        self._min_part_size = min_part_size
        self._port: IListeningPort | None = None
        self._connections: _Connections | None = None
        self._objects: Objects | None = None
        self.gateway: S3Gateway | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        super().startService()
        if self._store_ready is None:
            self._start()
            return

        def ready(result: object) -> object:
            if self.running:
                self._start()
            return result

        self._store_ready.addCallback(ready)

    def _start(self) -> None:
        try:
            namespace = Namespace(self._namespace_path)
        except P2PBlobError:
            self._failed(Failure())
            return
        objects = Objects(self._reactor, self._store, self._run, namespace, self._fetcher,
                          has_stream=self._has_stream, announce=self._announce,
                          quota=self._quota, max_objects=self._max_objects)
        self._objects = objects
        self.gateway = S3Gateway(objects, Multipart(objects, self._min_part_size), self._keys,
                                 self._anonymous)
        # what a crash left (uploads cut short, streams not yet named)
        # goes before the gateway serves
        objects.start().addCallback(lambda _: self._listen(objects))

    def _listen(self, objects: Objects) -> None:
        if not self.running or self._objects is not objects or self.gateway is None:
            return
        self._connections = _Connections(self.gateway.site(reactor=self._reactor))
        listening = serverFromString(self._reactor, self.endpoint).listen(self._connections)
        listening.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        if not self.running:
            port.stopListening()
            return
        self._port = port
        _log.info("S3 gateway on {endpoint} ({url}), {keys} keys{anonymous}",
                  endpoint=self.endpoint, url=url_of(port), keys=len(self._keys),
                  anonymous=", unsigned requests from loopback" if self._anonymous else "")
        self.listening.callback(port)

    def _failed(self, failure: Failure) -> None:
        give_up(_log, self._reactor, self.listening, failure,
                "Cannot serve the S3 gateway on {endpoint}: {error}; stopping "
                "(use --s3-listen to choose another endpoint)", endpoint=self.endpoint)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        connections, self._connections = self._connections, None
        objects, self._objects = self._objects, None
        self.gateway = None
        cancelled = None if objects is None else objects.stop()

        async def stop() -> None:
            if port is not None:
                await maybeDeferred(port.stopListening)
            if connections is not None:
                await connections.close_all()
            if cancelled is not None:
                await cancelled
            if objects is not None:
                objects.namespace.close()

        return Deferred.fromCoroutine(stop())
