"""A ready stack: embedded services for what the settings lack, a migrated database, a bucket.

The one bootstrap behind `media-api dev`, the test session and the benchmarks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass

import psycopg

from media_api.db import upgrade
from media_api.dev.stack import Stack, scratch_ports, start_stack
from media_api.settings import Settings
from media_api.storage.s3 import S3Store


@dataclass
class ReadyStack:
    """Settings that reach every service, and the embedded services started for them."""

    settings: Settings
    services: Stack


@contextmanager
def ready_stack(
    settings: Settings,
    *,
    ports: dict[str, int] | None = None,
    durable: bool = True,
    scratch: bool = False,
) -> Iterator[ReadyStack]:
    """Start an embedded service for each URL `settings` lacks (on `ports`, else free ones), in
    `settings.data_dir`; migrate the database and create the bucket. With `scratch`, a new
    database and bucket on those servers, removed at the end: a run never sees another's data."""
    services = start_stack(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        ports=ports or scratch_ports(),
        bucket=settings.s3_bucket,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        durable=durable,
    )
    try:
        with ExitStack() as cleanup:
            ready = settings.model_copy(
                update={
                    "database_url": settings.database_url or services.urls["MEDIA_DATABASE_URL"],
                    "broker_url": settings.broker_url or services.urls["MEDIA_BROKER_URL"],
                    "s3_endpoint_url": settings.s3_endpoint_url
                    or services.urls["MEDIA_S3_ENDPOINT_URL"],
                }
            )
            if scratch:
                database = cleanup.enter_context(scratch_database(ready.require("database_url")))
                bucket = f"media-test-{uuid.uuid4().hex[:12]}"
                ready = ready.model_copy(update={"database_url": database, "s3_bucket": bucket})
            upgrade(ready)
            with closing(S3Store(ready)) as store:
                store.ensure_bucket()
            if scratch:
                cleanup.callback(_remove_bucket, ready)
            yield ReadyStack(ready, services)
    finally:
        services.stop()


def _remove_bucket(settings: Settings) -> None:
    with closing(S3Store(settings)) as store:
        store.delete_prefix("")
        store.client.delete_bucket(Bucket=settings.s3_bucket)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`; dropped afterwards."""
    name = f"media_test_{uuid.uuid4().hex[:12]}"
    admin = f"{server_url.rpartition('/')[0]}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stack_env(settings: Settings) -> dict[str, str]:
    """MEDIA_* variables that point a child process (API, worker, CLI) at the same stack."""
    return {
        "MEDIA_DATABASE_URL": settings.require("database_url"),
        "MEDIA_BROKER_URL": settings.require("broker_url"),
        "MEDIA_S3_ENDPOINT_URL": settings.require("s3_endpoint_url"),
        "MEDIA_S3_BUCKET": settings.s3_bucket,
        "MEDIA_S3_ACCESS_KEY": settings.s3_access_key,
        "MEDIA_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
    }
