"""
The web client's files (C{multirealm/web/static}, package data), served at
C{/} by C{static.File} with the headers that keep the page to itself: a
strict Content-Security-Policy (no inline script or style, connections to
this origin only, in no frame), C{nosniff}, no referrer, and C{no-cache}
(there is no build step to version file names, so every file is
revalidated, cheaply, by its C{ETag} or C{Last-Modified}).
"""

import os

from twisted.web import http, static

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",  # fetch, XHR and the same origin's ws: (CSP 3)
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS = [
    (b"content-security-policy", POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class PageFile(static.File):
    """A file of the page, or its folder (C{/} is C{index.html}); no listings."""

    contentTypes = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".png": "image/png",
        ".svg": "image/svg+xml",
        ".txt": "text/plain; charset=utf-8",
    }
    defaultType = "application/octet-stream"

    def directoryListing(self):
        return self.childNotFound

    def render_GET(self, request):
        for name, value in HEADERS:
            request.setHeader(name, value)
        self.restat(False)
        if self.isfile():
            tag = b'"%x-%x"' % (int(self.getModificationTime() * 1000), self.getsize())
            if request.setETag(tag) is http.CACHED:
                return b""
        return super().render_GET(request)

    render_HEAD = render_GET


def page():
    """The resource of the page's folder."""
    return PageFile(STATIC)
