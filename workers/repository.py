"""The workers' SQL (sync, psycopg): job state transitions and the sweep's queries."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

import media_api.models  # noqa: F401 - every table, so foreign keys resolve in this process
from media_api.images.models import Image, ImageJob, ImageStatus, ImageTag, JobKind, JobState


@dataclass(frozen=True)
class Claimed:
    """An image whose job this worker now runs."""

    image_id: uuid.UUID
    owner_id: uuid.UUID
    original_key: str
    attempts: int
    created_at: dt.datetime


def claim(
    session: Session,
    image_id: uuid.UUID,
    kind: JobKind,
    *,
    task_id: str | None = None,
    lease: float | None = None,
) -> Claimed | None:
    """Mark this image's job running; None when it is done already or the image is gone (a
    duplicate delivery or a deleted image: nothing to do), or, with a `lease` in seconds,
    while another task started it less than that long ago."""
    claimable = ImageJob.state != JobState.DONE
    if lease is not None:
        lease_over = ImageJob.started_at < func.now() - dt.timedelta(seconds=lease)
        claimable = and_(claimable, or_(ImageJob.state != JobState.RUNNING, lease_over))
    return _start(
        session, and_(ImageJob.image_id == image_id, ImageJob.kind == kind, claimable), task_id
    )


def claim_if_due(
    session: Session, image_id: uuid.UUID, kind: JobKind, *, task_id: str | None = None
) -> Claimed | None:
    """This image's job if it is pending and its fair slot has come (its owner is within its
    share); None otherwise."""
    due = and_(ImageJob.state == JobState.PENDING, ImageJob.fair_at <= func.now())
    return _start(session, and_(ImageJob.image_id == image_id, ImageJob.kind == kind, due), task_id)


def claim_stalled(
    session: Session, image_id: uuid.UUID, kind: JobKind, *, task_id: str | None, lease: float
) -> Claimed | None:
    """This image's job if it is running but was started more than `lease` seconds ago (its
    worker died); failed and finished jobs stay as they are."""
    stalled = and_(
        ImageJob.state == JobState.RUNNING,
        ImageJob.started_at < func.now() - dt.timedelta(seconds=lease),
    )
    return _start(
        session, and_(ImageJob.image_id == image_id, ImageJob.kind == kind, stalled), task_id
    )


def claim_next(session: Session, kind: JobKind, *, task_id: str | None = None) -> Claimed | None:
    """The pending job of this kind with the earliest fair slot, whichever image it is for.
    None when nothing of the kind waits."""
    job_id = session.scalar(
        select(ImageJob.id)
        .where(ImageJob.kind == kind, ImageJob.state == JobState.PENDING)
        .order_by(ImageJob.fair_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return None if job_id is None else _start(session, ImageJob.id == job_id, task_id)


def _start(session: Session, which: ColumnElement[bool], task_id: str | None) -> Claimed | None:
    started = session.execute(
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
    ).one_or_none()
    if started is None:
        return None
    row = session.execute(
        select(Image.owner_id, Image.original_key, Image.created_at).where(
            Image.id == started.image_id
        )
    ).one_or_none()
    if row is None:
        return None
    return Claimed(
        started.image_id, row.owner_id, row.original_key, started.attempts, row.created_at
    )


def fail_jobs_of_task(session: Session, task_id: str, code: str) -> int:
    """Fail the jobs a task still held when it was killed; returns how many."""
    rows = session.execute(
        update(ImageJob)
        .where(ImageJob.task_id == task_id, ImageJob.state == JobState.RUNNING)
        .values(state=JobState.FAILED, error_code=code, finished_at=func.now())
        .returning(ImageJob.image_id, ImageJob.kind)
    ).all()
    thumbnails = [row.image_id for row in rows if row.kind is JobKind.THUMBNAILS]
    if thumbnails:
        session.execute(
            update(Image)
            .where(Image.id.in_(thumbnails))
            .values(status=ImageStatus.FAILED, error_code=code)
        )
    return len(rows)


def is_pending(session: Session, image_id: uuid.UUID, kind: JobKind) -> bool:
    state = session.scalar(
        select(ImageJob.state).where(ImageJob.image_id == image_id, ImageJob.kind == kind)
    )
    return state == JobState.PENDING


def is_running(session: Session, image_id: uuid.UUID, kind: JobKind) -> bool:
    state = session.scalar(
        select(ImageJob.state).where(ImageJob.image_id == image_id, ImageJob.kind == kind)
    )
    return state == JobState.RUNNING


def pending_ids(
    session: Session, kind: JobKind, *, exclude: uuid.UUID, limit: int
) -> list[uuid.UUID]:
    """Other jobs of this kind waiting right now, in the fair order, skipping rows another worker
    has locked: a worker takes them into the same model call (their own messages then find
    the job done and do nothing)."""
    if limit <= 0:
        return []
    return list(
        session.scalars(
            select(ImageJob.image_id)
            .where(ImageJob.kind == kind, ImageJob.state == JobState.PENDING)
            .where(ImageJob.image_id != exclude)
            .order_by(ImageJob.fair_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def tags_ready(
    session: Session,
    claimed: Claimed,
    tags: list[dict[str, Any]],
    *,
    nsfw: float,
    flagged: bool,
) -> None:
    """Replace the image's tags and moderation result, and settle its tagging job."""
    session.execute(delete(ImageTag).where(ImageTag.image_id == claimed.image_id))
    if tags:
        session.execute(
            insert(ImageTag),
            [
                {
                    **tag,
                    "image_id": claimed.image_id,
                    "owner_id": claimed.owner_id,
                    "image_created_at": claimed.created_at,
                }
                for tag in tags
            ],
        )
    session.execute(
        update(Image).where(Image.id == claimed.image_id).values(nsfw=nsfw, flagged=flagged)
    )
    _finish_job(session, claimed.image_id, JobKind.TAGGING, JobState.DONE, None)


def _finish_job(
    session: Session, image_id: uuid.UUID, kind: JobKind, state: JobState, code: str | None
) -> None:
    session.execute(
        update(ImageJob)
        .where(ImageJob.image_id == image_id, ImageJob.kind == kind)
        .values(state=state, error_code=code, finished_at=func.now(), updated_at=func.now())
    )


def variants_ready(
    session: Session, image_id: uuid.UUID, variants: list[dict[str, Any]], placeholder: str
) -> bool:
    """Record the variants and flip the image to ready, with its job, in one transaction;
    False when the image was deleted meanwhile."""
    updated = session.scalar(
        update(Image)
        .where(Image.id == image_id)
        .values(
            variants=variants, placeholder=placeholder, status=ImageStatus.READY, error_code=None
        )
        .returning(Image.id)
    )
    if updated is None:
        return False
    _finish_job(session, image_id, JobKind.THUMBNAILS, JobState.DONE, None)
    return True


def job_failed(
    session: Session, image_id: uuid.UUID, kind: JobKind, code: str, *, fails_image: bool
) -> None:
    """A permanent failure: the job is failed, and the image too when it cannot be shown."""
    _finish_job(session, image_id, kind, JobState.FAILED, code)
    if fails_image:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(status=ImageStatus.FAILED, error_code=code)
        )


def job_failed_unless_done(session: Session, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    """Fail a job of a batch that was cut short, unless it was settled before the cut."""
    failed = session.scalar(
        update(ImageJob)
        .where(ImageJob.image_id == image_id, ImageJob.kind == kind)
        .where(ImageJob.state == JobState.RUNNING)
        .values(state=JobState.FAILED, error_code=code, finished_at=func.now())
        .returning(ImageJob.id)
    )
    if failed is not None and kind is JobKind.THUMBNAILS:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(status=ImageStatus.FAILED, error_code=code)
        )


def job_retry_later(session: Session, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    """A transient failure: back to pending (the retry or the sweep runs it again)."""
    session.execute(
        update(ImageJob)
        .where(ImageJob.image_id == image_id, ImageJob.kind == kind)
        .values(state=JobState.PENDING, error_code=code, updated_at=func.now())
    )


SWEEP_LOCK = 727_001  # pg advisory lock id: one sweeper at a time across all workers


def take_stale(
    session: Session,
    *,
    pending_for: dt.timedelta,
    running_for: dt.timedelta,
    limit: int,
) -> list[tuple[uuid.UUID, JobKind, int]] | None:
    """Claim stale jobs for re-dispatch: pending ones never picked up, running ones whose
    worker died. Touches them so the next sweep waits again; None when another worker is
    sweeping right now."""
    if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": SWEEP_LOCK}):
        return None
    rows = session.execute(
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
    ).all()
    if rows:
        session.execute(
            update(ImageJob)
            .where(ImageJob.id.in_([r.id for r in rows]))
            .values(state=JobState.PENDING, updated_at=func.now())
        )
    return [(r.image_id, r.kind, r.attempts) for r in rows]
