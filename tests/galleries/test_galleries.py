"""Galleries: their lifecycle and paging over HTTP, and the membership rules (an image goes
only into a gallery of its owner's) against the database directly."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts.service import create_owner_with_key
from media_api.errors import NotFound
from media_api.galleries import service as galleries
from media_api.images import repository as images_repository
from media_api.images import service as images
from media_api.storage import keys
from tests.support.callers import new_caller, upload, walk
from tests.support.images import png


def test_gallery_lifecycle(client: TestClient) -> None:
    caller = new_caller(client)
    made = client.post("/v1/galleries", headers=caller.headers, json={"name": " Trip "})
    assert made.status_code == 201
    gallery = made.json()
    gid = gallery["id"]
    assert gallery["name"] == "Trip"
    renamed = client.patch(f"/v1/galleries/{gid}", headers=caller.headers, json={"name": "Rome"})
    assert renamed.json()["name"] == "Rome"
    assert renamed.json()["description"] is None

    in_upload = upload(client, caller, png(980, 24), gallery_id=gid)[1]
    other = upload(client, caller, png(981, 24))[1]
    for _ in range(2):  # idempotent
        put = client.put(f"/v1/galleries/{gid}/images/{other['id']}", headers=caller.headers)
        assert put.status_code == 204
    listed = walk(client, caller, f"/v1/galleries/{gid}/images", limit=1)
    assert listed == [other["id"], in_upload["id"]]
    assert walk(client, caller, "/v1/images", gallery_id=gid) == listed

    removed = client.delete(f"/v1/galleries/{gid}/images/{other['id']}", headers=caller.headers)
    assert removed.status_code == 204
    assert walk(client, caller, f"/v1/galleries/{gid}/images") == [in_upload["id"]]
    assert client.delete(f"/v1/galleries/{gid}", headers=caller.headers).status_code == 204
    assert client.get(f"/v1/galleries/{gid}", headers=caller.headers).status_code == 404
    # Deleting the gallery left its images alone.
    assert client.get(f"/v1/images/{in_upload['id']}", headers=caller.headers).status_code == 200

    bad = upload(client, caller, png(982, 24), gallery_id=str(uuid.uuid4()))
    assert (bad[0], bad[1]["code"]) == (404, "not-found")


def test_galleries_paginate(client: TestClient) -> None:
    caller = new_caller(client)
    made = [
        client.post("/v1/galleries", headers=caller.headers, json={"name": f"g{i}"}).json()["id"]
        for i in range(5)
    ]
    assert walk(client, caller, "/v1/galleries", limit=2) == list(reversed(made))
    total = client.get("/v1/galleries", headers=caller.headers, params={"include_total": True})
    assert total.json()["total"] == 5


async def _owner(db: AsyncSession) -> uuid.UUID:
    owner_id, _ = await create_owner_with_key(db, f"{uuid.uuid4()}@example.com")
    return owner_id


async def _image(db: AsyncSession, owner_id: uuid.UUID) -> uuid.UUID:
    image_id = uuid.uuid4()
    row = await images_repository.insert_new(
        db,
        {
            "id": image_id,
            "owner_id": owner_id,
            "content_type": "image/png",
            "size_bytes": 1,
            "width": 1,
            "height": 1,
            "frames": 1,
            "sha256": uuid.uuid4().bytes * 2,
            "original_key": keys.original_key(owner_id, image_id),
        },
    )
    assert row is not None
    return image_id


async def test_membership_needs_both_the_gallery_and_the_image_of_the_owner(
    db: AsyncSession,
) -> None:
    owner, stranger = await _owner(db), await _owner(db)
    mine = (await galleries.create(db, owner, "mine", None)).id
    theirs = (await galleries.create(db, stranger, "theirs", None)).id
    image, their_image = await _image(db, owner), await _image(db, stranger)

    for _ in range(2):  # idempotent
        await images.add_to_gallery(db, owner, mine, image)
    assert await images_repository.in_gallery(db, mine, image)
    with pytest.raises(NotFound, match="image not found"):
        await images.add_to_gallery(db, owner, mine, their_image)
    with pytest.raises(NotFound, match="gallery not found"):
        await images.add_to_gallery(db, owner, theirs, image)
    assert not await images_repository.in_gallery(db, theirs, image)
    with pytest.raises(NotFound, match="gallery not found"):
        await images.remove_from_gallery(db, stranger, mine, image)
    await images.remove_from_gallery(db, owner, mine, image)
    with pytest.raises(NotFound, match="image not in this gallery"):
        await images.remove_from_gallery(db, owner, mine, image)
