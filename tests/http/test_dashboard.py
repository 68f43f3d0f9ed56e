"""
The dashboard's files, as the node serves them (the page itself is driven
in a real browser by L{tests.http.test_browser}).
"""

from __future__ import annotations

from tests.http._helpers import APITestCase


class DashboardFilesTests(APITestCase):
    def fetch(self, path: str) -> tuple[int, dict[str, list[str]], bytes]:
        d = self.client.get("http://127.0.0.1:5279" + path)
        self.client.flush()
        response = self.successResultOf(d)
        headers = {k.decode().lower(): [v.decode() for v in vs]
                   for k, vs in response.headers.getAllRawHeaders()}
        return response.code, headers, self.successResultOf(response.content())

    def test_page(self) -> None:
        """
        C{/} is the page; it loads its script and style from the node
        only, under a policy that allows nothing else.
        """
        status, headers, body = self.fetch("/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], ["text/html; charset=utf-8"])
        self.assertIn(b'<script src="/dashboard/app.js"', body)
        self.assertIn(b'href="/dashboard/style.css"', body)
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)
        policy = headers["content-security-policy"][0]
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertEqual(headers["x-frame-options"], ["DENY"])

    def test_files(self) -> None:
        for name, kind in [("app.js", "text/javascript; charset=utf-8"),
                           ("style.css", "text/css; charset=utf-8")]:
            status, headers, body = self.fetch(f"/dashboard/{name}")
            self.assertEqual((status, headers["content-type"]), (200, [kind]))
            self.assertGreater(len(body), 100)

    def test_unknown_file(self) -> None:
        """
        Only the dashboard's own files are served, never another path.
        """
        for path in ("/dashboard/nothing.js", "/dashboard/..%2F..%2Fapi.py",
                     "/dashboard/__init__.py"):
            self.assertEqual(self.fetch(path)[0], 404, path)
