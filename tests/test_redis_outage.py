"""Rate limits fail open: with every limit at its default, uploads succeed while the Redis that
holds the counters (and brokers the jobs) is stopped or hung, and the errors are counted."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media_api.dev import stack as devstack
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import job_states, new_caller, upload
from tests.support.images import png
from tests.support.metrics import metric_samples


@pytest.fixture
def redis_child(tmp_path: Path) -> Iterator[tuple[devstack.Child, int]]:
    """A Redis of this test's own, to stop and hang."""
    port = devstack.free_port()
    child, _ = devstack.start_redis(tmp_path / "redis", port, tmp_path / "logs")
    yield child, port
    if child.popen.poll() is None:
        os.kill(child.popen.pid, signal.SIGCONT)
    child.stop()


def _defaults(app_settings: Settings, port: int) -> Settings:
    """The session's API with its own Redis and every limit at its default."""
    defaults = Settings.model_fields
    limits = {
        name: defaults[name].get_default(call_default_factory=True)
        for name in defaults
        if name.startswith("rate_limit_")
    }
    assert limits["rate_limit_uploads_per_minute"] > 0
    return app_settings.model_copy(
        update={**limits, "broker_url": f"redis://127.0.0.1:{port}/0", "redis_url": None}
    )


def _ratelimit_errors(client: TestClient) -> float:
    samples = metric_samples(client.get("/metrics").text)
    return samples.get(("media_ratelimit_errors_total", ()), 0.0)


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_uploads_succeed_while_the_limits_redis_is_out(
    app_settings: Settings, redis_child: tuple[devstack.Child, int], outage: str
) -> None:
    child, port = redis_child
    with TestClient(create_app(_defaults(app_settings, port))) as client:
        caller = new_caller(client)
        assert upload(client, caller, png(800))[0] == 201  # counted in Redis
        assert _ratelimit_errors(client) == 0
        if outage == "stopped":
            child.stop()
        else:
            os.kill(child.popen.pid, signal.SIGSTOP)
        status, body = upload(client, caller, png(801))
        assert status == 201, body
        assert job_states(body) == {"thumbnails": "pending", "tagging": "pending"}  # swept later
        listing = client.get("/v1/images", headers=caller.headers)
        assert listing.status_code == 200
        assert _ratelimit_errors(client) >= 3  # the upload's two limits and the listing's
