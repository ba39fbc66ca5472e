"""Postgres over a real connection: rows round-trip, each test's transaction rolls back."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts.models import Owner
from media_api.images.models import Image, ImageStatus
from media_api.jobs.contract import JobKind
from media_api.jobs.models import ImageJob, JobState

EMAIL = "rollback-probe@example.test"


async def test_insert_and_read_an_owner(db: AsyncSession) -> None:
    db.add(Owner(email=EMAIL))
    await db.flush()
    found = (await db.execute(select(Owner).where(Owner.email == EMAIL))).scalar_one()
    assert isinstance(found.id, uuid.UUID)
    assert found.created_at is not None


async def test_previous_test_was_rolled_back(db: AsyncSession) -> None:
    count = await db.scalar(select(func.count()).select_from(Owner).where(Owner.email == EMAIL))
    assert count == 0


async def test_image_with_jobs_defaults(db: AsyncSession) -> None:
    owner = Owner(email="jobs@example.test")
    db.add(owner)
    await db.flush()
    image = Image(
        owner_id=owner.id,
        content_type="image/png",
        size_bytes=10,
        width=1,
        height=1,
        sha256=b"\x01" * 32,
        original_key="originals/x",
        jobs=[ImageJob(kind=JobKind.THUMBNAILS), ImageJob(kind=JobKind.TAGGING)],
    )
    db.add(image)
    await db.flush()
    await db.refresh(image, ["jobs"])
    assert image.status is ImageStatus.PROCESSING
    assert sorted(job.kind for job in image.jobs) == ["tagging", "thumbnails"]
    assert {job.state for job in image.jobs} == {JobState.PENDING}


async def test_same_bytes_twice_for_one_owner_is_refused(db: AsyncSession) -> None:
    owner = Owner(email="dupe@example.test")
    db.add(owner)
    await db.flush()
    for _ in range(2):
        db.add(
            Image(
                owner_id=owner.id,
                content_type="image/png",
                size_bytes=1,
                width=1,
                height=1,
                sha256=b"\x02" * 32,
                original_key="originals/y",
            )
        )
    with pytest.raises(IntegrityError):
        await db.flush()
