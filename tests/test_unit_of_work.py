"""Transaction-bound side uow: publish after commit, compensate after rollback."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from media_api.dev.stack import free_port
from media_api.jobs.producer import JobProducer, create_producer
from media_api.settings import Settings
from media_api.unit_of_work import UnitOfWork
from tests.support.fakes import FakeProducer

IMAGE = uuid.UUID(int=1)
SENT = [
    ("media.make_variants", (str(IMAGE),), "thumbnails"),
    ("media.tag_image", (str(IMAGE),), "tagging"),
]


def _uow(producer: FakeProducer) -> UnitOfWork:
    return UnitOfWork(producer, request_id="req-1")


async def test_commit_publishes_and_runs_post_commit_actions_not_undo() -> None:
    producer = FakeProducer()
    uow = _uow(producer)
    log: list[str] = []

    async def note(what: str) -> None:
        log.append(what)

    uow.send_jobs(IMAGE)
    uow.after_commit(lambda: note("after"))
    uow.undo(lambda: note("undo"))
    assert producer.sent == []  # nothing leaves before the outcome is known
    await uow.committed()
    assert producer.sent == SENT
    assert producer.request_ids == ["req-1", "req-1"]  # into the tasks' logs
    assert log == ["after"]


async def test_rollback_compensates_in_reverse_and_publishes_nothing() -> None:
    producer = FakeProducer()
    uow = _uow(producer)
    log: list[str] = []

    async def note(what: str) -> None:
        log.append(what)

    async def broken() -> None:
        raise OSError("storage down")

    uow.send_jobs(IMAGE)
    uow.undo(lambda: note("first"))
    uow.undo(broken)  # a failing compensation must not stop the others
    uow.undo(lambda: note("last"))
    await uow.rolled_back()
    assert producer.sent == []
    assert log == ["last", "first"]


async def test_publish_failure_is_swallowed() -> None:
    uow = _uow(FakeProducer(fail=True))
    uow.send_jobs(IMAGE)
    await uow.committed()  # logs; the sweep re-dispatches pending jobs later
    assert uow.sends == []


def test_real_producer_fails_fast_when_the_broker_is_down(settings: Settings) -> None:
    dead = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    producer = create_producer(dead)
    try:
        uow = UnitOfWork(JobProducer(producer))
        uow.send_jobs(IMAGE)
        uow.publish()
        assert uow.sends == []
    finally:
        producer.close()


async def test_a_cancelled_request_runs_every_compensation_before_it_ends() -> None:
    """A deploy's grace over: the request is cancelled while compensating. Each action still
    runs, and the request ends only after them (shutdown waits for requests, then closes the
    clients the actions use)."""
    uow = _uow(FakeProducer())
    log: list[str] = []
    first_started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        first_started.set()
        await release.wait()
        log.append("slow")

    async def quick() -> None:
        log.append("quick")

    uow.undo(quick)
    uow.undo(slow)  # runs first (reverse order)
    request = asyncio.ensure_future(uow.rolled_back())
    await first_started.wait()
    request.cancel()
    await asyncio.sleep(0.01)
    assert not request.done()  # still compensating, cancelled or not
    request.cancel()  # and again: still not loose
    await asyncio.sleep(0.01)
    assert not request.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert log == ["slow", "quick"]
