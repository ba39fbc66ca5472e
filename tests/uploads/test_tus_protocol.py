"""tus 1.0.0 at /v1/uploads/tus through the app (real Postgres and SeaweedFS): discovery,
creation, HEAD, PATCH, checksums, termination and every refusal of the design's table."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media_api.storage.keys import original_key, quarantine_prefix
from media_api.storage.s3 import S3Store
from media_api.uploads.models import UploadState
from tests.support.callers import Caller, new_caller
from tests.support.images import noise_png, png
from tests.support.leftovers import assert_nothing_left, bytes_reserved
from tests.support.metrics import metric_samples
from tests.support.uploads import ENDPOINT, OCTETS, Tus, upload_row


@pytest.fixture
def tus(client: TestClient, caller: Caller) -> Tus:
    return Tus(client, caller)


def problem_code(resp: object) -> str:
    code: str = resp.json()["code"]  # type: ignore[attr-defined]
    return code


def test_options_advertises_the_protocol_without_a_key(client: TestClient) -> None:
    resp = client.options(ENDPOINT)
    assert resp.status_code == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert resp.headers["Tus-Resumable"] == "1.0.0"
    assert set(resp.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert int(resp.headers["Tus-Max-Size"]) == client.app.state.media.settings.max_upload_bytes  # type: ignore[attr-defined]
    assert resp.headers["Tus-Checksum-Algorithm"] == "sha1,sha256"


def test_a_request_without_the_version_is_refused_before_anything(
    client: TestClient, tus: Tus, caller: Caller
) -> None:
    resp = client.post(ENDPOINT, headers={**caller.headers, "Upload-Length": "10"})
    assert resp.status_code == 412
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert problem_code(resp) == "tus-version"
    assert bytes_reserved(client, caller.owner_id) == 0
    url = tus.created(10)
    resp = client.patch(url, headers={**caller.headers, **OCTETS, "Upload-Offset": "0"})
    assert resp.status_code == 412


def test_one_patch_makes_the_image(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    data = png(1, 48)
    url = tus.created(len(data), filename="cat.png", title="Cat")
    assert bytes_reserved(client, caller.owner_id) == len(data)
    head = tus.head(url)
    assert (head.status_code, head.headers["Upload-Offset"]) == (200, "0")
    assert head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Cache-Control"] == "no-store"
    assert "Media-Image-Id" not in head.headers

    resp = tus.patch(url, 0, data)
    assert resp.status_code == 204, resp.text
    assert resp.headers["Upload-Offset"] == str(len(data))
    image_id = resp.headers["Media-Image-Id"]
    image = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    assert (image["title"], image["filename"], image["size"]) == (
        "Cat",
        "cat.png",
        len(data),
    )
    assert tus.head(url).headers["Media-Image-Id"] == image_id
    row = upload_row(client, url)
    assert row is not None
    assert (row.state, str(row.image_id), row.tail) == (UploadState.ACCEPTED, image_id, None)
    # The quarantine object went, the original is the image's, no reservation is left.
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)

    again = tus.patch(url, len(data), b"")
    assert (again.status_code, again.headers["Media-Image-Id"]) == (204, image_id)


def test_small_pieces_wait_in_the_tail_until_the_last(client: TestClient, tus: Tus) -> None:
    data = png(2, 64)
    url = tus.created(len(data))
    assert tus.patch(url, 0, data[:10]).status_code == 204
    assert tus.patch(url, 10, data[10:100]).status_code == 204
    row = upload_row(client, url)
    assert row is not None
    assert (row.received, row.tail, row.parts) == (100, data[:100], [])
    assert row.content_type is None or row.content_type == "image/png"
    last = tus.patch(url, 100, data[100:])
    assert last.status_code == 204
    assert "Media-Image-Id" in last.headers


def test_creation_with_upload(client: TestClient, tus: Tus, caller: Caller) -> None:
    data = png(3, 40)
    created = uploads_counted(client, "created")
    resp = tus.create(len(data), data, filename="a.png")
    assert resp.status_code == 201, resp.text
    assert uploads_counted(client, "created") == created + 1
    assert resp.headers["Upload-Offset"] == str(len(data))
    image = client.get(f"/v1/images/{resp.headers['Media-Image-Id']}", headers=caller.headers)
    assert image.status_code == 200


def test_a_duplicate_answers_the_existing_image(tus: Tus) -> None:
    data = png(4, 40)
    first = tus.send(data, len(data)).headers["Media-Image-Id"]
    assert tus.send(data, 50).headers["Media-Image-Id"] == first


def test_offset_mismatch_changes_nothing(client: TestClient, tus: Tus) -> None:
    data = png(5, 40)
    url = tus.created(len(data))
    assert tus.patch(url, 0, data[:20]).status_code == 204
    resp = tus.patch(url, 5, data[5:30])
    assert (resp.status_code, problem_code(resp)) == (409, "offset-mismatch")
    row = upload_row(client, url)
    assert row is not None
    assert (row.received, row.tail) == (20, data[:20])


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksums(client: TestClient, tus: Tus, algorithm: str) -> None:
    data = png(6, 40)
    url = tus.created(len(data))
    assert tus.patch(url, 0, data[:30], checksum=algorithm).status_code == 204
    # A body that does not match its checksum is discarded whole.
    headers = {**tus.headers, **OCTETS, "Upload-Offset": "30"}
    wrong = base64.b64encode(b"\0" * (20 if algorithm == "sha1" else 32)).decode()
    headers["Upload-Checksum"] = f"{algorithm} {wrong}"
    resp = client.patch(url, headers=headers, content=data[30:])
    assert (resp.status_code, problem_code(resp)) == (460, "checksum-mismatch")
    row = upload_row(client, url)
    assert row is not None
    assert (row.received, row.tail) == (30, data[:30])
    assert tus.patch(url, 30, data[30:], checksum=algorithm).status_code == 204


def test_an_unsupported_checksum_is_refused_before_the_body(client: TestClient, tus: Tus) -> None:
    data = png(7, 40)
    url = tus.created(len(data))
    headers = {**tus.headers, **OCTETS, "Upload-Offset": "0", "Upload-Checksum": "md5 AAAA"}
    resp = client.patch(url, headers=headers, content=data)
    assert (resp.status_code, problem_code(resp)) == (400, "unsupported-checksum")
    assert tus.head(url).headers["Upload-Offset"] == "0"


def test_a_pdf_is_refused_at_its_first_patch(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    pdf = b"%PDF-1.7\n" + b"x" * 5000
    url = tus.created(len(pdf))
    resp = tus.patch(url, 0, pdf[:1000])
    assert (resp.status_code, problem_code(resp)) == (415, "unsupported-media-type")
    row = upload_row(client, url)
    assert row is not None
    assert row.state == UploadState.REJECTED
    assert row.error is not None
    assert row.error["code"] == "unsupported-media-type"
    assert tus.head(url).status_code == 410
    gone = tus.patch(url, 0, pdf[:1000])
    assert (gone.status_code, problem_code(gone)) == (410, "upload-gone")
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def uploads_counted(client: TestClient, outcome: str, code: str = "") -> float:
    samples = metric_samples(client.get("/metrics").text)
    return samples.get(("media_uploads_total", (("code", code), ("outcome", outcome))), 0.0)


def test_a_truncated_image_is_refused_after_its_last_byte(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    data = png(8, 300)[:-40]
    url = tus.created(len(data))
    assert tus.patch(url, 0, data[:100]).status_code == 204
    refused = uploads_counted(client, "rejected", "corrupt-image")
    resp = tus.patch(url, 100, data[100:])
    assert (resp.status_code, problem_code(resp)) == (422, "corrupt-image")
    assert uploads_counted(client, "rejected", "corrupt-image") == refused + 1
    row = upload_row(client, url)
    assert row is not None
    assert (row.state, row.image_id) == (UploadState.REJECTED, None)
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_termination_gives_everything_back(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    data = png(9, 40)
    url = tus.created(len(data))
    assert tus.patch(url, 0, data[:50]).status_code == 204
    assert client.delete(url, headers=tus.headers).status_code == 204
    assert tus.head(url).status_code == 404
    assert "Upload-Offset" not in tus.head(url).headers
    assert upload_row(client, url) is None
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_method_override(client: TestClient, tus: Tus) -> None:
    data = png(10, 40)
    url = tus.created(len(data))
    headers = {**tus.headers, **OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    resp = client.post(url, headers=headers, content=data)
    assert resp.status_code == 204
    assert "Media-Image-Id" in resp.headers
    other = tus.created(len(data))
    deleted = client.post(other, headers={**tus.headers, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204
    assert upload_row(client, other) is None


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 400, "invalid-tus-request"),
        ({"Upload-Length": "-1"}, 400, "invalid-tus-request"),
        ({"Upload-Length": "10", "Upload-Defer-Length": "1"}, 400, "invalid-tus-request"),
        (
            {"Upload-Length": "10", "Upload-Metadata": "filename not*base64"},
            400,
            "invalid-tus-request",
        ),
        ({"Upload-Length": "0"}, 400, "empty-file"),
        ({"Upload-Length": str(10**12)}, 413, "file-too-large"),
        (
            {
                "Upload-Length": "10",
                "Upload-Metadata": "gallery_id "
                + base64.b64encode(b"00000000-0000-0000-0000-000000000000").decode(),
            },
            404,
            "not-found",
        ),
        (
            {
                "Upload-Length": "10",
                "Upload-Metadata": "title " + base64.b64encode(b"a\nb").decode(),
            },
            422,
            "validation-error",
        ),
    ],
)
def test_creation_refusals_write_nothing(
    client: TestClient, tus: Tus, caller: Caller, headers: dict[str, str], status: int, code: str
) -> None:
    resp = client.post(ENDPOINT, headers={**tus.headers, **headers})
    assert (resp.status_code, problem_code(resp)) == (status, code)
    assert bytes_reserved(client, caller.owner_id) == 0


def test_patch_refusals_change_nothing(client: TestClient, tus: Tus) -> None:
    data = png(11, 40)
    url = tus.created(len(data))
    plain = {**tus.headers, "Upload-Offset": "0", "Content-Type": "application/octet-stream"}
    resp = client.patch(url, headers=plain, content=data)
    assert (resp.status_code, problem_code(resp)) == (415, "unsupported-media-type")
    too_long = tus.patch(url, 0, data + b"more")
    assert (too_long.status_code, problem_code(too_long)) == (413, "file-too-large")
    no_offset = client.patch(url, headers={**tus.headers, **OCTETS}, content=data)
    assert (no_offset.status_code, problem_code(no_offset)) == (400, "invalid-tus-request")
    row = upload_row(client, url)
    assert row is not None
    assert (row.state, row.received) == (UploadState.RECEIVING, 0)


def test_another_owners_upload_is_not_found(client: TestClient, tus: Tus) -> None:
    url = tus.created(100)
    stranger = Tus(client, new_caller(client))
    assert stranger.head(url).status_code == 404
    assert stranger.patch(url, 0, b"x").status_code == 404
    assert client.delete(url, headers=stranger.headers).status_code == 404
    assert upload_row(client, url) is not None


def test_parts_leave_as_they_fill_and_the_rest_waits_in_the_row(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    mib = 1024 * 1024
    part = store.part_bytes
    data = noise_png(4200)  # about 17 MiB: two full parts and a last one
    url = tus.created(len(data))
    offset = 0
    for size in (mib, part):  # one part filled, 1 MiB after it in the tail
        assert tus.patch(url, offset, data[offset : offset + size]).status_code == 204
        offset += size
    row = upload_row(client, url)
    assert row is not None
    assert ([p["size"] for p in row.parts], row.received, len(row.tail or b"")) == (
        [part],
        offset,
        mib,
    )
    assert [u.key for u in store.open_multipart_uploads(quarantine_prefix(caller.owner_id))] == [
        row.object_key
    ]
    # A piece of 5 MiB or more left at the end of a request becomes a part of its own.
    assert tus.patch(url, offset, data[offset : offset + 5 * mib]).status_code == 204
    offset += 5 * mib
    row = upload_row(client, url)
    assert row is not None
    assert ([p["size"] for p in row.parts], row.tail) == ([part, 6 * mib], None)
    last = tus.patch(url, offset, data[offset:])
    assert last.status_code == 204, last.text
    image = client.get(f"/v1/images/{last.headers['Media-Image-Id']}", headers=caller.headers)
    assert image.json()["size"] == len(data)
    original = store.get_bytes(original_key(caller.owner_id, uuid.UUID(image.json()["id"])))
    assert hashlib.sha256(original).digest() == hashlib.sha256(data).digest()
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_a_refused_creation_with_upload_leaves_nothing(
    client: TestClient, tus: Tus, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    """Its URL never reached the client, so nothing of it may stay (not even a reservation)."""
    data = png(12, 40)
    wrong = base64.b64encode(b"\0" * 32).decode()
    headers = {**tus.headers, **OCTETS, "Upload-Length": str(len(data))}
    headers["Upload-Checksum"] = f"sha256 {wrong}"
    resp = client.post(ENDPOINT, headers=headers, content=data)
    assert (resp.status_code, problem_code(resp)) == (460, "checksum-mismatch")
    assert "Location" not in resp.headers
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
    assert client.get("/v1/images", headers=caller.headers).json()["items"] == []


def test_the_tus_routes_never_touch_a_direct_upload(client: TestClient, tus: Tus) -> None:
    data = png(13, 40)
    offer = client.post(
        "/v1/uploads", headers=tus.caller.headers, json={"filename": "a.png", "size": len(data)}
    ).json()
    url = f"{ENDPOINT}/{offer['id']}"
    assert tus.head(url).status_code == 404
    assert tus.patch(url, 0, data).status_code == 404
    assert client.delete(url, headers=tus.headers).status_code == 404
    status = client.get(f"/v1/uploads/{offer['id']}", headers=tus.caller.headers).json()
    assert (status["kind"], status["state"]) == ("direct", "receiving")
