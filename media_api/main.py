"""Application factory: everything the app needs is opened by its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from media_api import health
from media_api.db import create_engine, session_factory
from media_api.errors import install_error_handlers
from media_api.images.router import router as images_router
from media_api.jobs import create_producer
from media_api.settings import Settings
from media_api.state import AppState
from media_api.storage.s3 import AsyncS3Store, S3Store


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; settings come from the environment unless given."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        store = S3Store(settings)
        producer = create_producer(settings)
        app.state.media = AppState(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            store=AsyncS3Store(store),
            producer=producer,
        )
        try:
            yield
        finally:
            producer.close()
            store.close()
            await engine.dispose()

    app = FastAPI(
        title="Media service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(images_router)
    return app
