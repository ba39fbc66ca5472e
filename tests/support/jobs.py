"""Run one image's job in the test's own process, whatever the fair order across owners.

A worker's task runs whichever job its turn is for (`pipeline.claim_turn`); a test means a
particular image, so these claim that image's job and hand it to the same pipeline.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from media_api.jobs.contract import JobKind
from workers import pipeline, repository
from workers.context import WorkerContext
from workers.repository import Claimed


def _unless_done(
    session: Session, image_id: uuid.UUID, kind: JobKind, task_id: str | None, lease: float
) -> Claimed | None:
    """This image's job, even one running or failed; not a finished one."""
    return repository.claim(session, image_id, kind, task_id=task_id)


def _unless_leased(
    session: Session, image_id: uuid.UUID, kind: JobKind, task_id: str | None, lease: float
) -> Claimed | None:
    """This image's job, unless another batch holds it within its lease or it is done."""
    return repository.claim(session, image_id, kind, task_id=task_id, lease=lease)


def job_of(detail: dict[str, object], kind: JobKind) -> dict[str, object]:
    """The image's job of this kind, from its detail view."""
    jobs = detail["jobs"]
    assert isinstance(jobs, list)
    (job,) = [j for j in jobs if j["kind"] == kind]
    return dict(job)


def run_variants(ctx: WorkerContext, image_id: uuid.UUID) -> str:
    """This image's thumbnails job, now."""
    return pipeline.make_variants(ctx, image_id, None, claim=_unless_done)


def run_tagging(ctx: WorkerContext, image_id: uuid.UUID) -> str:
    """This image's tagging job, now, batched with other tagging jobs waiting."""
    return pipeline.tag_images(ctx, image_id, None, claim=_unless_leased)
