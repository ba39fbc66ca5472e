"""The workers' SQL (sync, psycopg): the shared job statements executed, plus results and images."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, select, text, true, update
from sqlalchemy.orm import Session

import media_api.models  # noqa: F401 - every table, so foreign keys resolve in this process
from media_api.events.models import EventType
from media_api.images import statements as duplicates
from media_api.images.models import Image, ImageStatus, ImageTag
from media_api.imaging.similarity import Fingerprint
from media_api.jobs import statements as jobs
from media_api.jobs.contract import JOBS, JobKind
from media_api.jobs.models import JobState
from workers import events


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
    return _start(session, image_id, kind, jobs.claimable(lease), task_id)


def claim_if_due(
    session: Session, image_id: uuid.UUID, kind: JobKind, *, task_id: str | None = None
) -> Claimed | None:
    """This image's job if it is pending and its fair slot has come (its owner is within its
    share); None otherwise."""
    return _start(session, image_id, kind, jobs.due(), task_id)


def claim_stalled(
    session: Session, image_id: uuid.UUID, kind: JobKind, *, task_id: str | None, lease: float
) -> Claimed | None:
    """This image's job if it is running but was started more than `lease` seconds ago (its
    worker died); failed and finished jobs stay as they are."""
    return _start(session, image_id, kind, jobs.stalled(lease), task_id)


def claim_next(session: Session, kind: JobKind, *, task_id: str | None = None) -> Claimed | None:
    """The pending job of this kind with the earliest fair slot, whichever image it is for.
    None when nothing of the kind waits."""
    image_id = session.scalar(jobs.pending_in_fair_order(kind, 1))
    return None if image_id is None else _start(session, image_id, kind, true(), task_id)


def _start(
    session: Session,
    image_id: uuid.UUID,
    kind: JobKind,
    when: ColumnElement[bool],
    task_id: str | None,
) -> Claimed | None:
    which = and_(jobs.the_job(image_id, kind), when)
    started = session.execute(jobs.start(which, task_id)).one_or_none()
    if started is None:
        return None
    row = session.execute(
        select(Image.owner_id, Image.original_key, Image.created_at).where(Image.id == image_id)
    ).one_or_none()
    if row is None:
        return None
    return Claimed(image_id, row.owner_id, row.original_key, started.attempts, row.created_at)


def state_of(session: Session, image_id: uuid.UUID, kind: JobKind) -> JobState | None:
    """The job's state; None when the image is gone."""
    return session.scalar(jobs.state_of(image_id, kind))


def pending_ids(
    session: Session, kind: JobKind, *, exclude: uuid.UUID, limit: int
) -> list[uuid.UUID]:
    """Other jobs of this kind waiting right now, in the fair order, skipping rows another
    worker has locked: a worker takes them into the same model call (their own messages then
    find the job done and do nothing)."""
    if limit <= 0:
        return []
    return list(session.scalars(jobs.pending_in_fair_order(kind, limit, exclude=exclude)))


def tags_ready(
    session: Session,
    claimed: Claimed,
    tags: list[dict[str, Any]],
    *,
    nsfw: float,
    flagged: bool,
) -> dict[str, Any]:
    """Replace the image's tags and moderation result, and settle its tagging job. Returns
    the `image.tagged` event's data, for `announce_tagged` once every image of the batch is
    written."""
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
    session.execute(jobs.finish(claimed.image_id, JobKind.TAGGING, JobState.DONE, None))
    return {
        "image_id": str(claimed.image_id),
        "tags": [{"name": tag["name"], "confidence": tag["confidence"]} for tag in tags],
        "nsfw": nsfw,
        "flagged": flagged,
    }


def announce_tagged(session: Session, tagged: list[tuple[Claimed, dict[str, Any]]]) -> None:
    """The batch's `image.tagged` events, owner by owner, after its image rows: an event
    locks its owner's row until commit, and taken last (as every writer takes it) it never
    waits behind an image row another transaction holds (no deadlock)."""
    for claimed, data in sorted(tagged, key=lambda pair: pair[0].owner_id):
        events.announce(session, claimed.owner_id, EventType.IMAGE_TAGGED, data)


def variants_ready(
    session: Session,
    claimed: Claimed,
    variants: list[dict[str, Any]],
    placeholder: str,
    photo: PhotoRecord,
) -> bool:
    """Record the variants and the photo's facts and hash, flip the image to ready, link its
    near-duplicates and announce `image.ready`, in one transaction; False when the image was
    deleted meanwhile. The owner's linking lock comes first, as in a delete (images.repository):
    both then take image rows, pairs and the owner's row in the same order."""
    image_id, owner_id = claimed.image_id, claimed.owner_id
    session.execute(duplicates.lock_owner(owner_id))
    updated = session.scalar(
        update(Image)
        .where(Image.id == image_id)
        .values(
            variants=variants,
            placeholder=placeholder,
            status=ImageStatus.READY,
            error_code=None,
            taken_at=photo.taken_at,
            photo=photo.facts,
            phash=photo.fingerprint.whole,
            phash_centre=photo.fingerprint.centre,
        )
        .returning(Image.id)
    )
    if updated is None:
        return False
    session.execute(jobs.finish(image_id, JobKind.THUMBNAILS, JobState.DONE, None))
    _link_duplicates(session, owner_id, image_id, photo)
    data = {
        "image_id": str(image_id),
        "status": ImageStatus.READY.value,
        "variants": [variant["name"] for variant in variants],
    }
    events.announce(session, owner_id, EventType.IMAGE_READY, data)
    return True


@dataclass(frozen=True)
class PhotoRecord:
    """What the thumbnails job read of the photo: capture facts and perceptual hashes."""

    taken_at: dt.datetime | None
    facts: dict[str, Any]
    fingerprint: Fingerprint
    duplicate_distance: int


def _link_duplicates(
    session: Session, owner_id: uuid.UUID, image_id: uuid.UUID, photo: PhotoRecord
) -> None:
    """Replace the image's near-duplicate pairs by those of its current hash (under the
    owner's linking lock, taken by the caller)."""
    session.execute(duplicates.unlink(image_id))
    link = duplicates.link(owner_id, image_id, photo.fingerprint, photo.duplicate_distance)
    found = [(other, distance) for other, distance in session.execute(link).all()]
    if found:
        session.execute(duplicates.link_back(image_id, found))


def job_failed(session: Session, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    """A permanent failure: the job is failed, and the image too when its kind says so."""
    session.execute(jobs.finish(image_id, kind, JobState.FAILED, code))
    if JOBS[kind].fails_image:
        _fail_images(session, [image_id], code)


def fail_jobs_of_task(session: Session, task_id: str, code: str) -> int:
    """Fail the jobs a task still held when it was killed or cut short; returns how many."""
    return _fail_running(session, jobs.held_by(task_id), code)


def fail_running_jobs(
    session: Session, kind: JobKind, image_ids: Collection[uuid.UUID], code: str
) -> int:
    """Fail these jobs of a batch that was cut short, unless they were settled before the cut."""
    return _fail_running(session, jobs.of_images(kind, image_ids), code)


def _fail_running(session: Session, which: ColumnElement[bool], code: str) -> int:
    rows = session.execute(jobs.fail_running(which, code)).all()
    failing = [row.image_id for row in rows if JOBS[row.kind].fails_image]
    if failing:
        _fail_images(session, failing, code)
    return len(rows)


def _fail_images(session: Session, image_ids: list[uuid.UUID], code: str) -> None:
    """Fail the images, each with its `image.failed`."""
    failed = session.execute(
        update(Image)
        .where(Image.id.in_(image_ids))
        .values(status=ImageStatus.FAILED, error_code=code)
        .returning(Image.id, Image.owner_id)
    ).all()
    # Each announcement locks its owner's row until commit: always in the same order.
    for image_id, owner_id in sorted(failed, key=lambda row: row.owner_id):
        data = {"image_id": str(image_id), "status": ImageStatus.FAILED.value, "error_code": code}
        events.announce(session, owner_id, EventType.IMAGE_FAILED, data)


def job_retry_later(session: Session, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    """A transient failure: back to pending (the retry or the sweep runs it again)."""
    session.execute(jobs.retry_later(image_id, kind, code))


SWEEP_LOCK = 727_001  # pg advisory lock id: one sweeper at a time across all workers


def sweep_lock(session: Session) -> bool:
    """Take the sweep lock for this transaction; False when another worker is sweeping."""
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": SWEEP_LOCK}))


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
    if not sweep_lock(session):
        return None
    rows = session.execute(jobs.stale(pending_for, running_for, limit)).all()
    if rows:
        session.execute(jobs.requeue([r.id for r in rows]))
    return [(r.image_id, r.kind, r.attempts) for r in rows]
