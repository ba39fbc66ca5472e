"""`media-api dev` on its own folder and ports: ready, then stopped with nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from media_api.cli import build_parser
from media_api.dev.stack import free_port
from tests.support.corpus import CORPUS
from tests.support.waiting import poll


def test_cli_has_every_command() -> None:
    parser = build_parser()
    for command in ("serve", "worker", "migrate", "dev"):
        assert parser.parse_args([command]).command == command
    assert parser.parse_args(["create-key", "a@b.c"]).email == "a@b.c"


def log_text(folder: Path) -> str:
    return (folder / "dev.log").read_text(errors="replace")


@pytest.mark.slow
def test_dev_serves_ready_then_stops_every_child(tmp_path: Path) -> None:
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIA_")}
    env.update(
        MEDIA_DATA_DIR=str(tmp_path / "data"),
        MEDIA_PORT=str(api_port),
        MEDIA_DEV_POSTGRES_PORT=str(free_port()),
        MEDIA_DEV_REDIS_PORT=str(free_port()),
        MEDIA_DEV_S3_PORT=str(free_port()),
    )
    out = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "media_api.cli", "dev"],
        env=env,
        stdout=out,
        stderr=out,
        cwd=tmp_path,
    )
    try:

        def readyz() -> httpx.Response | None:
            assert proc.poll() is None, log_text(tmp_path)[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2)
            except httpx.HTTPError:
                return None

        def announced(answer: httpx.Response | None) -> bool:
            ready = answer is not None and answer.status_code == 200
            return ready and "Media service ready" in log_text(tmp_path)

        ready = poll(readyz, announced, "`media-api dev` to be ready", timeout=60, interval=0.5)
        assert ready is not None, log_text(tmp_path)[-3000:]
        assert ready.status_code == 200, log_text(tmp_path)[-3000:]
        assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}

        # The printed dev key works at once: a newcomer can upload with curl.
        token = re.search(r"export MEDIA_KEY=(\S+)", log_text(tmp_path))
        assert token is not None
        jpeg = (CORPUS / "valid/jpeg_baseline_testorig.jpg").read_bytes()
        created = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/images",
            headers={"Authorization": f"Bearer {token.group(1)}"},
            files={"file": ("a.jpg", jpeg)},
        )
        assert created.status_code == 201, created.text
        saved = (tmp_path / "data" / "dev-api-key").read_text().strip()
        assert saved == token.group(1)

        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for part in ("postgres", "redis-server", "weed", "serve", "worker"):
            assert part in names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], [p.cmdline() for p in alive]
        assert "Media service ready" in log_text(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
