"""Re-dispatch jobs that were never delivered or whose worker died; expire abandoned uploads.

An upload accepted while the broker was down leaves its job `pending` with no message; a
worker killed mid-task leaves it `running` (and, on Redis, its unacked message invisible for
an hour). Both are found here by age and published again; tasks are idempotent, so an
occasional duplicate costs work, never correctness. The same thread runs the upload sweep
(`workers.uploads`) and the webhook deliveries' (`workers.webhooks`) under the same advisory
lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable

from media_api.jobs.contract import JobKind
from media_api.jobs.producer import JobProducer
from workers import repository
from workers.context import WorkerContext
from workers.uploads import sweep_uploads
from workers.webhooks import sweep_deliveries

log = logging.getLogger(__name__)

BATCH = 500


def sweep(ctx: WorkerContext, producer: JobProducer) -> int:
    """One pass; returns how many jobs were published again."""
    s = ctx.settings
    with ctx.sessions.begin() as session:
        stale = repository.take_stale(
            session,
            pending_for=dt.timedelta(seconds=s.job_pending_grace_seconds),
            running_for=dt.timedelta(seconds=s.job_running_timeout_seconds),
            limit=BATCH,
        )
        if not stale:
            return 0
        retry: list[tuple[uuid.UUID, JobKind]] = []
        for image_id, kind, attempts in stale:
            if attempts >= s.job_max_attempts:
                repository.job_failed(session, image_id, kind, "too-many-attempts")
            else:
                retry.append((image_id, kind))
    for image_id, kind in retry:
        producer.send(kind, image_id)
    if stale:
        log.info("sweep: re-dispatched %d, failed %d", len(retry), len(stale) - len(retry))
    return len(retry)


class Sweeper(threading.Thread):
    """Runs `sweep`, `sweep_uploads` and `sweep_deliveries` every interval in the worker's
    main process until stopped."""

    def __init__(
        self, ctx_factory: Callable[[], WorkerContext], producer: JobProducer, every: float
    ) -> None:
        super().__init__(name="media-sweeper", daemon=True)
        self.ctx_factory = ctx_factory
        self.producer = producer
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            # Each on its own: a broker outage must not hold up upload expiry, nor S3 the jobs.
            self._guarded(lambda: sweep(self.ctx_factory(), self.producer))
            self._guarded(lambda: sweep_uploads(self.ctx_factory()))
            self._guarded(lambda: sweep_deliveries(self.ctx_factory(), self.producer))

    def _guarded(self, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            # Database, broker or S3 down: try again next interval.
            log.warning("sweep failed; retrying in %.0fs", self.every, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
