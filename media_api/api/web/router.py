"""Serves the gallery page at `/` and its assets at `/static`.

The page is plain HTML, CSS and JavaScript modules committed as they run, so `make dev` needs no
Node toolchain and the page works offline (nothing is loaded from another origin but the signed
image URLs, which the Content-Security-Policy names exactly).
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from media_api.api.deps import SettingsDep, StoreDep

_HERE = files("media_api.api.web")
INDEX_HTML = (_HERE / "index.html").read_text(encoding="utf-8")
# Where the page learns that `/#key=` sign-in links are accepted (MEDIA_WEB_KEY_LINKS).
KEY_LINKS_SLOT = "<!-- key-links -->"
KEY_LINKS_ON = '<meta name="media-key-links" content="on">'

router = APIRouter(include_in_schema=False)


def content_security_policy(image_origin: str) -> str:
    """Scripts, styles and API calls from this origin only; images also from the S3 origin the
    signed URLs point at (and data:/blob: for the placeholders)."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob: {image_origin}",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def image_origin(store: StoreDep) -> str:
    """The origin signed URLs use, read off a signed URL so it is right for every endpoint
    style (path-style public endpoint, or AWS's virtual-hosted names)."""
    url = urlsplit(store.presign_get("origin-probe", dt.timedelta(seconds=60)).url)
    return f"{url.scheme}://{url.netloc}"


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def index(store: StoreDep, settings: SettingsDep) -> HTMLResponse:
    """The single page; it always revalidates, and so do its assets."""
    page = INDEX_HTML.replace(KEY_LINKS_SLOT, KEY_LINKS_ON if settings.web_key_links else "")
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": content_security_policy(image_origin(store)),
            "Cache-Control": "no-cache",
        },
    )


class RevalidatedFiles(StaticFiles):
    """Assets that are checked (ETag) on every load: after a deploy no browser may run an old
    app.js against a new page or API."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_web(app: FastAPI) -> None:
    """Mount the page and its assets (outside /v1: they need no credentials)."""
    app.include_router(router)
    app.mount(
        "/static", RevalidatedFiles(packages=[("media_api.api.web", "static")]), name="static"
    )
