"""Gallery rules: owner-scoped CRUD. Galleries know nothing of images: putting an image in a
gallery, and listing a gallery's images, are image rules (`images.service`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.errors import NotFound
from media_api.galleries import repository
from media_api.galleries.models import Gallery
from media_api.pagination import Keyset

SCOPE = "galleries"


async def create(
    session: AsyncSession, owner_id: uuid.UUID, name: str, description: str | None
) -> Gallery:
    """A new, empty gallery."""
    return await repository.add(session, owner_id, name.strip(), description)


async def get(session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID) -> Gallery:
    """One of the owner's galleries, or 404."""
    gallery = await repository.get(session, owner_id, gallery_id)
    if gallery is None:
        raise NotFound("gallery not found")
    return gallery


async def page(
    session: AsyncSession, owner_id: uuid.UUID, cursor: str | None, limit: int, secret: str
) -> tuple[list[Gallery], str | None]:
    """One page and the cursor of the next (None on the last page)."""
    keyset = Keyset(secret, SCOPE, owner_id)
    rows = await repository.page(session, owner_id, keyset.after(cursor), limit + 1)
    return keyset.cut(rows, limit)


async def count(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """Total galleries of the owner."""
    return await repository.count(session, owner_id)


async def update(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID, changes: dict[str, Any]
) -> Gallery:
    """Rename or re-describe; an empty change set just returns the gallery."""
    if "name" in changes and changes["name"] is not None:
        changes["name"] = changes["name"].strip()
    if not changes:
        return await get(session, owner_id, gallery_id)
    gallery = await repository.change(session, owner_id, gallery_id, changes)
    if gallery is None:
        raise NotFound("gallery not found")
    return gallery


async def delete(session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID) -> None:
    """Delete the gallery; its images stay."""
    if not await repository.remove(session, owner_id, gallery_id):
        raise NotFound("gallery not found")
