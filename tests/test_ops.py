"""`media-api reprocess | gc | stats` against the real stack, run as the operator would."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from fastapi.testclient import TestClient

from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import new_caller, upload
from tests.support.images import png
from tests.support.jobs import run_variants
from tests.support.stack import settings_env
from workers.context import context


def _cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "media_api.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


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

    careful = _cli(app_settings, "gc")  # default grace: a fresh object may be an upload in flight
    assert orphan not in careful
    assert f"row without its original: {lost_key}" in careful

    report = _cli(app_settings, "gc", "--grace-seconds", "0")
    assert f"orphan object: {orphan}" in report
    assert store.exists(orphan)  # only reported
    _cli(app_settings, "gc", "--grace-seconds", "0", "--apply")
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

    stats = json.loads(_cli(app_settings, "stats"))
    assert stats["images"]["failed"] >= 1
    assert stats["original_bytes"] > 0

    out = _cli(app_settings, "reprocess", image_id)
    assert out.strip() == "reprocessing 1 images"
    after = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
    assert after["status"] == "processing"
    assert {j["state"] for j in after["jobs"]} == {"pending"}
    assert "reprocessing" in _cli(app_settings, "reprocess", "--failed")
