"""`media-api worker` as a child process, and waiting until it consumes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from media_api.jobs.producer import create_producer
from media_api.settings import Settings
from tests.support.callers import Caller, upload
from tests.support.images import noise_png
from tests.support.stack import settings_env

# Presets that make the thumbnails task of `upload_slow`'s image take seconds: a test can act
# while it runs (signal, kill, scrape).
SLOW_PRESETS = {"MEDIA_VARIANT_PRESETS": "a:4000,b:3900,c:3800"}


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


@contextmanager
def running_worker(settings: Settings, log_path: Path, *args: str) -> Iterator[None]:
    """A worker on the stack of `settings`, consuming by the time the block starts; stopped
    (SIGTERM, so it finishes its task) when the block ends."""
    proc = start_worker(settings_env(settings), log_path, *args)
    try:
        wait_for_worker(settings, proc, log_path)
        yield
    finally:
        proc.terminate()
        proc.wait(60)


def upload_slow(client: TestClient, caller: Caller, side: int = 5000) -> str:
    """Upload gray noise whose variants (with SLOW_PRESETS) take seconds; returns its id."""
    status, body = upload(client, caller, noise_png(side), filename="big.png")
    assert status == 201
    return str(body["id"])
