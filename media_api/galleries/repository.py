"""SQL for galleries; every query is scoped to an owner (membership: `images.repository`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.galleries.models import Gallery
from media_api.pagination import Position


async def add(
    session: AsyncSession, owner_id: uuid.UUID, name: str, description: str | None
) -> Gallery:
    """Insert and flush, so the id and timestamps are usable at once."""
    gallery = Gallery(owner_id=owner_id, name=name, description=description)
    session.add(gallery)
    await session.flush()
    await session.refresh(gallery)
    return gallery


async def get(session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID) -> Gallery | None:
    """One of the owner's galleries; another owner's id reads as absent."""
    stmt = select(Gallery).where(Gallery.id == gallery_id, Gallery.owner_id == owner_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def page(
    session: AsyncSession, owner_id: uuid.UUID, after: Position | None, limit: int
) -> list[Gallery]:
    """Newest first, keyset on (created_at, id): deep pages cost what the first one does."""
    stmt = select(Gallery).where(Gallery.owner_id == owner_id)
    if after is not None:
        stmt = stmt.where(tuple_(Gallery.created_at, Gallery.id) < (after.at, after.id))
    stmt = stmt.order_by(Gallery.created_at.desc(), Gallery.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def count(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """How many galleries the owner has."""
    total = await session.scalar(
        select(func.count()).select_from(Gallery).where(Gallery.owner_id == owner_id)
    )
    return int(total or 0)


async def change(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID, values: dict[str, Any]
) -> Gallery | None:
    """Apply a partial update; None when the owner has no such gallery."""
    result = await session.execute(
        update(Gallery)
        .where(Gallery.id == gallery_id, Gallery.owner_id == owner_id)
        .values(**values, updated_at=func.now())
        .returning(Gallery)
    )
    return result.scalar_one_or_none()


async def remove(session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID) -> bool:
    """Delete the gallery (membership rows cascade, images stay)."""
    result = await session.execute(
        delete(Gallery)
        .where(Gallery.id == gallery_id, Gallery.owner_id == owner_id)
        .returning(Gallery.id)
    )
    return result.scalar_one_or_none() is not None
