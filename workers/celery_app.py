"""The workers' Celery app, built from Settings by the CLI (never at import)."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from media_api.settings import Settings

QUEUES = ("thumbnails", "tagging", "maintenance")


def create_celery(settings: Settings) -> Celery:
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
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="maintenance",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.media_settings = settings
    from workers import tasks

    tasks.register(app)
    return app
