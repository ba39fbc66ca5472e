"""Prometheus metrics of one worker: task outcomes, durations and tasks in flight.

The prefork pool runs tasks in child processes, whose in-memory counters the main process
cannot see. prometheus_client's multiprocess mode has every process write its samples to files
in one directory (PROMETHEUS_MULTIPROC_DIR), and the main process sums those files when it is
scraped. The directory is a fresh private temp dir per worker, deleted on shutdown, so a
restart or a second worker on the same host never adds in another worker's stale files.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery.signals import task_postrun, task_prerun, worker_shutdown
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import values as prometheus_values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger("workers.metrics")

TASK_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
DIR_PREFIX = "media-worker-metrics-"
# Celery's task_postrun states as label values; IGNORED or REJECTED (rare) become "other".
OUTCOMES = {"SUCCESS": "success", "RETRY": "retry", "FAILURE": "failure"}


class WorkerMetrics:
    """Owns the multiprocess directory and the HTTP server; `close` undoes both."""

    def __init__(self, directory: Path, server: WSGIServer, thread: threading.Thread) -> None:
        self.directory = directory
        self.port: int = server.server_address[1]
        self._server = server
        self._thread = thread
        self._owner = os.getpid()  # forked pool children inherit this object; only we clean up
        self._closed = False

    def close(self) -> None:
        """Stop serving and delete the directory (idempotent; a no-op in pool children)."""
        if os.getpid() != self._owner or self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def export_metrics(host: str, port: int) -> WorkerMetrics:
    """Switch prometheus_client to multiprocess mode, record every task, and serve the sum on
    host:port from this (the main) process. Must run before the pool forks its children.

    The port is bound here, not in a worker signal, so a taken port stops the worker at once
    instead of being logged and ignored by Celery's signal dispatch.
    """
    directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
    try:
        _enable_multiprocess(directory)
        registry = CollectorRegistry()
        registry.register(PoolCollector(directory))
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"cannot serve worker metrics on {host}:{port}: {exc}") from exc
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    _record_tasks()
    metrics = WorkerMetrics(directory, server, thread)
    worker_shutdown.connect(lambda **_: metrics.close(), weak=False)
    atexit.register(metrics.close)  # also when the worker stops before it ever started
    log.info("worker metrics on http://%s:%d/metrics (files in %s)", host, metrics.port, directory)
    return metrics


def _enable_multiprocess(directory: Path) -> None:
    """Point prometheus_client at `directory`, in this process and every child it forks."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client chooses file-backed or in-memory values when it is first imported,
    # which was before the variable was set; metrics made from now on use the new choice.
    prometheus_values.ValueClass = prometheus_values.get_value_class()  # type: ignore[no-untyped-call]


def _record_tasks() -> None:
    """Count and time every task by name and outcome, in whichever process runs it."""
    # registry=None: the values live in the files, where the main process's collector reads them.
    tasks = Counter(
        "media_worker_tasks",
        "Tasks finished, by task name and outcome (success, retry, failure, other).",
        ["task", "outcome"],
        registry=None,
    )
    seconds = Histogram(
        "media_worker_task_seconds",
        "Task run time, by task name and outcome.",
        ["task", "outcome"],
        buckets=TASK_SECONDS_BUCKETS,
        registry=None,
    )
    active = Gauge(
        "media_worker_tasks_active",
        "Tasks running right now in this worker's processes.",
        ["task"],
        multiprocess_mode="livesum",
        registry=None,
    )
    started: dict[str, float] = {}

    def before(task_id: str, task: Any, **_: Any) -> None:
        started[task_id] = time.perf_counter()
        active.labels(task=task.name).inc()

    def after(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
        began = started.pop(task_id, None)
        outcome = OUTCOMES.get(state or "", "other")
        tasks.labels(task=task.name, outcome=outcome).inc()
        if began is not None:
            active.labels(task=task.name).dec()
            seconds.labels(task=task.name, outcome=outcome).observe(time.perf_counter() - began)

    task_prerun.connect(before, weak=False)
    task_postrun.connect(after, weak=False)


class PoolCollector(Collector):
    """The multiprocess collector, after dropping the live-gauge files of dead processes.

    A pool child that is killed mid-task never decrements its in-flight gauge: its counters and
    histograms stay in the sum, but its live gauges must go (`mark_process_dead`). Billiard
    offers the main process no public hook for a child's exit, so this checks at scrape time.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._inner = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        for pid in _pids_with_live_gauges(self.directory):
            if not _alive(pid):
                mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
        metrics: Iterable[Metric] = self._inner.collect()  # type: ignore[no-untyped-call]
        return metrics


def _pids_with_live_gauges(directory: Path) -> set[int]:
    """Pids named by live-gauge files (`gauge_livesum_<pid>.db`, ...)."""
    pids = set()
    for path in directory.glob("gauge_live*_*.db"):
        tail = path.stem.rpartition("_")[2]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
