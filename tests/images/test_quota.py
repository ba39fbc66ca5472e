"""The per-owner storage quota: refused with 413, given back on delete, never overshot."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.callers import new_caller, post_at_once, upload
from tests.support.images import png
from tests.support.leftovers import assert_nothing_left
from tests.support.serving import serve


def test_quota_refuses_then_frees_on_delete(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    one, two = png(1, 64), png(2, 64)
    settings = app_settings.model_copy(update={"quota_bytes": len(one) + len(two) // 2})
    with TestClient(create_app(settings)) as client:
        caller = new_caller(client)
        status, first = upload(client, caller, one)
        assert status == 201
        status, refused = upload(client, caller, two)
        assert (status, refused["code"]) == (413, "quota-exceeded")
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)
        # Same bytes again are not new storage: still 200, quota or not.
        assert upload(client, caller, one)[0] == 200
        assert client.delete(f"/v1/images/{first['id']}", headers=caller.headers).status_code == 204
        assert upload(client, caller, two)[0] == 201


def test_parallel_uploads_cannot_overshoot_the_quota(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    files = [png(10 + i, 64) for i in range(10)]
    allowed = 3
    settings = app_settings.model_copy(
        update={"quota_bytes": sum(sorted(map(len, files))[:allowed])}
    )
    app = create_app(settings)
    with TestClient(app) as client, serve(create_app(settings)) as base:
        caller = new_caller(client)
        responses = post_at_once(base, caller, files, filename="p")
        created = [r for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code == 413]
        assert len(created) + len(refused) == len(files)
        assert 1 <= len(created) <= allowed
        stored = sum(r.json()["size"] for r in created)
        assert stored <= settings.quota_bytes
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)
