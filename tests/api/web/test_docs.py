"""The API docs at /docs: Swagger UI from a package, under a CSP, with no other host reached."""

from __future__ import annotations

import gzip
from importlib.resources import files
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Route, expect

from tests.api.web.conftest import LOCAL_HOSTS, Browsing
from tests.api.web.test_page import Assets, csp

VENDORED = files("fastapi_offline") / "static"


def test_the_docs_page_loads_only_this_origin_under_a_strict_policy(client: TestClient) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-cache"
    policy = csp(resp)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no CDN
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert "<script>" not in resp.text
    assert "cdn" not in resp.text.lower()
    parser = Assets()
    parser.feed(resp.text)
    local = [url for url in parser.urls if not url.startswith("data:")]
    assert sorted(local) == [
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/static/docs.js",
    ]
    for url in local:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "no-cache", url
    assert client.head("/docs").status_code == 200


def test_the_bundle_is_gzipped_once_and_revalidated(client: TestClient) -> None:
    url = "/docs/assets/swagger-ui-bundle.js"
    original = (VENDORED / "swagger-ui-bundle.js").read_bytes()
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as resp:
        wire = b"".join(resp.iter_raw())
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.headers["content-type"].startswith("text/javascript")
    assert gzip.decompress(wire) == original
    assert len(wire) < len(original) / 3  # 1.5 MB, about 400 kB on the wire
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == original
    assert plain.headers["etag"] == resp.headers["etag"]
    again = client.get(url, headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304
    assert client.head(url).status_code == 200


def test_only_the_docs_are_served_not_redoc_nor_the_package_internals(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404
    for name in ("redoc.standalone.js", "favicon.png", "%2e%2e", "core.py"):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name
    assert client.get("/docs/assets/%2e%2e/core.py").status_code == 404
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_swagger_ui_renders_every_operation_offline(desktop: Browsing, client: TestClient) -> None:
    page, watch = desktop.page, desktop.watch
    blocked: list[str] = []

    def local_only(route: Route) -> None:
        """What a machine without internet does to a request for another host."""
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    page.context.route("**/*", local_only)
    response = page.goto("/docs")
    assert response is not None
    assert response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]

    upload = page.locator(".opblock.opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/images"]')
    )
    expect(upload).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Media service")

    document = client.get("/openapi.json").json()
    expected = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }
    rendered = set()
    for block in page.locator(".opblock").all():
        method = block.locator(".opblock-summary-method").inner_text().lower()
        path = block.locator(".opblock-summary-path").get_attribute("data-path")
        rendered.add((method, path))
    assert rendered == expected

    # The operation opens and offers "Try it out", with the multipart `file` field.
    upload.locator(".opblock-summary").first.click()
    expect(upload.get_by_role("button", name="Try it out")).to_be_visible()
    expect(upload.locator(".opblock-body")).to_contain_text("file")
    desktop.screenshot("docs")

    assert watch.errors == []
    assert blocked == []
    assert watch.foreign == []
