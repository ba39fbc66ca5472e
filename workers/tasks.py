"""Task definitions: thin wrappers that own the retry policy, never the work itself."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from media_api.images.models import JobKind
from media_api.jobs.producer import JOB_TASKS, PING_TASK, TAG_TASK, VARIANTS_TASK
from media_api.settings import Settings
from workers import pipeline, repository
from workers.context import WorkerContext, context


class Work(Protocol):
    def __call__(
        self, ctx: WorkerContext, image_id: uuid.UUID, task_id: str | None, *, fair: bool
    ) -> str: ...


def _run(
    task: Task[[str], str], settings: Settings, work: Work, kind: JobKind, image_id: str
) -> str:
    """Run one turn of work; transient failures retry with exponential backoff, then the
    sweep. A turn spent on another image's job (the fair order) sends this image's message
    again, so its own job keeps a turn in the queue."""
    try:
        outcome = work(context(settings), uuid.UUID(image_id), task.request.id, fair=True)
    except SoftTimeLimitExceeded:
        # Out of time outside the pipeline's own handling (opening connections, recording the
        # result): whatever this task holds fails; an unclaimed job gets its turn again below.
        ctx = context(settings)
        ctx.engine.dispose()  # a connection cut mid-statement is not fit for reuse
        with ctx.sessions.begin() as session:
            held = repository.fail_jobs_of_task(
                session, str(task.request.id), pipeline.PROCESSING_TIMEOUT
            )
        outcome = f"out of time ({held} jobs failed {pipeline.PROCESSING_TIMEOUT})"
    except pipeline.JobBusy as exc:
        raise task.retry(exc=exc, countdown=exc.countdown) from exc
    except pipeline.TransientJobError as exc:
        retries = task.request.retries
        if retries + 1 >= settings.job_max_attempts:
            # The row is pending again; the sweep picks it up after its grace period.
            return f"gave up retrying ({exc.code}); left to the sweep"
        countdown = settings.job_retry_backoff_seconds * 2**retries
        raise task.retry(exc=exc, countdown=countdown) from exc
    if _send_turn_again(task, settings, kind, image_id):
        return f"{outcome}; this image's turn sent again"
    return outcome


def _send_turn_again(
    task: Task[[str], str], settings: Settings, kind: JobKind, image_id: str
) -> bool:
    """Publish this image's message again if its job still waits (the turn went elsewhere)."""
    with context(settings).sessions.begin() as session:
        waiting = repository.is_pending(session, uuid.UUID(image_id), kind)
    if waiting:
        _, queue = JOB_TASKS[kind.value]
        task.apply_async(args=(image_id,), queue=queue)
    return waiting


def _fail_when_killed(settings: Settings) -> type[Task[[str], str]]:
    """A task base whose hard time limit fails the jobs the killed task held: the main
    process runs `on_failure` for it, since the pool process is gone."""

    class JobTask(Task[[str], str]):
        def on_failure(
            self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            if isinstance(exc, TimeLimitExceeded):
                with context(settings).sessions.begin() as session:
                    repository.fail_jobs_of_task(session, task_id, pipeline.PROCESSING_TIMEOUT)
                kind = JobKind.THUMBNAILS if self.name == VARIANTS_TASK else JobKind.TAGGING
                if args:
                    _send_turn_again(self, settings, kind, str(args[0]))  # its turn was lost

    return JobTask


def _limits(settings: Settings, kind: JobKind) -> dict[str, float]:
    return {
        "soft_time_limit": pipeline.soft_time_limit(settings, kind),
        "time_limit": pipeline.hard_time_limit(settings, kind),
    }


def register(app: Celery, settings: Settings) -> None:
    """Bind every task to `app` under its stable name (the API sends by name)."""
    base = _fail_when_killed(settings)
    # Time limits per kind (annotations apply them to the tasks defined below).
    app.conf.task_annotations = {
        VARIANTS_TASK: _limits(settings, JobKind.THUMBNAILS),
        TAG_TASK: _limits(settings, JobKind.TAGGING),
    }

    @app.task(name=PING_TASK)
    def ping() -> str:
        """Round-trip check: proves a worker consumes and the result store answers."""
        return "pong"

    @app.task(
        name=VARIANTS_TASK,
        base=base,
        bind=True,
        ignore_result=True,
        max_retries=None,
    )
    def make_variants(self: Task[[str], str], image_id: str) -> str:
        """Thumbnails job (queue `thumbnails`)."""
        return _run(self, settings, pipeline.make_variants, JobKind.THUMBNAILS, image_id)

    @app.task(
        name=TAG_TASK,
        base=base,
        bind=True,
        ignore_result=True,
        max_retries=None,
    )
    def tag_image(self: Task[[str], str], image_id: str) -> str:
        """Tagging job (queue `tagging`), batched with other pending tagging jobs."""
        return _run(self, settings, pipeline.tag_images, JobKind.TAGGING, image_id)
