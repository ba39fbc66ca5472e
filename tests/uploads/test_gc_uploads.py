"""`media-api gc` on uploads: live ones past expiry are reported, quarantine objects and open
multipart uploads no live upload owns are reported, then removed with --apply."""

from __future__ import annotations

import re
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from media_api import ops
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from media_api.uploads.models import UploadKind, UploadState
from tests.support.seeded_uploads import PART, Seeder
from tests.support.stack import run_cli


async def test_gc_reports_then_removes_upload_leftovers(
    engine: AsyncEngine, store: S3Store, app_settings: Settings
) -> None:
    seed = Seeder(engine, store)
    owner = await seed.owner()
    live = await seed.upload(owner, UploadKind.TUS, multipart=True, put=True)
    lapsed = await seed.upload(owner, UploadKind.DIRECT, put=True)
    await seed.lapse(lapsed.id)
    ended = await seed.upload(owner, UploadKind.TUS, multipart=True)
    await seed.change(ended.id, state=UploadState.REJECTED, reserved_bytes=0)
    orphan = keys.quarantine_key(owner, uuid.uuid4())
    store.put_bytes(orphan, b"no row", "application/octet-stream")
    stray = keys.quarantine_key(owner, uuid.uuid4())
    stray_id = store.create_multipart(stray, "application/octet-stream")
    store.upload_part(stray, stray_id, 1, PART)

    async with AsyncSession(engine) as session:
        careful = await ops.gc(session, app_settings, apply=False)  # default grace
    assert lapsed.id in careful.lapsed_uploads
    assert live.id not in careful.lapsed_uploads
    assert orphan not in careful.orphan_quarantine  # young: its row may not be committed yet
    assert stray_id not in {up.upload_id for up in careful.orphan_multipart}

    report = run_cli(app_settings, "gc", "--grace-seconds", "0")
    assert f"upload past expiry: {lapsed.id}" in report
    assert f"orphan quarantine object: {orphan}" in report
    assert f"orphan multipart upload: {stray} {stray_id}" in report
    assert f"orphan multipart upload: {ended.object_key} {ended.s3_upload_id}" in report
    for kept in (live.object_key, lapsed.object_key):
        assert kept not in report
    assert seed.objects(owner) == {live.object_key, lapsed.object_key, orphan}  # only reported
    assert seed.open_multipart(owner) == {live.s3_upload_id, ended.s3_upload_id, stray_id}

    applied = run_cli(app_settings, "gc", "--grace-seconds", "0", "--apply")
    removed = re.search(
        r"\((\d+) deleted\), \d+ orphan multipart uploads \((\d+) aborted\)", applied
    )
    assert removed is not None
    assert int(removed[1]) >= 1
    assert int(removed[2]) >= 2
    assert seed.objects(owner) == {live.object_key, lapsed.object_key}
    assert seed.open_multipart(owner) == {live.s3_upload_id}
    after = run_cli(app_settings, "gc", "--grace-seconds", "0")
    assert str(owner) not in after.replace(f"upload past expiry: {lapsed.id}", "")

    # Leave the session's bucket clean.
    assert live.s3_upload_id is not None
    store.abort_multipart(live.object_key, live.s3_upload_id)
    for upload in (live, lapsed):
        store.delete(upload.object_key)
        await seed.change(upload.id, state=UploadState.REJECTED, reserved_bytes=0)
