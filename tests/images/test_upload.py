"""The upload contract: limits, sniffing, dedupe, auth, deletion, and no leftovers on failure."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from media_api.dev.stack import free_port
from media_api.errors import PROBLEM_JSON
from media_api.jobs.producer import create_producer
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, job_states, new_caller, post_at_once, upload, without_urls
from tests.support.corpus import CORPUS
from tests.support.images import noise_png, png
from tests.support.leftovers import assert_nothing_left, original_keys_in_db

JPEG = (CORPUS / "valid/jpeg_baseline_testorig.jpg").read_bytes()
GIF_ANIMATED = (CORPUS / "valid/gif_animated.gif").read_bytes()
PDF_AS_JPG = (CORPUS / "malicious/disguised_pdf.jpg").read_bytes()


def _client_with(app_settings: Settings, **update: object) -> TestClient:
    return TestClient(create_app(app_settings.model_copy(update=update)))


# --- happy path, dedupe, read, delete ---------------------------------------------------


@pytest.mark.usefixtures("leftovers")
def test_upload_returns_the_resource_and_get_returns_it(
    client: TestClient, caller: Caller, store: S3Store
) -> None:
    status, body = upload(client, caller, JPEG, filename="holiday.jpg", title=" Beach ")
    assert status == 201
    assert body["title"] == "Beach"
    assert body["filename"] == "holiday.jpg"
    assert body["content_type"] == "image/jpeg"
    assert (body["width"], body["height"], body["size"]) == (227, 149, len(JPEG))
    assert uuid.UUID(str(body["id"]))
    again = client.get(f"/v1/images/{body['id']}", headers=caller.headers).json()
    assert without_urls(again) == without_urls(body)
    assert store.get_bytes(keys.original_key(caller.owner_id, uuid.UUID(body["id"]))) == JPEG


@pytest.mark.usefixtures("leftovers")
def test_same_bytes_again_return_the_existing_image(client: TestClient, caller: Caller) -> None:
    first_status, first = upload(client, caller, JPEG)
    again_status, again = upload(client, caller, JPEG, filename="renamed.jpg", title="other")
    assert (first_status, again_status) == (201, 200)
    assert without_urls(again) == without_urls(first)
    assert len(original_keys_in_db(client, caller.owner_id)) == 1


def test_same_bytes_from_another_owner_are_a_new_image(client: TestClient) -> None:
    one, two = new_caller(client), new_caller(client)
    status_one, body_one = upload(client, one, JPEG)
    status_two, body_two = upload(client, two, JPEG)
    assert (status_one, status_two) == (201, 201)
    assert body_one["id"] != body_two["id"]


def test_delete_removes_row_and_objects(
    client: TestClient, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    _, body = upload(client, caller, png(1))
    image_id = body["id"]
    variant = keys.variant_key(caller.owner_id, uuid.UUID(image_id), "thumb", "webp")
    store.put_bytes(variant, b"pretend variant", "image/webp")
    resp = client.delete(f"/v1/images/{image_id}", headers=caller.headers)
    assert resp.status_code == 204
    assert client.get(f"/v1/images/{image_id}", headers=caller.headers).status_code == 404
    assert store.list_keys(keys.originals_prefix(caller.owner_id)) == []
    assert not store.exists(variant)
    assert client.delete(f"/v1/images/{image_id}", headers=caller.headers).status_code == 404
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_another_owners_image_is_not_found(client: TestClient, caller: Caller) -> None:
    _, body = upload(client, caller, png(2))
    stranger = new_caller(client)
    for method in ("get", "delete"):
        resp = client.request(method, f"/v1/images/{body['id']}", headers=stranger.headers)
        assert resp.status_code == 404
        assert resp.json()["code"] == "not-found"
    assert client.get(f"/v1/images/{body['id']}", headers=caller.headers).status_code == 200


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer mk_000000000000_nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer not-a-key"},
    ],
)
def test_uploads_need_a_valid_key(client: TestClient, headers: dict[str, str]) -> None:
    resp = client.post("/v1/images", headers=headers, files={"file": ("a.jpg", JPEG)})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json()["code"] == "unauthorized"


# --- the bytes decide -------------------------------------------------------------------------


@pytest.mark.usefixtures("leftovers")
def test_pdf_named_jpg_is_unsupported(client: TestClient, caller: Caller) -> None:
    status, body = upload(client, caller, PDF_AS_JPG, filename="invoice.jpg")
    assert status == 415
    assert body["code"] == "unsupported-media-type"


@pytest.mark.usefixtures("leftovers")
def test_jpeg_named_txt_is_a_jpeg(client: TestClient, caller: Caller) -> None:
    status, body = upload(client, caller, JPEG, filename="notes.txt", content_type="text/plain")
    assert status == 201
    assert body["content_type"] == "image/jpeg"


@pytest.mark.usefixtures("leftovers")
def test_truncated_image_is_corrupt(client: TestClient, caller: Caller) -> None:
    status, body = upload(client, caller, JPEG[: len(JPEG) // 2])
    assert status == 422
    assert body["code"] == "corrupt-image"


# --- limits ---------------------------------------------------------------------------------


def test_pixel_and_frame_limits(app_settings: Settings, store: S3Store, upload_tmp: Path) -> None:
    with _client_with(app_settings, max_pixels=227 * 149 - 1, max_frames=10) as client:
        caller = new_caller(client)
        status, body = upload(client, caller, JPEG)
        assert (status, body["code"]) == (422, "image-too-large")
        status, body = upload(client, caller, GIF_ANIMATED, filename="a.gif")
        assert (status, body["code"]) == (422, "image-too-large")
        assert upload(client, caller, png(3))[0] == 201  # 32x32, one frame: within limits
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_file_over_the_limit_is_413(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    with _client_with(app_settings, max_upload_bytes=len(JPEG) - 1) as client:
        caller = new_caller(client)
        status, body = upload(client, caller, JPEG)
        assert (status, body["code"]) == (413, "file-too-large")
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_chunked_body_over_the_limit_is_413_while_streaming(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    """No Content-Length: the limit is enforced on the bytes as they arrive."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield head + JPEG[:100]
        for _ in range(100):  # 6.4 MB would follow if the server kept reading
            sent += 1
            yield b"\0" * 65536

    with _client_with(app_settings, max_upload_bytes=1024 * 1024) as client:
        caller = new_caller(client)
        resp = client.post(
            "/v1/images",
            headers={**caller.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=body(),
        )
        assert resp.status_code == 413
        assert resp.json()["code"] == "file-too-large"
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_declared_content_length_over_the_limit_is_refused_before_the_body(
    live_server: str, app_settings: Settings
) -> None:
    """The 413 arrives although not one byte of the declared 10 GB body was sent."""
    with TestClient(create_app(app_settings)) as client:
        caller = new_caller(client)
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {caller.token}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=x\r\n"
            + b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = sock.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413")
    assert "file-too-large" in reply


# --- malformed requests ------------------------------------------------------------------------


@pytest.mark.usefixtures("leftovers")
def test_bad_requests_are_400_problems(client: TestClient, caller: Caller) -> None:
    cases = {
        "missing-file": client.post(
            "/v1/images",
            headers=caller.headers,
            data={"title": "x"},
            files={"other": ("a.jpg", JPEG)},
        ),
        "invalid-multipart": client.post("/v1/images", headers=caller.headers, json={"a": 1}),
        "empty-file": client.post(
            "/v1/images", headers=caller.headers, files={"file": ("a.jpg", b"")}
        ),
    }
    for code, resp in cases.items():
        assert resp.status_code == 400, (code, resp.text)
        assert resp.headers["content-type"] == PROBLEM_JSON
        assert resp.json()["code"] == code


@pytest.mark.usefixtures("leftovers")
def test_two_files_in_one_request_are_refused(client: TestClient, caller: Caller) -> None:
    resp = client.post(
        "/v1/images",
        headers=caller.headers,
        files=[("file", ("a.png", png(4))), ("file", ("b.png", png(5)))],
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid-multipart"


# --- failures leave nothing behind -------------------------------------------------------------


def test_storage_outage_is_503_and_leaves_nothing(
    app_settings: Settings, store: S3Store, upload_tmp: Path, client: TestClient
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with _client_with(app_settings, s3_endpoint_url=dead) as broken:
        caller = new_caller(broken)
        status, body = upload(broken, caller, png(6))
    assert (status, body["code"]) == (503, "storage-unavailable")
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_database_failure_after_storing_removes_the_object(
    client: TestClient, caller: Caller, store: S3Store, upload_tmp: Path
) -> None:
    """A real database error (a trigger refusing the row) after the object was written."""

    async def trigger(*statements: str) -> None:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))

    assert client.portal is not None
    client.portal.call(
        trigger,
        """
        CREATE OR REPLACE FUNCTION refuse_explode() RETURNS trigger AS $$
        BEGIN
          IF NEW.title = 'explode' THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        """
        CREATE TRIGGER refuse_explode BEFORE INSERT ON images
          FOR EACH ROW EXECUTE FUNCTION refuse_explode()""",
    )
    session_state = client.app.state.media  # type: ignore[attr-defined]
    try:
        # A second lifespan on the same app: it replaces app.state.media and closes its own on
        # the way out, so the session's state is put back in `finally`.
        with TestClient(client.app, raise_server_exceptions=False) as same_app:
            resp = same_app.post(
                "/v1/images",
                headers=caller.headers,
                files={"file": ("x.png", png(7))},
                data={"title": "explode"},
            )
        assert resp.status_code == 500
        assert resp.json()["code"] == "internal-error"
        assert "refused by test trigger" not in resp.text
    finally:
        client.app.state.media = session_state  # type: ignore[attr-defined]
        client.portal.call(trigger, "DROP TRIGGER refuse_explode ON images")
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_client_disconnect_mid_upload_leaves_nothing(
    live_server: str, client: TestClient, store: S3Store, upload_tmp: Path
) -> None:
    caller = new_caller(client)
    port = int(live_server.rsplit(":", 1)[1])
    boundary = "cut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.png"\r\n\r\n'
    ).encode()
    big = noise_png(1000, "RGB")  # 3 MB: the server spools part of it before the cut
    assert len(big) > 2 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {caller.token}\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {len(head) + len(big) + 100}\r\n\r\n".encode()
            + head
            + big[: len(big) // 2]
        )
        time.sleep(0.3)
    time.sleep(0.5)  # let the server notice the disconnect and clean up
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


# --- concurrency ---------------------------------------------------------------------------------


def test_fifty_parallel_uploads_are_all_recorded(
    live_server: str, client: TestClient, store: S3Store, upload_tmp: Path
) -> None:
    caller = new_caller(client)
    files = [png(1000 + i, size=64) for i in range(50)]
    responses = post_at_once(live_server, caller, files)
    assert [r.status_code for r in responses] == [201] * 50
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 50
    assert len(original_keys_in_db(client, caller.owner_id)) == 50
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_racing_identical_uploads_make_one_image(
    live_server: str, client: TestClient, store: S3Store, upload_tmp: Path
) -> None:
    caller = new_caller(client)
    data = png(9, size=200)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
            return await asyncio.gather(
                *(
                    http.post("/v1/images", headers=caller.headers, files={"file": ("p.png", data)})
                    for _ in range(10)
                )
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1
    assert statuses.count(200) == 9
    assert len({r.json()["id"] for r in responses}) == 1
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


# --- dispatch -----------------------------------------------------------------------------------


def _drain(settings: Settings, queue: str) -> list[str]:
    """Bodies of the messages waiting on a queue (works on Redis and AMQP brokers)."""
    producer = create_producer(settings)
    found: list[str] = []
    try:
        with producer.connection_for_read() as conn:
            channel = conn.default_channel
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                found.append(str(message.headers.get("argsrepr") or message.body))
    finally:
        producer.close()
    return found


def test_processing_is_dispatched_after_commit(
    client: TestClient, caller: Caller, app_settings: Settings
) -> None:
    _drain(app_settings, "thumbnails")
    status, body = upload(client, caller, png(10))
    assert status == 201
    assert any(str(body["id"]) in message for message in _drain(app_settings, "thumbnails"))
    again_status, _ = upload(client, caller, png(10))
    assert again_status == 200
    assert _drain(app_settings, "thumbnails") == []  # a duplicate dispatches nothing


def test_broker_outage_still_accepts_the_upload(
    app_settings: Settings, store: S3Store, upload_tmp: Path, client: TestClient
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _client_with(app_settings, broker_url=dead) as no_broker:
        caller = new_caller(no_broker)
        status, body = upload(no_broker, caller, png(11))
    assert status == 201
    # Nothing was published; the sweep picks the jobs up.
    assert job_states(body) == {"thumbnails": "pending", "tagging": "pending"}
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
