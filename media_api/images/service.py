"""Upload rules: dedupe, validate, store, record, dispatch; nothing left behind on failure."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from typing import IO

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.effects import Effects
from media_api.errors import NotFound
from media_api.images import repository
from media_api.images.errors import PROBE_ERRORS, EmptyFile, MissingFile, StorageUnavailable
from media_api.images.ingest import UploadForm
from media_api.images.models import Image, JobKind
from media_api.imaging import probe as imaging
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import AsyncS3Store

# Each job kind: the task that performs it and the queue it runs on.
JOB_TASKS: dict[JobKind, tuple[str, str]] = {
    JobKind.THUMBNAILS: ("media.make_variants", "thumbnails"),
}
TITLE_MAX = 300


def probe_limits(settings: Settings) -> imaging.ProbeLimits:
    """The validation policy from settings."""
    return imaging.ProbeLimits(
        allowed_formats=settings.allowed_formats,
        max_pixels=settings.max_pixels,
        max_frames=settings.max_frames,
    )


def head_checker(settings: Settings) -> Callable[[bytes], None]:
    """Rejects a body whose first bytes are no allowed image, before the rest is received."""
    allowed = settings.allowed_formats

    def check(head: bytes) -> None:
        if not head:
            return  # an empty file gets its own error once the part ends
        fmt = imaging.sniff(head)
        if fmt is None or fmt not in allowed:
            what = "an allowed image format" if fmt is None else f"{fmt}, which is not accepted"
            raise PROBE_ERRORS["unsupported-media-type"](f"the content is not {what}")

    return check


def _validate(spool_file: IO[bytes], limits: imaging.ProbeLimits) -> imaging.ImageInfo:
    try:
        return imaging.probe(spool_file, limits)
    except imaging.ProbeError as exc:
        raise PROBE_ERRORS[exc.code](exc.detail) from exc


async def upload(
    session: AsyncSession,
    store: AsyncS3Store,
    effects: Effects,
    settings: Settings,
    owner_id: uuid.UUID,
    form: UploadForm,
) -> tuple[Image, bool]:
    """Accept one upload; returns the image and whether it is new (False: same bytes as an
    image this owner already has)."""
    spool = form.spool
    if spool is None:
        raise MissingFile("send the image in a multipart field named 'file'")
    if spool.size == 0:
        raise EmptyFile()
    title = (form.fields.get("title") or "").strip()[:TITLE_MAX] or None
    if form.fields.get("gallery_id"):
        raise NotFound("gallery not found")  # galleries arrive with the browse API

    existing = await repository.get_by_sha256(session, owner_id, spool.sha256)
    if existing is not None:
        return existing, False

    info = await asyncio.to_thread(_validate, spool.file, probe_limits(settings))

    image_id = uuid.uuid4()
    key = keys.original_key(owner_id, image_id)
    spool.file.seek(0)
    try:
        await store.put_file(key, spool.file, info.mime_type)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the image could not be stored; try again") from exc
    effects.undo(functools.partial(store.delete, key))

    created = await repository.insert_new(
        session,
        {
            "id": image_id,
            "owner_id": owner_id,
            "title": title,
            "original_filename": (spool.filename or "")[:255] or None,
            "content_type": info.mime_type,
            "size_bytes": spool.size,
            # Display dimensions: what a viewer sees once EXIF orientation is applied.
            "width": info.display_width,
            "height": info.display_height,
            "frames": info.frames,
            "sha256": spool.sha256,
            "original_key": key,
        },
        JOB_TASKS,
    )
    if not created:
        # An identical upload committed first: ours is redundant, keep theirs.
        await store.delete(key)
        existing = await repository.get_by_sha256(session, owner_id, spool.sha256)
        assert existing is not None
        return existing, False
    for task, queue in JOB_TASKS.values():
        effects.enqueue(task, (str(image_id),), queue)
    image = await repository.get(session, owner_id, image_id)
    assert image is not None
    return image, True


async def get(session: AsyncSession, owner_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    """One of the owner's images, or 404."""
    image = await repository.get(session, owner_id, image_id)
    if image is None:
        raise NotFound("image not found")
    return image


async def delete(
    session: AsyncSession,
    store: AsyncS3Store,
    effects: Effects,
    owner_id: uuid.UUID,
    image_id: uuid.UUID,
) -> None:
    """Delete the row, then (after commit) the original and every variant."""
    image = await get(session, owner_id, image_id)
    await repository.delete_image(session, owner_id, image_id)
    effects.after_commit(functools.partial(store.delete, image.original_key))
    effects.after_commit(
        functools.partial(store.delete_prefix, keys.image_prefix(owner_id, image_id))
    )
