"""Every change writes its event in its own transaction (the outbox): uploads, worker runs,
deletes, refusals; numbered per owner without gaps, read a page at a time, never another's."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.orm import sessionmaker

from media_api.events.models import Event, Webhook, WebhookDelivery
from media_api.jobs.contract import JobKind
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import png
from tests.support.jobs import run_tagging, run_variants
from tests.support.uploads import Tus
from tests.support.waiting import poll
from workers import repository
from workers.context import context
from workers.events import send_on_commit

PDF = b"%PDF-1.7\n" + bytes(4096)


def page(client: TestClient, caller: Caller, **params: int) -> dict[str, Any]:
    resp = client.get("/v1/events", headers=caller.headers, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    return body


def events(client: TestClient, caller: Caller) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = page(client, caller)["items"]
    return items


def of_type(client: TestClient, caller: Caller, type_: str) -> list[dict[str, Any]]:
    return [event for event in events(client, caller) if event["type"] == type_]


def reject_pdf(client: TestClient, caller: Caller) -> None:
    """A tus upload whose first bytes are a PDF: refused, and the upload ends rejected."""
    resp = Tus(client, caller).create(len(PDF), body=PDF, filename="doc.pdf")
    assert resp.status_code == 415, resp.text


def test_an_upload_writes_image_created_and_a_refused_one_nothing(
    client: TestClient, caller: Caller
) -> None:
    status, _ = upload(client, caller, PDF, filename="doc.pdf", content_type="application/pdf")
    assert status == 415
    assert events(client, caller) == []  # its transaction rolled back, and its event with it

    status, image = upload(client, caller, png(1), filename="a.png", title="A cat")
    assert status == 201
    first = events(client, caller)[0]
    assert first["id"] == 1
    assert first["type"] == "image.created"
    assert first["data"] == {
        "image_id": image["id"],
        "status": "processing",
        "content_type": "image/png",
        "size": image["size"],
        "filename": "a.png",
        "title": "A cat",
    }
    assert first["timestamp"]

    # The same bytes again: a duplicate creates nothing, so announces nothing.
    status, _ = upload(client, caller, png(1), filename="again.png")
    assert status == 200
    assert len(of_type(client, caller, "image.created")) == 1


def test_a_delete_writes_image_deleted(client: TestClient, caller: Caller) -> None:
    _, image = upload(client, caller, png(2), filename="b.png")
    assert client.delete(f"/v1/images/{image['id']}", headers=caller.headers).status_code == 204
    deleted = of_type(client, caller, "image.deleted")
    assert [event["data"] for event in deleted] == [{"image_id": image["id"]}]


def test_a_tus_pdf_writes_upload_rejected(client: TestClient, caller: Caller) -> None:
    reject_pdf(client, caller)
    (event,) = events(client, caller)
    assert event["type"] == "upload.rejected"
    assert event["data"]["kind"] == "tus"
    assert event["data"]["error"]["code"] == "unsupported-media-type"
    assert event["data"]["error"]["status"] == 415
    uuid.UUID(event["data"]["upload_id"])


def test_worker_runs_write_ready_tagged_and_failed(
    client: TestClient, caller: Caller, settings: Settings
) -> None:
    _, image = upload(client, caller, png(3, size=64), filename="c.png")
    image_id = uuid.UUID(str(image["id"]))
    ctx = context(settings)
    run_variants(ctx, image_id)  # done by a running worker already, if one is: the same event
    run_tagging(ctx, image_id)

    def types(found: list[dict[str, Any]]) -> set[str]:
        return {event["type"] for event in found}

    found = poll(
        lambda: events(client, caller),
        lambda found: {"image.ready", "image.tagged"} <= types(found),
        "image.ready and image.tagged",
    )
    (ready,) = [event for event in found if event["type"] == "image.ready"]
    assert ready["data"]["image_id"] == str(image_id)
    assert ready["data"]["status"] == "ready"
    assert ready["data"]["variants"]
    assert all(isinstance(name, str) for name in ready["data"]["variants"])
    (tagged,) = [event for event in found if event["type"] == "image.tagged"]
    assert set(tagged["data"]) == {"image_id", "tags", "nsfw", "flagged"}
    assert all(set(tag) == {"name", "confidence"} for tag in tagged["data"]["tags"])
    assert "http" not in str(found)  # never a signed URL

    with ctx.sessions.begin() as session:
        repository.job_failed(session, image_id, JobKind.THUMBNAILS, "render-failed")
    (failed,) = of_type(client, caller, "image.failed")
    assert failed["data"] == {
        "image_id": str(image_id),
        "status": "failed",
        "error_code": "render-failed",
    }


def test_events_are_numbered_without_gaps_and_paged(client: TestClient, caller: Caller) -> None:
    for _ in range(5):
        reject_pdf(client, caller)
    assert [event["id"] for event in events(client, caller)] == [1, 2, 3, 4, 5]

    first = page(client, caller, limit=2)
    assert [event["id"] for event in first["items"]] == [1, 2]
    second = page(client, caller, after=first["next_after"], limit=2)
    assert [event["id"] for event in second["items"]] == [3, 4]
    third = page(client, caller, after=second["next_after"], limit=2)
    assert [event["id"] for event in third["items"]] == [5]
    last = page(client, caller, after=third["next_after"], limit=2)
    assert last == {"items": [], "next_after": 5, "latest": 5}  # poll again from the same place

    # Last-Event-ID (what an SSE client resends) wins over `after`.
    resp = client.get(
        "/v1/events", headers={**caller.headers, "Last-Event-ID": "4"}, params={"after": 1}
    )
    assert [event["id"] for event in resp.json()["items"]] == [5]

    for bad in ({"limit": 0}, {"limit": 101}, {"after": -1}):
        resp = client.get("/v1/events", headers=caller.headers, params=bad)
        assert resp.status_code == 422, bad


def test_another_owners_events_never_show(client: TestClient, caller: Caller) -> None:
    other = new_caller(client)
    reject_pdf(client, other)
    upload(client, other, png(4), filename="d.png")
    assert events(client, caller) == []
    reject_pdf(client, caller)
    mine = events(client, caller)
    assert [event["id"] for event in mine] == [1]  # numbered among the caller's own
    assert all(event["type"] != "image.created" for event in mine)
    assert {event["type"] for event in events(client, other)} >= {
        "upload.rejected",
        "image.created",
    }


class Sent:
    """A producer that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.deliveries: list[uuid.UUID] = []

    def send_delivery(self, delivery_id: uuid.UUID, countdown: float | None = None) -> None:
        self.deliveries.append(delivery_id)


def test_a_workers_event_sends_its_deliveries_after_commit_only(
    client: TestClient, caller: Caller, settings: Settings
) -> None:
    _, image = upload(client, caller, png(6), filename="f.png")
    image_id = uuid.UUID(str(image["id"]))
    base = context(settings)
    sent = Sent()
    sessions = sessionmaker(base.engine, expire_on_commit=False)
    send_on_commit(sessions, lambda: sent)  # type: ignore[arg-type, return-value]
    with sessions.begin() as session:
        session.execute(
            insert(Webhook).values(
                owner_id=caller.owner_id, url="https://example.com/h", secret="s"
            )
        )

    with sessions.begin() as session:
        repository.job_failed(session, image_id, JobKind.THUMBNAILS, "render-failed")
        session.rollback()  # its event and deliveries go with it: nothing is sent
    assert sent.deliveries == []
    with sessions.begin() as session:
        repository.job_failed(session, image_id, JobKind.THUMBNAILS, "render-failed")
        assert sent.deliveries == []  # not before the commit
    (delivery,) = sent.deliveries
    with sessions() as session:
        event_id = session.scalar(
            select(WebhookDelivery.event_id).where(WebhookDelivery.id == delivery)
        )
        assert session.scalar(select(Event.type).where(Event.id == event_id)) == "image.failed"
