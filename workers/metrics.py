"""Prometheus metrics of one worker: task outcomes, durations and tasks in flight.

The prefork pool runs tasks in child processes, whose in-memory counters the main process
cannot see. prometheus_client's multiprocess mode has every process write its samples to files
in one directory (PROMETHEUS_MULTIPROC_DIR), and the main process sums those files when it is
scraped. The directory is a fresh private temp dir per worker, deleted on shutdown, so a
restart or a second worker on the same host never adds in another worker's stale files.
"""

from __future__ import annotations

import atexit
import json
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
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("workers.metrics")

TASK_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
DIR_PREFIX = "media-worker-metrics-"
# Celery's task_postrun states as label values; IGNORED or REJECTED (rare) become "other".
OUTCOMES = {"SUCCESS": "success", "RETRY": "retry", "FAILURE": "failure"}
# A task whose pool child died under it (hard time limit, OOM kill): no postrun ever came.
LOST = "lost"
ACTIVE = "media_worker_tasks_active"


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
        task_metrics = TaskMetrics()
        registry = CollectorRegistry()
        registry.register(PoolCollector(directory, task_metrics.tasks))
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"cannot serve worker metrics on {host}:{port}: {exc}") from exc
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    task_metrics.record()
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


class TaskMetrics:
    """Every task counted and timed by name and outcome, in whichever process runs it.

    Made after `_enable_multiprocess` (registry=None): the values live in the files, where the
    main process's collector reads them.
    """

    def __init__(self) -> None:
        self.tasks = Counter(
            "media_worker_tasks",
            "Tasks finished, by task name and outcome (success, retry, failure, lost, other).",
            ["task", "outcome"],
            registry=None,
        )
        self.seconds = Histogram(
            "media_worker_task_seconds",
            "Task run time, by task name and outcome.",
            ["task", "outcome"],
            buckets=TASK_SECONDS_BUCKETS,
            registry=None,
        )
        self.active = Gauge(
            ACTIVE,
            "Tasks running right now in this worker's processes.",
            ["task"],
            multiprocess_mode="livesum",
            registry=None,
        )

    def record(self) -> None:
        """Connect to Celery's task signals."""
        started: dict[str, float] = {}

        def before(task_id: str, task: Any, **_: Any) -> None:
            started[task_id] = time.perf_counter()
            self.active.labels(task=task.name).inc()

        def after(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
            began = started.pop(task_id, None)
            outcome = OUTCOMES.get(state or "", "other")
            self.tasks.labels(task=task.name, outcome=outcome).inc()
            if began is not None:
                self.active.labels(task=task.name).dec()
                elapsed = time.perf_counter() - began
                self.seconds.labels(task=task.name, outcome=outcome).observe(elapsed)

        task_prerun.connect(before, weak=False)
        task_postrun.connect(after, weak=False)


class PoolCollector(Collector):
    """The multiprocess collector, after burying the processes that died since the last scrape.

    A pool child killed mid-task (hard time limit, OOM) never decrements its in-flight gauge nor
    counts an outcome: its counters and histograms stay in the sum, but its live gauges must go,
    and the tasks they still held count as `lost` (written by this, the main process). Billiard
    offers the main process no public hook for a child's exit, so this checks at scrape time.
    """

    def __init__(self, directory: Path, tasks: Counter) -> None:
        self.directory = directory
        self._tasks = tasks
        self._inner = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
        # Scrapes run in threads of their own: one at a time buries a child, so each lost task
        # counts once and no scrape trips over a file another one just removed.
        self._burying = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._burying:
            for pid in _pids_with_live_gauges(self.directory):
                if not _alive(pid):
                    self._bury(pid)
        metrics: Iterable[Metric] = self._inner.collect()  # type: ignore[no-untyped-call]
        return metrics

    def _bury(self, pid: int) -> None:
        """Count the tasks a dead child still had in flight as lost, then drop its live gauges."""
        for path in self.directory.glob(f"gauge_live*_{pid}.db"):
            try:
                values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
                for key, value, _, _ in values:
                    metric, _, labels, _ = json.loads(key)
                    if metric == ACTIVE and value > 0:
                        self._tasks.labels(task=labels["task"], outcome=LOST).inc(value)
            except FileNotFoundError:
                continue  # gone already (the worker is stopping): nothing left to count
            path.unlink(missing_ok=True)


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
