"""Prometheus metrics of one API process, on a registry of its own (one per app instance).

Counters and histograms are updated in-process; job counts come from Postgres and queue depths
from the broker at scrape time, so every API process reports the same, true numbers for the
whole fleet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UPLOAD_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ApiMetrics:
    """The API's metrics; `registry` is what GET /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.jobs = Gauge(
            "media_jobs",
            "Processing jobs by kind and state (read from Postgres at scrape time).",
            ["kind", "state"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "media_queue_depth",
            "Messages waiting in each queue (read from the broker at scrape time).",
            ["queue"],
            registry=self.registry,
        )
        self.database_up = Gauge(
            "media_database_up",
            "1 if Postgres answered this scrape's job count query, else 0.",
            registry=self.registry,
        )
        self.broker_up = Gauge(
            "media_broker_up",
            "1 if the broker answered this scrape's queue depth read, else 0.",
            registry=self.registry,
        )


async def counted(body: AsyncIterator[bytes], counter: Counter) -> AsyncIterator[bytes]:
    """Pass a request body through, counting its bytes as they are read (so an upload that is
    rejected or cut off midway counts what it sent)."""
    async for chunk in body:
        counter.inc(len(chunk))
        yield chunk
