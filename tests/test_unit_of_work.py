"""Transaction-bound side effects: publish after commit, compensate after rollback."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from celery import Celery

from media_api.dev.stack import free_port
from media_api.jobs.producer import create_producer
from media_api.settings import Settings
from media_api.unit_of_work import Effects


class FakeProducer:
    """Records sends instead of talking to a broker."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, tuple[Any, ...], str]] = []
        self.fail = fail

    def send_task(
        self, name: str, args: tuple[Any, ...], queue: str, headers: dict[str, Any] | None = None
    ) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, args, queue))


def _effects(producer: FakeProducer) -> Effects:
    return Effects(cast(Celery, producer))


async def test_commit_publishes_and_runs_post_commit_actions_not_undo() -> None:
    producer = FakeProducer()
    effects = _effects(producer)
    log: list[str] = []

    async def note(what: str) -> None:
        log.append(what)

    effects.enqueue("t", ("id-1",), "q")
    effects.after_commit(lambda: note("after"))
    effects.undo(lambda: note("undo"))
    assert producer.sent == []  # nothing leaves before the outcome is known
    await effects.committed()
    assert producer.sent == [("t", ("id-1",), "q")]
    assert log == ["after"]


async def test_rollback_compensates_in_reverse_and_publishes_nothing() -> None:
    producer = FakeProducer()
    effects = _effects(producer)
    log: list[str] = []

    async def note(what: str) -> None:
        log.append(what)

    async def broken() -> None:
        raise OSError("storage down")

    effects.enqueue("t", ("id-1",), "q")
    effects.undo(lambda: note("first"))
    effects.undo(broken)  # a failing compensation must not stop the others
    effects.undo(lambda: note("last"))
    await effects.rolled_back()
    assert producer.sent == []
    assert log == ["last", "first"]


async def test_publish_failure_is_swallowed() -> None:
    effects = _effects(FakeProducer(fail=True))
    effects.enqueue("t", ("id-1",), "q")
    await effects.committed()  # logs; the sweep re-dispatches pending jobs later
    assert effects.sends == []


def test_real_producer_fails_fast_when_the_broker_is_down(settings: Settings) -> None:
    dead = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    producer = create_producer(dead)
    try:
        effects = Effects(producer)
        effects.enqueue("media.ping", (), "maintenance")
        effects.publish()
        assert effects.sends == []
    finally:
        producer.close()


async def test_a_cancelled_request_runs_every_compensation_before_it_ends() -> None:
    """A deploy's grace over: the request is cancelled while compensating. Each action still
    runs, and the request ends only after them (shutdown waits for requests, then closes the
    clients the actions use)."""
    effects = _effects(FakeProducer())
    log: list[str] = []
    first_started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        first_started.set()
        await release.wait()
        log.append("slow")

    async def quick() -> None:
        log.append("quick")

    effects.undo(quick)
    effects.undo(slow)  # runs first (reverse order)
    request = asyncio.ensure_future(effects.rolled_back())
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
