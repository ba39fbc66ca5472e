"""The API on a real socket: uvicorn in a thread, or `media-api serve` as a deploy runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from media_api.dev import stack as devstack
from media_api.main import SERVER_OPTIONS, create_app
from media_api.settings import Settings
from tests.support.stack import settings_env
from tests.support.waiting import wait_for


def api_client(settings: Settings) -> Iterator[TestClient]:
    """The API with its lifespan running (in-process transport), for a fixture to `yield from`."""
    with TestClient(create_app(settings)) as client:
        yield client


def api_server(settings: Settings) -> Iterator[str]:
    """The API under uvicorn on a real socket, for a fixture to `yield from`; yields its URL."""
    with serve(create_app(settings)) as url:
        yield url


@contextmanager
def serve(app: FastAPI, grace: int | None = None) -> Iterator[str]:
    """Run `app` under uvicorn on a free port in a thread; yields its base URL. When the block
    ends it stops as on SIGTERM, with `grace` seconds for requests in flight if given."""
    port = devstack.free_port()
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

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        return server.started

    wait_for(started, "uvicorn to start", timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def answers(self) -> bool:
        """/healthz says 200; fails the test at once if the process has exited."""
        assert self.proc.poll() is None, f"serve exited: {self.log_tail()}"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def serve_process(
    settings: Settings, folder: Path, *args: str, **env: str
) -> Iterator[ServeProcess]:
    """`media-api serve ARGS` on a free port with the stack's settings (rate limits off) plus
    `env`, logging to folder/serve.log; yielded once it answers. At the end: SIGTERM, and its
    process group killed only if it does not stop in time (with --workers N its workers would
    live on otherwise)."""
    port = devstack.free_port()
    environ = settings_env(settings)
    environ.update(
        MEDIA_HOST="127.0.0.1",
        MEDIA_PORT=str(port),
        MEDIA_SECRET_KEY=settings.jwt_secret,
        MEDIA_RATE_LIMIT_REQUESTS_PER_MINUTE="0",
        MEDIA_RATE_LIMIT_UPLOADS_PER_MINUTE="0",
        **env,
    )
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "media_api.cli", "serve", *args],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,  # no stray .env
            start_new_session=True,  # its own group, for the last resort below
        )
    server = ServeProcess(proc, port, log)
    try:
        wait_for(server.answers, "serve to answer", timeout=60)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@contextmanager
def serve_workers(
    settings: Settings, folder: Path, workers: int, **env: str
) -> Iterator[tuple[ServeProcess, Path]]:
    """`media-api serve --workers N` spooling uploads into `folder`, with a TMPDIR of its own
    (where `serve` keeps its multiprocess metrics); yields the server and that TMPDIR."""
    tmp = folder / "tmp"
    tmp.mkdir()
    with serve_process(
        settings,
        folder,
        "--workers",
        str(workers),
        MEDIA_UPLOAD_TMP_DIR=str(folder),
        TMPDIR=str(tmp),
        **env,
    ) as server:
        yield server, tmp
