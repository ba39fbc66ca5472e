"""The API's side of the job queue: sends tasks by name, only after the database commit.

The API never imports `workers`: it knows task names and queues, nothing else. Sending after
commit means a worker never sees an id whose row is not visible yet; if the broker is down at
that moment, the job rows stay `pending` and the worker's sweep re-dispatches them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from media_api.settings import Settings

log = logging.getLogger(__name__)

PING_TASK = "media.ping"


def create_producer(settings: Settings) -> Celery:
    """A Celery app used only to publish; it never consumes."""
    app = Celery(
        "media-api",
        broker=settings.require("broker_url"),
        backend=settings.celery_result_backend,
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Publishing must fail fast when the broker is down: the sweep covers the gap.
        broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        task_publish_retry=False,
    )
    return app


def check_broker(producer: Celery, timeout: float) -> None:
    """Raise unless the broker accepts a connection (readiness)."""
    with producer.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=math.ceil(timeout))


@dataclass
class JobBuffer:
    """Task sends collected during a request and published once its transaction committed."""

    producer: Celery
    pending: list[tuple[str, tuple[Any, ...], str]] = field(default_factory=list)

    def enqueue(self, task: str, args: tuple[Any, ...], queue: str) -> None:
        """Remember a send; nothing leaves the process until `flush`."""
        self.pending.append((task, args, queue))

    def flush(self) -> None:
        """Publish everything; a broker failure is logged, the sweep retries later."""
        sends, self.pending = self.pending, []
        for task, args, queue in sends:
            try:
                self.producer.send_task(task, args=args, queue=queue)
            except Exception:
                log.warning("could not publish %s%r; the sweep will retry", task, args)

    def discard(self) -> None:
        """Drop sends of a transaction that rolled back."""
        self.pending.clear()
