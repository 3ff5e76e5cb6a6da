"""
The web client's files at C{/}, over a real loopback port: the headers
that keep the page to itself (CSP, nosniff, frames, referrer, caching),
the types that let a browser run modules, and the files themselves
(nothing inline that the policy would refuse, every import there).
"""

import os
import re

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from multirealm.web import page
from tests import test_service


class PageTests(unittest.TestCase):
    def setUp(self):
        service = test_service.started_realm(self)
        port = service.getServiceNamed("http").endpoint.port.getHost().port
        self.base = f"http://127.0.0.1:{port}".encode()
        self.agent = Agent(reactor)

    @defer.inlineCallbacks
    def get(self, path, headers=None, method=b"GET"):
        response = yield self.agent.request(method, self.base + path, Headers(headers or {}))
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def test_the_root_is_the_page_with_its_guards(self):
        response, body = yield self.get(b"/")
        self.assertEqual(response.code, 200)
        self.assertIn(b'<script type="module" src="app.js"></script>', body)
        header = response.headers.getRawHeaders
        self.assertEqual(header(b"content-type"), [b"text/html; charset=utf-8"])
        policy = header(b"content-security-policy")[0].decode()
        for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
                          "object-src 'none'"):
            self.assertIn(directive, policy.split("; "))
        self.assertNotIn("unsafe", policy)
        self.assertEqual(header(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(header(b"x-frame-options"), [b"DENY"])
        self.assertEqual(header(b"referrer-policy"), [b"no-referrer"])
        self.assertEqual(header(b"cache-control"), [b"no-cache"])
        self.assertTrue(header(b"last-modified"))

    @defer.inlineCallbacks
    def test_modules_and_styles_have_the_types_a_browser_runs(self):
        for path, kind in ((b"/app.js", b"text/javascript; charset=utf-8"),
                           (b"/style.css", b"text/css; charset=utf-8")):
            response, body = yield self.get(path)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [kind])
            self.assertEqual(response.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])

    @defer.inlineCallbacks
    def test_a_file_not_changed_is_not_sent_again(self):
        response, _ = yield self.get(b"/app.js")
        (etag,) = response.headers.getRawHeaders(b"etag")
        (modified,) = response.headers.getRawHeaders(b"last-modified")
        response, body = yield self.get(b"/app.js", {b"if-none-match": [etag]})
        self.assertEqual((response.code, body), (304, b""))
        response, body = yield self.get(b"/app.js", {b"if-modified-since": [modified]})
        self.assertEqual((response.code, body), (304, b""))

    @defer.inlineCallbacks
    def test_nothing_else_is_served(self):
        for path in (b"/nope.js", b"/../setup.cfg", b"/%2e%2e/page.py", b"/app.js/x"):
            response, _ = yield self.get(path)
            self.assertEqual(response.code, 404, path)
        response, body = yield self.get(b"/", method=b"HEAD")
        self.assertEqual((response.code, body), (200, b""))

    @defer.inlineCallbacks
    def test_files_are_still_beside_it(self):
        response, _ = yield self.get(b"/files/" + b"0" * 32)
        self.assertEqual(response.code, 401)


class StaticFilesTests(unittest.TestCase):
    """What the policy would refuse is not in the files, and what they load is."""

    def read(self, name):
        with open(os.path.join(page.STATIC, name), encoding="utf-8") as f:
            return f.read()

    def test_nothing_inline(self):
        html = self.read("index.html")
        self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html), [])
        self.assertEqual(re.findall(r"\s(on\w+|style)=", html), [])
        self.assertNotIn("<style", html)

    def test_every_file_loaded_is_there(self):
        names = set(os.listdir(page.STATIC))
        html = self.read("index.html")
        wanted = set(re.findall(r'(?:src|href)="([^"]+)"', html))
        for name in [n for n in names if n.endswith(".js")]:
            script = self.read(name)
            wanted |= set(re.findall(r"from '\./([^']+)'", script))
            self.assertNotIn("innerHTML", script)  # text is text
        self.assertTrue(wanted)
        self.assertLessEqual(wanted, names)

    def test_a_folder_is_never_listed(self):
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "vendor"))
        root = page.PageFile(folder)
        self.assertIs(root.getChild(b"", None), root.childNotFound)  # no index.html
        self.assertIs(root.getChild(b"vendor", None).getChild(b"", None), root.childNotFound)
