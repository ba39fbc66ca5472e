"""Webhook deliveries by real workers to a receiver on a local port that verifies every
signature: retries carry the same `webhook-id`, an exhausted schedule turns the endpoint off
and announces it, a killed worker's delivery is still delivered, and private addresses are
refused unless allowed."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from media_api.dev.stack import free_port, start_redis
from media_api.events.models import EventType, WebhookDelivery
from media_api.jobs.contract import DELIVER_TASK, WEBHOOKS_QUEUE
from media_api.jobs.producer import create_producer
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller
from tests.support.fakes import FakeProducer
from tests.support.stack import settings_env
from tests.support.waiting import poll, wait_for
from tests.support.webhooks import Receiver, announce, receiving
from tests.support.workers import start_worker, wait_for_worker
from workers.addresses import refusal
from workers.context import context
from workers.webhooks import deliver

# Three quick retries (four attempts), a short timeout, and a sweep that looks often.
QUICK: dict[str, Any] = {
    "webhook_allow_private": True,
    "webhook_retry_schedule": (0.2, 0.2, 0.2),
    "webhook_timeout_seconds": 2.0,
    "sweep_interval_seconds": 0.5,
    "job_pending_grace_seconds": 1.0,
}
QUICK_ENV = {
    "MEDIA_WEBHOOK_ALLOW_PRIVATE": "true",
    "MEDIA_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "MEDIA_WEBHOOK_TIMEOUT_SECONDS": "2",
    "MEDIA_SWEEP_INTERVAL_SECONDS": "0.5",
    "MEDIA_JOB_PENDING_GRACE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def quick(app_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The API and a worker of the `webhooks` queue (no sweep) with QUICK, on a Redis of
    this module's own."""
    tmp = tmp_path_factory.mktemp("webhooks")
    redis, url = start_redis(tmp / "redis", free_port(), tmp / "logs")
    settings = app_settings.model_copy(update={"broker_url": url, **QUICK})
    log = tmp / "worker.log"
    env = {**settings_env(settings), **QUICK_ENV}
    worker = start_worker(env, log, "-Q", "webhooks", "--no-sweep", new_session=True)
    try:
        wait_for_worker(settings, worker, log)
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        _kill(worker)  # quicker than a warm shutdown; the broker goes with it
        redis.stop()


def _kill(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker started in a session of its own, with its pool."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)


def _wait_for_workers(settings: Settings, count: int) -> None:
    """Until `count` workers answer a ping."""
    producer = create_producer(settings)
    try:
        poll(lambda: len(producer.control.ping(timeout=0.5)), lambda n: n >= count, "workers")
    finally:
        producer.close()


def _create(
    client: TestClient, caller: Caller, receiver: Receiver, **body: object
) -> dict[str, Any]:
    """An endpoint for the receiver, which then knows its secret."""
    resp = client.post("/v1/webhooks", headers=caller.headers, json={"url": receiver.url, **body})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    receiver.secret = created["secret"]
    return created


def _delivery(client: TestClient, caller: Caller, webhook_id: str) -> dict[str, Any]:
    """The endpoint's one delivery."""
    resp = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=caller.headers)
    (delivery,) = resp.json()["items"]
    assert isinstance(delivery, dict)
    return delivery


def _settled(client: TestClient, caller: Caller, webhook_id: str, state: str) -> dict[str, Any]:
    return poll(
        lambda: _delivery(client, caller, webhook_id),
        lambda d: d["state"] == state,
        f"the delivery to be {state}",
        timeout=30,
    )


def test_a_failing_receiver_gets_the_same_message_until_it_succeeds(quick: TestClient) -> None:
    client, caller = quick, new_caller(quick)
    data = {"image_id": str(uuid.uuid4()), "status": "ready", "variants": ["thumb"]}
    with receiving(lambda n: 500 if n <= 3 else 204) as receiver:
        webhook = _create(client, caller, receiver)
        announce(client, caller, EventType.IMAGE_READY, data)
        delivery = _settled(client, caller, webhook["id"], "delivered")
    assert receiver.bad == []  # every signature verified
    assert receiver.ids() == [f"msg_{delivery['id']}"] * 4
    payload = receiver.received[0].payload
    assert (payload["type"], payload["data"]) == ("image.ready", data)
    assert payload["timestamp"].endswith("Z")
    assert (delivery["attempts"], delivery["type"], delivery["last_error"]) == (
        4,
        "image.ready",
        None,
    )
    assert [(a["status"], a["error"]) for a in delivery["log"]] == [
        (500, "HTTP 500"),
        (500, "HTTP 500"),
        (500, "HTTP 500"),
        (204, None),
    ]


def test_an_exhausted_schedule_turns_the_endpoint_off_and_says_so(quick: TestClient) -> None:
    client, caller = quick, new_caller(quick)
    with receiving(lambda _: 503) as failing, receiving() as watcher:
        broken = _create(client, caller, failing, events=["image.deleted"])
        _create(client, caller, watcher, events=["webhook.disabled"])
        announce(client, caller, EventType.IMAGE_DELETED, {"image_id": str(uuid.uuid4())})
        wait_for(lambda: len(watcher.received) == 1, "webhook.disabled to be delivered")
        failed = _settled(client, caller, broken["id"], "failed")
        assert len(failing.received) == 4 == failed["attempts"] == len(failed["log"])
        event = watcher.received[0].payload
        assert event["type"] == "webhook.disabled"
        assert (event["data"]["webhook_id"], event["data"]["url"]) == (broken["id"], failing.url)
        assert "HTTP 503" in event["data"]["reason"]
        path = f"/v1/webhooks/{broken['id']}"
        off = client.get(path, headers=caller.headers).json()
        assert (off["active"], off["disabled_reason"]) == (False, event["data"]["reason"])

        # On again (the reason goes), and the failed delivery replayed.
        failing.answer = lambda _: 200
        on = client.patch(path, headers=caller.headers, json={"active": True}).json()
        assert (on["active"], on["disabled_reason"]) == (True, None)
        retry = client.post(f"{path}/deliveries/{failed['id']}/retry", headers=caller.headers)
        assert retry.status_code == 202
        replayed = _settled(client, caller, broken["id"], "delivered")
    assert failing.ids() == [f"msg_{failed['id']}"] * 5
    assert [a["status"] for a in replayed["log"]] == [503, 503, 503, 503, 200]
    assert failing.bad == watcher.bad == []


def test_a_private_address_is_refused_unless_allowed(
    client: TestClient, caller: Caller, app_settings: Settings
) -> None:
    producer = FakeProducer()  # nothing reaches a worker: this test delivers itself
    refusing = dataclasses.replace(
        context(app_settings),
        settings=app_settings.model_copy(
            update={"webhook_allow_private": False, "webhook_retry_schedule": (0.0,)}
        ),
    )
    allowing = dataclasses.replace(
        refusing, settings=refusing.settings.model_copy(update={"webhook_allow_private": True})
    )
    with receiving() as receiver:
        webhook = _create(client, caller, receiver)
        announce(client, caller, producer=producer)
        ((_, (delivery_id,), _),) = producer.sent
        deliver(refusing, producer, uuid.UUID(delivery_id))
        assert receiver.received == []
        refused = _delivery(client, caller, webhook["id"])
        assert refused["state"] == "pending"
        (attempt,) = refused["log"]
        assert attempt["status"] is None
        assert attempt["error"].endswith("not a public address (loopback)")
        assert producer.sent[-1] == (DELIVER_TASK, (delivery_id,), WEBHOOKS_QUEUE)  # the retry

        deliver(allowing, producer, uuid.UUID(delivery_id))
        assert len(receiver.received) == 1
        assert receiver.bad == []
    assert _delivery(client, caller, webhook["id"])["state"] == "delivered"
    assert client.delete(f"/v1/webhooks/{webhook['id']}", headers=caller.headers).status_code == 204


def test_attempts_cut_off_before_they_were_recorded_still_end_the_schedule(
    client: TestClient, caller: Caller, app_settings: Settings
) -> None:
    """A receiver that trickles its answer gets the attempt killed before it is recorded; the
    claims still count, so the delivery fails and the endpoint goes off, not retried forever."""
    producer = FakeProducer()
    ctx = dataclasses.replace(
        context(app_settings),
        settings=app_settings.model_copy(
            update={"webhook_allow_private": True, "webhook_retry_schedule": (0.0,)}
        ),
    )
    with receiving() as receiver:
        webhook = _create(client, caller, receiver)
        announce(client, caller, producer=producer)
        ((_, (delivery_id,), _),) = producer.sent
        with ctx.sessions.begin() as session:  # two attempts claimed, both killed unrecorded
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == uuid.UUID(delivery_id))
                .values(attempts=2)
            )
        outcome = deliver(ctx, producer, uuid.UUID(delivery_id))
        assert receiver.received == []
    assert outcome == "failed after 3 attempts"
    failed = _delivery(client, caller, webhook["id"])
    assert failed["state"] == "failed"
    assert failed["log"][-1]["error"] == "attempts cut off by the time limit"
    off = client.get(f"/v1/webhooks/{webhook['id']}", headers=caller.headers).json()
    assert off["active"] is False


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("::", "unspecified"),
        ("100.64.0.1", "not-global"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_which_addresses_are_refused(address: str, reason: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


def test_a_delivery_whose_worker_was_killed_is_delivered(
    own_broker: Settings, tmp_path: Path
) -> None:
    settings = own_broker.model_copy(update=QUICK)
    env = {**settings_env(settings), **QUICK_ENV}
    released = threading.Event()

    def answer(n: int) -> int:
        if n == 1:
            released.wait(30)  # the first attempt hangs until its worker is gone
        return 200

    # Both start at once (a worker takes seconds to start): the rescuer, which sweeps, takes
    # on the `webhooks` queue only once the victim is dead.
    victim = start_worker(
        env, tmp_path / "victim.log", "-Q", "webhooks", "--no-sweep", new_session=True
    )
    rescuer = start_worker(env, tmp_path / "rescuer.log", "-Q", "maintenance", new_session=True)
    try:
        with receiving(answer) as receiver, TestClient(create_app(settings)) as client:
            _wait_for_workers(settings, 2)
            caller = new_caller(client)
            webhook = _create(client, caller, receiver)
            announce(client, caller)
            wait_for(lambda: len(receiver.received) == 1, "the first attempt")
            _kill(victim)
            # Its message is unacked (Redis hands it out again only after an hour): the
            # rescuer's sweep sends the delivery again once the attempt's lease has lapsed.
            client.app.state.media.producer.control.add_consumer(WEBHOOKS_QUEUE, reply=True)  # type: ignore[attr-defined]
            delivered = _settled(client, caller, webhook["id"], "delivered")
            released.set()
    finally:
        released.set()
        _kill(victim)
        _kill(rescuer)
    assert receiver.ids() == [f"msg_{delivered['id']}"] * 2
    assert receiver.bad == []
    # The killed attempt counted, but left no log entry: it never came back.
    assert delivered["attempts"] == 2
    assert [a["status"] for a in delivered["log"]] == [200]
