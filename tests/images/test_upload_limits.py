"""Decode work is bounded on the upload path: scans, a time budget that really stops the work,
and a cap on validations at once (real API, real Postgres and SeaweedFS)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from fastapi.testclient import TestClient

from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.bombs import many_scan_jpeg
from tests.support.callers import new_caller, upload
from tests.support.images import png
from tests.support.leftovers import assert_nothing_left
from tests.support.waiting import wait_for

BOMB = many_scan_jpeg(20_000)


@contextmanager
def _client(app_settings: Settings, **update: object) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings.model_copy(update=update))) as client:
        yield client


def _state(client: TestClient) -> AppState:
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    return state


def _pool_processes() -> set[int]:
    """The validation pool's processes (spawned children of this test process)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # one may exit meanwhile
            if "multiprocessing" in " ".join(child.cmdline()):
                found.add(child.pid)
    return found


def test_a_many_scan_jpeg_is_refused_from_its_markers_and_leaves_nothing(
    client: TestClient, store: S3Store, upload_tmp: Path
) -> None:
    caller = new_caller(client)
    status, body = upload(client, caller, BOMB, "bomb.jpg")
    assert status == 422
    assert body["code"] == "image-too-large"
    # The marker walk said no, not the time budget: the decoder never started.
    assert "scans" in str(body["detail"])
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_a_validation_over_its_budget_is_killed_and_its_process_replaced(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    # Scans allowed, so the bomb reaches the decoder, which would take many seconds.
    with _client(
        app_settings,
        max_jpeg_scans=1_000_000,
        validation_timeout_seconds=1.0,
        max_concurrent_validations=1,
        follow_uploads=False,  # decoded after the last byte: the wall-time budget
    ) as client:
        caller = new_caller(client)
        assert upload(client, caller, png(1), "warm.png")[0] == 201
        before = _pool_processes()
        status, body = upload(client, caller, BOMB, "bomb.jpg")
        assert status == 422
        assert body["code"] == "image-too-large"
        assert "longer than 1 s" in str(body["detail"])
        # The decode did not go on in the background: its process is gone.
        wait_for(lambda: bool(before - _pool_processes()), "the timed-out process to exit")
        assert upload(client, caller, png(2), "after.png")[0] == 201  # a fresh process serves
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_a_followed_decode_over_its_cpu_budget_stops_before_the_last_byte(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    with _client(
        app_settings,
        max_jpeg_scans=1_000_000,  # the marker walk lets it through: the budget must stop it
        validation_timeout_seconds=1.0,
        max_concurrent_validations=1,
    ) as client:
        caller = new_caller(client)
        assert upload(client, caller, png(6), "warm.png")[0] == 201
        status, body = upload(client, caller, BOMB, "bomb.jpg")
        assert status == 422
        assert body["code"] == "image-too-large"
        assert "longer than 1 s" in str(body["detail"])
        # Nothing decodes on in the background: within seconds (a killed process's replacement
        # starts meanwhile) the pool's CPU time stands still; the bomb would take 25 s of it.
        assert _pool_goes_quiet(within=10.0), "a decode went on after the refusal"
        assert _state(client).validator.following == 0
        assert upload(client, caller, png(7), "after.png")[0] == 201
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def _pool_goes_quiet(within: float) -> bool:
    """True once the pool's processes use under 0.05 s of CPU in half a second."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        spent = _pool_cpu()
        time.sleep(0.5)
        if _pool_cpu() - spent < 0.05:
            return True
    return False


def _pool_cpu() -> float:
    total = 0.0
    for pid in _pool_processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(psutil.Process(pid).cpu_times()[:2])
    return total


def test_validations_beyond_the_cap_wait_briefly_then_get_503(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    with _client(
        app_settings,
        max_concurrent_validations=1,
        validation_wait_seconds=0.3,
        follow_uploads=False,  # every upload is validated after its last byte
    ) as client:
        caller = new_caller(client)
        slots = _state(client).validator.slots
        assert client.portal is not None
        client.portal.call(slots.acquire)  # another upload is validating
        try:
            resp = client.post(
                "/v1/images", headers=caller.headers, files={"file": ("a.png", png(3))}
            )
            assert resp.status_code == 503
            assert resp.json()["code"] == "server-busy"
            assert int(resp.headers["retry-after"]) >= 1
            assert_nothing_left(client, store, caller.owner_id, upload_tmp)
        finally:
            client.portal.call(_release, slots)
        assert upload(client, caller, png(3), "a.png")[0] == 201


def test_uploads_beyond_the_followed_slots_are_validated_after_their_last_byte(
    app_settings: Settings, store: S3Store, upload_tmp: Path
) -> None:
    with _client(app_settings, max_concurrent_validations=1) as client:
        caller = new_caller(client)
        validator = _state(client).validator
        assert validator.follow_slots == 1
        assert validator.processes == 1
        validator.following = validator.follow_slots  # a slow sender holds the followed slot
        try:
            status, body = upload(client, caller, png(4), "a.png")
            assert status == 201, body
            assert validator.following == validator.follow_slots
        finally:
            validator.following = 0
        # A followed upload, refused or accepted, gives its slot back.
        followed: list[object] = []
        follow = validator.follow
        validator.follow = lambda spool: followed.append(follow(spool)) or followed[-1]  # type: ignore[method-assign]
        assert upload(client, caller, png(5), "b.png")[0] == 201
        assert upload(client, caller, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "c.png")[0] == 422
        assert len(followed) == 2
        assert all(f is not None for f in followed)  # both were decoded as they arrived
        assert validator.following == 0
        assert_nothing_left(client, store, caller.owner_id, upload_tmp)


async def _release(slots: asyncio.Semaphore) -> None:
    slots.release()
