"""The lifespan closes the engine and the S3 client only once requests in flight have ended.

uvicorn cancels the requests still running when the shutdown grace ends and runs the lifespan's
shutdown at once, without waiting for them; a cancelled request still has cleanup to do with
what the lifespan closes. These serve the app with uvicorn in-process, as `media-api serve` does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text

from media_api import main
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from tests.support.serving import serve


class Recorded:
    """An app whose `/cut` request never ends on its own, and what happened, in order."""

    def __init__(self, settings: Settings, cleanup_ends: bool = True) -> None:
        self.app = create_app(settings)
        self.events: list[str] = []
        self.running = threading.Event()
        lifespan = self.app.router.lifespan_context

        @asynccontextmanager
        async def recorded(app: FastAPI) -> AsyncIterator[None]:
            async with lifespan(app):
                yield
            self.events.append("closed")

        self.app.router.lifespan_context = recorded

        @self.app.get("/cut")
        async def cut(request: Request) -> None:
            self.running.set()
            try:
                await asyncio.Event().wait()  # until the grace ends and uvicorn cancels it
            except asyncio.CancelledError:
                # What a cut upload's rollback does: more I/O on the engine and the S3 client.
                state: AppState = request.app.state.media
                async with state.engine.connect() as conn:
                    await conn.execute(text("SELECT pg_sleep(0.3)"))
                await state.store.delete(f"tests/never-stored-{id(self)}")
                self.events.append("cleaned up")
                if not cleanup_ends:
                    await asyncio.Event().wait()  # wedged
                raise


def _request_in_background(url: str) -> threading.Thread:
    def send() -> None:
        # Cut without a response: what a client of a stopped server sees.
        with suppress(httpx.HTTPError):
            httpx.get(url, timeout=60)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_shutdown_waits_for_a_cancelled_request_to_clean_up(settings: Settings) -> None:
    recorded = Recorded(settings)
    with serve(recorded.app, grace=1) as url:
        client = _request_in_background(f"{url}/cut")
        assert recorded.running.wait(30)
    client.join(30)
    assert recorded.events == ["cleaned up", "closed"]


def test_a_cleanup_that_never_ends_holds_the_shutdown_only_so_long(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(main, "CLEANUP_GRACE_SECONDS", 0.5)
    recorded = Recorded(settings, cleanup_ends=False)
    with (
        caplog.at_level(logging.WARNING, logger="media_api.main"),
        serve(recorded.app, grace=1) as url,
    ):
        client = _request_in_background(f"{url}/cut")
        assert recorded.running.wait(30)
    client.join(30)
    assert recorded.events == ["cleaned up", "closed"]  # closed, though it never returned
    assert "1 requests still cleaning up" in caplog.text
