"""Task definitions: thin wrappers that own the retry policy, never the work itself."""

from __future__ import annotations

import uuid

from celery import Celery, Task

from media_api.jobs import PING_TASK, VARIANTS_TASK
from media_api.settings import Settings
from workers import pipeline
from workers.context import context


def register(app: Celery, settings: Settings) -> None:
    """Bind every task to `app` under its stable name (the API sends by name)."""

    @app.task(name=PING_TASK)
    def ping() -> str:
        """Round-trip check: proves a worker consumes and the result store answers."""
        return "pong"

    @app.task(name=VARIANTS_TASK, bind=True, ignore_result=True, max_retries=None)
    def make_variants(self: Task[[str], str], image_id: str) -> str:
        """Thumbnails job; transient failures retry with exponential backoff."""
        try:
            return pipeline.make_variants(context(settings), uuid.UUID(image_id))
        except pipeline.TransientJobError as exc:
            retries = self.request.retries
            if retries + 1 >= settings.job_max_attempts:
                # The row is pending again; the sweep picks it up after its grace period.
                return f"gave up retrying ({exc.code}); left to the sweep"
            countdown = settings.job_retry_backoff_seconds * 2**retries
            raise self.retry(exc=exc, countdown=countdown) from exc
