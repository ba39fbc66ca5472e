"""Celery over the real broker, answered by a real worker process."""

from __future__ import annotations

import pytest

from media_api.jobs import PING_TASK, JobBuffer, create_producer
from media_api.settings import Settings


@pytest.mark.usefixtures("worker")
def test_ping_round_trips_through_a_real_worker(settings: Settings) -> None:
    producer = create_producer(settings)
    try:
        result = producer.send_task(PING_TASK, queue="maintenance")
        assert result.get(timeout=30) == "pong"
    finally:
        producer.close()


@pytest.mark.usefixtures("worker")
def test_job_buffer_publishes_only_on_flush(settings: Settings) -> None:
    producer = create_producer(settings)
    try:
        buffer = JobBuffer(producer)
        buffer.enqueue(PING_TASK, (), "maintenance")
        assert buffer.pending
        buffer.discard()
        assert buffer.pending == []
        buffer.enqueue(PING_TASK, (), "maintenance")
        buffer.flush()
        assert buffer.pending == []
    finally:
        producer.close()


def test_flush_survives_a_dead_broker(settings: Settings) -> None:
    from media_api.devstack import free_port

    dead = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    producer = create_producer(dead)
    try:
        buffer = JobBuffer(producer)
        buffer.enqueue(PING_TASK, (), "maintenance")
        buffer.flush()  # logs and returns: the job rows stay pending for the sweep
        assert buffer.pending == []
    finally:
        producer.close()
