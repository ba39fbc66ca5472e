"""Direct uploads through the API: presigned PUTs (one, or one per part) against the real
SeaweedFS, then `complete`, finalized against Postgres like `POST /v1/images`."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from media_api.images.errors import StorageUnavailable
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from media_api.uploads import repository
from media_api.uploads.lease import holding
from media_api.uploads.models import Upload, UploadKind
from tests.support.callers import Caller, job_states, new_caller, upload
from tests.support.images import noise_png, png
from tests.support.leftovers import bytes_reserved
from tests.support.uploads import complete, create, put_parts, status_of

PDF = b"%PDF-1.7\n" + bytes(4096)


@pytest.fixture
def chunk(app_settings: Settings) -> int:
    return app_settings.s3_multipart_chunk_bytes


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    return state


def count_uploads(client: TestClient, owner_id: uuid.UUID) -> int:
    async def query() -> int:
        async with app_state(client).sessions() as session:
            stmt = select(func.count()).where(Upload.owner_id == owner_id)
            return int(await session.scalar(stmt) or 0)

    assert client.portal is not None
    return client.portal.call(query)


def image_ids(client: TestClient, caller: Caller) -> list[str]:
    resp = client.get("/v1/images", headers=caller.headers)
    return [item["id"] for item in resp.json()["items"]]


def code_of(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["code"]


@pytest.mark.usefixtures("leftovers")
def test_a_single_put_completes_into_the_image_and_its_jobs(
    client: TestClient, caller: Caller, store: S3Store
) -> None:
    data = png(1, 64)
    offer = create(client, caller, data, sha256=hashlib.sha256(data).hexdigest(), title=" Cat ")
    assert set(offer) == {"id", "url", "expires_at"}
    assert "X-Amz-SignedHeaders=content-length%3Bhost&" in offer["url"]
    assert bytes_reserved(client, caller.owner_id) == len(data)

    assert httpx.put(offer["url"], content=data, headers={"Content-Type": "image/png"}).is_success
    resp = complete(client, caller, offer["id"])

    assert resp.status_code == 201, resp.text
    image = resp.json()
    assert (image["title"], image["filename"], image["content_type"], image["size"]) == (
        "Cat",
        "cat.png",
        "image/png",
        len(data),
    )
    assert set(job_states(image)) == {"thumbnails", "tagging"}
    original = keys.original_key(caller.owner_id, uuid.UUID(image["id"]))
    assert store.get_bytes(original) == data
    assert store.list_keys(keys.quarantine_prefix(caller.owner_id)) == []
    assert status_of(client, caller, offer["id"])["image_id"] == image["id"]
    # Repeating `complete` answers the same image.
    again = complete(client, caller, offer["id"])
    assert (again.status_code, again.json()["id"]) == (200, image["id"])


@pytest.mark.usefixtures("leftovers")
def test_bytes_already_stored_answer_the_existing_image(client: TestClient, caller: Caller) -> None:
    data = png(2, 64)
    status, first = upload(client, caller, data, filename="a.png")
    assert status == 201
    offer = create(client, caller, data)
    assert httpx.put(offer["url"], content=data).is_success

    resp = complete(client, caller, offer["id"])

    assert (resp.status_code, resp.json()["id"]) == (200, first["id"])
    assert image_ids(client, caller) == [first["id"]]
    assert status_of(client, caller, offer["id"])["state"] == "accepted"


@pytest.mark.usefixtures("leftovers")
def test_a_multipart_upload_checks_the_part_list_then_completes(
    client: TestClient, caller: Caller, store: S3Store, chunk: int
) -> None:
    data = noise_png(math.isqrt(chunk) + 40)
    assert chunk < len(data) < 2 * chunk
    offer = create(client, caller, data)
    assert set(offer) == {"id", "parts", "part_size", "expires_at"}
    assert (offer["part_size"], [p["number"] for p in offer["parts"]]) == (chunk, [1, 2])
    # The last part's URL takes exactly the remainder.
    last = httpx.put(offer["parts"][1]["url"], content=data[chunk:] + b"x", timeout=30)
    assert last.status_code == 403
    parts = put_parts(offer, data)
    assert store.open_multipart_uploads(keys.quarantine_prefix(caller.owner_id)) != []

    for wrong in (parts[:1], [parts[0], parts[0]], [parts[0], {**parts[1], "number": 3}]):
        assert code_of(complete(client, caller, offer["id"], wrong)) == (422, "invalid-parts")
    bad_etag = [parts[0], {**parts[1], "etag": '"' + "0" * 32 + '"'}]
    assert code_of(complete(client, caller, offer["id"], bad_etag)) == (422, "invalid-parts")
    assert status_of(client, caller, offer["id"])["state"] == "receiving"

    resp = complete(client, caller, offer["id"], parts)

    assert resp.status_code == 201, resp.text
    assert resp.json()["size"] == len(data)
    assert status_of(client, caller, offer["id"])["state"] == "accepted"


@pytest.mark.usefixtures("leftovers")
def test_complete_before_the_bytes_and_a_put_of_another_size_change_nothing(
    client: TestClient, caller: Caller
) -> None:
    data = png(3, 64)
    offer = create(client, caller, data)
    assert code_of(complete(client, caller, offer["id"])) == (409, "upload-incomplete")
    # The signed Content-Length is enforced by SeaweedFS.
    assert httpx.put(offer["url"], content=data + b"x").status_code == 403
    assert code_of(complete(client, caller, offer["id"])) == (409, "upload-incomplete")
    # A single PUT takes no parts.
    bogus = [{"number": 1, "etag": "x"}]
    assert code_of(complete(client, caller, offer["id"], bogus)) == (422, "invalid-parts")
    assert status_of(client, caller, offer["id"])["state"] == "receiving"

    assert httpx.put(offer["url"], content=data).is_success
    assert complete(client, caller, offer["id"]).status_code == 201


def assert_rejected(
    client: TestClient, caller: Caller, store: S3Store, upload_id: str, status: int, code: str
) -> None:
    """The upload ended `rejected` with that problem, and none of it is left."""
    state = status_of(client, caller, upload_id)
    assert (state["state"], state["image_id"]) == ("rejected", None)
    assert (state["error"]["status"], state["error"]["code"]) == (status, code)
    assert store.list_keys(keys.quarantine_prefix(caller.owner_id)) == []
    assert store.open_multipart_uploads(keys.QUARANTINE) == []
    assert bytes_reserved(client, caller.owner_id) == 0
    assert image_ids(client, caller) == []
    again = complete(client, caller, upload_id)
    assert code_of(again) == (410, "upload-gone")


@pytest.mark.usefixtures("leftovers")
def test_a_sha256_mismatch_is_refused_and_nothing_left(
    client: TestClient, caller: Caller, store: S3Store
) -> None:
    data = png(4, 64)
    offer = create(client, caller, data, sha256=hashlib.sha256(b"other").hexdigest())
    assert httpx.put(offer["url"], content=data).is_success
    assert code_of(complete(client, caller, offer["id"])) == (422, "sha256-mismatch")
    assert_rejected(client, caller, store, offer["id"], 422, "sha256-mismatch")


@pytest.mark.usefixtures("leftovers")
def test_a_pdf_is_refused_and_nothing_left(
    client: TestClient, caller: Caller, store: S3Store
) -> None:
    offer = create(client, caller, PDF, filename="cat.pdf")
    assert httpx.put(offer["url"], content=PDF).is_success
    assert code_of(complete(client, caller, offer["id"])) == (415, "unsupported-media-type")
    assert_rejected(client, caller, store, offer["id"], 415, "unsupported-media-type")


@pytest.mark.usefixtures("leftovers")
def test_a_truncated_multipart_png_is_refused_and_nothing_left(
    client: TestClient, caller: Caller, store: S3Store, chunk: int
) -> None:
    data = noise_png(math.isqrt(chunk) + 40)[:-100]
    offer = create(client, caller, data)
    parts = put_parts(offer, data)
    assert code_of(complete(client, caller, offer["id"], parts)) == (422, "corrupt-image")
    assert_rejected(client, caller, store, offer["id"], 422, "corrupt-image")


@pytest.mark.usefixtures("leftovers")
def test_an_object_of_another_size_is_refused(
    client: TestClient, caller: Caller, store: S3Store
) -> None:
    """A store that ignored the signed length: the size check at `complete` catches it."""
    data = png(5, 64)
    offer = create(client, caller, data)
    key = keys.quarantine_key(caller.owner_id, uuid.UUID(offer["id"]))
    store.put_bytes(key, data + b"extra", "image/png")
    assert code_of(complete(client, caller, offer["id"])) == (422, "size-mismatch")
    assert_rejected(client, caller, store, offer["id"], 422, "size-mismatch")


@pytest.mark.usefixtures("leftovers")
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"size": 0}, (422, "validation-error")),
        ({"sha256": "ab" * 31 + "zz"}, (422, "validation-error")),
        ({"sha256": "ab" * 31}, (422, "validation-error")),
        ({"extra": 1}, (422, "validation-error")),
        ({"title": "a\nb"}, (422, "validation-error")),
        ({"gallery_id": str(uuid.uuid4())}, (404, "not-found")),
        ({"size": 10**12}, (413, "file-too-large")),
    ],
)
def test_refused_creations_write_nothing(
    client: TestClient, caller: Caller, body: dict[str, Any], expected: tuple[int, str]
) -> None:
    resp = client.post(
        "/v1/uploads", headers=caller.headers, json={"filename": "a.png", "size": 10, **body}
    )
    assert code_of(resp) == expected
    assert count_uploads(client, caller.owner_id) == 0


@pytest.mark.usefixtures("leftovers")
def test_quota_exceeded_at_creation_writes_nothing(
    client: TestClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app_state(client)
    monkeypatch.setattr(state, "settings", state.settings.model_copy(update={"quota_bytes": 1000}))
    resp = client.post(
        "/v1/uploads", headers=caller.headers, json={"filename": "a.png", "size": 1001}
    )
    assert code_of(resp) == (413, "quota-exceeded")
    assert count_uploads(client, caller.owner_id) == 0


@pytest.mark.usefixtures("leftovers")
def test_storage_unreachable_at_creation_is_503_and_writes_nothing(
    client: TestClient, caller: Caller, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(key: str, content_type: str) -> str:
        raise ClientError({"Error": {"Code": "InternalError"}}, "CreateMultipartUpload")

    monkeypatch.setattr(app_state(client).store, "create_multipart", unreachable)
    resp = client.post(
        "/v1/uploads", headers=caller.headers, json={"filename": "a.png", "size": chunk + 1}
    )
    assert code_of(resp) == (503, "storage-unavailable")
    assert count_uploads(client, caller.owner_id) == 0


def test_only_the_callers_direct_uploads_complete(client: TestClient, caller: Caller) -> None:
    data = png(6, 64)
    offer = create(client, caller, data)
    other = new_caller(client)
    assert code_of(complete(client, other, offer["id"])) == (404, "not-found")
    assert code_of(complete(client, caller, str(uuid.uuid4()))) == (404, "not-found")

    async def tus_upload() -> str:
        async with app_state(client).sessions() as session:
            row = await repository.create(
                session,
                owner_id=caller.owner_id,
                kind=UploadKind.TUS,
                length=10,
                quota=0,
                expires_in=dt.timedelta(hours=1),
            )
            assert row is not None
            await session.commit()
            return str(row.id)

    assert client.portal is not None
    tus_id = client.portal.call(tus_upload)
    assert code_of(complete(client, caller, tus_id)) == (404, "not-found")


def test_an_upload_another_request_holds_is_locked(client: TestClient, caller: Caller) -> None:
    data = png(7, 64)
    offer = create(client, caller, data)
    upload_id = uuid.UUID(offer["id"])

    async def hold() -> None:
        async with app_state(client).sessions() as session:
            held = await repository.acquire_lease(
                session, caller.owner_id, upload_id, uuid.uuid4(), dt.timedelta(minutes=1)
            )
            assert held is not None
            await session.commit()

    assert client.portal is not None
    client.portal.call(hold)
    assert code_of(complete(client, caller, offer["id"])) == (423, "upload-locked")
    assert status_of(client, caller, offer["id"])["state"] == "receiving"


@pytest.mark.usefixtures("leftovers")
def test_a_rollback_after_the_multipart_upload_started_aborts_it(
    client: TestClient, caller: Caller, store: S3Store, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(*args: object) -> None:
        raise StorageUnavailable("fails after CreateMultipartUpload")

    monkeypatch.setattr(repository, "start_multipart", fails)
    resp = client.post(
        "/v1/uploads", headers=caller.headers, json={"filename": "a.png", "size": chunk + 1}
    )
    assert code_of(resp) == (503, "storage-unavailable")
    assert store.open_multipart_uploads(keys.quarantine_prefix(caller.owner_id)) == []
    assert count_uploads(client, caller.owner_id) == 0


def test_the_lease_is_renewed_while_held(client: TestClient, caller: Caller) -> None:
    """A finalization may outlast one lease: `holding` keeps renewing it, then lets it go."""
    offer = create(client, caller, png(8, 64))
    upload_id = uuid.UUID(offer["id"])
    state = app_state(client)
    settings = state.settings.model_copy(update={"upload_lease_seconds": 1})

    async def lease_until() -> dt.datetime | None:
        async with state.sessions() as session:
            row = await repository.get(session, caller.owner_id, upload_id)
            assert row is not None
            return row.lease_until

    async def hold() -> tuple[dt.datetime | None, dt.datetime | None, dt.datetime | None]:
        async with (
            state.sessions() as session,
            holding(
                state.sessions, session, settings, caller.owner_id, upload_id, UploadKind.DIRECT
            ),
        ):
            first = await lease_until()
            await asyncio.sleep(1.5)
            last = await lease_until()
        return first, last, await lease_until()

    assert client.portal is not None
    first, last, after = client.portal.call(hold)
    assert first is not None
    assert last is not None
    assert last > first + dt.timedelta(seconds=0.5)
    assert after is None
