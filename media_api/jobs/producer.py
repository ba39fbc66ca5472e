"""The one way to send a job: `JobProducer.send(kind, image_id)`, by name, to its queue.

Every sender uses it: the upload service and reprocess (through the unit of work, after
commit), `media-api reprocess`, the workers' sweep and a task sending its turn again. It never
imports `workers`: the contract (`contract.py`) gives the task name and queue. Also here: the
API's Celery app that publishes, and the broker reads of readiness and /metrics.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from celery import Celery
from kombu import Connection
from kombu.connection import ConnectionPool

from media_api.jobs.contract import DELIVER_TASK, JOBS, QUEUES, WEBHOOKS_QUEUE, JobKind
from media_api.settings import Settings

# Longest wait for a broker's answer (Redis): a publish is a few milliseconds.
BROKER_SOCKET_TIMEOUT_SECONDS = 5


class Publisher(Protocol):
    """What sending needs of a Celery app: the API's producer, a worker's app, or a fake."""

    def send_task(self, name: str, args: Sequence[Any] | None = None, **options: Any) -> object: ...


class JobProducer:
    """Sends a job's task by kind; blocking (the API calls it from a thread)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def send(self, kind: JobKind, image_id: uuid.UUID | str, request_id: str | None = None) -> None:
        """Publish the task of this image's `kind` job; raises when the broker is down."""
        job = JOBS[kind]
        # The request id travels in the message headers into the task's logs.
        headers = {"request_id": request_id}
        self.publisher.send_task(job.task, args=(str(image_id),), queue=job.queue, headers=headers)

    def send_jobs(self, image_id: uuid.UUID | str, request_id: str | None = None) -> None:
        """Publish every job of the image (an upload's, a reprocess's)."""
        for kind in JOBS:
            self.send(kind, image_id, request_id)

    def send_delivery(self, delivery_id: uuid.UUID | str, countdown: float | None = None) -> None:
        """Publish one webhook delivery's task (after `countdown` seconds, for a retry)."""
        self.publisher.send_task(
            DELIVER_TASK, args=(str(delivery_id),), queue=WEBHOOKS_QUEUE, countdown=countdown
        )


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
        # A broker that accepts connections and never answers must not hold a thread, and the
        # pooled connection it uses (publishes, probes and scrapes share the pool), for ever.
        broker_transport_options={
            "socket_connect_timeout": 2,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "max_retries": 0,
        },
    )
    return app


def check_broker(producer: Celery, timeout: float) -> None:
    """Raise unless the broker answers a round trip on a pooled connection (readiness).

    A pooled Redis connection counts as connected whatever the broker's state, so a passive
    declare (one round trip on Redis and AMQP alike) is what tells.
    """
    queue_depths(producer, QUEUES[:1], timeout)


@contextmanager
def _pooled_channel(producer: Celery, timeout: float) -> Iterator[tuple[Connection, Any]]:
    """A connected connection from the producer's pool (the one publishing uses) and its
    default channel, so scrapes and probes open no connection of their own.

    It goes back to the pool afterwards, closed first if anything failed or the broker closed
    its channel: the next user (a probe, a publish) then reconnects instead of inheriting it.
    Any: the kombu stubs' StdChannel lacks the AMQP methods every transport's channel has.
    """
    # The stubs call `app.pool` a ProducerPool; it is the connection pool producers draw on.
    pool = cast(ConnectionPool, producer.pool)
    conn: Connection = pool.acquire(block=True, timeout=timeout)
    channel: Any = None
    healthy = False
    try:
        # No retry: kombu's would first sleep 2 s, past a probe's budget; the next probe or
        # scrape is the retry.
        conn.ensure_connection(max_retries=0, timeout=math.ceil(timeout))
        # Its own channel, kept with it: a new channel per read would, on Redis, be a new
        # socket.
        channel = conn.default_channel
        yield conn, channel
        healthy = getattr(channel, "is_open", True) is not False
    finally:
        if not healthy:
            conn.collect()  # drops the transport without talking to a broker that may be gone
        conn.release()


def queue_depths(producer: Celery, queues: Iterable[str], timeout: float) -> dict[str, int]:
    """Messages waiting on each queue, read on a pooled connection (blocking).

    A passive declare reads the count without creating anything. A queue the broker does not
    know has nothing waiting: Redis drops a list once it is empty, and on RabbitMQ no worker
    may have declared it yet.
    """
    depths: dict[str, int] = {}
    with _pooled_channel(producer, timeout) as (conn, channel):
        reader = channel
        try:
            for queue in queues:
                try:
                    depths[queue] = reader.queue_declare(queue, passive=True).message_count
                except conn.channel_errors:
                    depths[queue] = 0
                    # RabbitMQ closes a channel whose passive declare failed (Redis does not):
                    # the rest of this read goes on a fresh one, and the connection, its
                    # default channel dead, is closed before it goes back to the pool.
                    if getattr(reader, "is_open", True) is False:
                        reader = conn.channel()
        finally:
            if reader is not channel:
                reader.close()
    return depths
