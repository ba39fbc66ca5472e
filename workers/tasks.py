"""Task definitions: thin wrappers that own the retry policy, never the work itself."""

from __future__ import annotations

from celery import Celery

from media_api.jobs import PING_TASK


def register(app: Celery) -> None:
    """Bind every task to `app` under its stable name (the API sends by name)."""

    @app.task(name=PING_TASK)
    def ping() -> str:
        """Round-trip check: proves a worker consumes and the result store answers."""
        return "pong"
