"""`media-api reprocess | gc | stats` against the real stack, run as the operator would."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from media_api import ops
from media_api.accounts import repository as owners
from media_api.accounts.models import Owner
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from media_api.uploads import repository as uploads
from media_api.uploads.models import Upload, UploadKind, UploadState
from tests.support.callers import new_caller, upload
from tests.support.images import png
from tests.support.jobs import run_variants
from tests.support.stack import run_cli
from workers.context import context


def test_gc_reports_then_deletes_orphans_only(
    client: TestClient, app_settings: Settings, store: S3Store
) -> None:
    caller = new_caller(client)
    _, kept = upload(client, caller, png(1, (50, 40)))
    _, lost = upload(client, caller, png(2, (50, 40)))
    kept_key = keys.original_key(caller.owner_id, uuid.UUID(kept["id"]))
    lost_key = keys.original_key(caller.owner_id, uuid.UUID(lost["id"]))
    store.delete(lost_key)
    orphan = keys.original_key(caller.owner_id, uuid.uuid4())
    store.put_bytes(orphan, b"left behind", "image/png")

    # The default grace: a fresh object may be an upload in flight.
    careful = run_cli(app_settings, "gc")
    assert orphan not in careful
    assert f"row without its original: {lost_key}" in careful

    report = run_cli(app_settings, "gc", "--grace-seconds", "0")
    assert f"orphan object: {orphan}" in report
    assert store.exists(orphan)  # only reported
    run_cli(app_settings, "gc", "--grace-seconds", "0", "--apply")
    assert not store.exists(orphan)
    assert store.exists(kept_key)


def test_reprocess_failed_images_and_stats(
    client: TestClient, app_settings: Settings, settings: Settings, store: S3Store
) -> None:
    caller = new_caller(client)
    _, body = upload(client, caller, png(3, (50, 40)))
    image_id = str(body["id"])
    key = keys.original_key(caller.owner_id, uuid.UUID(image_id))
    data = store.get_bytes(key)
    store.delete(key)
    run_variants(context(settings), uuid.UUID(image_id))
    assert client.get(f"/v1/images/{image_id}", headers=caller.headers).json()["status"] == "failed"
    store.put_bytes(key, data, "image/png")

    stats = json.loads(run_cli(app_settings, "stats"))
    assert stats["images"]["failed"] >= 1
    assert stats["original_bytes"] > 0

    out = run_cli(app_settings, "reprocess", image_id)
    assert out.strip() == "reprocessing 1 images"
    after = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    assert after["status"] == "processing"
    assert {j["state"] for j in after["jobs"]} == {"pending"}
    assert "reprocessing" in run_cli(app_settings, "reprocess", "--failed")


async def test_check_quota_compares_reservations_with_live_uploads(db: AsyncSession) -> None:
    owner_id = (await owners.add_owner(db, "reserved-drift@example.test")).id
    day = dt.timedelta(days=1)
    live = await uploads.create(
        db, owner_id=owner_id, kind=UploadKind.TUS, length=600, quota=0, expires_in=day
    )
    ended = await uploads.create(
        db, owner_id=owner_id, kind=UploadKind.DIRECT, length=50, quota=0, expires_in=day
    )
    assert live is not None
    assert ended is not None
    # A lost release: the upload ended but still holds its bytes, and the counter drifted.
    await db.execute(update(Upload).where(Upload.id == ended.id).values(state=UploadState.REJECTED))
    await db.execute(update(Owner).where(Owner.id == owner_id).values(bytes_reserved=700))

    found = [d for d in await ops.check_quota(db, repair=False) if d.owner_id == owner_id]
    assert found == [ops.QuotaDrift(owner_id, reserved=(700, 600))]
    assert str(found[0]) == f"owner {owner_id}: bytes_reserved 700, live uploads hold 600"

    await ops.check_quota(db, repair=True)
    reserved = await db.scalar(select(Owner.bytes_reserved).where(Owner.id == owner_id))
    assert reserved == 600
    assert await uploads.release_reservation(db, [ended.id]) == 0  # nothing left to give back
    assert not [d for d in await ops.check_quota(db, repair=False) if d.owner_id == owner_id]
