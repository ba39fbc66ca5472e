"""Security headers, CORS from settings, no server banner, compression and Server-Timing."""

from __future__ import annotations

import gzip
import json
import re
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from media_api.api.middleware import GZIP_MINIMUM_BYTES
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller, upload, without_urls
from tests.support.images import noise_jpeg, png

SERVER_TIMING = re.compile(r"app;dur=(\d+(?:\.\d+)?)")


def test_security_headers_on_every_response(client: TestClient) -> None:
    for resp in (client.get("/healthz"), client.get("/v1/images/x"), client.get("/nope")):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"


def test_live_server_sends_no_version_banner(live_server: str) -> None:
    resp = httpx.get(f"{live_server}/healthz")
    assert "server" not in resp.headers


def test_no_cors_headers_unless_configured(client: TestClient) -> None:
    resp = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in resp.headers


def test_configured_origin_is_allowed_and_others_are_not(app_settings: Settings) -> None:
    cors = app_settings.model_copy(update={"cors_origins": ["https://app.example"]})
    with TestClient(create_app(cors)) as client:
        ok = client.options(
            "/v1/images",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in ok.headers
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="cannot be combined"):
        Settings(cors_origins=["*"], cors_allow_credentials=True)


# --- compression and Server-Timing (issue 14) ----------------------------------------------


@pytest.fixture(scope="module")
def lister(client: TestClient) -> Caller:
    """An owner with a listing over a kilobyte: three images, each with a signed URL."""
    caller = new_caller(client)
    for seed in range(3):
        status, _ = upload(client, caller, png(9100 + seed), filename=f"p{seed}.png")
        assert status == 201
    return caller


def _without_accept_encoding(
    client: TestClient, url: str, headers: dict[str, str]
) -> httpx.Response:
    """httpx sends `Accept-Encoding: gzip, deflate` unless told otherwise; this sends none."""
    request = client.build_request("GET", url, headers=headers)
    del request.headers["accept-encoding"]
    return client.send(request)


def _stable(listing: dict[str, object]) -> list[dict[str, object]]:
    """The items minus their signed URLs, which are signed afresh on every response."""
    items = listing["items"]
    assert isinstance(items, list)
    return [without_urls(item) for item in items]


def test_a_listing_of_a_kilobyte_or_more_is_gzipped_when_asked(
    client: TestClient, lister: Caller
) -> None:
    headers = {**lister.headers, "Accept-Encoding": "gzip"}
    with client.stream("GET", "/v1/images", headers=headers) as resp:
        wire = b"".join(resp.iter_raw())
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.headers["content-type"] == "application/json"
    assert int(resp.headers["content-length"]) == len(wire)
    assert "accept-encoding" in resp.headers["vary"].lower()
    listing = json.loads(gzip.decompress(wire))

    plain = client.get("/v1/images", headers={**lister.headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) >= GZIP_MINIMUM_BYTES
    assert len(wire) < len(plain.content)
    assert _stable(listing) == _stable(plain.json())
    assert len(listing["items"]) == 3


def test_small_responses_and_clients_that_do_not_ask_are_not_compressed(
    client: TestClient, lister: Caller
) -> None:
    small = client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200
    assert len(small.content) < GZIP_MINIMUM_BYTES
    assert "content-encoding" not in small.headers

    plain = _without_accept_encoding(client, "/v1/images", lister.headers)
    assert plain.status_code == 200
    assert "accept-encoding" not in plain.request.headers
    assert "content-encoding" not in plain.headers
    assert len(plain.content) >= GZIP_MINIMUM_BYTES
    assert len(plain.json()["items"]) == 3


def test_problems_and_redirects_pass_compression_unchanged(
    client: TestClient, lister: Caller
) -> None:
    gz = {"Accept-Encoding": "gzip"}
    problem = client.get("/v1/images", headers=gz)
    assert problem.status_code == 401
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["code"]
    image_id = client.get("/v1/images", headers=lister.headers).json()["items"][0]["id"]
    redirect = client.get(
        f"/v1/images/{image_id}/original", headers={**lister.headers, **gz}, follow_redirects=False
    )
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith("http")
    assert "content-encoding" not in redirect.headers


def test_every_response_carries_the_handlers_time(client: TestClient, lister: Caller) -> None:
    image_id = client.get("/v1/images", headers=lister.headers).json()["items"][0]["id"]
    responses = {
        "success": client.get("/healthz"),
        "gzipped listing": client.get("/v1/images", headers={**lister.headers}),
        "problem+json 401": client.get("/v1/images"),
        "problem+json 404": client.get(f"/v1/images/{uuid.uuid4()}", headers=lister.headers),
        "problem+json 422": client.get("/v1/images?limit=0", headers=lister.headers),
        "redirect": client.get(
            f"/v1/images/{image_id}/original", headers=lister.headers, follow_redirects=False
        ),
        "HEAD": client.head("/"),
        "docs": client.get("/docs"),
        "not found": client.get("/nope"),
    }
    assert responses["gzipped listing"].headers["content-encoding"] == "gzip"
    assert responses["redirect"].status_code == 307
    assert responses["HEAD"].status_code == 200
    for name, resp in responses.items():
        match = SERVER_TIMING.fullmatch(resp.headers.get("server-timing", ""))
        assert match, (name, resp.headers.get("server-timing"))
        assert 0 <= float(match.group(1)) < 60_000, name


def test_an_upload_streams_through_with_gzip_accepted(live_server: str, client: TestClient) -> None:
    """Over a real socket: a multipart body of over a megabyte streams through the layers."""
    caller = new_caller(client)
    data = noise_jpeg(1600, 1200)
    assert len(data) > 1_000_000
    with httpx.Client(base_url=live_server, headers={"Accept-Encoding": "gzip"}) as http:
        resp = http.post(
            "/v1/images", headers=caller.headers, files={"file": ("n.jpg", data, "image/jpeg")}
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["size"] == len(data)
        assert SERVER_TIMING.fullmatch(resp.headers["server-timing"])
        listing = http.get("/v1/images", headers=caller.headers)
    assert [item["id"] for item in listing.json()["items"]] == [resp.json()["id"]]
