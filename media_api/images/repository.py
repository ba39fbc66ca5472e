"""SQL for images; every query is scoped to an owner (job SQL: `media_api.jobs`)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload, undefer
from sqlalchemy.orm.attributes import set_committed_value

from media_api.accounts.models import Owner
from media_api.galleries.models import Gallery, GalleryImage
from media_api.images import statements as duplicates
from media_api.images.models import TAKEN_ORDER, Image, ImageStatus, ImageTag
from media_api.images.statements import MAX_LINKED
from media_api.jobs import repository as jobs_repository
from media_api.jobs import statements as job_statements
from media_api.jobs.models import ImageJob
from media_api.pagination import Position

# What the detail view reads besides the row.
_DETAIL = (
    selectinload(Image.jobs),
    selectinload(Image.tags),
    undefer(Image.expose_location),
)


async def get(session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID) -> Image | None:
    """One image of this owner, with its jobs and tags; another owner's id reads as absent."""
    stmt = select(Image).where(Image.id == image_id, Image.owner_id == owner_id).options(*_DETAIL)
    return await _with_duplicates(session, (await session.execute(stmt)).scalar_one_or_none())


async def _with_duplicates(session: AsyncSession, image: Image | None) -> Image | None:
    """The image's nearest near-duplicates, at most as many as the detail shows (an image many
    others link back to has more pairs than that)."""
    if image is not None:
        pairs = (await session.execute(duplicates.linked_pairs(image.id, MAX_LINKED))).scalars()
        set_committed_value(image, "duplicates", list(pairs))
    return image


async def get_by_sha256(session: AsyncSession, owner_id: uuid.UUID, sha256: bytes) -> Image | None:
    """The image this owner already uploaded with exactly these bytes."""
    stmt = select(Image).where(Image.owner_id == owner_id, Image.sha256 == sha256).options(*_DETAIL)
    return await _with_duplicates(session, (await session.execute(stmt)).scalar_one_or_none())


async def insert_new(session: AsyncSession, values: dict[str, object]) -> Image | None:
    """Insert the image and return it as written (no re-read); None when the owner already has
    these bytes (a concurrent upload of the same file won the race): then nothing is written.
    It has no tags, and no jobs until `attach_jobs`."""
    image = await session.scalar(
        insert(Image)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Image.owner_id, Image.sha256])
        .returning(Image)
    )
    if image is not None:
        set_committed_value(image, "tags", [])
        set_committed_value(image, "jobs", [])
        set_committed_value(image, "duplicates", [])
        set_committed_value(image, "expose_location", False)  # nothing read to show yet
    return image


def attach_jobs(image: Image, jobs: list[ImageJob]) -> None:
    """The jobs just inserted for a new image, as if loaded with it."""
    set_committed_value(image, "jobs", jobs)


async def add_to_gallery(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID, image_id: uuid.UUID
) -> bool:
    """Add the membership if the owner has both the gallery and the image: one statement, so
    no check can go stale before the insert. False when nothing was added (either is not the
    owner's, or the image is in the gallery already)."""
    both = (
        select(Gallery.id, Image.id)
        .join(Image, and_(Image.id == image_id, Image.owner_id == owner_id))
        .where(Gallery.id == gallery_id, Gallery.owner_id == owner_id)
        # A delete committed meanwhile is waited for and then finds no row (a 404), instead of
        # failing the insert's foreign-key check (a 500).
        .with_for_update(key_share=True)
    )
    added = await session.execute(
        insert(GalleryImage)
        .from_select(["gallery_id", "image_id"], both)
        .on_conflict_do_nothing()
        .returning(GalleryImage.image_id)
    )
    return added.scalar_one_or_none() is not None


async def in_gallery(session: AsyncSession, gallery_id: uuid.UUID, image_id: uuid.UUID) -> bool:
    """Whether the image is in the gallery."""
    found = await session.scalar(
        select(GalleryImage.image_id).where(
            GalleryImage.gallery_id == gallery_id, GalleryImage.image_id == image_id
        )
    )
    return found is not None


async def remove_from_gallery(
    session: AsyncSession, gallery_id: uuid.UUID, image_id: uuid.UUID
) -> bool:
    """False when the image was not in the gallery."""
    removed = await session.execute(
        delete(GalleryImage)
        .where(GalleryImage.gallery_id == gallery_id, GalleryImage.image_id == image_id)
        .returning(GalleryImage.image_id)
    )
    return removed.scalar_one_or_none() is not None


@dataclass(frozen=True)
class Deleted:
    """What a deleted row pointed at, for the quota and the storage clean-up."""

    original_key: str
    size_bytes: int


async def delete_image(
    session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID
) -> Deleted | None:
    """Delete the row (jobs cascade); None when this owner has no such image. One statement:
    of concurrent deletes of one image, exactly one gets the row back. The owner's linking lock
    first: the thumbnails job takes it before the image rows and pairs a delete cascades to."""
    await session.execute(duplicates.lock_owner(owner_id))
    row = (
        await session.execute(
            delete(Image)
            .where(Image.id == image_id, Image.owner_id == owner_id)
            .returning(Image.original_key, Image.size_bytes)
        )
    ).one_or_none()
    return None if row is None else Deleted(row.original_key, row.size_bytes)


@dataclass(frozen=True)
class ImageFilter:
    """Listing filters; all optional, all combined with AND."""

    status: ImageStatus | None = None
    tag: str | None = None
    gallery_id: uuid.UUID | None = None
    created_before: dt.datetime | None = None
    created_after: dt.datetime | None = None
    taken_before: dt.datetime | None = None
    taken_after: dt.datetime | None = None
    has_duplicates: bool | None = None


class SortBy(enum.StrEnum):
    """Listing order, newest first: by upload, or by capture time (unknown ones last)."""

    CREATED_AT = "created_at"
    TAKEN_AT = "taken_at"


# The capture-time sort key exactly as the index `ix_images_owner_taken` holds it.
_TAKEN_ORDER: ColumnElement[dt.datetime] = literal_column(TAKEN_ORDER)
_NO_TIME: ColumnElement[dt.datetime] = literal_column("'-infinity'::timestamptz")


def _filtered(owner_id: uuid.UUID, filters: ImageFilter) -> Select[Image]:
    stmt = select(Image).where(Image.owner_id == owner_id)
    if filters.status is not None:
        stmt = stmt.where(Image.status == filters.status)
    if filters.created_before is not None:
        stmt = stmt.where(Image.created_at < filters.created_before)
    if filters.created_after is not None:
        stmt = stmt.where(Image.created_at > filters.created_after)
    if filters.taken_before is not None:
        stmt = stmt.where(Image.taken_at < filters.taken_before)
    if filters.taken_after is not None:
        stmt = stmt.where(Image.taken_at > filters.taken_after)
    if filters.has_duplicates is not None:
        linked = duplicates.has_duplicates()
        stmt = stmt.where(linked if filters.has_duplicates else ~linked)
    if filters.gallery_id is not None:
        stmt = stmt.join(GalleryImage, GalleryImage.image_id == Image.id).where(
            GalleryImage.gallery_id == filters.gallery_id
        )
    if filters.tag is not None:
        stmt = stmt.join(ImageTag, ImageTag.image_id == Image.id).where(
            ImageTag.owner_id == owner_id, ImageTag.name == filters.tag
        )
    return stmt


async def page(
    session: AsyncSession,
    owner_id: uuid.UUID,
    filters: ImageFilter,
    after: Position | None,
    limit: int,
    sort: SortBy = SortBy.CREATED_AT,
) -> list[Image]:
    """Newest first; keyset on (time, id) over the owner's index, so page 10 000 costs what
    page 1 does. One statement: listings carry no jobs, variants live on the row."""
    stmt = _filtered(owner_id, filters)
    if sort is SortBy.TAKEN_AT:
        if after is not None:
            at = _NO_TIME if after.at is None else literal(after.at, Image.taken_at.type)
            stmt = stmt.where(tuple_(_TAKEN_ORDER, Image.id) < tuple_(at, literal(after.id)))
        stmt = stmt.order_by(_TAKEN_ORDER.desc(), Image.id.desc()).limit(limit)
        return list((await session.execute(stmt)).scalars())
    # With a tag, walk the tag index (same order, copied columns); otherwise the image index.
    created, ident = (
        (ImageTag.image_created_at, ImageTag.image_id)
        if filters.tag is not None
        else (Image.created_at, Image.id)
    )
    if after is not None:
        stmt = stmt.where(tuple_(created, ident) < (after.at, after.id))
    stmt = stmt.order_by(created.desc(), ident.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def near_duplicates(
    session: AsyncSession, image_id: uuid.UUID, limit: int
) -> list[tuple[uuid.UUID, int]]:
    """The image's near-duplicates as (id, distance), nearest first."""
    rows = await session.execute(duplicates.linked(image_id, limit))
    return [(other, distance) for other, distance in rows.all()]


async def summaries(
    session: AsyncSession, owner_id: uuid.UUID, image_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Image]:
    """These images of the owner, by id (one statement)."""
    stmt = select(Image).where(Image.owner_id == owner_id, Image.id.in_(image_ids))
    return {image.id: image for image in (await session.execute(stmt)).scalars()}


async def count(session: AsyncSession, owner_id: uuid.UUID, filters: ImageFilter) -> int:
    """How many images match the filters (include_total=true)."""
    subquery = _filtered(owner_id, filters).with_only_columns(Image.id).subquery()
    total = await session.scalar(select(func.count()).select_from(subquery))
    return int(total or 0)


# --- across owners: operator commands (ops.py); routes only after their ownership check ---


async def ids_by_status(session: AsyncSession, status: ImageStatus | None) -> list[uuid.UUID]:
    """Ids of all images, or of those in one status."""
    stmt = select(Image.id)
    if status is not None:
        stmt = stmt.where(Image.status == status)
    return list((await session.execute(stmt)).scalars())


async def reset_jobs_of(
    session: AsyncSession, image_ids: list[uuid.UUID], fair_at: dt.datetime | None = None
) -> list[uuid.UUID]:
    """Jobs of these images back to pending (failed images back to processing), in the claim
    order at `fair_at` (default now); returns the ids that exist."""
    found = list((await session.execute(select(Image.id).where(Image.id.in_(image_ids)))).scalars())
    if found:
        await session.execute(job_statements.reset(found, fair_at))
        await session.execute(
            update(Image)
            .where(Image.id.in_(found), Image.status == ImageStatus.FAILED)
            .values(status=ImageStatus.PROCESSING, error_code=None)
        )
        session.expire_all()  # callers re-read these images with their jobs
    return found


async def stored_keys(session: AsyncSession) -> tuple[set[str], set[str]]:
    """(original keys, variant keys) every row points at."""
    rows = (await session.execute(select(Image.original_key, Image.variants))).all()
    originals = {row.original_key for row in rows}
    variants = {v["key"] for row in rows for v in row.variants}
    return originals, variants


async def quota_drift(session: AsyncSession) -> list[tuple[uuid.UUID, int, int]]:
    """(owner, bytes_used, the sum of its images' sizes) wherever the two differ."""
    stored = (
        select(Image.owner_id, func.sum(Image.size_bytes).label("total"))
        .group_by(Image.owner_id)
        .subquery()
    )
    total = func.coalesce(stored.c.total, 0)
    rows = await session.execute(
        select(Owner.id, Owner.bytes_used, total)
        .outerjoin(stored, stored.c.owner_id == Owner.id)
        .where(Owner.bytes_used != total)
        .order_by(Owner.id)
    )
    return [(owner, int(used), int(actual)) for owner, used, actual in rows.all()]


async def repair_quota(session: AsyncSession, owner_ids: list[uuid.UUID]) -> None:
    """Set these owners' bytes_used to the sum of their images' sizes. The rows are locked
    first, so an upload that reserved bytes commits before the sum is taken."""
    await session.execute(select(Owner.id).where(Owner.id.in_(owner_ids)).with_for_update())
    actual = (
        select(func.coalesce(func.sum(Image.size_bytes), 0))
        .where(Image.owner_id == Owner.id)
        .scalar_subquery()
    )
    await session.execute(update(Owner).where(Owner.id.in_(owner_ids)).values(bytes_used=actual))


async def stats(session: AsyncSession) -> dict[str, object]:
    """Counts for `media-api stats`."""
    by_status = (
        await session.execute(
            select(
                Image.status, func.count(), func.coalesce(func.sum(Image.size_bytes), 0)
            ).group_by(Image.status)
        )
    ).all()
    return {
        "images": {str(s.value): int(n) for s, n, _ in by_status},
        "original_bytes": sum(int(b) for _, _, b in by_status),
        "jobs": [
            {"kind": kind, "state": state, "count": n}
            for kind, state, n in await jobs_repository.counts(session)
        ],
    }
