"""The tagging job with the real model, in-process and through a real worker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as samples

from media_api.dev.stack import free_port
from media_api.jobs.contract import JobKind
from media_api.jobs.producer import create_producer
from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import jpeg
from tests.support.jobs import job_of, run_tagging, run_variants
from tests.support.stack import settings_env
from tests.support.waiting import poll, wait_for_status
from tests.support.workers import start_worker, wait_for_worker
from workers import pipeline, repository
from workers.context import context

CAT_LABELS = {"tabby", "tabby cat", "tiger cat", "egyptian cat", "persian cat", "siamese cat"}


def _jpeg(pixels: np.ndarray) -> bytes:
    return jpeg(Image.fromarray(pixels))


CAT = _jpeg(samples.chelsea())
COFFEE = _jpeg(samples.coffee())


@pytest.fixture(scope="module")
def offline(app_settings: Settings) -> Iterator[tuple[TestClient, Caller]]:
    """No broker: the test runs the jobs itself."""
    dead = app_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        yield client, new_caller(client)


def _detail(client: TestClient, caller: Caller, image_id: str) -> dict[str, object]:
    body: dict[str, object] = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    return body


def test_cat_and_espresso_are_tagged_in_batches(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    cat = upload(client, caller, CAT, filename="chelsea.jpg")[1]
    coffee = upload(client, caller, COFFEE, filename="coffee.jpg")[1]
    assert job_of(cat, JobKind.TAGGING)["state"] == "pending"

    # One call takes other pending tagging jobs (oldest first) into the same model call.
    outcome = run_tagging(context(settings), uuid.UUID(str(cat["id"])))
    assert outcome.startswith("tagged")
    assert int(outcome.split()[1]) >= 2  # coffee, or older jobs still waiting
    run_tagging(context(settings), uuid.UUID(str(coffee["id"])))
    cat_detail = _detail(client, caller, str(cat["id"]))
    coffee_detail = _detail(client, caller, str(coffee["id"]))
    for detail in (cat_detail, coffee_detail):
        assert job_of(detail, JobKind.TAGGING)["state"] == "done"
        assert isinstance(detail["nsfw"], float)
        assert detail["flagged"] is False

    cat_tags = {t["name"]: t for t in cat_detail["tags"]}  # type: ignore[union-attr]
    assert CAT_LABELS & set(cat_tags), cat_tags
    assert "cat" in cat_tags
    assert cat_tags["cat"]["kind"] == "category"
    assert all(t["model"] and t["model_version"] for t in cat_tags.values())
    coffee_tags = {t["name"] for t in coffee_detail["tags"]}  # type: ignore[union-attr]
    assert "espresso" in coffee_tags

    listed = client.get("/v1/images", headers=caller.headers, params={"tag": "cat"}).json()
    assert [item["id"] for item in listed["items"]] == [cat["id"]]
    assert run_tagging(context(settings), uuid.UUID(str(cat["id"]))).startswith("skipped")


def test_a_job_in_another_workers_batch_is_left_to_it(
    offline: tuple[TestClient, Caller], settings: Settings
) -> None:
    client, caller = offline
    image = upload(client, caller, _jpeg(samples.rocket()), filename="rocket.jpg")[1]
    image_id = uuid.UUID(str(image["id"]))
    ctx = context(settings)
    with ctx.sessions.begin() as session:  # what another worker's batch does with it
        assert repository.claim(session, image_id, JobKind.TAGGING) is not None

    # Its own message arrives meanwhile: no second model call, no second attempt.
    with pytest.raises(pipeline.JobBusy) as busy:
        run_tagging(ctx, image_id)
    assert busy.value.countdown == settings.tag_batch_lease_seconds
    job = job_of(_detail(client, caller, str(image_id)), JobKind.TAGGING)
    assert (job["state"], job["attempts"]) == ("running", 1)

    # That worker died mid-batch: once the lease is over, the message takes the job over.
    short = replace(ctx, settings=settings.model_copy(update={"tag_batch_lease_seconds": 0.01}))
    time.sleep(0.05)
    assert run_tagging(short, image_id).startswith("tagged")
    job = job_of(_detail(client, caller, str(image_id)), JobKind.TAGGING)
    assert (job["state"], job["attempts"]) == ("done", 2)


def test_tagging_failure_fails_only_the_tagging_job(
    offline: tuple[TestClient, Caller], settings: Settings, store: S3Store
) -> None:
    client, caller = offline
    body = upload(client, caller, _jpeg(samples.astronaut()), filename="a.jpg")[1]
    image_id = str(body["id"])
    assert run_variants(context(settings), uuid.UUID(image_id)).startswith("ready")
    store.delete(keys.original_key(caller.owner_id, uuid.UUID(image_id)))
    run_tagging(context(settings), uuid.UUID(image_id))
    after = _detail(client, caller, image_id)
    assert after["status"] == "ready"
    assert (
        job_of(after, JobKind.TAGGING)["state"],
        job_of(after, JobKind.TAGGING)["error_code"],
    ) == (
        "failed",
        "original-missing",
    )


def test_a_real_worker_tags_an_upload(
    app_settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    # Earlier tests published jobs no worker consumed; start from empty queues.
    producer = create_producer(app_settings)
    with producer.connection_for_write() as conn:
        for queue in ("thumbnails", "tagging"):
            conn.default_channel.queue_purge(queue)
    producer.close()
    log = tmp_path / "worker.log"
    worker = start_worker(settings_env(app_settings), log, "-Q", "thumbnails,tagging")
    try:
        wait_for_worker(app_settings, worker, log)
        caller = new_caller(client)
        resp = client.post(
            "/v1/images",
            headers={**caller.headers, "X-Request-ID": "trace-cat-42"},
            files={"file": ("cat.jpg", CAT, "image/jpeg")},
        )
        assert resp.headers["x-request-id"] == "trace-cat-42"
        body = resp.json()
        image_id = str(body["id"])
        wait_for_status(client, caller, image_id, "ready", timeout=90)
        detail = poll(
            lambda: _detail(client, caller, image_id),
            lambda detail: job_of(detail, JobKind.TAGGING)["state"] == "done",
            "the tagging job to finish",
            timeout=90,
            interval=0.3,
        )
        assert job_of(detail, JobKind.TAGGING)["state"] == "done"
        assert "cat" in {t["name"] for t in detail["tags"]}  # type: ignore[union-attr]
        # The request id followed the image into both tasks' JSON log lines.
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        traced = {e["task"] for e in lines if e.get("request_id") == "trace-cat-42" and "task" in e}
        assert traced == {"media.make_variants", "media.tag_image"}
    finally:
        worker.terminate()
        worker.wait(30)
