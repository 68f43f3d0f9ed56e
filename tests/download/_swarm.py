"""
An in-process swarm: several seeders and a downloader on one L{Clock}, their
connections made of L{twisted.test.iosim} fake transports (no sockets).

Each seeder is a real peer server (L{p2pblob.peer.service.make_server_factory})
over a L{MemoryBlobStore}; the downloader uses the real client protocol,
requester, connection manager and stream downloader.  Tests can stop a
seeder mid-download, freeze its connections, corrupt what it serves or
leave blobs out of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, IOPump, connect

from p2pblob._threads import run_inline
from p2pblob.discovery.static import StaticPeerFinder
from p2pblob.download.downloader import FileStreamDownloader, get_descriptor
from p2pblob.download.manager import StreamDescriptorValidator, Swarm
from p2pblob.interfaces import IBlob, IBlobStore, IConnectionManager
from p2pblob.peer.client import BlobExchangeClient
from p2pblob.peer.peer import Peer, PeerRegistry
from p2pblob.peer.service import make_server_factory
from p2pblob.stream.creator import publish_file
from p2pblob.stream.descriptor import StreamDescriptor
from p2pblob.testing import CorruptingBlobStore, MemoryBlobStore

__all__ = ["Published", "Seeder", "SwarmHarness", "publish"]


class CountingStore:
    """
    A store that counts the blobs the server opens for upload.
    """

    def __init__(self, store: IBlobStore) -> None:
        self._store = store
        self.uploads: list[str] = []

    def get_blob(self, blob_hash: str) -> IBlob:
        self.uploads.append(blob_hash)
        return self._store.get_blob(blob_hash)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Seeder:
    def __init__(self, address: tuple[str, int], store: MemoryBlobStore, clock: Clock,
                 corrupt: bool = False, wallet: Any = None, rates: Any = None) -> None:
        self.address = address
        self.store = store
        served: Any = CorruptingBlobStore(store) if corrupt else store
        self.counted = CountingStore(served)
        self.factory = make_server_factory(self.counted, clock, "test-address", 65536, 30.0, 8,
                                           wallet=wallet, rates=rates)
        self.up = True
        self.frozen = False
        self.pumps: list[IOPump] = []

    @property
    def uploads(self) -> list[str]:
        return self.counted.uploads

    def kill(self) -> None:
        """
        The seeder's process dies: its connections break, new ones are
        refused.
        """
        self.up = False
        for pump in self.pumps:
            pump.serverIO.abortConnection()


class Published:
    def __init__(self, data: bytes, descriptor: StreamDescriptor, sd_hash: str,
                 blobs: dict[str, bytes]) -> None:
        self.data = data
        self.descriptor = descriptor
        self.sd_hash = sd_hash
        self.blobs = blobs
        self.sd_blob = descriptor.to_sd_blob()


def publish(directory: Path, size: int, name: str = "movie.mp4") -> Published:
    """
    Publish C{size} random bytes; return the stream and all its blobs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    source = directory / name
    source.write_bytes(data)
    store = MemoryBlobStore()
    d = Deferred.fromCoroutine(publish_file(store, run_inline, source))
    result: list[Any] = []
    d.addCallback(result.append)
    descriptor, sd_hash = result[0]
    blobs = {h: store._bytes_of(h) for h in [sd_hash, *descriptor.blob_hashes]}
    return Published(data, descriptor, sd_hash, blobs)


class SwarmHarness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.registry = PeerRegistry(self.clock)
        self.seeders: dict[tuple[str, int], Seeder] = {}
        self._client_port = 40000

    def add_seeder(self, published: Published | None, *, only: Iterable[int] | None = None,
                   corrupt: bool = False, wallet: Any = None, rates: Any = None) -> Seeder:
        """
        A seeder holding the stream's sd blob and its data blobs (or only
        those whose C{blob_num} is in C{only}); in paid mode with C{wallet}
        and C{rates} (a L{p2pblob.wallet.rates.PaymentRateManager}).
        """
        address = ("127.0.0.1", 3333 + len(self.seeders))
        store = MemoryBlobStore()
        if published is not None:
            wanted = set(only) if only is not None else None
            store.put_blob(published.sd_blob)
            for info in published.descriptor.data_blobs:
                if wanted is None or info.blob_num in wanted:
                    assert info.blob_hash is not None
                    store.put_blob(published.blobs[info.blob_hash])
        seeder = Seeder(address, store, self.clock, corrupt, wallet, rates)
        self.seeders[address] = seeder
        return seeder

    def connect(self, peer: Peer, manager: IConnectionManager) -> Deferred[Any]:
        seeder = self.seeders.get(peer.address)
        if seeder is None or not seeder.up:
            return fail(ConnectionRefusedError(peer.host, peer.port))
        self._client_port += 1
        client_address = IPv4Address("TCP", "127.0.0.1", self._client_port)
        server_address = IPv4Address("TCP", *peer.address)
        server = seeder.factory.buildProtocol(client_address)
        if server is None:
            return fail(ConnectionRefusedError(peer.host, peer.port))
        client = BlobExchangeClient(peer, manager, self.clock, timeout=30.0)
        pump = connect(
            server, FakeTransport(server, True, server_address, client_address),
            client, FakeTransport(client, False, client_address, server_address),
            greet=False, clock=self.clock,
        )
        seeder.pumps.append(pump)
        return succeed(client)

    def swarm(self, store: IBlobStore, addresses: list[tuple[str, int]] | None = None,
              stall_timeout: float = 120.0, payments: Any = None) -> Swarm:
        finder = StaticPeerFinder(self.registry, addresses or list(self.seeders))
        return Swarm(self.clock, store, finder, self.connect, stall_timeout=stall_timeout,
                     payments=payments)

    def pump(self) -> bool:
        moved = False
        for seeder in self.seeders.values():
            if seeder.frozen:
                continue
            for pump in list(seeder.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
                elif pump.serverIO.disconnected and pump.clientIO.disconnected:
                    seeder.pumps.remove(pump)
        return moved

    def run(self, d: Deferred[Any], limit: float = 1000.0, tick: float = 0.25) -> None:
        """
        Move data and time until C{d} has fired (at most C{limit} seconds of
        fake time).
        """
        start = self.clock.seconds()
        while not d.called:
            self.clock.advance(0)
            if not self.pump():
                if self.clock.seconds() - start > limit:
                    raise AssertionError(f"{d} did not fire within {limit} s of swarm time")
                self.clock.advance(tick)

    def downloader(self, swarm: Swarm, published: Published, directory: Path
                   ) -> FileStreamDownloader:
        directory.mkdir(parents=True, exist_ok=True)
        validator = StreamDescriptorValidator(published.sd_blob, published.sd_hash)
        validator.validate()
        return FileStreamDownloader(swarm, run_inline, validator, directory)

    def fetch_descriptor(self, swarm: Swarm, sd_hash: str) -> Deferred[StreamDescriptorValidator]:
        return Deferred.fromCoroutine(get_descriptor(swarm, sd_hash))
