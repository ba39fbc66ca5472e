"""Security headers, CORS from settings, and no server banner."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from media_api.main import create_app
from media_api.settings import Settings


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
