"""
What the HTTP tests share: a node's real parts behind the API, and a
client that talks to it in memory (treq's testing client).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pblob._threads import run_inline
from p2pblob.blob.store import BlobStore
from p2pblob.config import Config
from p2pblob.http.api import NodeAPI, NodeParts
from p2pblob.http.auth import RequestGuard
from p2pblob.ratelimit import RateLimiter
from p2pblob.wallet.rates import PaymentRateManager
from p2pblob.wallet.units import MICRO
from tests.wallet._helpers import SEED_A, make_wallet

API = "http://127.0.0.1:5279/api/v1"


class APITestCase(SynchronousTestCase):
    """
    A node's parts, real (a blob store and a wallet in a temporary
    directory, a rate limiter on a fake clock), behind the API.
    """

    token: str | None = None
    loopback = True

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        self.clock = Clock()
        self.store = BlobStore(self.clock, run_inline, directory / "blobfiles",
                               directory / "index.sqlite")
        self.successResultOf(Deferred.fromCoroutine(self.store.start()))
        self.addCleanup(self.store.stop)
        self.limiter = RateLimiter(self.clock)
        self.wallet = make_wallet(self, self.clock, SEED_A, grant=100 * MICRO)
        self.parts = NodeParts(
            config=Config(data_dir=directory),
            blob_store=self.store,
            rate_limiter=self.limiter,
            wallet=self.wallet,
            rates=PaymentRateManager(1.5, 1.0),
            peer_address=lambda: "127.0.0.1:3333",
        )
        self.api = NodeAPI(self.parts, RequestGuard(self.token, self.loopback),
                           clock=lambda: 1000.0)
        self.client = StubTreq(self.api.resource())

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """
        Send a request; return the status and the parsed JSON answer.
        """
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        d = self.client.request(method, API + path, data=data, headers=headers)
        self.client.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/json; charset=utf-8"])
        self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))
        return response.code, json.loads(content)

    def assertError(self, answer: tuple[int, Any], status: int, code: str) -> str:
        self.assertEqual((answer[0], answer[1]["error"]["code"]), (status, code), answer)
        message: str = answer[1]["error"]["message"]
        self.assertNotIn("Traceback", message)
        return message
