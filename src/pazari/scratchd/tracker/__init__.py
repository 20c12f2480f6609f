"""The browser tracker (``tracker.js``, hand-written, no build step) and its ``GET /t.js``.

The script is read once at startup. It is served with a strong ETag (a hash of the bytes of
each representation, so the gzip one has its own: RFC 9110 §8.8.3), ``If-None-Match`` gives
304 (§13.1.2), and browsers and CDNs may keep it a week and serve it stale for a day while
they revalidate (RFC 5861). A change of the script changes the ETag.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib.resources import files

from aiohttp import web

CACHE_CONTROL = "public, max-age=604800, stale-while-revalidate=86400"


def _accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 §12.5.3: ``q=0`` means not)."""
    if not header:
        return False
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _tags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


class TrackerScript:
    """``GET /t.js``: the tracker, identity or gzip, with its ETag."""

    def __init__(self, source: bytes | None = None) -> None:
        self.body = source if source is not None else script_bytes()
        self.gzipped = gzip.compress(self.body, 9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        self.etag_gzip = '"' + hashlib.sha256(self.gzipped).hexdigest()[:32] + '"'

    async def handle(self, request: web.BaseRequest) -> web.Response:
        use_gzip = _accepts_gzip(request.headers.get("Accept-Encoding"))
        etag = self.etag_gzip if use_gzip else self.etag
        headers = {
            "Content-Type": "application/javascript; charset=utf-8",
            "Cache-Control": CACHE_CONTROL,
            "ETag": etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            # Pages of any site load it (a cross-origin <script>).
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        match = _tags(request.headers.get("If-None-Match"))
        if etag in match or "*" in match:
            return web.Response(status=304, headers=headers)
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=self.gzipped, headers=headers)
        return web.Response(body=self.body, headers=headers)


def script_bytes() -> bytes:
    """tracker.js as shipped in the wheel."""
    return (files(__package__) / "tracker.js").read_bytes()
