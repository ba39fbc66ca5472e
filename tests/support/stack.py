"""The real stack the test session talks to: embedded, or the URLs in the environment."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pydantic import SecretStr

from media_api.db import upgrade
from media_api.dev import stack as devstack
from media_api.settings import Settings
from media_api.storage.s3 import S3Store

ACCESS_KEY = "media-test-access"
SECRET_KEY = "media-test-secret"


def _admin_url(url: str) -> str:
    """The same server, database `postgres`, to create and drop scratch databases."""
    base, _, _ = url.rpartition("/")
    return f"{base}/postgres"


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server; dropped afterwards."""
    name = f"media_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_stack() -> Iterator[Settings]:
    """Start whatever the environment does not provide; yield settings for a scratch
    database and bucket on it, so a session never sees another run's data."""
    env = Settings()
    data_dir = Path(tempfile.mkdtemp(prefix="media-test-"))
    stack = devstack.start_stack(
        data_dir=data_dir,
        database_url=env.database_url,
        broker_url=env.broker_url,
        s3_endpoint_url=env.s3_endpoint_url,
        ports=devstack.scratch_ports(),
        bucket="media",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        durable=False,
    )
    try:
        urls = {
            "database_url": env.database_url or stack.urls["MEDIA_DATABASE_URL"],
            "broker_url": env.broker_url or stack.urls["MEDIA_BROKER_URL"],
            "s3_endpoint_url": env.s3_endpoint_url or stack.urls["MEDIA_S3_ENDPOINT_URL"],
        }
        credentials = (
            {}
            if env.s3_endpoint_url
            else {"s3_access_key": ACCESS_KEY, "s3_secret_key": SecretStr(SECRET_KEY)}
        )
        with scratch_database(urls["database_url"]) as db_url:
            settings = env.model_copy(
                update={
                    **urls,
                    **credentials,
                    "database_url": db_url,
                    "s3_bucket": f"media-test-{uuid.uuid4().hex[:12]}",
                    "secret_key": env.secret_key or SecretStr(secrets.token_urlsafe(48)),
                    "data_dir": data_dir,
                }
            )
            upgrade(settings)
            store = S3Store(settings)
            store.ensure_bucket()
            try:
                yield settings
            finally:
                store.delete_prefix("")
                store.client.delete_bucket(Bucket=settings.s3_bucket)
                store.close()
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """MEDIA_* variables that make a child process (worker, CLI) use the same stack."""
    env = {
        "MEDIA_DATABASE_URL": settings.require("database_url"),
        "MEDIA_BROKER_URL": settings.require("broker_url"),
        "MEDIA_S3_ENDPOINT_URL": settings.require("s3_endpoint_url"),
        "MEDIA_S3_BUCKET": settings.s3_bucket,
        "MEDIA_S3_ACCESS_KEY": settings.s3_access_key,
        "MEDIA_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
    }
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MEDIA_")}, **env}
