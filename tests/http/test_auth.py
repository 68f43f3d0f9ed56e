"""
Tests for L{p2pblob.http.auth}: the API token file, which endpoints listen
on loopback only, and the guard in front of the API's routes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import ConfigError
from p2pblob.http.auth import listens_on_loopback, load_or_create_token
from tests.http._helpers import APITestCase


class TokenFileTests(SynchronousTestCase):
    def test_created_private(self) -> None:
        """
        The first start makes a long random token in a file only its owner
        may read; the next finds the same.
        """
        path = Path(self.mktemp())
        token = load_or_create_token(path)
        self.assertGreaterEqual(len(token), 40)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(load_or_create_token(path), token)
        self.assertNotEqual(load_or_create_token(Path(self.mktemp())), token)

    def test_readable_by_others(self) -> None:
        """
        A token file others may read is refused, saying how to fix it.
        """
        path = Path(self.mktemp())
        load_or_create_token(path)
        os.chmod(path, 0o644)
        with self.assertRaises(ConfigError) as raised:
            load_or_create_token(path)
        self.assertIn("chmod 600", str(raised.exception))

    def test_empty(self) -> None:
        path = Path(self.mktemp())
        path.write_text("\n")
        os.chmod(path, 0o600)
        with self.assertRaises(ConfigError):
            load_or_create_token(path)

    def test_cannot_create(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            load_or_create_token(Path(self.mktemp()) / "missing" / "api-token")
        self.assertIn("cannot create the API token", str(raised.exception))


class LoopbackTests(SynchronousTestCase):
    def test_endpoints(self) -> None:
        for endpoint, loopback in [
            ("tcp:5279:interface=127.0.0.1", True),
            ("tcp:5279:interface=127.0.0.2", True),
            ("tcp6:5279:interface=\\:\\:1", True),
            ("unix:/run/p2pblob.sock", True),
            ("tcp:5279", False),
            ("tcp:5279:interface=0.0.0.0", False),
            ("tcp:5279:interface=192.0.2.1", False),
            ("tcp6:5279:interface=\\:\\:", False),
            ("tcp:5279:interface=localhost", False),
            ("onion:5279", False),
        ]:
            self.assertEqual(listens_on_loopback(endpoint), loopback, endpoint)


class LoopbackGuardTests(APITestCase):
    """
    An API on loopback needs no token, but refuses other origins and
    other host names.
    """

    def test_no_token_needed(self) -> None:
        self.assertEqual(self.request("GET", "/settings")[0], 200)
        self.assertEqual(self.request("GET", "/settings", headers={"Host": "localhost:5279"})[0],
                         200)

    def test_other_host(self) -> None:
        """
        A request for another host name (a DNS-rebinding page) is refused.
        """
        self.assertError(self.request("GET", "/status", headers={"Host": "evil.example"}), 403,
                         "forbidden_host")

    def test_other_origin(self) -> None:
        """
        A request from a web page of another origin is refused, and changes
        nothing; one from the API's own origin goes through.
        """
        answer = self.request("PATCH", "/settings", {"max_upload": 1000},
                              headers={"Origin": "http://evil.example"})
        self.assertError(answer, 403, "forbidden_origin")
        self.assertIsNone(self.limiter.max_upload)
        answer = self.request("PATCH", "/settings", {"max_upload": 1000},
                              headers={"Origin": "http://127.0.0.1:5279"})
        self.assertEqual(answer[0], 200)

    def test_form_body_refused(self) -> None:
        """
        A change sent as a form (which a page of another origin could send
        without asking the browser) is refused.
        """
        answer = self.request("PATCH", "/settings", b"max_upload=1000",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(answer, 415, "unsupported_media_type")
        self.assertIsNone(self.limiter.max_upload)


class TokenGuardTests(APITestCase):
    """
    An API reachable from other machines needs its token.
    """

    token = "s3cret-token"
    loopback = False

    def test_without_token(self) -> None:
        self.assertError(self.request("GET", "/status"), 401, "unauthorized")
        self.assertError(self.request("GET", "/nothing"), 401, "unauthorized")

    def test_wrong_token(self) -> None:
        for header in ("Bearer nope", "Basic s3cret-token", "s3cret-token", "Bearer "):
            self.assertError(self.request("GET", "/status", headers={"Authorization": header}),
                             401, "unauthorized")

    def test_with_token(self) -> None:
        """
        With the token any host name may be used (the API was bound to a
        public address on purpose).
        """
        answer = self.request("GET", "/settings", headers={
            "Authorization": "Bearer s3cret-token", "Host": "node.example:5279"})
        self.assertEqual(answer[0], 200)


class DashboardGuardTests(APITestCase):
    """
    The dashboard's own files need no token (the page asks for it); the
    data behind it does.
    """

    token = "s3cret-token"
    loopback = False

    def get(self, path: str) -> int:
        d = self.client.get("http://node.example:5279" + path)
        self.client.flush()
        return int(self.successResultOf(d).code)

    def test_page_public_data_not(self) -> None:
        self.assertEqual(self.get("/"), 200)
        self.assertEqual(self.get("/dashboard/app.js"), 200)
        self.assertEqual(self.get("/api/v1/status"), 401)
        self.assertEqual(self.get("/metrics"), 401)
        self.assertEqual(self.get("/dashboard/../api/v1/status"), 401)
