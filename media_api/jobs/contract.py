"""The job contract: each kind's task name, queue and time limits, declared once.

The producer, the sweep, the CLI's default queues and the workers' Celery app (task names,
routes, time-limit annotations) all read it; the API sends by name and never imports `workers`.
No SQL here: the CLI imports it at start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from media_api.settings import Settings


class JobKind(enum.StrEnum):
    """Each kind runs on its own queue, so a slow model never holds thumbnails back."""

    THUMBNAILS = "thumbnails"
    TAGGING = "tagging"


@dataclass(frozen=True)
class JobType:
    """What a worker must know about one kind of job, and what a sender needs to reach it."""

    kind: JobKind
    task: str  # the Celery task name (stable: messages in flight carry it)
    queue: str
    fails_image: bool  # a failed job fails the image too (no variants: nothing to show)

    def soft_time_limit(self, settings: Settings) -> float:
        """Seconds before the task is interrupted and its job failed (`processing-timeout`)."""
        match self.kind:
            case JobKind.THUMBNAILS:
                return settings.thumbnails_time_limit_seconds
            case JobKind.TAGGING:
                return settings.tagging_time_limit_seconds

    def hard_time_limit(self, settings: Settings) -> float:
        """Seconds after which the task is killed: the soft limit plus the grace."""
        return self.soft_time_limit(settings) + settings.task_kill_grace_seconds


THUMBNAILS = JobType(JobKind.THUMBNAILS, "media.make_variants", "thumbnails", fails_image=True)
TAGGING = JobType(JobKind.TAGGING, "media.tag_image", "tagging", fails_image=False)
# Every kind, in the order an upload's jobs are sent.
JOBS: dict[JobKind, JobType] = {job.kind: job for job in (THUMBNAILS, TAGGING)}
BY_TASK: dict[str, JobType] = {job.task: job for job in JOBS.values()}

PING_TASK = "media.ping"
MAINTENANCE_QUEUE = "maintenance"  # pings and anything that is no image job
# One webhook delivery (an event to one endpoint), on a queue of its own: a slow receiver
# never holds image jobs back.
DELIVER_TASK = "media.deliver_webhook"
WEBHOOKS_QUEUE = "webhooks"
# Every queue the workers consume by default (they declare these; /metrics reports depths).
QUEUES: tuple[str, ...] = (
    *dict.fromkeys(job.queue for job in JOBS.values()),
    WEBHOOKS_QUEUE,
    MAINTENANCE_QUEUE,
)
