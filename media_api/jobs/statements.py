"""Job-state SQL, built once as Core statements: the async API and the sync workers execute them.

Each function returns a statement and runs nothing; `media_api.jobs.repository` (async) and
`workers.repository` (sync) execute them, and add what touches the images' own rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from media_api.accounts.models import Owner
from media_api.jobs.contract import JobKind
from media_api.jobs.models import ImageJob, JobState


def take_slot(owner_id: uuid.UUID, spacing: dt.timedelta) -> Update:
    """The owner's next slot in the fair claim order (returned): now, or `spacing` after its
    previous jobs' slot if that is later. Workers claim the earliest slot first, so a burst of
    one owner is spread out behind it while another owner's single upload goes ahead."""
    return (
        update(Owner)
        .where(Owner.id == owner_id)
        .values(job_clock=func.greatest(Owner.job_clock, func.now()) + spacing)
        .returning(Owner.job_clock - spacing)
    )


def add_pending(image_id: uuid.UUID, kinds: Iterable[JobKind], fair_at: dt.datetime) -> Insert:
    """The image's pending jobs, in the claim order at `fair_at`."""
    return insert(ImageJob).values(
        [{"image_id": image_id, "kind": kind, "fair_at": fair_at} for kind in kinds]
    )


def reset(image_ids: Collection[uuid.UUID], fair_at: dt.datetime | None) -> Update:
    """Every job of these images pending again from scratch (reprocess), in the claim order at
    `fair_at` (default now)."""
    return (
        update(ImageJob)
        .where(ImageJob.image_id.in_(image_ids))
        .values(
            state=JobState.PENDING,
            attempts=0,
            error_code=None,
            task_id=None,
            updated_at=func.now(),
            fair_at=fair_at if fair_at is not None else func.now(),
        )
    )


def the_job(image_id: uuid.UUID, kind: JobKind) -> ColumnElement[bool]:
    """This image's job of this kind (one row: the pair is unique)."""
    return and_(ImageJob.image_id == image_id, ImageJob.kind == kind)


def held_by(task_id: str) -> ColumnElement[bool]:
    """The jobs a task claimed (its id is recorded at the claim)."""
    return ImageJob.task_id == task_id


def of_images(kind: JobKind, image_ids: Collection[uuid.UUID]) -> ColumnElement[bool]:
    """These images' jobs of one kind (a tagging batch)."""
    return and_(ImageJob.kind == kind, ImageJob.image_id.in_(image_ids))


def lease_over(lease: float) -> ColumnElement[bool]:
    """Started more than `lease` seconds ago (by the database's clock: workers' may drift)."""
    return ImageJob.started_at < func.now() - dt.timedelta(seconds=lease)


def claimable(lease: float | None) -> ColumnElement[bool]:
    """Not done; with a `lease`, not running either unless it started longer ago than that."""
    if lease is None:
        return ImageJob.state != JobState.DONE
    return and_(
        ImageJob.state != JobState.DONE, or_(ImageJob.state != JobState.RUNNING, lease_over(lease))
    )


def due() -> ColumnElement[bool]:
    """Pending, and its fair slot has come (its owner is within its share)."""
    return and_(ImageJob.state == JobState.PENDING, ImageJob.fair_at <= func.now())


def stalled(lease: float) -> ColumnElement[bool]:
    """Running, but started more than `lease` seconds ago (its worker died)."""
    return and_(ImageJob.state == JobState.RUNNING, lease_over(lease))


def start(which: ColumnElement[bool], task_id: str | None) -> Update:
    """Claim: the matching job runs, one attempt more, held by `task_id` (returns image_id,
    attempts; no row when nothing matched)."""
    return (
        update(ImageJob)
        .where(which)
        .values(
            state=JobState.RUNNING,
            attempts=ImageJob.attempts + 1,
            task_id=task_id,
            started_at=func.now(),
            finished_at=None,
            updated_at=func.now(),
        )
        .returning(ImageJob.image_id, ImageJob.attempts)
    )


def pending_in_fair_order(
    kind: JobKind, limit: int, *, exclude: uuid.UUID | None = None
) -> Select[uuid.UUID]:
    """Images whose job of this kind waits, earliest fair slot first, skipping (and locking)
    rows another worker has locked."""
    stmt = select(ImageJob.image_id).where(
        ImageJob.kind == kind, ImageJob.state == JobState.PENDING
    )
    if exclude is not None:
        stmt = stmt.where(ImageJob.image_id != exclude)
    return stmt.order_by(ImageJob.fair_at).limit(limit).with_for_update(skip_locked=True)


def state_of(image_id: uuid.UUID, kind: JobKind) -> Select[JobState]:
    return select(ImageJob.state).where(the_job(image_id, kind))


def finish(image_id: uuid.UUID, kind: JobKind, state: JobState, code: str | None) -> Update:
    """Settle the job: done, or failed with `code`."""
    return (
        update(ImageJob)
        .where(the_job(image_id, kind))
        .values(state=state, error_code=code, finished_at=func.now(), updated_at=func.now())
    )


def fail_running(which: ColumnElement[bool], code: str) -> Update:
    """Fail the matching jobs that are still running (a cut batch, a killed task); jobs
    settled meanwhile stay as they are. Returns (image_id, kind) of each failed job."""
    return (
        update(ImageJob)
        .where(which, ImageJob.state == JobState.RUNNING)
        .values(state=JobState.FAILED, error_code=code, finished_at=func.now())
        .returning(ImageJob.image_id, ImageJob.kind)
    )


def retry_later(image_id: uuid.UUID, kind: JobKind, code: str) -> Update:
    """A transient failure: back to pending (the retry or the sweep runs it again)."""
    return (
        update(ImageJob)
        .where(the_job(image_id, kind))
        .values(state=JobState.PENDING, error_code=code, updated_at=func.now())
    )


def stale(
    pending_for: dt.timedelta, running_for: dt.timedelta, limit: int
) -> Select[uuid.UUID, uuid.UUID, JobKind, int]:
    """Jobs pending that long without a worker picking them up, and running that long (their
    worker died), oldest first, locked for the sweep."""
    return (
        select(ImageJob.id, ImageJob.image_id, ImageJob.kind, ImageJob.attempts)
        .where(
            or_(
                # The database's clock on both sides: workers' clocks may drift.
                and_(
                    ImageJob.state == JobState.PENDING,
                    ImageJob.updated_at < func.now() - pending_for,
                ),
                and_(
                    ImageJob.state == JobState.RUNNING,
                    ImageJob.updated_at < func.now() - running_for,
                ),
            )
        )
        .order_by(ImageJob.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def requeue(job_ids: Collection[uuid.UUID]) -> Update:
    """Pending again, touched so the next sweep waits its grace period again."""
    return (
        update(ImageJob)
        .where(ImageJob.id.in_(job_ids))
        .values(state=JobState.PENDING, updated_at=func.now())
    )


def lock_states(image_id: uuid.UUID) -> Select[JobState]:
    """The image's job states, locked until commit (concurrent reprocess calls queue here)."""
    return select(ImageJob.state).where(ImageJob.image_id == image_id).with_for_update()


def counts() -> Select[JobKind, JobState, int]:
    """(kind, state, count) over every owner."""
    return select(ImageJob.kind, ImageJob.state, func.count()).group_by(
        ImageJob.kind, ImageJob.state
    )
