"""Image rules: upload (receive, dedupe, validate, record, dispatch), galleries, browsing."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import repository as owners
from media_api.errors import NotFound
from media_api.events import service as events
from media_api.events.models import EventType
from media_api.galleries import service as galleries
from media_api.images import repository
from media_api.images.errors import (
    ProcessingInProgress,
    QuotaExceeded,
    StorageUnavailable,
    VariantNotReady,
)
from media_api.images.models import TITLE_MAX, Image, ImageStatus
from media_api.images.multipart import read_parts
from media_api.images.upload import FIELDS, ObjectStore, UploadSession, Validation
from media_api.imaging.probe import ImageInfo
from media_api.jobs import repository as jobs
from media_api.jobs.contract import JOBS
from media_api.jobs.models import JobState
from media_api.pagination import Keyset
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import AsyncS3Store
from media_api.unit_of_work import UnitOfWork


async def upload(
    session: AsyncSession,
    store: ObjectStore,
    uow: UnitOfWork,
    validator: Validation,
    settings: Settings,
    owner_id: uuid.UUID,
    body: AsyncIterator[bytes],
    content_type: str | None,
) -> tuple[Image, bool]:
    """Accept one upload; returns the image and whether it is new (False: same bytes as an
    image this owner already has). Leaving early removes whatever was stored (`UploadSession`)."""
    image_id = uuid.uuid4()
    key = keys.original_key(owner_id, image_id)
    parts = read_parts(body, content_type, max_file_bytes=settings.max_upload_bytes, fields=FIELDS)
    try:
        async with UploadSession(
            store, validator, key, settings.allowed_formats, settings.upload_tmp_dir
        ) as incoming:
            fields = await incoming.receive(parts)  # spooled, and streamed to S3 meanwhile
            spool = incoming.spool
            title = clean_title(fields.get("title"))
            gallery_id = await target_gallery(session, owner_id, fields.get("gallery_id"))
            # Before the validation: a duplicate costs no decode.
            existing = await duplicate_of(session, owner_id, spool.sha256, gallery_id)
            if existing is not None:
                return existing, False
            quota = settings.quota_bytes
            if quota and await owners.bytes_held(session, owner_id) + spool.size > quota:
                raise QuotaExceeded(f"storing this would pass your quota of {quota} bytes")

            info = await incoming.complete()
            file = StoredFile(image_id, key, info, spool.size, spool.sha256, spool.filename)
            image, created = await record_upload(
                session, uow, settings, owner_id, file, title=title, gallery_id=gallery_id
            )
            if created:
                incoming.keep(uow)
            return image, created
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the image could not be stored; try again") from exc


@dataclass(frozen=True)
class StoredFile:
    """An upload's file, received and validated, stored at `key` (the original's key of the
    image `image_id`, which does not exist yet)."""

    image_id: uuid.UUID
    key: str
    info: ImageInfo
    size: int
    sha256: bytes
    filename: str | None


async def record_upload(
    session: AsyncSession,
    uow: UnitOfWork,
    settings: Settings,
    owner_id: uuid.UUID,
    file: StoredFile,
    *,
    title: str | None,
    gallery_id: uuid.UUID | None,
) -> tuple[Image, bool]:
    """Record a stored file as the owner's new image: the row, the quota, the pending jobs
    (sent after commit) and the gallery. Returns (image, True), or (the existing image, False)
    when the owner already has these bytes: then nothing is written but the gallery membership,
    and the caller removes its object. On (image, True) the caller keeps the object (until a
    rollback); on an error it removes it."""
    info = file.info
    image = await repository.insert_new(
        session,
        {
            "id": file.image_id,
            "owner_id": owner_id,
            "title": title,
            "original_filename": (file.filename or "")[:255] or None,
            # The sniffed type the object was stored with: probe() sniffs the same head.
            "content_type": info.mime_type,
            "size_bytes": file.size,
            # Display dimensions: what a viewer sees once EXIF orientation is applied.
            "width": info.display_width,
            "height": info.display_height,
            "frames": info.frames,
            "sha256": file.sha256,
            "original_key": file.key,
        },
    )
    if image is None:
        # An identical upload committed first: ours is redundant, keep theirs.
        existing = await duplicate_of(session, owner_id, file.sha256, gallery_id)
        assert existing is not None
        return existing, False
    # The atomic quota check, last, so the owner row stays locked only until the commit.
    quota = settings.quota_bytes
    if not await owners.reserve_bytes(session, owner_id, file.size, quota):
        raise QuotaExceeded(f"storing this would pass your quota of {quota} bytes")
    slot = await jobs.take_slot(session, owner_id, _spacing(settings))
    repository.attach_jobs(image, await jobs.add_pending(session, image.id, JOBS, slot))
    await _into_gallery(session, owner_id, gallery_id, image.id)
    await events.announce(session, uow, owner_id, EventType.IMAGE_CREATED, _created(image))
    uow.send_jobs(image.id)
    return image, True


def _created(image: Image) -> dict[str, Any]:
    """What `image.created` tells: the new image as recorded (never a URL)."""
    return {
        "image_id": str(image.id),
        "status": image.status.value,
        "content_type": image.content_type,
        "size": image.size_bytes,
        "filename": image.original_filename,
        "title": image.title,
    }


async def duplicate_of(
    session: AsyncSession, owner_id: uuid.UUID, sha256: bytes, gallery_id: uuid.UUID | None
) -> Image | None:
    """The owner's image with exactly these bytes, put into the target gallery as the upload
    would have been; None when there is none."""
    existing = await repository.get_by_sha256(session, owner_id, sha256)
    if existing is not None:
        await _into_gallery(session, owner_id, gallery_id, existing.id)
    return existing


async def target_gallery(
    session: AsyncSession, owner_id: uuid.UUID, raw: str | None
) -> uuid.UUID | None:
    """The gallery an upload goes into: one of the owner's, or 404 before any work."""
    if not raw:
        return None
    try:
        gallery_id = uuid.UUID(raw)
    except ValueError:
        raise NotFound("gallery not found") from None
    await galleries.get(session, owner_id, gallery_id)
    return gallery_id


async def _into_gallery(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID | None, image_id: uuid.UUID
) -> None:
    if gallery_id is not None:
        await add_to_gallery(session, owner_id, gallery_id, image_id)


async def add_to_gallery(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID, image_id: uuid.UUID
) -> None:
    """Put one of the owner's images in one of the owner's galleries (idempotent). Both
    ownerships are checked by the insert itself; only when it adds nothing is it asked why."""
    if await repository.add_to_gallery(session, owner_id, gallery_id, image_id):
        return
    await galleries.get(session, owner_id, gallery_id)
    if not await repository.in_gallery(session, gallery_id, image_id):
        raise NotFound("image not found")


async def remove_from_gallery(
    session: AsyncSession, owner_id: uuid.UUID, gallery_id: uuid.UUID, image_id: uuid.UUID
) -> None:
    """Take an image out of one of the owner's galleries (the image itself stays)."""
    await galleries.get(session, owner_id, gallery_id)
    if not await repository.remove_from_gallery(session, gallery_id, image_id):
        raise NotFound("image not in this gallery")


def _spacing(settings: Settings) -> dt.timedelta:
    return dt.timedelta(seconds=settings.job_owner_spacing_seconds)


async def reprocess(
    session: AsyncSession,
    uow: UnitOfWork,
    settings: Settings,
    owner_id: uuid.UUID,
    image_id: uuid.UUID,
) -> Image:
    """Run every job again: rows back to pending, tasks published after commit; 409 while a
    job is running (a worker has it in hand: it would be done twice, and billed twice)."""
    await get(session, owner_id, image_id)
    states = await jobs.lock_states(session, image_id)
    if JobState.RUNNING in states:
        raise ProcessingInProgress("the image's jobs are still running; retry once they end")
    slot = await jobs.take_slot(session, owner_id, _spacing(settings))
    await repository.reset_jobs_of(session, [image_id], slot)  # ownership checked above
    uow.send_jobs(image_id)
    return await get(session, owner_id, image_id)


async def get(session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    """One of the owner's images, or 404."""
    image = await repository.get(session, owner_id, image_id)
    if image is None:
        raise NotFound("image not found")
    return image


def clean_title(title: str | None) -> str | None:
    """Titles are trimmed; a blank one is no title."""
    return (title or "").strip()[:TITLE_MAX] or None


async def update(
    session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID, changes: dict[str, Any]
) -> Image:
    """Change what the owner may change (the title); an empty change set changes nothing."""
    image = await get(session, owner_id, image_id)
    if "title" in changes:
        image.title = clean_title(changes["title"])
        await session.flush()
    return image


async def delete(
    session: AsyncSession,
    store: AsyncS3Store,
    uow: UnitOfWork,
    owner_id: uuid.UUID,
    image_id: uuid.UUID,
) -> None:
    """Delete the row, then (after commit) the original and every variant. The row comes
    back from the delete itself, so of racing deletes one answers 204 and gives the bytes back
    once; the others find nothing (404)."""
    deleted = await repository.delete_image(session, owner_id, image_id)
    if deleted is None:
        raise NotFound("image not found")
    await owners.release_bytes(session, owner_id, deleted.size_bytes)
    data = {"image_id": str(image_id)}
    await events.announce(session, uow, owner_id, EventType.IMAGE_DELETED, data)
    uow.after_commit(functools.partial(store.delete, deleted.original_key))
    uow.after_commit(
        functools.partial(store.delete_prefix, keys.variants_prefix(owner_id, image_id))
    )


LISTING_SCOPE = "images"


@dataclass(frozen=True)
class Page:
    """One page of images and the cursor of the next (None on the last page)."""

    items: list[Image]
    next_cursor: str | None
    total: int | None


async def list_images(
    session: AsyncSession,
    owner_id: uuid.UUID,
    filters: repository.ImageFilter,
    *,
    cursor: str | None,
    limit: int,
    include_total: bool,
    secret: str,
    sort: repository.SortBy = repository.SortBy.CREATED_AT,
) -> Page:
    """A keyset page of the owner's images, newest first by upload or by capture time."""
    if filters.gallery_id is not None:
        await galleries.get(session, owner_id, filters.gallery_id)  # 404 for another's
    # A cursor is bound to its sort: one from the other order is refused, never misread.
    scope = LISTING_SCOPE if sort is repository.SortBy.CREATED_AT else f"{LISTING_SCOPE}:{sort}"
    keyset = Keyset(secret, scope, owner_id)
    rows = await repository.page(session, owner_id, filters, keyset.after(cursor), limit + 1, sort)
    if sort is repository.SortBy.TAKEN_AT:
        rows, next_cursor = keyset.cut(rows, limit, lambda image: image.taken_at)
    else:
        rows, next_cursor = keyset.cut(rows, limit)
    total = await repository.count(session, owner_id, filters) if include_total else None
    return Page(rows, next_cursor, total)


# Near-duplicates a `similar` answer lists at most.
SIMILAR_LIMIT = 50


async def similar(
    session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID
) -> list[tuple[Image, int]]:
    """The image's near-duplicates with their distances, nearest first (404 for another's).
    Two statements: the pairs, then those images with the image itself, the owner's only."""
    pairs = await repository.near_duplicates(session, image_id, SIMILAR_LIMIT)
    images = await repository.summaries(session, owner_id, [image_id, *(o for o, _ in pairs)])
    if image_id not in images:
        raise NotFound("image not found")
    return [(images[other], distance) for other, distance in pairs if other in images]


def variant_of(image: Image, name: str, preset_names: list[str]) -> dict[str, Any]:
    """The stored variant `name`; 404 `variant-not-ready` while it is still being made."""
    for variant in image.variants:
        if variant["name"] == name:
            return variant
    if name in preset_names and image.status is not ImageStatus.FAILED:
        raise VariantNotReady(f"the {name} variant is not ready yet")
    raise NotFound(f"no variant named {name}")
