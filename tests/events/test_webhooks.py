"""Webhook endpoints over the API: CRUD, the secret shown once, rotation, validation, another
owner's endpoints, the deliveries' listing and retry."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from media_api.events.webhooks import MAX_WEBHOOKS
from media_api.jobs.contract import DELIVER_TASK, WEBHOOKS_QUEUE
from tests.support.callers import Caller, new_caller
from tests.support.fakes import FakeProducer
from tests.support.webhooks import announce

# Nothing listens there, and no test's worker sends to it (nothing is published for it).
URL = "http://127.0.0.1:9/hook"


def _create(client: TestClient, caller: Caller, **body: object) -> dict[str, object]:
    resp = client.post("/v1/webhooks", headers=caller.headers, json={"url": URL, **body})
    assert resp.status_code == 201, resp.text
    created: dict[str, object] = resp.json()
    return created


def test_the_secret_is_shown_at_creation_and_rotation_only(
    client: TestClient, caller: Caller
) -> None:
    created = _create(client, caller, events=["image.ready", "image.failed"])
    secret = str(created["secret"])
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert created["events"] == ["image.ready", "image.failed"]
    assert (created["active"], created["disabled_reason"]) == (True, None)
    path = f"/v1/webhooks/{created['id']}"

    got = client.get(path, headers=caller.headers).json()
    assert "secret" not in got
    assert got == {k: v for k, v in created.items() if k != "secret"}
    listed = client.get("/v1/webhooks", headers=caller.headers).json()
    assert listed["items"] == [got]
    assert secret not in str(listed)

    rotated = client.post(f"{path}/rotate-secret", headers=caller.headers)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != secret
    assert new not in client.get(path, headers=caller.headers).text


def test_update_and_delete(client: TestClient, caller: Caller) -> None:
    created = _create(client, caller)
    assert created["events"] == []  # every type
    path = f"/v1/webhooks/{created['id']}"
    changed = client.patch(
        path,
        headers=caller.headers,
        json={"url": "https://example.com/other", "events": ["image.deleted"], "active": False},
    ).json()
    assert (changed["url"], changed["events"], changed["active"]) == (
        "https://example.com/other",
        ["image.deleted"],
        False,
    )
    unchanged = client.patch(path, headers=caller.headers, json={}).json()
    assert unchanged == changed
    assert client.delete(path, headers=caller.headers).status_code == 204
    assert client.get(path, headers=caller.headers).status_code == 404
    assert client.delete(path, headers=caller.headers).status_code == 404


def test_listing_pages_newest_first(client: TestClient, caller: Caller) -> None:
    ids = [_create(client, caller)["id"] for _ in range(3)]
    first = client.get("/v1/webhooks?limit=2", headers=caller.headers).json()
    rest = client.get(
        "/v1/webhooks", headers=caller.headers, params={"cursor": first["next_cursor"]}
    ).json()
    assert [w["id"] for w in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None


def test_invalid_endpoints_are_refused(client: TestClient, caller: Caller) -> None:
    for body in (
        {"url": "ftp://example.com/x"},
        {"url": "example.com/x"},
        {"url": "http://"},
        {"url": "https://example.com/" + "a" * 2048},
        {"url": "https://example.com/\nx"},
        {"url": URL, "events": ["image.exploded"]},
        {"url": URL, "events": ["image.ready", "image.ready"]},
    ):
        resp = client.post("/v1/webhooks", headers=caller.headers, json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["code"] == "validation-error"
    path = f"/v1/webhooks/{_create(client, caller)['id']}"
    for patch in ({"url": None}, {"active": None}, {"url": "file:///etc/passwd"}):
        assert client.patch(path, headers=caller.headers, json=patch).status_code == 422


def test_another_owners_endpoints_are_404(client: TestClient, caller: Caller) -> None:
    created = _create(client, caller)
    announce(client, caller, producer=FakeProducer())
    path = f"/v1/webhooks/{created['id']}"
    (delivery,) = client.get(f"{path}/deliveries", headers=caller.headers).json()["items"]
    other = new_caller(client)
    for method, url in (
        ("GET", path),
        ("PATCH", path),
        ("DELETE", path),
        ("POST", f"{path}/rotate-secret"),
        ("GET", f"{path}/deliveries"),
        ("POST", f"{path}/deliveries/{delivery['id']}/retry"),
    ):
        resp = client.request(method, url, headers=other.headers, json={"active": False})
        assert resp.status_code == 404, (method, url)
    assert client.get("/v1/webhooks", headers=other.headers).json()["items"] == []
    assert client.get(path, headers=caller.headers).json()["active"] is True
    assert client.delete(path, headers=caller.headers).status_code == 204  # nothing to sweep


def test_deliveries_follow_the_endpoints_types_and_retry_sends_again(
    client: TestClient, caller: Caller
) -> None:
    everything = _create(client, caller)
    only_ready = _create(client, caller, events=["image.ready"])
    producer = FakeProducer()
    announce(client, caller, producer=producer)  # image.created
    path = f"/v1/webhooks/{everything['id']}"
    (delivery,) = client.get(f"{path}/deliveries", headers=caller.headers).json()["items"]
    assert delivery["type"] == "image.created"
    assert (delivery["state"], delivery["attempts"], delivery["log"]) == ("pending", 0, [])
    assert producer.sent == [(DELIVER_TASK, (delivery["id"],), WEBHOOKS_QUEUE)]
    ready = client.get(f"/v1/webhooks/{only_ready['id']}/deliveries", headers=caller.headers)
    assert ready.json()["items"] == []

    retry = f"{path}/deliveries/{delivery['id']}/retry"
    resp = client.post(retry, headers=caller.headers)
    assert resp.status_code == 202
    assert resp.json()["id"] == delivery["id"]
    assert resp.json()["state"] == "pending"
    # Off: nothing is sent to it, so retrying is refused until it is on again.
    client.patch(path, headers=caller.headers, json={"active": False})
    off = client.post(retry, headers=caller.headers)
    assert (off.status_code, off.json()["code"]) == (409, "webhook-inactive")
    other = f"/v1/webhooks/{only_ready['id']}/deliveries/{delivery['id']}/retry"
    assert client.post(other, headers=caller.headers).status_code == 404


def test_an_owner_has_at_most_25_webhooks(client: TestClient, caller: Caller) -> None:
    for n in range(MAX_WEBHOOKS):
        made = client.post(
            "/v1/webhooks", headers=caller.headers, json={"url": f"https://example.com/{n}"}
        )
        assert made.status_code == 201
    over = client.post(
        "/v1/webhooks", headers=caller.headers, json={"url": "https://example.com/x"}
    )
    assert (over.status_code, over.json()["code"]) == (409, "webhook-limit")


def test_another_owners_events_never_reach_an_endpoint(client: TestClient, caller: Caller) -> None:
    theirs = new_caller(client)
    watching = _create(client, theirs)  # every type
    mine = _create(client, caller)
    producer = FakeProducer()
    announce(client, caller, producer=producer)
    path = f"/v1/webhooks/{watching['id']}/deliveries"
    assert client.get(path, headers=theirs.headers).json()["items"] == []
    (delivery,) = client.get(
        f"/v1/webhooks/{mine['id']}/deliveries", headers=caller.headers
    ).json()["items"]
    assert producer.sent == [(DELIVER_TASK, (delivery["id"],), WEBHOOKS_QUEUE)]
