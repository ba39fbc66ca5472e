"""The thumbnails job in-process against the real stack: states, idempotency, failures."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media_api.dev.stack import free_port
from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.corpus import CORPUS
from tests.support.helpers import Caller, new_caller, upload
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


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (seed % 256, 10, 200)).save(buf, "PNG")
    return buf.getvalue()


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


def _job(body: dict[str, object]) -> dict[str, object]:
    jobs = body["jobs"]
    assert isinstance(jobs, list)
    (job,) = [j for j in jobs if j["kind"] == "thumbnails"]
    return dict(job)


def test_job_runs_once_and_records_everything(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    status, body = upload(client, caller, LANDSCAPE, filename="p.jpg")
    assert status == 201
    image_id = str(body["id"])
    ctx = context(settings)

    assert pipeline.make_variants(ctx, uuid.UUID(image_id)).startswith("ready")
    after = _get(client, caller, image_id)
    assert after["status"] == "ready"
    job = _job(after)
    assert (job["state"], job["attempts"], job["error_code"]) == ("done", 1, None)
    assert job["started_at"] is not None
    assert job["finished_at"] is not None
    assert isinstance(after["placeholder"], str)
    assert after["placeholder"]
    variants = {v["name"]: v for v in after["variants"]}  # type: ignore[union-attr]
    assert set(variants) == {"thumb", "medium", "large"}
    assert (variants["thumb"]["width"], variants["thumb"]["height"]) == (256, 256)
    for variant in variants.values():
        data = store.get_bytes(f"variants/{caller.owner_id}/{image_id}/{variant['name']}.webp")
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "WEBP"
            assert img.size == (variant["width"], variant["height"])
            assert not img.getexif()
        assert b"Exif" not in data

    # A duplicate delivery of a finished job does nothing.
    assert pipeline.make_variants(ctx, uuid.UUID(image_id)).startswith("skipped")
    assert _job(_get(client, caller, image_id))["attempts"] == 1


def test_orientation_6_gives_portrait_variants(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    _, body = upload(client, caller, PORTRAIT_6, filename="x.jpg")
    image_id = str(body["id"])
    with Image.open(io.BytesIO(PORTRAIT_6)) as stored:
        stored_w, stored_h = stored.size
    assert stored_w > stored_h  # the pixels are stored landscape...
    pipeline.make_variants(context(settings), uuid.UUID(image_id))
    large = next(v for v in _get(client, caller, image_id)["variants"] if v["name"] == "large")  # type: ignore[union-attr]
    assert large["height"] > large["width"]  # ...and shown portrait


def test_missing_original_fails_the_job_and_the_image(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    _, body = upload(client, caller, _png(1))
    image_id = str(body["id"])
    store.delete(f"originals/{caller.owner_id}/{image_id}")
    assert (
        pipeline.make_variants(context(settings), uuid.UUID(image_id)) == "failed: original-missing"
    )
    after = _get(client, caller, image_id)
    assert (after["status"], after["error_code"]) == ("failed", "original-missing")
    assert _job(after)["state"] == "failed"


def test_storage_outage_is_transient_and_leaves_the_job_pending(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    _, body = upload(client, caller, _png(2))
    image_id = str(body["id"])
    with pytest.raises(pipeline.TransientJobError):
        pipeline.make_variants(_ctx(settings, s3_endpoint_url=_dead_s3()), uuid.UUID(image_id))
    job = _job(_get(client, caller, image_id))
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
    _, fresh = upload(client, caller, _png(3))
    quick: dict[str, object] = {"job_pending_grace_seconds": 0.001, "job_max_attempts": 2}
    ctx = _ctx(settings, **quick)
    sent: list[tuple[str, tuple[str, ...], str]] = []
    sweep(ctx, lambda task, args, queue: sent.append((task, args, queue)))
    assert ("media.make_variants", (str(fresh["id"]),), "thumbnails") in sent

    # Exhausted: attempts at the maximum -> failed, not sent again.
    _, tired = upload(client, caller, _png(4))
    for _ in range(2):
        broken = _ctx(settings, **quick, s3_endpoint_url=_dead_s3())
        with pytest.raises(pipeline.TransientJobError):
            pipeline.make_variants(broken, uuid.UUID(str(tired["id"])))
    sent.clear()
    sweep(ctx, lambda task, args, queue: sent.append((task, args, queue)))
    assert ("media.make_variants", (str(tired["id"]),), "thumbnails") not in sent
    after = _get(client, caller, str(tired["id"]))
    assert (after["status"], after["error_code"]) == ("failed", "too-many-attempts")


def test_reprocess_runs_the_jobs_again(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    _, body = upload(client, caller, _png(5))
    image_id = str(body["id"])
    store.delete(f"originals/{caller.owner_id}/{image_id}")
    pipeline.make_variants(context(settings), uuid.UUID(image_id))
    assert _get(client, caller, image_id)["status"] == "failed"

    store.put_bytes(f"originals/{caller.owner_id}/{image_id}", _png(5), "image/png")
    resp = client.post(f"/v1/images/{image_id}/reprocess", headers=caller.headers)
    assert resp.status_code == 202
    again = resp.json()
    assert again["status"] == "processing"
    assert (_job(again)["state"], _job(again)["attempts"]) == ("pending", 0)
    assert pipeline.make_variants(context(settings), uuid.UUID(image_id)).startswith("ready")
    assert _get(client, caller, image_id)["status"] == "ready"
    other = new_caller(client)
    assert client.post(f"/v1/images/{image_id}/reprocess", headers=other.headers).status_code == 404
