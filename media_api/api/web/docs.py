"""Serves the API docs (Swagger UI) at `/docs` without a CDN.

FastAPI's own page loads Swagger UI from jsDelivr, so it is blank on a machine without internet.
Here the bundle and its stylesheet come from the `fastapi-offline` package (Swagger UI 5, which
renders OpenAPI 3.1), the init is a static file (no inline script), and the page carries a
Content-Security-Policy that allows this origin only. ReDoc is not served: its bundle injects
`<style>` elements, which would need `style-src 'unsafe-inline'`, and one docs page is enough.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
from dataclasses import dataclass
from html import escape
from importlib.resources import files

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
# The package's files the page uses, and nothing else of it (not its favicon, not ReDoc).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # Swagger UI's icons are data: URIs; image responses blob:
        "connect-src 'self'",  # the OpenAPI document and "Try it out"
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - API docs</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{root}{assets}/swagger-ui.css">
  <script defer src="{root}{assets}/swagger-ui-bundle.js"></script>
  <script defer src="{root}/static/docs.js"></script>
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{root}{openapi}"></div>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.api_route(DOCS_URL, methods=["GET", "HEAD"], response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI for this app's OpenAPI document; revalidated on every load, like the gallery."""
    app: FastAPI = request.app
    root = str(request.scope.get("root_path", "")).rstrip("/")
    page = PAGE.format(
        title=escape(app.title),
        root=escape(root),
        assets=ASSETS_URL,
        openapi=escape(app.openapi_url or "/openapi.json"),
    )
    return HTMLResponse(
        page,
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


@dataclass(frozen=True)
class Asset:
    media_type: str
    body: bytes
    gzipped: bytes
    etag: str


@functools.cache
def load_asset(name: str) -> Asset:
    """Read and gzip once per process: compressing the 1.5 MB bundle on every request (what
    the GZip middleware would do) costs about 50 ms of CPU, for anyone who asks."""
    body = (files("fastapi_offline") / "static" / name).read_bytes()
    return Asset(
        media_type=ASSETS[name],
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
    )


@router.api_route(ASSETS_URL + "/{name}", methods=["GET", "HEAD"])
async def asset(name: str, request: Request) -> Response:
    """Swagger UI's bundle and stylesheet, gzipped ahead for clients that accept it (the GZip
    middleware leaves a response with a Content-Encoding alone); revalidated by ETag."""
    if name not in ASSETS:
        raise HTTPException(404)
    found = await asyncio.to_thread(load_asset, name)
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=found.media_type, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


def install_docs(app: FastAPI) -> None:
    """Route the page and the vendored Swagger UI (the app is built with `docs_url=None`)."""
    app.include_router(router)
