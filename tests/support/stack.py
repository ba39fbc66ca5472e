"""The real stack the test session talks to: embedded, or the URLs in the environment."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from media_api.dev.bootstrap import ready_stack, scratch_database, stack_env
from media_api.settings import Settings

__all__ = ["running_stack", "scratch_database", "settings_env"]


@contextmanager
def running_stack() -> Iterator[Settings]:
    """Start whatever the environment does not provide; yield settings for a scratch
    database and bucket on it, so a session never sees another run's data."""
    env = Settings()
    data_dir = Path(tempfile.mkdtemp(prefix="media-test-"))
    wanted = env.model_copy(
        update={
            "data_dir": data_dir,
            "secret_key": env.secret_key or SecretStr(secrets.token_urlsafe(48)),
        }
    )
    try:
        with ready_stack(wanted, durable=False, scratch=True) as stack:
            yield stack.settings
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """MEDIA_* variables that make a child process (worker, CLI) use the same stack, and no
    other MEDIA_* from the environment."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDIA_")}
    return {**inherited, **stack_env(settings)}


def run_cli(settings: Settings, *args: str) -> str:
    """`media-api ARGS` against the stack of `settings`; its output (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "media_api.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
