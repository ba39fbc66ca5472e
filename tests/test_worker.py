"""Celery over the real broker, answered by a real worker process."""

from __future__ import annotations

import pytest

from media_api.jobs.contract import PING_TASK
from media_api.jobs.producer import create_producer
from media_api.settings import Settings


@pytest.mark.usefixtures("worker")
def test_ping_round_trips_through_a_real_worker(settings: Settings) -> None:
    producer = create_producer(settings, with_results=True)
    try:
        result = producer.send_task(PING_TASK, queue="maintenance")
        assert result.get(timeout=30) == "pong"
    finally:
        producer.close()
