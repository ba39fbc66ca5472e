"""The workers' Celery app, built from Settings by the CLI (never at import)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from media_api.jobs.contract import DELIVER_TASK, JOBS, MAINTENANCE_QUEUE, QUEUES, WEBHOOKS_QUEUE
from media_api.jobs.producer import JobProducer
from media_api.settings import Settings


def create_celery(settings: Settings, *, sweep: bool = True) -> Celery:
    """A consuming app with at-least-once delivery: tasks are idempotent, so redelivery is safe."""
    app = Celery(
        "media-workers",
        broker=settings.require("broker_url"),
        backend=settings.celery_result_backend,
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        # Ack after the work is done and requeue when a worker dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One task in hand per process: long image jobs must not hide queued work.
        worker_prefetch_multiplier=1,
        # A pool process that grew past this (a huge decode) is replaced after its task.
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={
            **{job.task: {"queue": job.queue} for job in JOBS.values()},
            DELIVER_TASK: {"queue": WEBHOOKS_QUEUE},
        },
        task_default_queue=MAINTENANCE_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    from workers import tasks

    tasks.register(app, settings)
    _log_tasks_with_request_ids()
    if sweep:
        _run_sweeper_with_worker(app, settings)
    if settings.worker_metrics_port:
        from workers.metrics import export_metrics

        export_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
    return app


def _run_sweeper_with_worker(app: Celery, settings: Settings) -> None:
    """Start the sweeper thread in the worker's main process (an advisory lock keeps it to
    one active sweeper across all workers), and stop it on shutdown."""
    from celery.signals import worker_ready, worker_shutdown

    from workers.context import context
    from workers.sweep import Sweeper

    producer = JobProducer(app)
    sweeper = Sweeper(lambda: context(settings), producer, settings.sweep_interval_seconds)
    worker_ready.connect(lambda **_: sweeper.start(), weak=False)
    worker_shutdown.connect(lambda **_: sweeper.stop(), weak=False)


def _log_tasks_with_request_ids() -> None:
    """One log line per task, carrying the id of the request that caused it."""
    import logging
    import time

    from celery.signals import task_postrun, task_prerun

    from media_api import logs

    log = logging.getLogger("workers.task")
    started: dict[str, tuple[float, object]] = {}

    def before(task_id: str, task: Any, **_: Any) -> None:
        rid = getattr(task.request, "request_id", None)
        started[task_id] = (time.perf_counter(), logs.request_id.set(rid))

    def after(task_id: str, task: Any, args: Any, retval: Any, state: str, **_: Any) -> None:
        began, token = started.pop(task_id, (time.perf_counter(), None))
        log.info(
            "%s %s %s",
            task.name,
            state,
            retval,
            extra={
                "request_id": logs.request_id.get(),
                "task": task.name,
                "task_args": list(args or ()),
                "state": state,
                "result": str(retval)[:200],
                "duration_ms": round((time.perf_counter() - began) * 1000, 2),
            },
        )
        if token is not None:
            logs.request_id.reset(token)  # type: ignore[arg-type]

    task_prerun.connect(before, weak=False)
    task_postrun.connect(after, weak=False)
