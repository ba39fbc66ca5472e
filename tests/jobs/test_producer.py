"""One producer for every sender: by kind, to the contract's task and queue, with the request id."""

from __future__ import annotations

import uuid

import pytest

from media_api.jobs.contract import JOBS, JobKind
from tests.support.fakes import FakeProducer

IMAGE = uuid.UUID(int=7)


def test_send_publishes_the_kinds_task_on_its_queue_with_the_request_id() -> None:
    producer = FakeProducer()
    producer.send(JobKind.TAGGING, IMAGE, request_id="req-9")
    assert producer.sent == [("media.tag_image", (str(IMAGE),), "tagging")]
    assert producer.request_ids == ["req-9"]


def test_send_jobs_publishes_every_kind_in_contract_order() -> None:
    producer = FakeProducer()
    producer.send_jobs(str(IMAGE))
    assert producer.sent == [(job.task, (str(IMAGE),), job.queue) for job in JOBS.values()]
    assert producer.request_ids == [None] * len(JOBS)


def test_a_broker_outage_is_the_callers_to_handle() -> None:
    with pytest.raises(ConnectionError):
        FakeProducer(fail=True).send(JobKind.THUMBNAILS, IMAGE)
