"""Per-owner rate limits, counted in the session's real Redis."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from media_api.accounts.throttles import create_throttle, per_minute
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import new_caller


def test_api_limit_is_per_owner_with_retry_after(app_settings: Settings) -> None:
    limited = app_settings.model_copy(update={"rate_limit_requests_per_minute": 3})
    with TestClient(create_app(limited)) as client:
        one, two = new_caller(client), new_caller(client)
        statuses = [client.get("/v1/api-keys", headers=one.headers).status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200]
        # A window boundary may fall inside the loop; then the 4th is allowed once more.
        blocked = client.get("/v1/api-keys", headers=one.headers)
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 61
        assert blocked.json()["code"] == "rate-limited"
        assert client.get("/v1/api-keys", headers=two.headers).status_code == 200


def test_unauthenticated_requests_do_not_spend_an_owners_budget(app_settings: Settings) -> None:
    limited = app_settings.model_copy(update={"rate_limit_requests_per_minute": 2})
    with TestClient(create_app(limited)) as client:
        caller = new_caller(client)
        for _ in range(5):
            assert client.get("/v1/api-keys").status_code == 401
        assert client.get("/v1/api-keys", headers=caller.headers).status_code == 200


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_limiter_counts_exactly_to_the_limit(settings: Settings, kind: str) -> None:
    async def run() -> list[int | None]:
        url = settings.rate_limit_redis_url
        assert url is not None
        throttle = create_throttle(url if kind == "redis" else None, on_error=lambda: None)
        try:
            key = f"test:{kind}:{asyncio.get_running_loop().time()}"
            return [await throttle.hit(key, per_minute(5)) for _ in range(7)]
        finally:
            await throttle.close()

    results = asyncio.run(run())
    allowed = [r for r in results if r is None]
    # A moving window is exact: 5 allowed, then refused, wherever the minute boundary falls.
    assert len(allowed) == 5
    assert all(r is None or 1 <= r <= 61 for r in results)


def test_upload_limit_is_separate_and_smaller(app_settings: Settings) -> None:
    limited = app_settings.model_copy(
        update={"rate_limit_uploads_per_minute": 1, "rate_limit_requests_per_minute": 100}
    )
    with TestClient(create_app(limited)) as client:
        caller = new_caller(client)
        first = client.post("/v1/images", headers=caller.headers, files={"file": ("a", b"x")})
        assert first.status_code == 415  # counted, even though the file was refused
        second = client.post("/v1/images", headers=caller.headers, files={"file": ("a", b"x")})
        assert second.status_code == 429
        assert second.json()["code"] == "rate-limited"
        assert "retry-after" in second.headers
        assert client.get("/v1/api-keys", headers=caller.headers).status_code == 200
