"""The thumbnails job in-process against the real stack: states, idempotency, failures."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media_api.dev.stack import free_port
from media_api.jobs.contract import JobKind
from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller, upload
from tests.support.corpus import CORPUS
from tests.support.fakes import FakeProducer
from tests.support.images import png
from tests.support.jobs import job_of, run_variants
from workers import pipeline
from workers.context import WorkerContext, context
from workers.sweep import sweep

LANDSCAPE = (CORPUS / "orientation/jpeg_landscape_exif1.jpg").read_bytes()
PORTRAIT_6 = (CORPUS / "orientation/jpeg_portrait_exif6.jpg").read_bytes()


@pytest.fixture(scope="module")
def offline(app_settings: Settings) -> Iterator[tuple[TestClient, Caller]]:
    """An API whose broker is down: uploads are recorded, nothing is dispatched, so the
    test drives the pipeline itself."""
    dead = app_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        yield client, new_caller(client)


def _get(client: TestClient, caller: Caller, image_id: str) -> dict[str, object]:
    resp = client.get(f"/v1/images/{image_id}", headers=caller.headers)
    assert resp.status_code == 200
    body: dict[str, object] = resp.json()
    return body


def _ctx(settings: Settings, **update: object) -> WorkerContext:
    """The worker context with some settings changed (a broken S3 endpoint, quick sweeps)."""
    base = context(settings)
    changed = settings.model_copy(update=update)
    store = S3Store(changed) if "s3_endpoint_url" in update else base.store
    return WorkerContext(changed, base.engine, base.sessions, store)


def _dead_s3() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_job_runs_once_and_records_everything(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    status, body = upload(client, caller, LANDSCAPE, filename="p.jpg")
    assert status == 201
    image_id = str(body["id"])
    ctx = context(settings)

    assert run_variants(ctx, uuid.UUID(image_id)).startswith("ready")
    after = _get(client, caller, image_id)
    assert after["status"] == "ready"
    job = job_of(after, JobKind.THUMBNAILS)
    assert (job["state"], job["attempts"], job["error_code"]) == ("done", 1, None)
    assert job["started_at"] is not None
    assert job["finished_at"] is not None
    assert isinstance(after["placeholder"], str)
    assert after["placeholder"]
    variants = {v["name"]: v for v in after["variants"]}  # type: ignore[union-attr]
    assert set(variants) == {"thumb", "medium", "large"}
    assert (variants["thumb"]["width"], variants["thumb"]["height"]) == (256, 256)
    for variant in variants.values():
        data = store.get_bytes(
            keys.variant_key(caller.owner_id, uuid.UUID(image_id), variant["name"], "webp")
        )
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "WEBP"
            assert img.size == (variant["width"], variant["height"])
            assert not img.getexif()
        assert b"Exif" not in data

    # A duplicate delivery of a finished job does nothing.
    assert run_variants(ctx, uuid.UUID(image_id)).startswith("skipped")
    assert job_of(_get(client, caller, image_id), JobKind.THUMBNAILS)["attempts"] == 1


def test_orientation_6_gives_portrait_variants(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    _, body = upload(client, caller, PORTRAIT_6, filename="x.jpg")
    image_id = str(body["id"])
    with Image.open(io.BytesIO(PORTRAIT_6)) as stored:
        stored_w, stored_h = stored.size
    assert stored_w > stored_h  # the pixels are stored landscape...
    run_variants(context(settings), uuid.UUID(image_id))
    large = next(v for v in _get(client, caller, image_id)["variants"] if v["name"] == "large")  # type: ignore[union-attr]
    assert large["height"] > large["width"]  # ...and shown portrait


def test_missing_original_fails_the_job_and_the_image(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    _, body = upload(client, caller, png(1, (300, 200)))
    image_id = str(body["id"])
    store.delete(keys.original_key(caller.owner_id, uuid.UUID(image_id)))
    assert run_variants(context(settings), uuid.UUID(image_id)) == "failed: original-missing"
    after = _get(client, caller, image_id)
    assert (after["status"], after["error_code"]) == ("failed", "original-missing")
    assert job_of(after, JobKind.THUMBNAILS)["state"] == "failed"


def test_storage_outage_is_transient_and_leaves_the_job_pending(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    _, body = upload(client, caller, png(2, (300, 200)))
    image_id = str(body["id"])
    with pytest.raises(pipeline.TransientJobError):
        run_variants(_ctx(settings, s3_endpoint_url=_dead_s3()), uuid.UUID(image_id))
    job = job_of(_get(client, caller, image_id), JobKind.THUMBNAILS)
    assert (job["state"], job["error_code"], job["attempts"]) == (
        "pending",
        "storage-unavailable",
        1,
    )
    assert _get(client, caller, image_id)["status"] == "processing"


def test_sweep_redispatches_stale_jobs_and_fails_exhausted_ones(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    _, fresh = upload(client, caller, png(3, (300, 200)))
    quick: dict[str, object] = {"job_pending_grace_seconds": 0.001, "job_max_attempts": 2}
    ctx = _ctx(settings, **quick)
    producer = FakeProducer()
    sweep(ctx, producer)
    assert ("media.make_variants", (str(fresh["id"]),), "thumbnails") in producer.sent

    # Exhausted: attempts at the maximum -> failed, not sent again.
    _, tired = upload(client, caller, png(4, (300, 200)))
    for _ in range(2):
        broken = _ctx(settings, **quick, s3_endpoint_url=_dead_s3())
        with pytest.raises(pipeline.TransientJobError):
            run_variants(broken, uuid.UUID(str(tired["id"])))
    producer = FakeProducer()
    sweep(ctx, producer)
    assert ("media.make_variants", (str(tired["id"]),), "thumbnails") not in producer.sent
    after = _get(client, caller, str(tired["id"]))
    assert (after["status"], after["error_code"]) == ("failed", "too-many-attempts")


def test_reprocess_runs_the_jobs_again(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    _, body = upload(client, caller, png(5, (300, 200)))
    image_id = str(body["id"])
    store.delete(keys.original_key(caller.owner_id, uuid.UUID(image_id)))
    run_variants(context(settings), uuid.UUID(image_id))
    assert _get(client, caller, image_id)["status"] == "failed"

    store.put_bytes(
        keys.original_key(caller.owner_id, uuid.UUID(image_id)), png(5, (300, 200)), "image/png"
    )
    resp = client.post(f"/v1/images/{image_id}/reprocess", headers=caller.headers)
    assert resp.status_code == 202
    again = resp.json()
    assert again["status"] == "processing"
    assert (
        job_of(again, JobKind.THUMBNAILS)["state"],
        job_of(again, JobKind.THUMBNAILS)["attempts"],
    ) == ("pending", 0)
    assert run_variants(context(settings), uuid.UUID(image_id)).startswith("ready")
    assert _get(client, caller, image_id)["status"] == "ready"
    other = new_caller(client)
    assert client.post(f"/v1/images/{image_id}/reprocess", headers=other.headers).status_code == 404
