"""A worker's own /metrics: tasks run in pool children, and the main process serves the sum."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.values import MultiProcessValue

from media_api.devstack import free_port
from media_api.jobs import VARIANTS_TASK, create_producer
from media_api.settings import Settings
from tests.helpers import Samples, metric_samples, new_caller, start_worker, upload, wait_for_status
from tests.stack import settings_env
from workers.metrics import PoolCollector

SUCCESS = (("outcome", "success"), ("task", VARIANTS_TASK))


def _scrape(port: int) -> Samples | None:
    """The worker's metrics, or None while it is not listening (yet, or any more)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return metric_samples(resp.read().decode())
    except OSError:
        return None


def _scrape_until(
    worker: subprocess.Popen[bytes], port: int, done: Callable[[Samples], bool], what: str
) -> Samples:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        samples = _scrape(port)
        if samples is not None and done(samples):
            return samples
        time.sleep(0.2)
    raise AssertionError(f"the worker's metrics never showed {what}: {_scrape(port)}")


def test_a_worker_serves_the_metrics_of_its_pool(
    app_settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    # Earlier tests published jobs no worker consumed; this worker must run exactly ours.
    producer = create_producer(app_settings)
    with producer.connection_for_write() as conn:
        conn.default_channel.queue_purge("thumbnails")
    producer.close()
    port = free_port()
    tmp = tmp_path / "tmp"  # the worker's TMPDIR, where its private metrics folder goes
    tmp.mkdir()
    env = {**settings_env(app_settings), "MEDIA_WORKER_METRICS_PORT": str(port), "TMPDIR": str(tmp)}
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "-Q", "thumbnails", "--no-sweep")
    try:
        _scrape_until(worker, port, lambda _: True, "anything")
        (folder,) = tmp.glob("media-worker-metrics-*")

        caller = new_caller(client)
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (10, 120, 200)).save(buf, "JPEG")
        status, body = upload(client, caller, buf.getvalue())
        assert status == 201
        wait_for_status(client, caller, str(body["id"]), "ready")
        # The task settles the job row before Celery's postrun signal records the task.
        samples = _scrape_until(
            worker,
            port,
            lambda s: s.get(("media_worker_tasks_total", SUCCESS), 0) > 0,
            "a finished make_variants task",
        )
        assert samples[("media_worker_tasks_total", SUCCESS)] == 1
        assert samples[("media_worker_task_seconds_count", SUCCESS)] == 1
        assert samples[("media_worker_task_seconds_sum", SUCCESS)] > 0
        assert samples[("media_worker_tasks_active", (("task", VARIANTS_TASK),))] == 0
        # The task ran in a pool child: its samples are in a file named for another pid than
        # the worker's main process, which served them.
        writers = {p.stem.rpartition("_")[2] for p in folder.glob("histogram_*.db")}
        assert writers
        assert str(worker.pid) not in writers
    finally:
        worker.terminate()
        worker.wait(30)
    assert not folder.exists()
    assert _scrape(port) is None


def test_in_flight_tasks_of_a_dead_pool_child_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child killed mid-task never decrements its gauge; a finished process stands in for it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (os.getpid(), gone.pid):
        value_class = MultiProcessValue(process_identifier=lambda pid=pid: pid)
        labels = (("task",), (VARIANTS_TASK,))
        name = "media_worker_tasks_active"
        value_class("gauge", name, name, *labels, "help", multiprocess_mode="livesum").inc(1)
    assert (tmp_path / f"gauge_livesum_{gone.pid}.db").exists()

    registry = CollectorRegistry()
    registry.register(PoolCollector(tmp_path))
    samples = metric_samples(generate_latest(registry).decode())
    assert samples[("media_worker_tasks_active", (("task", VARIANTS_TASK),))] == 1
    assert not (tmp_path / f"gauge_livesum_{gone.pid}.db").exists()
