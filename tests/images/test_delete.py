"""Deletion is atomic: racing deletes of one image give one 204 and release the quota once, and
`media-api stats --check` sees (and `--repair` mends) any drift of the quota counter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
from fastapi.testclient import TestClient

from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.callers import new_caller, upload
from tests.support.images import png
from tests.support.leftovers import assert_nothing_left
from tests.support.stack import settings_env


def _bytes_used(settings: Settings, owner_id: uuid.UUID) -> tuple[int, int]:
    """(the owner's counter, what its images add up to)."""
    with psycopg.connect(settings.require("database_url")) as conn:
        row = conn.execute(
            "SELECT o.bytes_used, coalesce(sum(i.size_bytes), 0) FROM owners o"
            " LEFT JOIN images i ON i.owner_id = o.id WHERE o.id = %s GROUP BY o.id",
            (owner_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_racing_deletes_answer_one_204_and_release_the_quota_once(
    live_server: str, client: TestClient, app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    caller = new_caller(client)
    kept = upload(client, caller, png(700, size=64))[1]
    doomed = upload(client, caller, png(701, size=64))[1]
    counted, stored = _bytes_used(app_settings, caller.owner_id)
    assert counted == stored == int(str(kept["size"])) + int(str(doomed["size"]))

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=live_server, headers=caller.headers) as http:
            answers = await asyncio.gather(
                *(http.delete(f"/v1/images/{doomed['id']}") for _ in range(10))
            )
        return [a.status_code for a in answers]

    statuses = asyncio.run(race())
    assert sorted(statuses) == [204] + [404] * 9
    assert _bytes_used(app_settings, caller.owner_id) == (int(str(kept["size"])),) * 2
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def _stats(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "media_api.cli", "stats", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stats_check_reports_quota_drift_and_repair_mends_it(
    client: TestClient, app_settings: Settings
) -> None:
    caller = new_caller(client)
    upload(client, caller, png(702, size=64))
    with psycopg.connect(app_settings.require("database_url")) as conn:
        conn.execute(
            "UPDATE owners SET bytes_used = bytes_used + 12345 WHERE id = %s", (caller.owner_id,)
        )
    counted, stored = _bytes_used(app_settings, caller.owner_id)
    assert counted == stored + 12345

    found = _stats(app_settings, "--check")
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"owner {caller.owner_id}: bytes_used {counted}, images add up to {stored}" in (
        found.stdout
    )
    repaired = _stats(app_settings, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert _bytes_used(app_settings, caller.owner_id) == (stored, stored)
    clean = _stats(app_settings, "--check")
    assert clean.returncode == 0, clean.stdout
    assert "0 owners drift" in clean.stdout
