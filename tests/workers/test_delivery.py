"""Accepted uploads always finish: across a broker outage and a worker killed mid-task.

Each test has its own Redis broker and worker processes, so stopping them does not disturb
the rest of the session.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media_api.dev import stack as devstack
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import job_states, new_caller, upload
from tests.support.stack import settings_env
from tests.support.waiting import job_leaves, wait_for_status
from tests.support.workers import SLOW_PRESETS, start_worker, upload_slow, wait_for_worker

QUICK = {
    "sweep_interval_seconds": 0.5,
    "job_pending_grace_seconds": 1.0,
    "job_running_timeout_seconds": 3.0,
}


def _quick_on(app_settings: Settings, port: int) -> Settings:
    """The API's settings on this test's Redis, with the quick sweep."""
    return app_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0", **QUICK})


def _env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    env.update({f"MEDIA_{name.upper()}": str(value) for name, value in QUICK.items()})
    return env


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Path, int, list[devstack.Child]]]:
    """A Redis of this test's own: (data dir, port, [the running child])."""
    port = devstack.free_port()
    child, _ = devstack.start_redis(tmp_path / "redis", port, tmp_path / "logs")
    running = [child]
    yield tmp_path / "redis", port, running
    for proc in running:
        proc.stop()


def test_upload_during_a_broker_outage_still_ends_ready(
    app_settings: Settings, broker: tuple[Path, int, list[devstack.Child]], tmp_path: Path
) -> None:
    data_dir, port, running = broker
    settings = _quick_on(app_settings, port)
    worker = start_worker(_env(settings), tmp_path / "worker.log", "-Q", "thumbnails,maintenance")
    try:
        wait_for_worker(settings, worker, tmp_path / "worker.log")
        running.pop().stop()  # the broker goes down
        with TestClient(create_app(settings)) as client:
            caller = new_caller(client)
            buf = io.BytesIO()
            Image.new("RGB", (640, 480), (200, 30, 30)).save(buf, "JPEG")
            status, body = upload(client, caller, buf.getvalue())
            assert status == 201  # accepted although nothing could be published
            assert job_states(body)["thumbnails"] == "pending"
            time.sleep(1.5)
            child, _ = devstack.start_redis(data_dir, port, tmp_path / "logs")  # back up
            running.append(child)
            ready = wait_for_status(client, caller, str(body["id"]), "ready", timeout=90)
        assert job_states(ready)["thumbnails"] == "done"
    finally:
        worker.terminate()
        worker.wait(30)


def test_worker_killed_mid_task_is_recovered_by_the_sweep(
    app_settings: Settings, broker: tuple[Path, int, list[devstack.Child]], tmp_path: Path
) -> None:
    _, port, _ = broker
    settings = _quick_on(app_settings, port)
    log = tmp_path / "worker.log"
    # Big presets make the task take seconds, so it can be caught in the middle.
    env = {**_env(settings), **SLOW_PRESETS}
    victim = start_worker(env, log, "-Q", "thumbnails", "--no-sweep", new_session=True)
    rescuer = None
    try:
        wait_for_worker(settings, victim, log)
        with TestClient(create_app(settings)) as client:
            caller = new_caller(client)
            image_id = upload_slow(client, caller, 6500)
            # Wait until the victim is inside the task, then kill its whole process group.
            state = job_leaves(client, caller, image_id, "thumbnails", "pending", timeout=30)
            assert state == "running", f"the task finished before it could be killed: {state}"
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            assert (
                client.get(f"/v1/images/{image_id}", headers=caller.headers).json()["status"]
                == "processing"
            )

            rescuer = start_worker(env, tmp_path / "rescuer.log", "-Q", "thumbnails")
            ready = wait_for_status(client, caller, image_id, "ready", timeout=120)
        (job,) = [j for j in ready["jobs"] if j["kind"] == "thumbnails"]  # type: ignore[union-attr]
        assert job["state"] == "done"
        assert job["attempts"] >= 2  # the killed attempt counted, and the rerun finished it
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        if rescuer is not None:
            rescuer.terminate()
            rescuer.wait(30)
