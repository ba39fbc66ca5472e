"""The page itself, without a browser: served by the API, self-contained, locked down."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from media_api.main import create_app
from media_api.settings import Settings

STATIC = files("media_api.api.web") / "static"


class Assets(HTMLParser):
    """Every src/href the page refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def csp(resp: httpx.Response) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: sources}."""
    policy = resp.headers["content-security-policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_page_needs_no_credentials_and_names_its_image_origin(
    client: TestClient, settings: Settings
) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-frame-options"] == "DENY"
    policy = csp(resp)
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    endpoint = urlsplit(settings.s3_endpoint_url or "")
    assert policy["img-src"].split() == ["'self'", "data:", "blob:", endpoint.geturl()]
    head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""


@pytest.fixture
def public_client(app_settings: Settings) -> Iterator[TestClient]:
    public = app_settings.model_copy(
        update={"s3_public_endpoint_url": "https://media.example", "web_key_links": False}
    )
    with TestClient(create_app(public)) as client:
        yield client


def test_key_links_are_announced_to_the_page_only_when_enabled(
    client: TestClient, public_client: TestClient
) -> None:
    on = '<meta name="media-key-links" content="on">'
    assert on in client.get("/").text  # the tests' settings turn them on, as `make dev` does
    assert on not in public_client.get("/").text  # the default


def test_images_are_allowed_from_the_public_endpoint(public_client: TestClient) -> None:
    policy = csp(public_client.get("/"))
    assert "https://media.example" in policy["img-src"].split()


def test_every_asset_is_served_from_this_origin(client: TestClient) -> None:
    parser = Assets()
    parser.feed(client.get("/").text)
    local = [u for u in parser.urls if not u.startswith(("data:", "#"))]
    assert local, "the page refers to no assets"
    types = {"/static/app.js": "text/javascript", "/static/style.css": "text/css"}
    for url in local:
        assert url.startswith("/static/"), url
        resp = client.get(url)
        assert resp.status_code == 200, url
        if url in types:
            assert resp.headers["content-type"].startswith(types[url])
        # Revalidated on every load: after a deploy no browser runs an old script.
        assert resp.headers["cache-control"] == "no-cache", url
        assert client.get(url, headers={"If-None-Match": resp.headers["etag"]}).status_code == 304


def test_no_asset_loads_anything_from_elsewhere() -> None:
    """Offline: no CDN, no font service, no import from another origin."""
    names = [entry.name for entry in STATIC.iterdir()]
    assert {"app.js", "api.js", "viewer.js", "blurhash.js", "dom.js", "style.css"} <= set(names)
    for name in names:
        text = (STATIC / name).read_text(encoding="utf-8")
        assert re.findall(r"https?://", text) == [] or name == "blurhash.js", name
        imports = re.findall(r"""^import .* from "([^"]+)";$""", text, flags=re.M)
        assert all(path.startswith("./") for path in imports), (name, imports)


def test_static_files_stay_inside_their_folder(client: TestClient) -> None:
    assert client.get("/static/../router.py").status_code == 404
    assert client.get("/static/%2e%2e/router.py").status_code == 404
