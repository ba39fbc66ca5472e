"""A deploy stops processes with SIGTERM: what is in flight finishes, nothing is cut in half.

`media-api serve` stops accepting connections and lets requests in flight run for
MEDIA_SHUTDOWN_GRACE_SECONDS; an upload still arriving after that is cancelled and leaves
nothing behind. A worker finishes the task in hand (Celery's warm shutdown) and leaves the
messages it had not started in the broker for the next worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support import streaming
from tests.support.callers import Caller, job_states, new_caller, upload
from tests.support.images import png
from tests.support.leftovers import assert_nothing_left, original_keys_in_db
from tests.support.serving import ServeProcess as Server
from tests.support.serving import serve_process
from tests.support.stack import settings_env
from tests.support.streaming import PART, TWO_PARTS_AND_SOME, RawUpload, parts_stored
from tests.support.waiting import job_leaves, wait_for, wait_for_status
from tests.support.workers import SLOW_PRESETS, start_worker, upload_slow, wait_for_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return streaming.big_png()


def _serve(settings: Settings, tmp_path: Path, upload_dir: Path, grace: int) -> Iterator[Server]:
    with serve_process(
        settings,
        tmp_path,
        MEDIA_SHUTDOWN_GRACE_SECONDS=str(grace),
        MEDIA_S3_MULTIPART_CHUNK_BYTES=str(PART),
        MEDIA_UPLOAD_TMP_DIR=str(upload_dir),
    ) as server:
        yield server


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def patient_server(settings: Settings, tmp_path: Path, upload_dir: Path) -> Iterator[Server]:
    """Grace far longer than the test needs: the upload must finish on its own."""
    yield from _serve(settings, tmp_path, upload_dir, grace=60)


@pytest.fixture
def hasty_server(settings: Settings, tmp_path: Path, upload_dir: Path) -> Iterator[Server]:
    """One second of grace: an upload still arriving after that is cut."""
    yield from _serve(settings, tmp_path, upload_dir, grace=1)


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _two_parts_in(server: Server, caller: Caller, store: S3Store, data: bytes) -> RawUpload:
    """An upload whose first two parts are stored while the rest is yet to be sent."""
    upload_ = RawUpload(server.url, caller, data, "big.png", "image/png")
    upload_.send_until(TWO_PARTS_AND_SOME)
    wait_for(lambda: parts_stored(store, caller.owner_id) >= 2, "two parts stored mid-body")
    return upload_


def test_sigterm_lets_an_upload_in_flight_finish_then_exits(
    patient_server: Server,
    client: TestClient,
    store: S3Store,
    upload_dir: Path,
    big_png: bytes,
) -> None:
    caller = new_caller(client)
    upload_ = _two_parts_in(patient_server, caller, store, big_png)

    patient_server.proc.send_signal(signal.SIGTERM)
    # The deploy has begun: no new connection is taken, but the process is still draining.
    wait_for(lambda: _refuses_connections(patient_server.port), "the listener to close")
    assert patient_server.proc.poll() is None, patient_server.log_tail()

    # The last MiB, slowly, after the signal.
    status, body = upload_.finish(chunk=64 * 1024, pause=0.02)
    assert status == 201, body
    digest = hashlib.sha256(big_png).hexdigest()
    assert (body["sha256"], body["size"]) == (digest, len(big_png))
    assert patient_server.proc.wait(30) == 0, patient_server.log_tail()

    image_id = uuid.UUID(str(body["id"]))
    key = keys.original_key(caller.owner_id, image_id)
    assert hashlib.sha256(store.get_bytes(key)).hexdigest() == digest
    row = client.get(f"/v1/images/{image_id}", headers=caller.headers)
    assert row.status_code == 200
    assert (row.json()["sha256"], row.json()["size"]) == (digest, len(big_png))
    assert_nothing_left(client, store, caller.owner_id, upload_dir)


def test_an_upload_still_arriving_when_the_grace_ends_is_cut_and_leaves_nothing(
    hasty_server: Server,
    client: TestClient,
    store: S3Store,
    upload_dir: Path,
    big_png: bytes,
) -> None:
    caller = new_caller(client)
    upload_ = _two_parts_in(hasty_server, caller, store, big_png)

    hasty_server.proc.send_signal(signal.SIGTERM)
    # Keep trickling (never the whole body) until the server gives up on the upload.
    response: http.client.HTTPResponse | None = None
    deadline = time.monotonic() + 30
    try:
        while hasty_server.proc.poll() is None and time.monotonic() < deadline:
            upload_.send_until(min(upload_.sent + 4096, len(big_png) - 1))
            time.sleep(0.1)
        response = upload_.conn.getresponse()
    except (ConnectionError, http.client.HTTPException):
        pass  # cut without a response: what a client of a stopped server sees
    assert hasty_server.proc.wait(30) == 0, hasty_server.log_tail()
    assert upload_.sent < len(big_png)
    assert response is None or response.status >= 500

    assert original_keys_in_db(client, caller.owner_id) == set()
    assert_nothing_left(client, store, caller.owner_id, upload_dir)  # no object, part or file


def test_an_upload_cut_while_it_commits_is_rolled_back_and_its_object_deleted(
    hasty_server: Server,
    settings: Settings,
    client: TestClient,
    store: S3Store,
    upload_dir: Path,
) -> None:
    caller = new_caller(client)
    # Another transaction holds the owner's row: the upload stores its object, inserts its row,
    # then waits for that lock to count its bytes, which is where the grace ends.
    url = settings.require("database_url")
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watcher:
        holder.execute("SELECT 1 FROM owners WHERE id = %s FOR UPDATE", (caller.owner_id,))

        def stuck_on_the_lock() -> bool:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            return row is not None and row[0] == 1

        upload_ = RawUpload(hasty_server.url, caller, png(200, (64, 48)), "small.png", "image/png")
        statuses: list[int] = []
        answered = threading.Thread(target=_send_all, args=(upload_, statuses), daemon=True)
        answered.start()
        wait_for(stuck_on_the_lock, "the upload to wait for the owner's row")
        assert len(store.list_keys(keys.originals_prefix(caller.owner_id))) == 1

        hasty_server.proc.send_signal(signal.SIGTERM)
        # The lock is still held: the cut request rolls back without it.
        assert hasty_server.proc.wait(30) == 0, hasty_server.log_tail()
    answered.join(30)
    assert statuses in ([], [500]), statuses  # cut: never a success
    # The cut request ended (its access line is written last thing) before the app closed the
    # engine and the S3 client its rollback and compensating delete needed.
    log = hasty_server.log.read_text()
    assert log.index("POST /v1/images") < log.index("Application shutdown complete"), log

    assert original_keys_in_db(client, caller.owner_id) == set()
    assert_nothing_left(client, store, caller.owner_id, upload_dir)  # no object, part or file


def _send_all(upload_: RawUpload, statuses: list[int]) -> None:
    """The whole body, then the response's status if there is one: a client of a stopped
    server sees its connection close without one."""
    with contextlib.suppress(ConnectionError, http.client.HTTPException):
        upload_.send_until(len(upload_.data))
        upload_.conn.send(upload_.tail)
        statuses.append(upload_.conn.getresponse().status)


# --- workers -----------------------------------------------------------------------------


def test_sigterm_lets_a_worker_finish_its_task_and_leaves_the_rest_queued(
    own_broker: Settings, tmp_path: Path
) -> None:
    settings = own_broker
    # Big presets make the first task take seconds, so the signal lands in the middle of it.
    env = {**settings_env(settings), **SLOW_PRESETS}
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "-Q", "thumbnails", "--no-sweep", "--concurrency", "1")
    successor = None
    try:
        wait_for_worker(settings, worker, log)
        with TestClient(create_app(settings)) as client:
            caller = new_caller(client)
            first_id = upload_slow(client, caller)
            small = io.BytesIO()
            Image.new("RGB", (640, 480), (20, 90, 200)).save(small, "JPEG")
            status, second = upload(client, caller, small.getvalue())
            assert status == 201
            second_id = str(second["id"])

            def thumbnails(image_id: str) -> str:
                got = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
                return job_states(got)["thumbnails"]

            job_leaves(client, caller, first_id, "thumbnails", "pending")
            assert thumbnails(first_id) == "running", "the task ended before the signal"

            worker.send_signal(signal.SIGTERM)  # what `docker stop` sends
            assert worker.wait(120) == 0, log.read_text()[-3000:]

            done = client.get(f"/v1/images/{first_id}", headers=caller.headers).json()
            assert done["status"] == "ready"
            (job,) = [j for j in done["jobs"] if j["kind"] == "thumbnails"]
            assert (job["state"], job["attempts"]) == ("done", 1)  # finished, not rerun
            # The task not yet started was left to the broker, not taken down with the worker.
            assert thumbnails(second_id) == "pending"

            successor = start_worker(
                env, tmp_path / "successor.log", "-Q", "thumbnails", "--no-sweep"
            )
            wait_for_status(client, caller, second_id, "ready", timeout=120)
    finally:
        for proc in (worker, successor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
