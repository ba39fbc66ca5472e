"""Job rows: one per image and kind of processing, with its state and place in the fair order."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk, text_enum
from media_api.jobs.contract import JobKind


class JobState(enum.StrEnum):
    """Lifecycle of one job; the sweep re-dispatches rows stuck in pending or running."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImageJob(UUIDPk, Timestamped, Base):
    """The state of one kind of processing for one image, and its place in the claim order
    (`Image.jobs` maps them; the statements in `statements.py` change them)."""

    __tablename__ = "image_jobs"
    __table_args__ = (
        UniqueConstraint("image_id", "kind"),
        # The sweep looks for stale pending/running jobs across all owners.
        Index("ix_image_jobs_state_updated", "state", "updated_at"),
        # Workers claim the pending job with the earliest fair slot (see statements.py).
        Index(
            "ix_image_jobs_pending_fair",
            "kind",
            "fair_at",
            postgresql_where=text("state = 'pending'"),
        ),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    # By table name: jobs never import images (images -> jobs, one direction).
    image_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    kind: Mapped[JobKind] = mapped_column(text_enum(JobKind, "job_kind"))
    state: Mapped[JobState] = mapped_column(
        text_enum(JobState, "job_state"), default=JobState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # Claim order: the owner's job clock when queued, so bursts interleave with other owners.
    fair_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The Celery task running it (a task killed at its hard limit fails the jobs it held).
    task_id: Mapped[str | None] = mapped_column(String(64), index=True)
