"""The upload sweep in-process against the real stack: lapsed uploads expire (S3 leftovers
removed, reservation given back), old ended uploads are deleted, S3 failures are retried."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine

from media_api.dev.stack import free_port
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from media_api.uploads.models import UploadKind, UploadState
from tests.support.seeded_uploads import DAY, Seeder
from workers import repository
from workers.context import WorkerContext, context
from workers.uploads import delete_ended_uploads, expire_uploads


@pytest.fixture
def dead_s3(settings: Settings) -> Iterator[WorkerContext]:
    """The worker context with an S3 endpoint nobody listens on."""
    base = context(settings)
    dead = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    store = S3Store(dead)
    yield WorkerContext(dead, base.engine, base.sessions, store)
    store.close()


async def test_lapsed_uploads_expire_and_give_everything_back(
    engine: AsyncEngine, store: S3Store, settings: Settings
) -> None:
    seed = Seeder(engine, store)
    owner = await seed.owner()
    tus = await seed.upload(owner, UploadKind.TUS, multipart=True)
    direct = await seed.upload(owner, UploadKind.DIRECT, put=True)
    await seed.change(tus.id, tail=b"tail of the upload")
    for upload in (tus, direct):
        await seed.lapse(upload.id)
    # Another owner's uploads the sweep must leave alone: not yet due, and held by a request.
    other = await seed.owner()
    fresh = await seed.upload(other, UploadKind.TUS, multipart=True)
    held = await seed.upload(other, UploadKind.DIRECT, put=True)
    await seed.lapse(held.id)
    await seed.change(held.id, lease_id=uuid.uuid4(), lease_until=func.now() + DAY)
    assert await seed.reserved(owner) == 2000

    expired = expire_uploads(context(settings))

    assert expired is not None
    assert expired >= 2
    assert seed.open_multipart(owner) == set()
    assert seed.objects(owner) == set()
    assert await seed.reserved(owner) == 0
    for upload in (tus, direct):
        row = await seed.row(upload.id)
        assert row is not None  # kept, so the upload answers 410 until pass 2 deletes it
        assert (row.state, row.reserved_bytes, row.tail) == (UploadState.EXPIRED, 0, None)
        assert row.error is not None
        assert (row.error["status"], row.error["code"]) == (410, "upload-gone")
        assert row.error["detail"] == "the upload expired before it was completed"
    assert seed.open_multipart(other) == {fresh.s3_upload_id}
    assert seed.objects(other) == {held.object_key}
    assert await seed.reserved(other) == 2000
    for upload in (fresh, held):
        row = await seed.row(upload.id)
        assert row is not None
        assert (row.state, row.reserved_bytes) == (UploadState.RECEIVING, 1000)

    expire_uploads(context(settings))  # nothing given back twice
    assert await seed.reserved(owner) == 0
    for upload in (fresh, held):  # leave the session's bucket clean
        await seed.change(upload.id, state=UploadState.REJECTED, reserved_bytes=0)
        store.delete(upload.object_key)
    assert fresh.s3_upload_id is not None
    store.abort_multipart(fresh.object_key, fresh.s3_upload_id)


async def test_old_ended_uploads_are_deleted_with_their_leftovers(
    engine: AsyncEngine, store: S3Store, settings: Settings
) -> None:
    seed = Seeder(engine, store)
    owner = await seed.owner()
    long_ago = dt.timedelta(seconds=settings.upload_expiry_seconds) + dt.timedelta(hours=1)
    expired = await seed.upload(owner, UploadKind.TUS, multipart=True, put=True)
    rejected = await seed.upload(owner, UploadKind.DIRECT, put=True)
    accepted = await seed.upload(owner, UploadKind.DIRECT)
    recent = await seed.upload(owner, UploadKind.DIRECT, put=True)
    await seed.age(expired.id, UploadState.EXPIRED, long_ago)
    await seed.age(rejected.id, UploadState.REJECTED, long_ago)
    await seed.age(accepted.id, UploadState.ACCEPTED, long_ago)
    await seed.age(recent.id, UploadState.REJECTED, dt.timedelta(minutes=5))

    deleted = delete_ended_uploads(context(settings))

    assert deleted is not None
    assert deleted >= 3
    for upload in (expired, rejected, accepted):
        assert await seed.row(upload.id) is None
    assert seed.open_multipart(owner) == set()
    assert seed.objects(owner) == {recent.object_key}
    recent_row = await seed.row(recent.id)
    assert recent_row is not None
    assert recent_row.state == UploadState.REJECTED
    # The three deleted rows' reservations (never released here) went back with them.
    assert await seed.reserved(owner) == 1000
    store.delete(recent.object_key)


async def test_s3_down_at_expiry_is_cleaned_up_by_the_second_pass(
    engine: AsyncEngine, store: S3Store, settings: Settings, dead_s3: WorkerContext
) -> None:
    seed = Seeder(engine, store)
    owner = await seed.owner()
    upload = await seed.upload(owner, UploadKind.TUS, multipart=True, put=True)
    await seed.lapse(upload.id)

    assert expire_uploads(dead_s3) is not None  # expired, S3 calls failed (logged)
    row = await seed.row(upload.id)
    assert row is not None
    assert (row.state, row.reserved_bytes) == (UploadState.EXPIRED, 0)
    assert await seed.reserved(owner) == 0
    assert seed.open_multipart(owner) == {upload.s3_upload_id}
    assert seed.objects(owner) == {upload.object_key}

    long_ago = dt.timedelta(seconds=settings.upload_expiry_seconds + 60)
    await seed.change(upload.id, updated_at=func.now() - long_ago)
    delete_ended_uploads(dead_s3)  # still down: the row stays for the next run
    assert await seed.row(upload.id) is not None

    delete_ended_uploads(context(settings))
    assert await seed.row(upload.id) is None
    assert seed.open_multipart(owner) == set()
    assert seed.objects(owner) == set()


async def test_one_sweeper_at_a_time(
    engine: AsyncEngine, store: S3Store, settings: Settings
) -> None:
    seed = Seeder(engine, store)
    owner = await seed.owner()
    upload = await seed.upload(owner, UploadKind.DIRECT, put=True)
    await seed.lapse(upload.id)
    ctx = context(settings)
    with ctx.sessions.begin() as other_worker:
        assert repository.sweep_lock(other_worker)
        assert expire_uploads(ctx) is None
        assert delete_ended_uploads(ctx) is None
    row = await seed.row(upload.id)
    assert row is not None
    assert row.state == UploadState.RECEIVING
    assert expire_uploads(ctx)
    row = await seed.row(upload.id)
    assert row is not None
    assert row.state == UploadState.EXPIRED
    assert seed.objects(owner) == set()
