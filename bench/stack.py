"""A throwaway local stack for benchmarks: embedded services, migrated DB, bucket, API key."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from media_api.accounts.service import key_for_email
from media_api.db import create_engine, session_factory, upgrade
from media_api.dev import stack as devstack
from media_api.settings import Settings
from media_api.storage.s3 import S3Store


@dataclass
class BenchStack:
    settings: Settings
    env: dict[str, str]
    token: str
    data_dir: Path


async def _token(settings: Settings) -> str:
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            token = await key_for_email(session, "bench@localhost", "bench")
            await session.commit()
            return token
    finally:
        await engine.dispose()


@contextmanager
def bench_stack(**overrides: str) -> Iterator[BenchStack]:
    """Embedded Postgres, Redis and SeaweedFS on free ports in a temp folder."""
    data_dir = Path(tempfile.mkdtemp(prefix="media-bench-"))
    access, secret = "bench-access", "bench-secret"
    stack = devstack.start_stack(
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        s3_endpoint_url=None,
        ports=devstack.scratch_ports(),
        bucket="media",
        access_key=access,
        secret_key=secret,
        durable=False,
    )
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDIA_")},
            **stack.urls,
            "MEDIA_S3_ACCESS_KEY": access,
            "MEDIA_S3_SECRET_KEY": secret,
            # The API refuses to start without a token-signing key.
            "MEDIA_SECRET_KEY": secrets.token_urlsafe(48),
            **overrides,
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("MEDIA_")})
        settings = Settings()
        upgrade(settings)
        store = S3Store(settings)
        store.ensure_bucket()
        store.close()
        yield BenchStack(settings, env, asyncio.run(_token(settings)), data_dir)
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def api_process(stack: BenchStack, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`media-api serve` in its own process (so its RSS is measured alone)."""
    port = devstack.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "media_api.cli", "serve", "--port", str(port), *extra],
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):  # noqa: S310
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("API did not start") from None
            time.sleep(0.2)
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(20)
