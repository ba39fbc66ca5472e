"""A throwaway local stack for benchmarks: embedded services, migrated DB, bucket, API key."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from media_api.accounts.service import key_for_email
from media_api.db import create_engine, session_factory
from media_api.dev import stack as devstack
from media_api.dev.bootstrap import ready_stack, stack_env
from media_api.settings import Settings


def bench_owner(database_url: str) -> uuid.UUID:
    """The owner of the bench stack's API key."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT owner_id FROM api_keys ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    owner: uuid.UUID = row[0]
    return owner


def pct(values: list[float], q: float) -> float:
    """The q-th percentile of seconds, in milliseconds."""
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def postgres_line(database_url: str) -> str:
    """Machine, Python and PostgreSQL versions, and the time, for a results header."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return (
        f"{platform.machine()}, Python {platform.python_version()}, PostgreSQL {row[0]}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


@dataclass
class BenchStack:
    settings: Settings
    env: dict[str, str]
    token: str
    data_dir: Path


async def api_keys(settings: Settings, emails: list[str], key_name: str) -> list[str]:
    """An API key for each email (owners created as needed), in one transaction."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            tokens = [await key_for_email(session, email, key_name) for email in emails]
            await session.commit()
            return tokens
    finally:
        await engine.dispose()


@contextmanager
def bench_stack(**overrides: str) -> Iterator[BenchStack]:
    """Embedded Postgres, Redis and SeaweedFS on free ports in a temp folder, whatever the
    environment configures; `overrides` are MEDIA_* variables for this process and its children."""
    data_dir = Path(tempfile.mkdtemp(prefix="media-bench-"))
    os.environ.update(overrides)
    wanted = Settings().model_copy(
        update={
            "database_url": None,
            "broker_url": None,
            "s3_endpoint_url": None,
            "s3_access_key": "bench-access",
            "s3_secret_key": SecretStr("bench-secret"),
            # The API refuses to start without a token-signing key.
            "secret_key": SecretStr(secrets.token_urlsafe(48)),
            "data_dir": data_dir,
        }
    )
    try:
        with ready_stack(wanted, durable=False) as stack:
            media = {
                **stack_env(stack.settings),
                "MEDIA_SECRET_KEY": stack.settings.jwt_secret,
                **overrides,
            }
            os.environ.update(media)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEDIA_")}, **media}
            token = asyncio.run(api_keys(stack.settings, ["bench@localhost"], "bench"))[0]
            yield BenchStack(stack.settings, env, token, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def api_process(stack: BenchStack, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`media-api serve` in its own process (so its RSS is measured alone)."""
    port = devstack.free_port()
    argv = [sys.executable, "-m", "media_api.cli", "serve", "--port", str(port), *extra]
    child = devstack.spawn("api", argv, stack.data_dir / "logs", env=stack.env)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)

    try:
        devstack.wait_until(healthy, 30, "the API", child)
        yield base, child.popen
    finally:
        child.stop(20)


def run_bench(main: Callable[[], None]) -> None:
    """Run a bench's main; Ctrl-C ends it quietly once every process it started is stopped."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every process this bench started is stopped", file=sys.stderr)
        sys.exit(130)
