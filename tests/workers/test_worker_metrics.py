"""A worker's own /metrics: tasks run in pool children, and the main process serves the sum."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.values import MultiProcessValue

from media_api.dev.stack import free_port
from media_api.jobs.contract import THUMBNAILS
from media_api.jobs.producer import create_producer
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import job_states, new_caller, upload
from tests.support.metrics import Samples, metric_samples
from tests.support.stack import settings_env
from tests.support.waiting import poll, wait_for, wait_for_status
from tests.support.workers import SLOW_PRESETS, start_worker, upload_slow
from workers.metrics import PoolCollector, TaskMetrics

SUCCESS = (("outcome", "success"), ("task", THUMBNAILS.task))
LOST = (("outcome", "lost"), ("task", THUMBNAILS.task))


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

    def scrape() -> Samples | None:
        assert worker.poll() is None, "the worker exited"
        return _scrape(port)

    samples = poll(scrape, lambda got: got is not None and done(got), what, 60, interval=0.2)
    assert samples is not None
    return samples


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
        assert samples[("media_worker_tasks_active", (("task", THUMBNAILS.task),))] == 0
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


@pytest.fixture
def multiprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """prometheus_client in multiprocess mode on a folder of this test's own, as a worker's main
    process runs it (and only for this test)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(prometheus_values, "ValueClass", MultiProcessValue())
    return tmp_path


def _in_flight(pid: int, tasks: int = 1) -> None:
    """What a pool child `pid` writes while it runs `tasks` make_variants tasks."""
    value_class = MultiProcessValue(process_identifier=lambda: pid)
    labels = (("task",), (THUMBNAILS.task,))
    name = "media_worker_tasks_active"
    value_class("gauge", name, name, *labels, "help", multiprocess_mode="livesum").inc(tasks)


def _pool_registry(folder: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PoolCollector(folder, TaskMetrics().tasks))
    return registry


def _never_a_pid(n: int) -> list[int]:
    """Pids no process can have (above the kernel's pid_max): children that are gone."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return [pid_max + 1 + i for i in range(n)]


def test_in_flight_tasks_of_a_dead_pool_child_are_dropped_and_counted_lost(
    multiprocess: Path,
) -> None:
    # A child killed mid-task never decrements its gauge; a finished process stands in for it.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _in_flight(os.getpid())
    _in_flight(gone.pid)
    assert (multiprocess / f"gauge_livesum_{gone.pid}.db").exists()

    registry = _pool_registry(multiprocess)
    samples = metric_samples(generate_latest(registry).decode())
    assert samples[("media_worker_tasks_active", (("task", THUMBNAILS.task),))] == 1
    assert samples[("media_worker_tasks_total", LOST)] == 1
    assert not (multiprocess / f"gauge_livesum_{gone.pid}.db").exists()
    # Counted once: the next scrape finds no dead child left to bury.
    samples = metric_samples(generate_latest(registry).decode())
    assert samples[("media_worker_tasks_total", LOST)] == 1


def _scrape_at_once(registry: CollectorRegistry, scrapers: int) -> list[Exception]:
    """`scrapers` scrapes started together (the worker serves each in a thread); their errors."""
    start = threading.Barrier(scrapers)
    errors: list[Exception] = []

    def scrape() -> None:
        start.wait()
        try:
            generate_latest(registry)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_concurrent_scrapes_bury_each_dead_child_once(multiprocess: Path) -> None:
    registry = _pool_registry(multiprocess)
    dead = _never_a_pid(3 * 64)
    for batch in (dead[:64], dead[64:128], dead[128:]):
        for pid in batch:
            _in_flight(pid)
        # Every scrape finds the same dead children: each must bury them or see them buried,
        # without failing on a file another one removed, or counting a task twice.
        assert _scrape_at_once(registry, 4) == []
    samples = metric_samples(generate_latest(registry).decode())
    assert samples[("media_worker_tasks_total", LOST)] == len(dead)
    assert list(multiprocess.glob("gauge_live*")) == []


def test_a_task_whose_pool_child_is_killed_counts_as_lost(
    own_broker: Settings, tmp_path: Path
) -> None:
    settings = own_broker
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **settings_env(settings),
        "MEDIA_WORKER_METRICS_PORT": str(port),
        "TMPDIR": str(tmp),
        # Big presets make the task take seconds, so it can be caught in the middle.
        **SLOW_PRESETS,
    }
    log = tmp_path / "worker.log"
    worker = start_worker(
        env, log, "-Q", "thumbnails", "--no-sweep", "--concurrency", "1", new_session=True
    )
    try:
        _scrape_until(worker, port, lambda _: True, "anything")
        with TestClient(create_app(settings)) as client:
            caller = new_caller(client)
            image_id = upload_slow(client, caller)

            def running() -> bool:
                got = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
                return job_states(got)["thumbnails"] == "running"

            wait_for(running, "the task to start")
        # What a hard time limit or the OOM killer does to the pool child running it.
        (child,) = psutil.Process(worker.pid).children()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # The next scrape finds the child gone with a task in flight.
        _scrape_until(
            worker,
            port,
            lambda s: s.get(("media_worker_tasks_total", LOST), 0) >= 1,
            "the killed task counted as lost",
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the task, redelivered, may be running again
        worker.wait(10)
