"""
Tests for L{p2pblob.gateway.service} (the gateway's endpoint, on a memory
reactor) and for its options (C{twistd p2pblob --s3-*}, L{Config}).
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.hashing import blob_hash
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.errors import ConfigError
from p2pblob.gateway.namespace import Namespace, ObjectRecord
from p2pblob.gateway.service import GatewayService
from p2pblob.node import make_node
from p2pblob.stream.writer import StreamCreator
from p2pblob.tap import Options


class GatewayServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.reactor = MemoryReactorClock()
        self.store = BlobStore(self.reactor, run_inline, self.directory / "blobs",
                               self.directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.ready: Deferred[None] = Deferred()
        self.service = GatewayService(
            self.reactor, "tcp:0:interface=127.0.0.1", self.store, run_inline,
            self.directory / "gateway.sqlite", store_ready=self.ready, keys={"a": "b"})

    def test_listens_once_the_store_is_ready(self) -> None:
        self.service.startService()
        self.assertEqual(self.reactor.tcpServers, [])
        with capturedLogs() as events:
            self.ready.callback(None)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        port, _, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertIsNotNone(self.service.gateway)
        self.successResultOf(self.service.listening)
        self.assertIn("S3 gateway on tcp:0:interface=127.0.0.1",
                      " ".join(e["log_format"].format(**e) for e in events))
        self.successResultOf(self.service.stopService())
        self.assertIsNone(self.service.gateway)

    def test_collects_at_start(self) -> None:
        """
        A stream the gateway owns that nothing names (a stop came between
        the change of names and its removal) is removed at the next start.
        """
        creator = StreamCreator(self.store, run_inline, "orphan")
        self.successResultOf(creator.write(b"orphan"))
        sd_hash = self.successResultOf(creator.finish()).sd_hash
        namespace = Namespace(self.directory / "gateway.sqlite")
        namespace.create_bucket("b", 1.0)
        namespace.put_object(ObjectRecord("b", "k", sd_hash, 6, "e", None, None, "x"),
                             owned=True)
        namespace.delete_object("b", "k")
        namespace.close()
        self.ready.callback(None)
        self.service.startService()
        self.assertFalse(self.store.index.has_stream(sd_hash))
        self.successResultOf(self.service.stopService())

    def test_sweeps_before_listening(self) -> None:
        """
        The blobs of an upload a crash cut short are removed at start, and
        the gateway listens once they are gone.
        """
        namespace = Namespace(self.directory / "gateway.sqlite")
        draft = namespace.begin_draft(1.0)
        namespace.note_blob(draft, blob_hash(b"cut short"))
        namespace.close()
        self.successResultOf(self.store.put_blob(b"cut short"))
        deleting: list[Deferred[None]] = []
        delete_blobs = self.store.delete_blobs

        def held(blob_hashes: list[str]) -> Deferred[None]:
            deleting.append(Deferred())
            return deleting[-1].addCallback(lambda _: delete_blobs(blob_hashes))

        self.patch(self.store, "delete_blobs", held)
        self.ready.callback(None)
        with capturedLogs() as events:
            self.service.startService()
            self.assertEqual(self.reactor.tcpServers, [])
            deleting[0].callback(None)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertFalse(self.store.has_blob(blob_hash(b"cut short")))
        self.assertIn("left by an upload cut short",
                      " ".join(e["log_format"] for e in events))
        self.successResultOf(self.service.stopService())

    def test_stopped_while_sweeping(self) -> None:
        """
        A stop while the start's removals run waits for them, and the
        gateway never listens.
        """
        namespace = Namespace(self.directory / "gateway.sqlite")
        namespace.note_blob(namespace.begin_draft(1.0), blob_hash(b"cut short"))
        namespace.close()
        self.successResultOf(self.store.put_blob(b"cut short"))
        deleting: Deferred[None] = Deferred()
        self.patch(self.store, "delete_blobs", lambda blob_hashes: deleting)
        self.ready.callback(None)
        self.service.startService()
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        deleting.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_stopped_before_ready(self) -> None:
        self.service.startService()
        self.successResultOf(self.service.stopService())
        self.ready.callback(None)
        self.assertEqual(self.reactor.tcpServers, [])


class OptionsTests(SynchronousTestCase):
    def options(self, *arguments: str) -> Config:
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), *arguments])
        config: Config = options["config"]
        return config

    def test_default_off(self) -> None:
        config = self.options()
        self.assertIsNone(config.s3_listen)
        self.assertIsNone(make_node(MemoryReactorClock(), config).gateway)

    def test_options(self) -> None:
        config = self.options("--s3-listen", "tcp:9000:interface=127.0.0.1",
                              "--s3-key", "AK:secret:with:colons", "--s3-key", "BK:other",
                              "--s3-quota", "1GB", "--s3-max-objects", "10")
        self.assertEqual(config.s3_keys, (("AK", "secret:with:colons"), ("BK", "other")))
        self.assertEqual((config.s3_quota, config.s3_max_objects), (10**9, 10))
        node = make_node(MemoryReactorClock(), config)
        self.assertIsInstance(node.gateway, GatewayService)
        self.assertIs(node.getServiceNamed("s3-gateway"), node.gateway)

    def test_keys_from_environment(self) -> None:
        self.patch(os, "environ", {**os.environ, "P2PBLOB_S3_KEYS": "EK:env1,FK:env2"})
        config = self.options("--s3-listen", "tcp:9000")
        self.assertEqual(dict(config.s3_keys), {"EK": "env1", "FK": "env2"})

    def test_refused(self) -> None:
        for arguments in [
            ["--s3-listen", "tcp:9000"],  # no key
            ["--s3-listen", "tcp:9000", "--s3-anonymous"],  # not loopback
            ["--s3-key", "a:b"],  # no endpoint
            ["--s3-listen", "tcp:9000", "--s3-key", "nocolon"],
            ["--s3-listen", "tcp:9000", "--s3-key", "a:b", "--s3-max-objects", "0"],
        ]:
            self.assertRaises(usage.UsageError, self.options, *arguments)

    def test_secret_not_shown(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self.options("--s3-listen", "tcp:9000", "--s3-key", "has space:supersecret ")
        self.assertNotIn("supersecret", str(caught.exception))

    def test_anonymous_on_loopback(self) -> None:
        config = self.options("--s3-listen", "tcp:9000:interface=127.0.0.1", "--s3-anonymous")
        self.assertTrue(config.s3_anonymous)
        self.assertRaises(ConfigError, Config, Path(self.mktemp()), s3_listen="tcp:9000",
                          s3_anonymous=True)
