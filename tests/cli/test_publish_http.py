"""
Tests for L{p2pblob.cli._publish_http}, the C{publish-http} command: its
URLs, its listing, the node's refusals in words, its progress lines, and
Ctrl-C, which cancels the files not yet published (or keeps them).  The
command against a real node is in L{tests.integration.test_publish_http}.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.cli._publish_http import (
    _Progress,
    _refused,
    _run,
    _token,
    describe_listing,
    split_url,
)
from p2pblob.config import Config
from p2pblob.errors import ConfigError


class URLTests(SynchronousTestCase):
    def test_split(self) -> None:
        for url, expected in [
            ("http://127.0.0.1:5279/", ("http://127.0.0.1:5279", "files")),
            ("http://127.0.0.1:5279", ("http://127.0.0.1:5279", "files")),
            ("https://node.example/publish/music/", ("https://node.example", "music")),
            ("http://[::1]:5279/publish/music", ("http://[::1]:5279", "music")),
            ("http://h/publish/", ("http://h", "files")),
        ]:
            self.assertEqual(split_url(url), expected)
        for bad in ["ftp://h/", "127.0.0.1:5279", "http://h/api/v1/", "http://h/publish/a/b"]:
            with self.assertRaises(ConfigError):
                split_url(bad)

    def test_token(self) -> None:
        """
        The token given, else the data directory's, else an error saying
        where to find one.
        """
        directory = Path(self.mktemp())
        config = Config(data_dir=directory)
        self.assertEqual(_token(" given ", config), "given")
        with self.assertRaises(ConfigError) as caught:
            _token(None, config)
        self.assertIn("--token", str(caught.exception))
        directory.mkdir()
        config.api_token_path.write_text("from-the-node\n")
        self.assertEqual(_token(None, config), "from-the-node")


class WordsTests(SynchronousTestCase):
    def test_listing(self) -> None:
        lines = describe_listing({"prefix": "files", "files": [
            {"name": "a b.txt", "state": "published", "sd_hash": "ab" * 48, "size": 12},
            {"name": "c", "state": "pending", "offset": 0, "size": 5, "transfer_key": "k" * 32},
        ]})
        self.assertEqual(lines, [
            f"published  {'ab' * 8}            12  a b.txt",
            f"pending               0/5  c  (transfer {'k' * 32})",
        ])
        self.assertEqual(describe_listing({"prefix": "files", "files": []}),
                         ["nothing is published in 'files' yet"])

    def test_refusals(self) -> None:
        """
        A refused manifest names every file refused, with its reason.
        """
        error = _refused("POST", "u", 409, {"error": {"code": "name_taken", "message": "m",
                                                      "files": [{"name": "a", "reason": "r1"},
                                                                {"name": "b", "reason": "r2"}]}})
        self.assertEqual((error.status, error.code), (409, "name_taken"))
        self.assertEqual(str(error), "the node admitted none of the files (HTTP 409); refused:"
                                     "\n  'a': r1\n  'b': r2")
        self.assertEqual(str(_refused("PUT", "u", 422, {"error": {"code": "md5_mismatch",
                                                                  "message": "bad md5"}})),
                         "bad md5")
        self.assertIn("HTTP 500", str(_refused("PUT", "u", 500, None)))

    def test_progress_off_a_terminal(self) -> None:
        """
        Off a terminal, progress is a line at the start and one at each
        quarter.
        """
        stream = io.StringIO()
        progress = _Progress("f.bin", 1000, stream)
        progress.start(0)
        for _ in range(10):
            progress(100)
        progress.finish()
        self.assertEqual(stream.getvalue().splitlines(), [
            "uploading f.bin (1000 bytes)", "  f.bin: 25% (300 bytes)",
            "  f.bin: 50% (500 bytes)", "  f.bin: 75% (800 bytes)", "  f.bin: 100% (1000 bytes)",
        ])
        stream = io.StringIO()
        progress = _Progress("f.bin", 1000, stream)
        progress.start(600)
        progress(400)
        self.assertEqual(stream.getvalue().splitlines(), [
            "uploading f.bin (1000 bytes, from byte 600)", "  f.bin: 100% (1000 bytes)"])


class FakeReactor:
    """
    Records the shutdown triggers added, for a test to fire them.
    """

    def __init__(self) -> None:
        self.triggers: dict[int, Callable[[], Any]] = {}

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], Any]) -> int:
        self.triggers[len(self.triggers)] = f
        return len(self.triggers) - 1

    def removeSystemEventTrigger(self, trigger: int) -> None:
        del self.triggers[trigger]


class FakePublisher:
    """
    A transfer whose admission never ends, and which records its
    cancellation.
    """

    key = "k" * 32

    def __init__(self) -> None:
        self.cancelled = 0
        self.admitting: Deferred[list[dict[str, Any]]] = Deferred()

    def admit(self) -> Deferred[list[dict[str, Any]]]:
        return self.admitting

    async def upload_all(self, entries: list[dict[str, Any]]) -> None:
        pass

    async def cancel(self) -> None:
        self.cancelled += 1

    def pending_hint(self) -> str:
        return "the files stay pending"


class InterruptTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.reactor = FakeReactor()
        self.publisher = FakePublisher()

    def run_command(self, keep: bool) -> Deferred[int]:
        return Deferred.fromCoroutine(_run(self.reactor, self.publisher,  # type: ignore[arg-type]
                                           None, keep))

    def test_ctrl_c_cancels(self) -> None:
        """
        Ctrl-C (the reactor shutting down) stops the upload and cancels the
        files not yet published before the reactor stops.
        """
        running = self.run_command(keep=False)
        [interrupted] = self.reactor.triggers.values()
        cleaned = interrupted()
        self.failureResultOf(running, CancelledError)
        self.assertEqual(self.publisher.cancelled, 1)
        self.successResultOf(cleaned)
        self.assertIn("cancelling the files not yet published", self.stderr.getvalue())

    def test_ctrl_c_keeps(self) -> None:
        running = self.run_command(keep=True)
        [interrupted] = self.reactor.triggers.values()
        interrupted()
        self.failureResultOf(running, CancelledError)
        self.assertEqual(self.publisher.cancelled, 0)
        self.assertIn("the files stay pending", self.stderr.getvalue())

    def test_done(self) -> None:
        """
        A run that ends removes its trigger.
        """
        running = self.run_command(keep=False)
        self.publisher.admitting.callback([])
        self.assertEqual(self.successResultOf(running), 0)
        self.assertEqual(self.reactor.triggers, {})
