"""The API's side of the job queue: sends tasks by name, only after the database commit.

The API never imports `workers`: it knows task names and queues, nothing else. Sending after
commit means a worker never sees an id whose row is not visible yet; if the broker is down at
that moment, the job rows stay `pending` and the worker's sweep re-dispatches them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from celery import Celery

from media_api.settings import Settings

PING_TASK = "media.ping"
VARIANTS_TASK = "media.make_variants"
TAG_TASK = "media.tag_image"

# Each job kind: the task that performs it and the queue it runs on (the API publishes by
# name; it never imports the workers).
JOB_TASKS: dict[str, tuple[str, str]] = {
    "thumbnails": (VARIANTS_TASK, "thumbnails"),
    "tagging": (TAG_TASK, "tagging"),
}
# Every queue the workers consume (they declare these; /metrics reports their depth).
QUEUES = ("thumbnails", "tagging", "maintenance")


def create_producer(settings: Settings, *, with_results: bool = False) -> Celery:
    """A Celery app used only to publish; it never consumes.

    The API never waits for task results (job state lives in Postgres), so by default it has no
    result backend: with one, every send also subscribes for the result, and a broker outage
    then blocks the send for the backend's reconnect loop (seconds) instead of failing fast.
    """
    app = Celery(
        "media-api",
        broker=settings.require("broker_url"),
        backend=settings.celery_result_backend if with_results else None,
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # Publishing must fail fast when the broker is down: the request is not held hostage,
        # the job rows stay pending and the workers' sweep dispatches them later.
        task_publish_retry=False,
        broker_connection_timeout=2,
        broker_transport_options={"socket_connect_timeout": 2, "max_retries": 0},
    )
    return app


def check_broker(producer: Celery, timeout: float) -> None:
    """Raise unless the broker accepts a connection (readiness)."""
    with producer.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=math.ceil(timeout))


def queue_depths(producer: Celery, queues: Iterable[str], timeout: float) -> dict[str, int]:
    """Messages waiting on each queue, over one short connection (blocking).

    A passive declare reads the count without creating anything. A queue the broker does not
    know has nothing waiting: Redis drops a list once it is empty, and on RabbitMQ no worker
    may have declared it yet.
    """
    depths: dict[str, int] = {}
    with producer.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=math.ceil(timeout))
        # Any: the kombu stubs' StdChannel lacks the AMQP methods every transport's channel has.
        channel: Any = conn.channel()
        try:
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue, passive=True).message_count
                except conn.channel_errors:
                    depths[queue] = 0
                    # RabbitMQ closes a channel whose passive declare failed; Redis does not.
                    if getattr(channel, "is_open", True) is False:
                        channel = conn.channel()
        finally:
            channel.close()
    return depths
