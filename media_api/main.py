"""Application factory: everything the app needs is opened by its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from media_api import logs
from media_api.accounts.throttles import AuthThrottles, create_throttle
from media_api.api import health
from media_api.api.accounts import auth_router, keys_router
from media_api.api.deps import api_rate_limit
from media_api.api.events import router as events_router
from media_api.api.galleries import router as galleries_router
from media_api.api.images import router as images_router
from media_api.api.metrics_server import serving_metrics
from media_api.api.middleware import InFlight, install_http_policies
from media_api.api.tus import router as tus_router
from media_api.api.uploads import router as uploads_router
from media_api.api.web.docs import install_docs
from media_api.api.web.router import install_web
from media_api.api.webhooks import router as webhooks_router
from media_api.db import create_engine, session_factory
from media_api.errors import install_error_handlers
from media_api.events.listener import Listener, listen_dsn
from media_api.images.validation import Validator
from media_api.jobs.producer import create_producer
from media_api.metrics import ApiMetrics
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage.s3 import AsyncS3Store, S3Store

log = logging.getLogger(__name__)

# Bound on waiting, at shutdown, for requests cancelled at the end of the grace to clean up
# (roll back, delete or abort what they stored: one S3 call or so each). The grace
# (MEDIA_SHUTDOWN_GRACE_SECONDS, 30) plus this must fit in the orchestrator's kill timeout
# (compose: the api's stop_grace_period, 45 s).
CLEANUP_GRACE_SECONDS = 10

# How `media-api serve` runs uvicorn (the tests serve with the same options).
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "server_header": False,  # no version banner
    "proxy_headers": True,
    "access_log": False,  # media_api.logs.RequestLog writes one structured line per request
    "log_config": None,  # keep the logging the CLI configured
}


def create_served_app() -> FastAPI:
    """The app as `media-api serve` runs it, in each of its processes: uvicorn's workers are
    fresh interpreters, so the logging the CLI set up in the supervisor is not theirs."""
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return create_app(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; settings come from the environment unless given."""
    settings = settings or Settings()
    _ = settings.jwt_secret  # refuse to start without a signing key, not on the first login
    in_flight = InFlight()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        store = S3Store(settings)
        async_store = AsyncS3Store(store)
        producer = create_producer(settings)
        metrics = ApiMetrics()
        throttle = create_throttle(
            settings.rate_limit_redis_url,
            metrics.ratelimit_errors.inc,
            settings.rate_limit_timeout_seconds,
        )
        hashing = ThreadPoolExecutor(settings.password_hash_workers, "password-hash")
        validator = Validator(settings)
        listener = Listener(listen_dsn(settings), settings.db_connect_timeout_seconds)
        listener.start()
        app.state.media = AppState(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            store=async_store,
            producer=producer,
            throttle=throttle,
            auth_throttles=AuthThrottles(throttle, settings),
            hashing=hashing,
            validator=validator,
            metrics=metrics,
            listener=listener,
            finalizing=asyncio.Semaphore(settings.max_concurrent_validations),
        )
        try:
            # /metrics on a port of its own when MEDIA_METRICS_PORT is set; stopped first.
            async with serving_metrics(app.state.media):
                yield
        finally:
            # When the shutdown grace ends, uvicorn cancels the requests still running and
            # runs this at once, without waiting for them; they clean up with what is closed
            # below, so wait for the last one (bounded: a wedged one must not stop the exit).
            try:
                async with asyncio.timeout(CLEANUP_GRACE_SECONDS):
                    await in_flight.idle()
            except TimeoutError:
                log.warning(
                    "closing with %d requests still cleaning up after %g s",
                    in_flight.count,
                    CLEANUP_GRACE_SECONDS,
                )
            await listener.stop()
            await throttle.close()
            hashing.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(validator.close)
            producer.close()
            store.close()
            await engine.dispose()

    app = FastAPI(
        title="Media service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # media_api.api.web.docs serves Swagger UI from a package, not a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    install_http_policies(app, settings, in_flight)
    app.include_router(health.router)
    app.include_router(auth_router)
    app.include_router(keys_router)
    app.include_router(images_router, dependencies=[Depends(api_rate_limit)])
    app.include_router(galleries_router, dependencies=[Depends(api_rate_limit)])
    # tus first: its prefix is longer. OPTIONS is public (discovery), so each route limits.
    app.include_router(tus_router)
    app.include_router(uploads_router, dependencies=[Depends(api_rate_limit)])
    app.include_router(events_router, dependencies=[Depends(api_rate_limit)])
    app.include_router(webhooks_router, dependencies=[Depends(api_rate_limit)])
    install_web(app)
    install_docs(app)
    return app
