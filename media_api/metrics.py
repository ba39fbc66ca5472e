"""Prometheus metrics of the API: counters and histograms kept by the request-handling
processes (summed across `serve --workers N` through a private multiprocess directory), and
job counts and queue depths read at scrape time, never stored. Why it is built this way:
docs/architecture.md, "Metrics across processes".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

UPLOAD_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_PREFIX = "media-api-metrics-"


@contextmanager
def shared_across(processes: int) -> Iterator[None]:
    """With several server processes, a fresh private directory for their metrics files, in
    the environment they are started with; deleted when the block ends.

    uvicorn spawns its workers as fresh interpreters after this, so they see the variable
    when they first import prometheus_client, which is when it chooses file-backed values.
    Fresh, whatever the environment said: files of another run would add into the sum.
    """
    if processes <= 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix=DIR_PREFIX)
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class ScrapeReadings:
    """What one scrape read; None where the source did not answer in time."""

    jobs: Sequence[tuple[str, str, int]] | None
    queue_depths: Mapping[str, int] | None


class ReadingsCollector(Collector):
    """The scrape-time gauges, from this scrape's readings only: an outage leaves its series
    out (no stale numbers) and says so in its `_up` gauge."""

    def __init__(self, readings: ScrapeReadings) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "media_jobs",
            "Processing jobs by kind and state (read from Postgres at scrape time).",
            labels=["kind", "state"],
        )
        for kind, state, n in self.readings.jobs or ():
            jobs.add_metric([kind, state], n)
        queue_depth = GaugeMetricFamily(
            "media_queue_depth",
            "Messages waiting in each queue (read from the broker at scrape time).",
            labels=["queue"],
        )
        for queue, n in (self.readings.queue_depths or {}).items():
            queue_depth.add_metric([queue], n)
        database_up = GaugeMetricFamily(
            "media_database_up",
            "1 if Postgres answered this scrape's job count query, else 0.",
            value=0 if self.readings.jobs is None else 1,
        )
        broker_up = GaugeMetricFamily(
            "media_broker_up",
            "1 if the broker answered this scrape's queue depth read, else 0.",
            value=0 if self.readings.queue_depths is None else 1,
        )
        return [jobs, queue_depth, database_up, broker_up]


class ApiMetrics:
    """The API's counters and histograms, and `render`, which is what GET /metrics serves."""

    def __init__(self) -> None:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and prometheus_values.ValueClass is prometheus_values.MutexValue:
            # The variable came after prometheus_client's import: counts would stay in memory,
            # and scrapes, which read the files, would never show them.
            raise RuntimeError(f"{MULTIPROC_ENV} must be set before prometheus_client loads")
        # In multiprocess mode the values live in files whatever the registry; this one then
        # only keeps the names unique and is not rendered (it would duplicate the files' sums).
        self.registry = CollectorRegistry()
        self._counted: Collector = (
            MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
            if directory
            else self.registry
        )
        self.uploads = Counter(
            "media_uploads",
            "Upload requests by outcome (created, duplicate, rejected) and problem code.",
            ["outcome", "code"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "media_upload_bytes", "Bytes of newly stored originals.", registry=self.registry
        )
        self.upload_received_bytes = Counter(
            "media_upload_received_bytes",
            "Request body bytes read by upload requests, rejected ones included.",
            registry=self.registry,
        )
        self.upload_seconds = Histogram(
            "media_upload_seconds",
            "Time to handle an upload, body included.",
            buckets=UPLOAD_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.signed_urls = Counter(
            "media_signed_urls", "Presigned URLs issued.", registry=self.registry
        )
        self.ratelimit_errors = Counter(
            "media_ratelimit_errors",
            "Rate-limit checks that failed open (their Redis erred or hung).",
            registry=self.registry,
        )

    def render(self, readings: ScrapeReadings) -> bytes:
        """Prometheus text: the counters (of every server process in multiprocess mode; a
        process that exited, or a worker uvicorn replaced, stays in the sum, as counters must)
        and the gauges of this scrape's readings."""
        registry = CollectorRegistry()
        registry.register(self._counted)
        registry.register(ReadingsCollector(readings))
        return generate_latest(registry)


async def counted(body: AsyncIterator[bytes], counter: Counter) -> AsyncIterator[bytes]:
    """Pass a request body through, counting its bytes as they are read (so an upload that is
    rejected or cut off midway counts what it sent)."""
    async for chunk in body:
        counter.inc(len(chunk))
        yield chunk
