"""Operator dashboard routes: `GET /` and `GET /static/*` from package data (interfaces.md §8).

The assets (gateway/web/: index.html, app.js, style.css) are plain files, no build step and no
CDN; they are read once when the routes are built and served from memory, so a request never
touches the disk and only names shipped in the package can be served (no path traversal).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

import attrs
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

WEB_PACKAGE = "gateway"
WEB_DIR = "web"
INDEX = "index.html"
CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# the assets change with the package version: revalidate instead of caching stale files
CACHE_CONTROL = "no-cache"


@attrs.frozen
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file directly under gateway/web/ with a known type, by name."""
    assets: dict[str, Asset] = {}
    for entry in (resources.files(WEB_PACKAGE) / WEB_DIR).iterdir():
        suffix = "." + entry.name.rpartition(".")[2] if "." in entry.name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is not None and entry.is_file():
            assets[entry.name] = Asset(entry.read_bytes(), content_type)
    return assets


def dashboard_routes(assets: Mapping[str, Asset] | None = None) -> list[BaseRoute]:
    """`GET /` (index.html) and `GET /static/{name}`; unknown names are 404."""
    files = dict(assets) if assets is not None else load_assets()

    def serve(name: str) -> Response:
        asset = files.get(name)
        if asset is None:
            raise HTTPException(status_code=404, detail="Not Found")
        return Response(
            asset.body, media_type=asset.content_type, headers={"Cache-Control": CACHE_CONTROL}
        )

    async def index(_: Request) -> Response:
        return serve(INDEX)

    async def static(request: Request) -> Response:
        return serve(request.path_params["name"])

    return [
        Route("/", index, methods=["GET"]),
        Route("/static/{name:path}", static, methods=["GET"]),
    ]
