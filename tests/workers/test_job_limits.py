"""Jobs under hostile load: fair claim order across owners, time limits that fail a job with
`processing-timeout`, a re-check before decoding, and reprocess that waits for running jobs.

Each test here runs on a database and a broker of its own, so no other test's pending jobs or
queued messages mix in (real Postgres, Redis, SeaweedFS and Celery worker processes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded
from fastapi.testclient import TestClient
from sqlalchemy import select

from media_api.db import upgrade
from media_api.dev import stack as devstack
from media_api.dev.stack import free_port
from media_api.images.models import Image
from media_api.jobs.contract import THUMBNAILS, JobKind
from media_api.jobs.models import ImageJob
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.bombs import many_scan_jpeg
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import noise_jpeg, png
from tests.support.jobs import run_tagging, run_variants
from tests.support.stack import scratch_database, settings_env
from tests.support.waiting import wait_for, wait_for_status
from tests.support.workers import SLOW_PRESETS, start_worker, wait_for_worker
from workers import pipeline, repository
from workers.celery_app import create_celery
from workers.context import context


@pytest.fixture
def own(app_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A scratch database and a Redis broker of this test's own."""
    port = devstack.free_port()
    redis, _ = devstack.start_redis(tmp_path / "redis", port, tmp_path / "logs")
    try:
        with scratch_database(app_settings.require("database_url")) as url:
            settings = app_settings.model_copy(
                update={"database_url": url, "broker_url": f"redis://127.0.0.1:{port}/0"}
            )
            upgrade(settings)
            yield settings
    finally:
        redis.stop()


def _offline(settings: Settings) -> Settings:
    """No broker: the test runs the jobs itself."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    return settings.model_copy(update={"broker_url": dead, "redis_url": settings.broker_url})


def _status(client: TestClient, caller: Caller, image_id: str) -> str:
    return str(client.get(f"/v1/images/{image_id}", headers=caller.headers).json()["status"])


def _jobs(client: TestClient, caller: Caller, image_id: str) -> dict[str, dict[str, object]]:
    body = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    return {str(job["kind"]): job for job in body["jobs"]}


def test_another_owners_upload_goes_ahead_of_a_burst(own: Settings) -> None:
    settings = _offline(own).model_copy(update={"job_owner_spacing_seconds": 60.0})
    with TestClient(create_app(settings)) as client:
        burst, other = new_caller(client), new_caller(client)
        burst_ids = [uuid.UUID(str(upload(client, burst, png(100 + n))[1]["id"])) for n in range(4)]
        other_id = uuid.UUID(str(upload(client, other, png(200))[1]["id"]))
        ctx = context(settings)

        def status(image_id: uuid.UUID) -> str:
            return _status(client, burst if image_id in burst_ids else other, str(image_id))

        # The queue is FIFO: the burst's messages come first. Its first job is due, so its
        # message runs it; the next one's slot is a minute away, so its message serves the
        # other owner, whose job has been due since its upload.
        pipeline.make_variants(ctx, burst_ids[0], "turn-1")
        assert status(burst_ids[0]) == "ready"
        pipeline.make_variants(ctx, burst_ids[1], "turn-2")
        assert status(other_id) == "ready"
        assert status(burst_ids[1]) == "processing"
        # The other owner's message, its job done, takes the burst's next job in the fair order.
        pipeline.make_variants(ctx, other_id, "turn-3")
        assert [status(i) for i in burst_ids] == ["ready", "ready", "processing", "processing"]
        # Every message is a turn: the burst's remaining two messages finish the rest.
        pipeline.make_variants(ctx, burst_ids[2], "turn-4")
        pipeline.make_variants(ctx, burst_ids[3], "turn-5")
        assert {status(i) for i in burst_ids} == {"ready"}

    with ctx.sessions() as session:
        order = session.execute(
            select(ImageJob.image_id, ImageJob.task_id)
            .where(ImageJob.kind == JobKind.THUMBNAILS)
            .order_by(ImageJob.started_at)
        ).all()
    assert [row.image_id for row in order] == [burst_ids[0], other_id, *burst_ids[1:]]


def test_a_job_over_its_time_limit_fails_with_processing_timeout(
    own: Settings, tmp_path: Path
) -> None:
    # Big presets make a large image take several seconds; a small one stays well inside.
    env = {
        **settings_env(own),
        "MEDIA_THUMBNAILS_TIME_LIMIT_SECONDS": "2",
        **SLOW_PRESETS,
    }
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "-Q", "thumbnails", "--no-sweep", "--concurrency", "1")
    try:
        wait_for_worker(own, worker, log)
        with TestClient(create_app(own)) as client:
            caller = new_caller(client)
            # A small image first: the pool process opens its connections within its limit.
            warm = str(upload(client, caller, png(600))[1]["id"])
            wait_for(lambda: _status(client, caller, warm) != "processing", "the first job", 90)
            status, body = upload(client, caller, noise_jpeg(6000, 4000))
            assert status == 201
            failed = wait_for_status(client, caller, str(body["id"]), "failed", timeout=60)
            assert failed["error_code"] == "processing-timeout"
            time.sleep(2)  # not retried: no second attempt comes
            job = _jobs(client, caller, str(body["id"]))["thumbnails"]
            assert job["state"] == "failed"
            assert job["error_code"] == "processing-timeout"
            assert job["attempts"] == 1
    finally:
        worker.terminate()
        worker.wait(30)


def test_a_task_killed_at_its_hard_limit_fails_the_jobs_it_held(own: Settings) -> None:
    settings = _offline(own)
    with TestClient(create_app(settings)) as client:
        caller = new_caller(client)
        image_id = str(upload(client, caller, png(300))[1]["id"])
        ctx = context(settings)
        with ctx.sessions.begin() as session:
            claimed = repository.claim(
                session, uuid.UUID(image_id), JobKind.THUMBNAILS, task_id="killed-task"
            )
            assert claimed is not None
        # What the worker's main process does when the pool process was killed.
        app = create_celery(settings, sweep=False)
        app.tasks[THUMBNAILS.task].on_failure(TimeLimitExceeded(90), "killed-task", (), {}, None)
        body = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    assert body["status"] == "failed"
    assert body["error_code"] == "processing-timeout"
    assert _jobs(client, caller, image_id)["thumbnails"]["state"] == "failed"


def test_workers_recheck_what_they_decode(own: Settings) -> None:
    settings = _offline(own)
    with TestClient(create_app(settings)) as client:
        caller = new_caller(client)
        image_id = str(upload(client, caller, png(400))[1]["id"])
        ctx = context(settings)
        with ctx.sessions() as session:
            key = session.scalar(select(Image.original_key).where(Image.id == uuid.UUID(image_id)))
        assert key is not None
        # The stored original is swapped for a decode bomb behind the API's back.
        ctx.store.put_bytes(key, many_scan_jpeg(5_000), "image/jpeg")
        outcome = run_variants(ctx, uuid.UUID(image_id))
        tagged = run_tagging(ctx, uuid.UUID(image_id))
        jobs = _jobs(client, caller, image_id)
    assert outcome == "failed: image-too-large"
    assert tagged == "failed: nothing to tag"
    assert jobs["thumbnails"]["error_code"] == "image-too-large"
    assert jobs["tagging"]["error_code"] == "image-too-large"


def test_reprocess_waits_for_running_jobs_and_counts_as_an_upload(own: Settings) -> None:
    settings = _offline(own).model_copy(update={"rate_limit_uploads_per_minute": 3})
    with TestClient(create_app(settings)) as client:
        caller = new_caller(client)
        image_id = uuid.UUID(str(upload(client, caller, png(500))[1]["id"]))
        ctx = context(settings)
        with ctx.sessions.begin() as session:  # a worker has the thumbnails job in hand
            assert repository.claim(session, image_id, JobKind.THUMBNAILS) is not None
        busy = client.post(f"/v1/images/{image_id}/reprocess", headers=caller.headers)
        assert busy.status_code == 409
        assert busy.json()["code"] == "processing-in-progress"
        assert _jobs(client, caller, str(image_id))["thumbnails"]["state"] == "running"
        run_variants(ctx, image_id)
        again = client.post(f"/v1/images/{image_id}/reprocess", headers=caller.headers)
        assert again.status_code == 202, again.text
        assert {job["state"] for job in again.json()["jobs"]} == {"pending"}
        # The upload and two reprocess calls spent the budget of three.
        limited = client.post(f"/v1/images/{image_id}/reprocess", headers=caller.headers)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate-limited"


def test_a_leftover_turn_does_not_run_a_failed_job_again(own: Settings) -> None:
    settings = _offline(own)
    with TestClient(create_app(settings)) as client:
        caller = new_caller(client)
        image_id = uuid.UUID(str(upload(client, caller, png(900))[1]["id"]))
        ctx = context(settings)
        with ctx.sessions() as session:
            key = session.scalar(select(Image.original_key).where(Image.id == image_id))
        assert key is not None
        ctx.store.delete(key)
        assert run_variants(ctx, image_id) == "failed: original-missing"
        # A message still in the queue for it (a turn sent again, a duplicate) finds no job.
        outcome = pipeline.make_variants(ctx, image_id, "leftover")
        job = _jobs(client, caller, str(image_id))["thumbnails"]
    assert outcome.startswith("skipped")
    assert (job["state"], job["error_code"], job["attempts"]) == ("failed", "original-missing", 1)
