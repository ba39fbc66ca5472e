"""Liveness, readiness and the problem+json error contract."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from media_api.devstack import free_port
from media_api.errors import PROBLEM_JSON
from media_api.main import create_app
from media_api.settings import Settings
from tests.helpers import new_caller


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_checks_every_dependency(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("setting", "broken", "part"),
    [
        ("database_url", "postgresql://postgres@127.0.0.1:{port}/media", "database"),
        ("s3_endpoint_url", "http://127.0.0.1:{port}", "storage"),
        ("broker_url", "redis://127.0.0.1:{port}/0", "broker"),
    ],
)
def test_readyz_names_the_failing_part(
    settings: Settings, setting: str, broken: str, part: str
) -> None:
    bad = settings.model_copy(
        update={setting: broken.format(port=free_port()), "readiness_timeout_seconds": 1.0}
    )
    with TestClient(create_app(bad)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.headers["content-type"] == PROBLEM_JSON
    body = resp.json()
    assert body["code"] == "not-ready"
    assert part in body["detail"]
    assert body["checks"][part] != "ok"
    healthy = {name for name, state in body["checks"].items() if state == "ok"}
    assert healthy == {"database", "storage", "broker"} - {part}


def test_an_unreachable_database_is_503_with_retry_after(
    settings: Settings, client: TestClient
) -> None:
    key = new_caller(client).token  # a real key: checking it needs the database
    dead = settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/media"}
    )
    with TestClient(create_app(dead), raise_server_exceptions=False) as down:
        for resp in (
            down.get("/v1/images", headers={"Authorization": f"Bearer {key}"}),
            down.post("/v1/auth/token", data={"username": "a@example.com", "password": "x" * 12}),
        ):
            assert resp.status_code == 503, resp.text
            assert resp.headers["content-type"] == PROBLEM_JSON
            assert resp.headers["retry-after"] == "5"
            assert resp.json()["code"] == "service-unavailable"
            assert "postgres" not in resp.text.lower()


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    resp = client.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM_JSON
    body = resp.json()
    assert body["code"] == "not-found"
    assert body["status"] == 404
    assert body["type"].endswith("/not-found")


def test_unexpected_errors_reveal_nothing(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/path")

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == PROBLEM_JSON
    assert resp.json()["code"] == "internal-error"
    assert "hunter2" not in resp.text
    assert "/srv/secret" not in resp.text
