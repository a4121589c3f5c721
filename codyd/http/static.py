"""The dashboard's files (docs/http.md): a static page whose script calls ``/api/v1``.

The assets ship inside the package (``codyd/http/dashboard/``) and are read once,
when the listener is built: a request names one of a fixed set, so no path a
client sends ever reaches the file system. The page holds no data and needs no
token; its API calls carry the token the browser was given (docs/http.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from codyd.errors import NotFound

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Only this origin's own files and API; no inline script; the page cannot be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    folder = resources.files("codyd.http") / "dashboard"
    assets = {}
    for name, content_type in ASSETS.items():
        body = (folder / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


class Dashboard:
    def __init__(self) -> None:
        self.assets = load_assets()

    async def index(self, request: Request) -> Response:
        return self._serve(request, "index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.assets or name == "index.html":
            raise NotFound(f"no such path {request.url.path!r}")
        return self._serve(request, name)

    def _serve(self, request: Request, name: str) -> Response:
        asset = self.assets[name]
        headers = {**SECURITY_HEADERS, "ETag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, headers=headers, media_type=asset.content_type)
