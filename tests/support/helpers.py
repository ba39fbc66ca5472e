"""Helpers shared by API tests: owners with keys, uploads, and leftovers checks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from media_api.accounts.service import create_owner_with_key
from media_api.dev.stack import free_port
from media_api.images.models import Image
from media_api.jobs.producer import create_producer
from media_api.main import SERVER_OPTIONS
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage.s3 import S3Store


@dataclass(frozen=True)
class Caller:
    """An owner and the headers that authenticate as it."""

    owner_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_caller(client: TestClient) -> Caller:
    """A fresh owner with an API key, created through the app's own service and database. Its
    email is one sign-up accepts too (`.test` is a special-use domain it refuses), so a client
    that sends it back, as schemathesis's stateful phase does, gets a real answer."""

    async def create() -> Caller:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            owner_id, token = await create_owner_with_key(session, f"{uuid.uuid4()}@example.com")
            await session.commit()
        return Caller(owner_id, token)

    assert client.portal is not None
    return client.portal.call(create)


def original_keys_in_db(client: TestClient, owner_id: uuid.UUID) -> set[str]:
    """Every original key the owner's rows point at."""

    async def query() -> set[str]:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            rows = await session.execute(
                select(Image.original_key).where(Image.owner_id == owner_id)
            )
            return set(rows.scalars())

    assert client.portal is not None
    return client.portal.call(query)


def assert_nothing_left(
    client: TestClient, store: S3Store, owner_id: uuid.UUID, upload_tmp: Path
) -> None:
    """No object without a row, no row without an object, no spooled temp file."""
    in_db = original_keys_in_db(client, owner_id)
    in_s3 = set(store.list_keys(f"originals/{owner_id}/"))
    assert in_s3 == in_db
    assert list(upload_tmp.iterdir()) == []
    assert store.list_multipart_uploads() == []


def png(seed: int, size: int = 32) -> bytes:
    """A small PNG, distinct bytes per seed."""
    img = PILImage.new("RGB", (size, size), (seed % 256, (seed // 256) % 256, 77))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def noise_jpeg(width: int, height: int) -> bytes:
    """A photo-sized JPEG of noise: real decode and encode work for the workers."""
    img = PILImage.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upload(
    client: TestClient,
    caller: Caller,
    data: bytes,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    **fields: str,
) -> tuple[int, dict[str, object]]:
    """POST one file; returns the status and the JSON body."""
    resp = client.post(
        "/v1/images",
        headers=caller.headers,
        files={"file": (filename, data, content_type)},
        data=fields,
    )
    return resp.status_code, resp.json()


@contextmanager
def serve(app: FastAPI, grace: int | None = None) -> Iterator[str]:
    """Run `app` under uvicorn on a free port in a thread; yields its base URL. When the block
    ends it stops as on SIGTERM, with `grace` seconds for requests in flight if given."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=grace,
        **SERVER_OPTIONS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "uvicorn did not stop"


def start_worker(
    env: dict[str, str], log_path: Path, *args: str, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """`media-api worker` as a child process writing to log_path."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "media_api.cli",
            "worker",
            "--concurrency",
            "2",
            "--hostname",
            f"test-{uuid.uuid4().hex[:8]}@%h",
            *args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def wait_for_worker(settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until the worker answers a broadcast ping (it consumes by then)."""
    producer = create_producer(settings)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
            if producer.control.ping(timeout=0.5):
                return
        raise TimeoutError(f"worker did not answer: {log.read_text()[-3000:]}")
    finally:
        producer.close()


def wait_for_status(
    client: TestClient, caller: Caller, image_id: str, status: str, timeout: float = 60
) -> dict[str, object]:
    """Poll the image until it reaches `status`; returns its last JSON."""
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
        if body.get("status") == status:
            return body
        time.sleep(0.2)
    raise AssertionError(f"image {image_id} never reached {status}: {body}")


def without_urls(body: dict[str, object]) -> dict[str, object]:
    """An image resource minus its signed URLs, which are fresh on every response."""
    stable = {k: v for k, v in body.items() if k not in ("original", "download")}
    variants = body.get("variants")
    if isinstance(variants, list):
        stable["variants"] = [
            {k: v for k, v in item.items() if k not in ("url", "expires_at")} for item in variants
        ]
    return stable


def job_states(body: dict[str, object]) -> dict[str, str]:
    """{kind: state} of an image resource's jobs."""
    jobs = body["jobs"]
    assert isinstance(jobs, list)
    return {str(job["kind"]): str(job["state"]) for job in jobs}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Prometheus text as {(sample name, sorted labels): value}."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
