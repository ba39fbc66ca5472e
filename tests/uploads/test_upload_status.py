"""`GET /v1/uploads/{id}`: where an upload stands, for its owner only."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import httpx
from fastapi.testclient import TestClient

from media_api.resources import AppState
from media_api.settings import Settings
from media_api.uploads import repository
from media_api.uploads.models import UploadKind
from tests.support.callers import Caller, new_caller
from tests.support.images import png
from tests.support.uploads import create

HOUR = dt.timedelta(hours=1)


def test_a_receiving_upload_shows_its_offset_and_expiry(
    client: TestClient, caller: Caller, app_settings: Settings
) -> None:
    data = png(1, 64)
    offer = create(client, caller, data)

    resp = client.get(f"/v1/uploads/{offer['id']}", headers=caller.headers)

    assert resp.status_code == 200
    body = resp.json()
    expires_at = dt.datetime.fromisoformat(body.pop("expires_at"))
    assert body == {
        "id": offer["id"],
        "kind": "direct",
        "state": "receiving",
        "offset": 0,
        "length": len(data),
        "image_id": None,
        "error": None,
    }
    assert expires_at == dt.datetime.fromisoformat(offer["expires_at"])
    lifetime = expires_at - dt.datetime.now(dt.UTC)
    expiry = dt.timedelta(seconds=app_settings.upload_expiry_seconds)
    assert expiry - dt.timedelta(minutes=1) < lifetime <= expiry


def test_an_accepted_upload_shows_its_image(client: TestClient, caller: Caller) -> None:
    data = png(2, 64)
    offer = create(client, caller, data, sha256=hashlib.sha256(data).hexdigest())
    assert httpx.put(offer["url"], content=data).is_success
    image = client.post(f"/v1/uploads/{offer['id']}/complete", headers=caller.headers).json()

    body = client.get(f"/v1/uploads/{offer['id']}", headers=caller.headers).json()

    assert (body["state"], body["offset"], body["length"]) == ("accepted", len(data), len(data))
    assert (body["image_id"], body["error"]) == (image["id"], None)


def test_a_tus_upload_shows_its_offset(client: TestClient, caller: Caller) -> None:
    async def tus_upload() -> uuid.UUID:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            row = await repository.create(
                session,
                owner_id=caller.owner_id,
                kind=UploadKind.TUS,
                length=100,
                quota=0,
                expires_in=HOUR,
            )
            assert row is not None
            lease = uuid.uuid4()
            assert await repository.acquire_lease(session, caller.owner_id, row.id, lease, HOUR)
            moved = await repository.record_progress(
                session,
                row.id,
                lease,
                expected=0,
                received=40,
                parts=[],
                tail=bytes(40),
                expires_in=HOUR,
            )
            assert moved
            await session.commit()
            return row.id

    assert client.portal is not None
    upload_id = client.portal.call(tus_upload)

    body = client.get(f"/v1/uploads/{upload_id}", headers=caller.headers).json()

    assert (body["kind"], body["state"], body["offset"], body["length"]) == (
        "tus",
        "receiving",
        40,
        100,
    )


def test_another_owners_upload_and_an_unknown_id_are_not_found(
    client: TestClient, caller: Caller
) -> None:
    offer = create(client, caller, png(3, 64))
    other = new_caller(client)
    for who, upload_id in ((other, offer["id"]), (caller, str(uuid.uuid4()))):
        resp = client.get(f"/v1/uploads/{upload_id}", headers=who.headers)
        assert (resp.status_code, resp.json()["code"]) == (404, "not-found")
    assert client.get(f"/v1/uploads/{offer['id']}").status_code == 401
