"""HTTP routes for galleries and their images."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from media_api.api import images as images_api
from media_api.api.deps import CurrentOwner, Cursor, Limit, SessionDep, SettingsDep, SignerDep, Tag
from media_api.errors import NotFound, problem_responses
from media_api.galleries import service
from media_api.galleries.schemas import GalleryIn, GalleryOut, GalleryPage, GalleryPatch
from media_api.images import service as images
from media_api.images.models import ImageStatus
from media_api.images.repository import ImageFilter, SortBy
from media_api.images.schemas import ImagePage
from media_api.pagination import DEFAULT_LIMIT, InvalidCursor

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])

NOT_FOUND = problem_responses(NotFound)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_gallery(body: GalleryIn, owner: CurrentOwner, session: SessionDep) -> GalleryOut:
    """A new, empty gallery."""
    return GalleryOut.model_validate(
        await service.create(session, owner, body.name, body.description)
    )


@router.get("", responses=problem_responses(InvalidCursor))
async def list_galleries(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    include_total: bool = False,
) -> GalleryPage:
    """The caller's galleries, newest first, a keyset page at a time."""
    rows, next_cursor = await service.page(session, owner, cursor, limit, settings.jwt_secret)
    total = await service.count(session, owner) if include_total else None
    return GalleryPage(
        items=[GalleryOut.model_validate(g) for g in rows], next_cursor=next_cursor, total=total
    )


@router.get("/{gallery_id}", responses=NOT_FOUND)
async def get_gallery(
    gallery_id: uuid.UUID, owner: CurrentOwner, session: SessionDep
) -> GalleryOut:
    """One gallery."""
    return GalleryOut.model_validate(await service.get(session, owner, gallery_id))


@router.patch("/{gallery_id}", responses=NOT_FOUND)
async def update_gallery(
    gallery_id: uuid.UUID, body: GalleryPatch, owner: CurrentOwner, session: SessionDep
) -> GalleryOut:
    """Rename or re-describe."""
    changes = body.model_dump(exclude_unset=True)
    return GalleryOut.model_validate(await service.update(session, owner, gallery_id, changes))


@router.delete("/{gallery_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_gallery(gallery_id: uuid.UUID, owner: CurrentOwner, session: SessionDep) -> None:
    """Delete the gallery; its images stay."""
    await service.delete(session, owner, gallery_id)


@router.get("/{gallery_id}/images", responses=problem_responses(InvalidCursor, NotFound))
async def list_gallery_images(
    gallery_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    signer: SignerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    status_: Annotated[ImageStatus | None, Query(alias="status")] = None,
    tag: Tag = None,
    sort: images_api.Sort = SortBy.CREATED_AT,
    include_total: bool = False,
) -> ImagePage:
    """The gallery's images, with the same pagination and filters as /v1/images."""
    filters = ImageFilter(status=status_, tag=tag, gallery_id=gallery_id)
    return await images_api.image_page(
        session, owner, filters, settings, signer, cursor, limit, include_total, sort
    )


@router.put(
    "/{gallery_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
async def add_image(
    gallery_id: uuid.UUID, image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep
) -> None:
    """Put an image in the gallery (idempotent)."""
    await images.add_to_gallery(session, owner, gallery_id, image_id)


@router.delete(
    "/{gallery_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
async def remove_image(
    gallery_id: uuid.UUID, image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep
) -> None:
    """Take an image out of the gallery (the image stays)."""
    await images.remove_from_gallery(session, owner, gallery_id, image_id)
