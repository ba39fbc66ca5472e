"""Response shapes of the images API."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, Field

from media_api.images.models import Image, ImageJob, ImageStatus, JobKind, JobState


class JobOut(BaseModel):
    """State of one kind of processing."""

    kind: JobKind
    state: JobState
    attempts: int
    error_code: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, job: ImageJob) -> JobOut:
        return cls(
            kind=job.kind,
            state=job.state,
            attempts=job.attempts,
            error_code=job.error_code,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class ImageOut(BaseModel):
    """An image resource as clients see it."""

    id: uuid.UUID
    status: ImageStatus
    error_code: str | None = None
    title: str | None
    filename: str | None = Field(description="The client's file name, informational only.")
    content_type: str = Field(description="Decided from the bytes, never from the client.")
    size: int = Field(description="Bytes of the original.")
    width: int
    height: int
    frames: int
    sha256: str = Field(description="Hex SHA-256 of the original bytes.")
    created_at: dt.datetime
    jobs: list[JobOut]

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls(
            id=image.id,
            status=image.status,
            error_code=image.error_code,
            title=image.title,
            filename=image.original_filename,
            content_type=image.content_type,
            size=image.size_bytes,
            width=image.width,
            height=image.height,
            frames=image.frames,
            sha256=image.sha256.hex(),
            created_at=image.created_at,
            jobs=sorted((JobOut.of(job) for job in image.jobs), key=lambda j: j.kind),
        )
