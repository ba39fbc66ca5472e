"""Uploads larger than one S3 part: sent to storage while the body still arrives, byte-identical
when accepted, and nothing left behind (no object, no open multipart upload) whichever way they
end. The API here cuts 5 MiB parts, so the 12 MB test file is two full parts and a tail."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from PIL import Image

from media_api.dev.stack import free_port
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support import streaming
from tests.support.callers import Caller, new_caller, upload
from tests.support.leftovers import assert_nothing_left
from tests.support.serving import api_client, api_server
from tests.support.streaming import PART, TWO_PARTS_AND_SOME, RawUpload, parts_stored
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return streaming.big_png()


@pytest.fixture(scope="module")
def part_settings(app_settings: Settings) -> Settings:
    return app_settings.model_copy(update={"s3_multipart_chunk_bytes": PART})


@pytest.fixture(scope="module")
def part_client(part_settings: Settings) -> Iterator[TestClient]:
    yield from api_client(part_settings)


@pytest.fixture(scope="module")
def part_server(part_settings: Settings) -> Iterator[str]:
    """The API under uvicorn, so a test can send the body piece by piece over a real socket."""
    yield from api_server(part_settings)


def _twoparts_stored(store: S3Store, caller: Caller) -> None:
    wait_for(lambda: parts_stored(store, caller.owner_id) >= 2, "two parts stored mid-body")


@pytest.mark.usefixtures("leftovers")
def test_parts_leave_while_the_body_arrives_and_the_object_is_identical(
    part_server: str, store: S3Store, caller: Caller, big_png: bytes
) -> None:
    raw = RawUpload(part_server, caller, big_png, "big.jpg")
    raw.send_until(TWO_PARTS_AND_SOME)
    _twoparts_stored(store, caller)  # the rest of the body has not been sent yet
    status, body = raw.finish()
    assert status == 201, body
    assert body["content_type"] == "image/png"
    assert (body["width"], body["height"], body["size"]) == (2048, 2048, len(big_png))
    assert body["sha256"] == hashlib.sha256(big_png).hexdigest()
    key = keys.original_key(caller.owner_id, uuid.UUID(body["id"]))
    assert store.get_bytes(key) == big_png
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    assert head["ContentType"] == "image/png"  # sniffed, not the part's image/jpeg
    assert head["ETag"].strip('"').endswith("-3")  # 5 MiB + 5 MiB + the rest


@pytest.mark.usefixtures("leftovers")
def test_a_small_file_is_one_put_with_the_sniffed_type(
    part_client: TestClient, store: S3Store, caller: Caller
) -> None:
    img = Image.new("RGB", (40, 30), (1, 2, 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    status, body = upload(part_client, caller, buf.getvalue(), content_type="image/jpeg")
    assert status == 201, body
    head = store.client.head_object(
        Bucket=store.bucket, Key=keys.original_key(caller.owner_id, uuid.UUID(body["id"]))
    )
    assert head["ContentType"] == "image/png"
    assert "-" not in head["ETag"]


@pytest.mark.usefixtures("leftovers")
def test_a_corrupt_file_found_after_parts_were_sent_leaves_nothing(
    part_server: str, store: S3Store, caller: Caller, big_png: bytes
) -> None:
    truncated = big_png[:-200_000]  # starts like a fine PNG; the decode fails at the end
    raw = RawUpload(part_server, caller, truncated, "big.png")
    raw.send_until(TWO_PARTS_AND_SOME)
    _twoparts_stored(store, caller)
    status, body = raw.finish()
    assert (status, body["code"]) == (422, "corrupt-image")


def test_a_disconnect_after_several_parts_leaves_nothing(
    part_server: str,
    client: TestClient,
    store: S3Store,
    upload_tmp: Path,
    caller: Caller,
    big_png: bytes,
) -> None:
    raw = RawUpload(part_server, caller, big_png, "big.png")
    raw.send_until(TWO_PARTS_AND_SOME)
    _twoparts_stored(store, caller)
    raw.conn.close()  # the client goes away mid-body
    wait_for(
        lambda: parts_stored(store, caller.owner_id) == 0 and not any(upload_tmp.iterdir()),
        "the server to abort the upload",
    )
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


@pytest.mark.usefixtures("leftovers")
def test_a_duplicate_large_upload_leaves_exactly_one_object(
    part_client: TestClient, part_server: str, store: S3Store, caller: Caller, big_png: bytes
) -> None:
    first_status, first = upload(part_client, caller, big_png, filename="a.png")
    raw = RawUpload(part_server, caller, big_png, "again.png")
    raw.send_until(TWO_PARTS_AND_SOME)
    _twoparts_stored(store, caller)  # the copy is on its way before the dedupe can know
    again_status, again = raw.finish()
    assert (first_status, again_status) == (201, 200)
    assert again["id"] == first["id"]
    assert store.list_keys(keys.originals_prefix(caller.owner_id)) == [
        keys.original_key(caller.owner_id, uuid.UUID(first["id"]))
    ]


@pytest.mark.usefixtures("leftovers")
def test_racing_identical_large_uploads_make_one_object(
    part_server: str, store: S3Store, caller: Caller, big_png: bytes
) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=part_server, timeout=120) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/images", headers=caller.headers, files={"file": ("p.png", big_png)}
                    )
                    for _ in range(3)
                )
            )

    responses = asyncio.run(run())
    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(store.list_keys(keys.originals_prefix(caller.owner_id))) == 1


def test_storage_failing_after_a_part_was_accepted_is_503_and_leaves_nothing(
    part_settings: Settings,
    client: TestClient,
    store: S3Store,
    upload_tmp: Path,
    big_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestClient(create_app(part_settings)) as failing:
        state: AppState = failing.app.state.media  # type: ignore[attr-defined]
        s3 = state.store.sync.client
        real = s3.upload_part

        def second_part_fails(**kwargs: Any) -> Any:
            if kwargs["PartNumber"] >= 2:
                raise ClientError({"Error": {"Code": "InternalError", "Message": "x"}}, "Put")
            return real(**kwargs)

        monkeypatch.setattr(s3, "upload_part", second_part_fails)
        caller = new_caller(failing)
        status, body = upload(failing, caller, big_png, filename="big.png")
    assert (status, body["code"]) == (503, "storage-unavailable")
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_a_non_image_is_refused_before_any_storage_request(
    part_settings: Settings, client: TestClient, store: S3Store, upload_tmp: Path
) -> None:
    """Storage is unreachable here: any request to it would turn the answer into a 503."""
    dead = f"http://127.0.0.1:{free_port()}"
    pdf = b"%PDF-1.7\n" + os.urandom(3 * PART)
    with TestClient(create_app(part_settings.model_copy(update={"s3_endpoint_url": dead}))) as app:
        caller = new_caller(app)
        status, body = upload(app, caller, pdf, filename="scan.png")
    assert (status, body["code"]) == (415, "unsupported-media-type")
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
