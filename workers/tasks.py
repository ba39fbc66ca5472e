"""Task definitions: thin wrappers that own the retry policy, never the work itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from media_api.jobs.contract import BY_TASK, DELIVER_TASK, JOBS, PING_TASK, JobKind, JobType
from media_api.jobs.models import JobState
from media_api.jobs.producer import JobProducer
from media_api.settings import Settings
from workers import pipeline, repository, webhooks
from workers.context import WorkerContext, context

# The work behind each kind's task (its name, queue and limits come from the contract).
WORK: dict[JobKind, Callable[[WorkerContext, uuid.UUID, str | None], str]] = {
    JobKind.THUMBNAILS: pipeline.make_variants,
    JobKind.TAGGING: pipeline.tag_images,
}


def _run(task: Task[[str], str], settings: Settings, kind: JobKind, image_id: str) -> str:
    """Run one turn of work; transient failures retry with exponential backoff, then the
    sweep. A turn spent on another image's job (the fair order) sends this image's message
    again, so its own job keeps a turn in the queue."""
    try:
        outcome = WORK[kind](context(settings), uuid.UUID(image_id), task.request.id)
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
        state = repository.state_of(session, uuid.UUID(image_id), kind)
    waiting = state is JobState.PENDING
    if waiting:
        request_id = getattr(task.request, "request_id", None)
        JobProducer(task.app).send(kind, image_id, request_id)
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
                if args:  # its turn was lost
                    _send_turn_again(self, settings, BY_TASK[self.name].kind, str(args[0]))

    return JobTask


def _limits(settings: Settings, job: JobType) -> dict[str, float]:
    return {
        "soft_time_limit": job.soft_time_limit(settings),
        "time_limit": job.hard_time_limit(settings),
    }


def register(app: Celery, settings: Settings) -> None:
    """Bind every task to `app` under its stable name (the API sends by name)."""
    base = _fail_when_killed(settings)
    # Time limits per kind (annotations apply them to the tasks defined below).
    app.conf.task_annotations = {job.task: _limits(settings, job) for job in JOBS.values()}

    # shared=False: a task bound to this app only (Celery shares tasks with every app made
    # later by default, and another app's settings would then win by chance).
    @app.task(name=PING_TASK, shared=False)
    def ping() -> str:
        """Round-trip check: proves a worker consumes and the result store answers."""
        return "pong"

    for job in JOBS.values():
        _register_job(app, settings, base, job)
    _register_delivery(app, settings)


def _register_delivery(app: Celery, settings: Settings) -> None:
    # Acked late and rejected on a lost worker, like the jobs; the row's lease and the sweep
    # bring back an attempt whose worker was killed outright. Routed to `WEBHOOKS_QUEUE`
    # (task_routes in workers.celery_app; JobProducer.send_delivery names it too).
    @app.task(
        name=DELIVER_TASK,
        bind=True,
        ignore_result=True,
        acks_late=True,
        reject_on_worker_lost=True,
        soft_time_limit=webhooks.attempt_limit(settings),
        time_limit=webhooks.attempt_limit(settings) + webhooks.KILL_GRACE_SECONDS,
        shared=False,
    )
    def deliver_webhook(self: Task[[str], str], delivery_id: str) -> str:
        """One attempt of one webhook delivery (queue `webhooks`)."""
        return webhooks.deliver(context(settings), JobProducer(self.app), uuid.UUID(delivery_id))


def _register_job(
    app: Celery, settings: Settings, base: type[Task[[str], str]], job: JobType
) -> None:
    kind = job.kind

    def run(self: Task[[str], str], image_id: str) -> str:
        return _run(self, settings, kind, image_id)

    run.__name__ = run.__qualname__ = job.task.rpartition(".")[2]
    run.__doc__ = f"The {kind} job (queue `{job.queue}`)."
    app.task(
        name=job.task, base=base, bind=True, ignore_result=True, max_retries=None, shared=False
    )(run)
