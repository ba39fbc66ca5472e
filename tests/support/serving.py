"""`media-api serve` as a real process, started and stopped the way a deploy does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from media_api.dev import stack as devstack
from media_api.settings import Settings
from tests.support.helpers import wait_for
from tests.support.stack import settings_env


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
