"""Task definitions: thin wrappers that own the retry policy, never the work itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from celery import Celery, Task

from media_api.jobs import PING_TASK, TAG_TASK, VARIANTS_TASK
from media_api.settings import Settings
from workers import pipeline
from workers.context import WorkerContext, context


def _run(
    task: Task[[str], str],
    settings: Settings,
    work: Callable[[WorkerContext, uuid.UUID], str],
    image_id: str,
) -> str:
    """Run one job; transient failures retry with exponential backoff, then the sweep."""
    try:
        return work(context(settings), uuid.UUID(image_id))
    except pipeline.JobBusy as exc:
        raise task.retry(exc=exc, countdown=exc.countdown) from exc
    except pipeline.TransientJobError as exc:
        retries = task.request.retries
        if retries + 1 >= settings.job_max_attempts:
            # The row is pending again; the sweep picks it up after its grace period.
            return f"gave up retrying ({exc.code}); left to the sweep"
        countdown = settings.job_retry_backoff_seconds * 2**retries
        raise task.retry(exc=exc, countdown=countdown) from exc


def register(app: Celery, settings: Settings) -> None:
    """Bind every task to `app` under its stable name (the API sends by name)."""

    @app.task(name=PING_TASK)
    def ping() -> str:
        """Round-trip check: proves a worker consumes and the result store answers."""
        return "pong"

    @app.task(name=VARIANTS_TASK, bind=True, ignore_result=True, max_retries=None)
    def make_variants(self: Task[[str], str], image_id: str) -> str:
        """Thumbnails job (queue `thumbnails`)."""
        return _run(self, settings, pipeline.make_variants, image_id)

    @app.task(name=TAG_TASK, bind=True, ignore_result=True, max_retries=None)
    def tag_image(self: Task[[str], str], image_id: str) -> str:
        """Tagging job (queue `tagging`), batched with other pending tagging jobs."""
        return _run(self, settings, pipeline.tag_images, image_id)
