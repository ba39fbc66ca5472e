"""Session fixtures: one real stack (Postgres, Redis, SeaweedFS) and a real worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from media_api.db import create_engine
from media_api.dev.stack import free_port, start_redis
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller
from tests.support.leftovers import assert_nothing_left
from tests.support.serving import api_client, api_server
from tests.support.stack import running_stack
from tests.support.workers import running_worker

# Queues the session worker consumes; `thumbnails` is read by tests that check dispatch.
WORKER_QUEUES = "maintenance"


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings pointing at the session's real stack, scratch database and bucket."""
    with running_stack() as settings:
        yield settings


@pytest.fixture(scope="session")
def store(settings: Settings) -> Iterator[S3Store]:
    """A sync S3 adapter on the session bucket."""
    store = S3Store(settings)
    yield store
    store.close()


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The async engine the API would use."""
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test."""
    conn: AsyncConnection = await engine.connect()
    trans = await conn.begin()
    session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        await session.close()
        await trans.rollback()
        await conn.close()


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real Celery worker process, for the whole session."""
    log_path: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    # tests/workers drive the sweep themselves, so this worker does not sweep.
    with running_worker(settings, log_path, "--queues", WORKER_QUEUES, "--no-sweep"):
        yield


@pytest.fixture
def own_broker(app_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The API's settings on a Redis of this test's own, so no other worker takes its tasks
    (and a task a test kills stays its own)."""
    child, url = start_redis(tmp_path / "redis", free_port(), tmp_path / "logs")
    try:
        yield app_settings.model_copy(update={"broker_url": url})
    finally:
        child.stop()


@pytest.fixture(scope="session")
def upload_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the API spools uploads into; tests check that it stays empty."""
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="session")
def app_settings(settings: Settings, upload_tmp: Path) -> Settings:
    """Settings of the API under test; rate limits off (tests/auth turns them on): the whole
    session signs in from one address."""
    return settings.model_copy(
        update={
            "upload_tmp_dir": upload_tmp,
            "rate_limit_requests_per_minute": 0,
            "rate_limit_uploads_per_minute": 0,
            "rate_limit_auth_per_address": "",
            "rate_limit_login_per_account": "",
            "rate_limit_login_failures_per_account": "",
            "web_key_links": True,  # tests/web sign in with `/#key=` links, as `make dev` does
        }
    )


@pytest.fixture(scope="session")
def client(app_settings: Settings) -> Iterator[TestClient]:
    """The API with its lifespan running (in-process transport)."""
    yield from api_client(app_settings)


@pytest.fixture(scope="session")
def live_server(app_settings: Settings) -> Iterator[str]:
    """The same API served by uvicorn on a real socket (disconnects, raw HTTP, concurrency)."""
    yield from api_server(app_settings)


@pytest.fixture
def caller(client: TestClient) -> Caller:
    """A fresh owner with an API key."""
    return new_caller(client)


@pytest.fixture
def leftovers(
    client: TestClient, store: S3Store, upload_tmp: Path, caller: Caller
) -> Iterator[None]:
    """After the test: the owner's rows and objects agree, and no temp file, upload bytes,
    multipart upload or quota reservation remains."""
    yield
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
