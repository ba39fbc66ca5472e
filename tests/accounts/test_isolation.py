"""Every /v1 route needs credentials, and never shows one owner's things to another.

The route table is read from the app's OpenAPI document, so a new route is covered without
editing this file; a new path parameter fails the test until it has a fixture below.
"""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from media_api.main import create_app
from media_api.settings import Settings
from media_api.uploads.tus import OFFSET_CONTENT_TYPE
from tests.support.callers import Caller, new_caller, upload
from tests.support.corpus import CORPUS
from tests.support.fakes import FakeProducer
from tests.support.webhooks import announce

PUBLIC = {("POST", "/v1/auth/signup"), ("POST", "/v1/auth/token"), ("OPTIONS", "/v1/uploads/tus")}
# What a tus request carries besides credentials (without it, 412 comes before the key check);
# an empty PATCH body at offset 0 is a valid request on any upload.
TUS = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": OFFSET_CONTENT_TYPE}
JPEG = (CORPUS / "valid/jpeg_baseline_testorig.jpg").read_bytes()


def _routes(settings: Settings) -> list[tuple[str, str]]:
    """(METHOD, path) of every /v1 operation, from the app's own OpenAPI document."""
    paths = create_app(settings).openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    ]


def _fill(path: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"add an isolation fixture for path parameter {{{name}}}"
        return values[name]

    return re.sub(r"\{(\w+)\}", one, path)


def test_the_route_table_is_not_empty(app_settings: Settings) -> None:
    routes = _routes(app_settings)
    assert ("POST", "/v1/images") in routes
    assert ("DELETE", "/v1/api-keys/{key_id}") in routes


def test_every_private_route_needs_credentials(client: TestClient, app_settings: Settings) -> None:
    random_ids = {
        "image_id": str(uuid.uuid4()),
        "key_id": str(uuid.uuid4()),
        "gallery_id": str(uuid.uuid4()),
        "name": "thumb",
        "upload_id": str(uuid.uuid4()),
        "webhook_id": str(uuid.uuid4()),
        "delivery_id": str(uuid.uuid4()),
    }
    checked = 0
    for method, path in _routes(app_settings):
        if (method, path) in PUBLIC:
            continue
        resp = client.request(method, _fill(path, random_ids), headers=TUS)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        checked += 1
    assert checked >= 5


@pytest.fixture
def victim(client: TestClient) -> tuple[Caller, dict[str, str]]:
    """An owner with one of everything a path can name."""
    owner = new_caller(client)
    status, image = upload(client, owner, JPEG)
    assert status == 201
    key = client.post("/v1/api-keys", headers=owner.headers, json={"name": "victim"}).json()
    gallery = client.post("/v1/galleries", headers=owner.headers, json={"name": "v"}).json()
    added = client.put(f"/v1/galleries/{gallery['id']}/images/{image['id']}", headers=owner.headers)
    assert added.status_code == 204
    tus = client.post("/v1/uploads/tus", headers={**owner.headers, **TUS, "Upload-Length": "9"})
    assert tus.status_code == 201
    # An endpoint nothing is sent to (off), with one delivery.
    hook = client.post("/v1/webhooks", headers=owner.headers, json={"url": "http://127.0.0.1:9/"})
    announce(client, owner, producer=FakeProducer())
    hook_path = f"/v1/webhooks/{hook.json()['id']}"
    client.patch(hook_path, headers=owner.headers, json={"active": False})
    (delivery,) = client.get(f"{hook_path}/deliveries", headers=owner.headers).json()["items"]
    return owner, {
        "image_id": str(image["id"]),
        "key_id": str(key["id"]),
        "gallery_id": str(gallery["id"]),
        "name": "thumb",
        "upload_id": tus.headers["Location"].rsplit("/", 1)[1],
        "webhook_id": str(hook.json()["id"]),
        "delivery_id": str(delivery["id"]),
    }


def test_another_owners_resources_are_404_on_every_route(
    client: TestClient, app_settings: Settings, victim: tuple[Caller, dict[str, str]]
) -> None:
    owner, ids = victim
    attacker = new_caller(client)
    checked = 0
    for method, path in _routes(app_settings):
        if "{" not in path:
            continue
        url, headers = _fill(path, ids), {**attacker.headers, **TUS}
        if path.startswith("/v1/uploads/tus"):
            resp = client.request(method, url, headers=headers, content=b"")
        else:
            resp = client.request(method, url, headers=attacker.headers, json={})
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        if method != "HEAD":  # no body
            assert resp.json()["code"] == "not-found"
        assert ids["image_id"] not in resp.text
        checked += 1
    assert checked >= 3
    # ... and nothing of the victim's changed.
    assert client.get(f"/v1/images/{ids['image_id']}", headers=owner.headers).status_code == 200
    keys = client.get("/v1/api-keys", headers=owner.headers).json()["items"]
    assert ids["key_id"] in {k["id"] for k in keys}
    in_gallery = client.get(f"/v1/galleries/{ids['gallery_id']}/images", headers=owner.headers)
    assert [i["id"] for i in in_gallery.json()["items"]] == [ids["image_id"]]
    state = client.get(f"/v1/uploads/{ids['upload_id']}", headers=owner.headers).json()
    assert (state["state"], state["offset"]) == ("receiving", 0)
    hook = f"/v1/webhooks/{ids['webhook_id']}"
    assert client.get(hook, headers=owner.headers).json()["url"] == "http://127.0.0.1:9/"
    deliveries = client.get(f"{hook}/deliveries", headers=owner.headers).json()["items"]
    assert [d["id"] for d in deliveries] == [ids["delivery_id"]]


def test_listings_show_only_the_callers_images_and_galleries(
    client: TestClient, victim: tuple[Caller, dict[str, str]]
) -> None:
    _, ids = victim
    attacker = new_caller(client)
    images = client.get("/v1/images?include_total=true", headers=attacker.headers).json()
    assert (images["items"], images["total"]) == ([], 0)
    galleries = client.get("/v1/galleries", headers=attacker.headers).json()
    assert galleries["items"] == []
    filtered = client.get(f"/v1/images?gallery_id={ids['gallery_id']}", headers=attacker.headers)
    assert filtered.status_code == 404


def test_listings_show_only_the_callers_keys(client: TestClient) -> None:
    one, two = new_caller(client), new_caller(client)
    made = client.post("/v1/api-keys", headers=one.headers, json={"name": "mine"}).json()
    theirs = client.get("/v1/api-keys", headers=two.headers).json()["items"]
    assert made["id"] not in {k["id"] for k in theirs}
