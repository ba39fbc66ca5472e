"""Operational endpoints are no amplifier: /metrics on a port of its own (MEDIA_METRICS_PORT),
scrapes and probes on pooled connections, and /readyz naming parts, never exceptions."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from media_api.dev.stack import free_port, start_redis
from media_api.errors import PROBLEM_JSON
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from tests.support.callers import new_caller, post_image
from tests.support.images import png
from tests.support.metrics import metric_samples
from tests.support.serving import serve_workers
from tests.support.waiting import wait_for

SCRAPES = 30
PROBES = 30
# New broker connections allowed over all those scrapes and probes: the pool's first
# connections (shared with publishing) and a reconnect, not one or two per request.
FEW = 5


def _families(text: str) -> set[str]:
    """Metric families, less the `_created` gauges a labelled counter has only once used."""
    names = {family.name for family in text_string_to_metric_families(text)}
    return {name for name in names if not name.endswith("_created")}


def _scrape(port: int) -> httpx.Response:
    """GET /metrics on the metrics port, on a connection of its own (httpx.get opens one)."""
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def _state(client: TestClient) -> AppState:
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    return state


def test_the_metrics_port_serves_what_the_api_port_no_longer_does(
    app_settings: Settings, client: TestClient
) -> None:
    port = free_port()
    with TestClient(create_app(app_settings.model_copy(update={"metrics_port": port}))) as api:
        resp = _scrape(port)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        samples = metric_samples(resp.text)
        assert samples[("media_database_up", ())] == 1
        assert samples[("media_broker_up", ())] == 1
        # The very same families as an API that serves /metrics itself (`client`).
        assert _families(resp.text) == _families(client.get("/metrics").text)

        hidden = api.get("/metrics")
        assert hidden.status_code == 404
        assert hidden.headers["content-type"] == PROBLEM_JSON
        assert hidden.json()["code"] == "not-found"
        # Only /metrics: the metrics port serves nothing else of the API.
        for path in ("/healthz", "/readyz", "/v1/images"):
            other = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert other.status_code == 404, path
            assert other.headers["content-type"] == PROBLEM_JSON
    with pytest.raises(httpx.ConnectError):  # closed with the app
        _scrape(port)


def test_server_processes_share_the_metrics_port(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"metrics_port": free_port()})
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        # Tell them apart: only the first has issued a signed URL (each app has its own
        # counters when not in multiprocess mode).
        _state(first).metrics.signed_urls.inc()
        answered_by = set()
        for _ in range(40):
            resp = _scrape(settings.metrics_port)
            assert resp.status_code == 200
            answered_by.add(metric_samples(resp.text)[("media_signed_urls_total", ())])
        assert answered_by == {0, 1}  # the kernel spread the connections over both
        assert second.get("/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):
        _scrape(settings.metrics_port)


def test_a_metrics_port_taken_by_another_program_stops_the_start(app_settings: Settings) -> None:
    with socket.socket() as other:  # no SO_REUSEPORT: the port is not shared
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = app_settings.model_copy(update={"metrics_port": other.getsockname()[1]})
        with pytest.raises(OSError, match="in use"), TestClient(create_app(taken)):
            pass


def test_readyz_names_the_parts_not_the_exceptions(
    app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Storage accepts connections (the kernel's backlog) and never answers; closed before
    # the app stops, which resets them, so no check thread outlives the test.
    with socket.socket() as silent, caplog.at_level(logging.WARNING, "media_api.api.health"):
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        broken = app_settings.model_copy(
            update={
                "broker_url": f"redis://127.0.0.1:{free_port()}/0",
                "s3_endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}",
                "readiness_timeout_seconds": 1.0,
            }
        )
        with TestClient(create_app(broken)) as client:
            try:
                resp = client.get("/readyz")
            finally:
                silent.close()
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"] == {"database": "ok", "storage": "timeout", "broker": "error"}
    assert body["detail"] == "unavailable: storage, broker"
    # The log says what happened, one warning per failing part; the body does not.
    logged = [r for r in caplog.records if r.name == "media_api.api.health"]
    assert sorted(str(r.args[0]) for r in logged if isinstance(r.args, tuple)) == [
        "broker",
        "storage",
    ]
    errors = [arg for r in logged if isinstance(r.args, tuple) for arg in r.args]
    names = {type(e).__name__ for e in errors if isinstance(e, BaseException)}
    assert names  # the broker's error, at least
    for exc_name in {*names, "TimeoutError", "OperationalError", "ConnectionRefusedError"}:
        assert exc_name not in resp.text
    for exc in errors:
        if isinstance(exc, BaseException) and str(exc):
            assert str(exc) not in resp.text


def _connections_received(client: redis.Redis) -> int:
    stats = client.info("stats")
    return int(stats["total_connections_received"])


def _local_ports(url: str) -> set[tuple[str, int]]:
    """Local addresses of this process's TCP connections to the host:port of `url`."""
    parts = urlsplit(url.replace("postgresql+asyncpg", "postgresql"))
    port = parts.port
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port
    }


def test_scrapes_and_probes_reuse_pooled_connections(app_settings: Settings) -> None:
    database_url = app_settings.require("database_url")
    storage_url = app_settings.require("s3_endpoint_url")
    broker = redis.Redis.from_url(app_settings.require("broker_url"))
    try:
        with TestClient(create_app(app_settings)) as client:
            # The pools fill on first use.
            assert client.get("/metrics").status_code == 200
            assert client.get("/readyz").status_code == 200
            before = _connections_received(broker)
            seen: dict[str, set[tuple[str, int]]] = {"database": set(), "storage": set()}
            known = {"database": _local_ports(database_url), "storage": _local_ports(storage_url)}
            for _ in range(max(SCRAPES, PROBES)):
                assert client.get("/metrics").status_code == 200
                assert client.get("/readyz").status_code == 200
                seen["database"] |= _local_ports(database_url)
                seen["storage"] |= _local_ports(storage_url)
            after = _connections_received(broker)
    finally:
        broker.close()
    assert after - before <= FEW, f"{after - before} new broker connections"
    # SQLAlchemy's pool and boto3's (urllib3) keep their connections open between requests.
    for part, ports in seen.items():
        assert len(ports - known[part]) <= FEW, f"{part}: {len(ports - known[part])} new"


def test_scrapes_and_probes_recover_when_the_broker_comes_back(
    app_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    child, url = start_redis(tmp_path / "redis", port, tmp_path / "logs")
    try:
        with TestClient(create_app(app_settings.model_copy(update={"broker_url": url}))) as c:

            def broker_up() -> bool:
                return metric_samples(c.get("/metrics").text)[("media_broker_up", ())] == 1

            assert broker_up()  # the pool now holds a connection to it
            assert c.get("/readyz").status_code == 200
            child.stop()
            assert not broker_up()
            down = c.get("/readyz")
            assert down.status_code == 503
            assert down.json()["checks"]["broker"] in {"error", "timeout"}
            child, _ = start_redis(tmp_path / "redis", port, tmp_path / "logs")
            # No connection broken by the outage is handed out again.
            wait_for(broker_up, "scrapes to see the broker again")
            assert c.get("/readyz").status_code == 200
            assert all(broker_up() for _ in range(5))
    finally:
        child.stop()


@pytest.mark.slow
def test_every_process_of_serve_answers_on_the_shared_metrics_port(
    settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    metrics_port = free_port()
    with serve_workers(settings, tmp_path, 2, MEDIA_METRICS_PORT=str(metrics_port)) as (server, _):

        def listeners() -> set[int]:
            """Server processes listening on the metrics port."""
            return {
                child.pid
                for child in psutil.Process(server.proc.pid).children()
                for conn in child.net_connections(kind="tcp")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == metrics_port
            }

        wait_for(lambda: len(listeners()) == 2, "both processes to serve /metrics", timeout=60)
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 404
        caller = new_caller(client)
        uploads = 6
        for n in range(uploads):  # a connection each: either process may take it
            resp = post_image(server.url, caller, png(n, (20, 10)))
            assert resp.status_code == 201, resp.text
        for _ in range(10):  # whichever process answers reports the whole server
            resp = _scrape(metrics_port)
            assert resp.status_code == 200
            created = (("code", ""), ("outcome", "created"))
            assert metric_samples(resp.text)[("media_uploads_total", created)] == uploads
        server.proc.terminate()
        assert server.proc.wait(60) == 0, server.log_tail()
