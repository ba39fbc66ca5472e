"""SQL for images and their jobs; every query is scoped to an owner."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from media_api.images.models import Image, ImageJob, JobKind


async def get(session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID) -> Image | None:
    """One image of this owner, with its jobs; another owner's id reads as absent."""
    stmt = (
        select(Image)
        .where(Image.id == image_id, Image.owner_id == owner_id)
        .options(selectinload(Image.jobs))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_sha256(session: AsyncSession, owner_id: uuid.UUID, sha256: bytes) -> Image | None:
    """The image this owner already uploaded with exactly these bytes."""
    stmt = (
        select(Image)
        .where(Image.owner_id == owner_id, Image.sha256 == sha256)
        .options(selectinload(Image.jobs))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_new(
    session: AsyncSession, values: dict[str, object], job_kinds: Iterable[JobKind]
) -> bool:
    """Insert the image and its pending jobs; False when the owner already has these bytes
    (a concurrent upload of the same file won the race), in which case nothing is written."""
    inserted = await session.execute(
        insert(Image)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Image.owner_id, Image.sha256])
        .returning(Image.id)
    )
    if inserted.scalar_one_or_none() is None:
        return False
    image_id = values["id"]
    await session.execute(
        insert(ImageJob), [{"image_id": image_id, "kind": kind} for kind in job_kinds]
    )
    return True


async def delete_image(session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID) -> bool:
    """Delete the row (jobs cascade); False when this owner has no such image."""
    result = await session.execute(
        delete(Image).where(Image.id == image_id, Image.owner_id == owner_id).returning(Image.id)
    )
    return result.scalar_one_or_none() is not None
