"""The unit of work: what a request's transaction does outside the database.

Tasks are published only after the commit (a worker must never see an id whose row is not
visible), and compensations (deleting an object already written to S3) run if the transaction
rolls back, so a failed request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from media_api.cleanup import run_to_the_end
from media_api.jobs.contract import JOBS, JobKind
from media_api.jobs.producer import JobProducer

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[object]]


@dataclass
class UnitOfWork:
    """Collected during one request; `get_session` settles them once the outcome is known."""

    producer: JobProducer
    request_id: str | None = None
    sends: list[tuple[JobKind, uuid.UUID]] = field(default_factory=list)
    deliveries: list[uuid.UUID] = field(default_factory=list)
    on_commit: list[Action] = field(default_factory=list)
    on_rollback: list[Action] = field(default_factory=list)

    def send_jobs(self, image_id: uuid.UUID) -> None:
        """Publish every job of the image once the transaction has committed."""
        self.sends.extend((kind, image_id) for kind in JOBS)

    def send_deliveries(self, delivery_ids: list[uuid.UUID]) -> None:
        """Publish these webhook deliveries once the transaction has committed."""
        self.deliveries.extend(delivery_ids)

    def after_commit(self, action: Action) -> None:
        """Run `action` once the transaction has committed (e.g. delete objects of a row)."""
        self.on_commit.append(action)

    def undo(self, action: Action) -> None:
        """Run `action` if the transaction rolls back (e.g. delete an object just written)."""
        self.on_rollback.append(action)

    def publish(self) -> None:
        """Send queued tasks (blocking: call from a thread). A broker outage is logged, not
        raised: the job rows stay pending and the workers' sweep dispatches them later."""
        sends, self.sends = self.sends, []
        for kind, image_id in sends:
            try:
                self.producer.send(kind, image_id, self.request_id)
            except Exception:
                log.warning(
                    "could not publish the %s job of %s; the sweep will retry", kind, image_id
                )
        deliveries, self.deliveries = self.deliveries, []
        for delivery_id in deliveries:
            try:
                self.producer.send_delivery(delivery_id)
            except Exception:
                log.warning("could not publish delivery %s; the sweep will retry", delivery_id)

    async def committed(self) -> None:
        """The transaction is durable: publish, then run the post-commit actions."""
        self.on_rollback.clear()
        if self.sends or self.deliveries:
            await asyncio.to_thread(self.publish)
        await _run_all(self.on_commit, "post-commit action")

    async def rolled_back(self) -> None:
        """The transaction is gone: drop the sends and undo what already happened outside it."""
        self.sends.clear()
        self.deliveries.clear()
        self.on_commit.clear()
        await _run_all(self.on_rollback, "compensation")


async def _run_all(actions: list[Action], what: str) -> None:
    pending, actions[:] = list(actions), []

    async def each() -> None:
        for action in reversed(pending):
            try:
                await action()
            except Exception:
                log.exception("%s failed", what)

    # A cancelled request must still clean up after itself, every action of it, and not end
    # (nor let the app's shutdown close the clients) before it has.
    await run_to_the_end(each())
