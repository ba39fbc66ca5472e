"""Upload rules: stream, dedupe, validate, record, dispatch; nothing left behind on failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import repository as owners
from media_api.errors import NotFound
from media_api.galleries import repository as galleries
from media_api.images import repository
from media_api.images.errors import (
    PROBE_ERRORS,
    EmptyFile,
    MissingFile,
    ProcessingInProgress,
    QuotaExceeded,
    StorageUnavailable,
    VariantNotReady,
)
from media_api.images.models import TITLE_MAX, Image, ImageStatus, JobKind, JobState
from media_api.images.multipart import Spool, receive_upload
from media_api.images.validation import Validator
from media_api.imaging import probe as imaging
from media_api.jobs.producer import JOB_TASKS
from media_api.pagination import Keyset
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import AsyncS3Store, StoredObject, StreamingUpload
from media_api.unit_of_work import Effects

JOB_KINDS = [JobKind(kind) for kind in JOB_TASKS]


def _accepted_mime_type(head: bytes, allowed: frozenset[str]) -> str | None:
    """Refuses a body whose first bytes are no allowed image, before the rest is received."""
    if not head:
        return None  # an empty file gets its own error once the part ends
    fmt, mime_type = imaging.sniff(head), imaging.sniff_mime_type(head)
    if fmt is None or mime_type is None or fmt not in allowed:
        what = "an allowed image format" if fmt is None else f"{fmt}, which is not accepted"
        raise PROBE_ERRORS["unsupported-media-type"](f"the content is not {what}")
    return mime_type


class _Original:
    """The original on its way to S3 while the body still arrives; gone again unless completed.

    The object is typed by the sniffed format, which the head check knows before the first part
    leaves; the upload itself starts only then, so a refused head never makes an S3 request.
    """

    def __init__(self, store: AsyncS3Store, key: str, allowed: frozenset[str]) -> None:
        self._store = store
        self._key = key
        self._allowed = allowed
        self._upload: StreamingUpload | None = None

    async def __aenter__(self) -> _Original:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._upload is not None:
            await self._upload.__aexit__(exc_type, exc, tb)

    def check_head(self, head: bytes) -> None:
        """The ingest's head check: refuse a non-image, or start the upload with its type."""
        mime_type = _accepted_mime_type(head, self._allowed)
        if mime_type is not None:
            self._upload = self._store.streaming_upload(self._key, mime_type)

    async def write(self, data: bytes) -> None:
        """The ingest's sink."""
        assert self._upload is not None, "the ingest writes only after the head check passed"
        await self._upload.write(data)

    async def complete(self) -> StoredObject:
        """Send the last part and finish (or PUT a file that fits one part)."""
        assert self._upload is not None, "a non-empty file passed the head check"
        return await self._upload.complete()


async def _validate_while_completing(
    spool: Spool, original: _Original, validator: Validator
) -> imaging.ImageInfo:
    """The full decode overlaps the end of the S3 upload. Both always finish; a bad image
    outranks a storage error, since retrying won't help."""
    await validator.precheck(spool.file)
    info, stored = await asyncio.gather(
        validator.validate(spool.file),
        original.complete(),
        return_exceptions=True,
    )
    if isinstance(info, BaseException):
        raise info
    if isinstance(stored, BaseException):
        raise stored
    return info


async def upload(
    session: AsyncSession,
    store: AsyncS3Store,
    effects: Effects,
    validator: Validator,
    settings: Settings,
    owner_id: uuid.UUID,
    body: AsyncIterator[bytes],
    content_type: str | None,
) -> tuple[Image, bool]:
    """Accept one upload; returns the image and whether it is new (False: same bytes as an
    image this owner already has)."""
    image_id = uuid.uuid4()
    key = keys.original_key(owner_id, image_id)
    try:
        # The file goes to the spool (for validation) and to S3 at once, part by part. Any
        # exception, or leaving the block before completing, aborts what was sent.
        async with (
            _Original(store, key, settings.allowed_formats) as original,
            receive_upload(
                body,
                content_type,
                max_bytes=settings.max_upload_bytes,
                tmp_dir=settings.upload_tmp_dir,
                head_bytes=imaging.SNIFF_BYTES,
                check_head=original.check_head,
                sink=original.write,
            ) as form,
        ):
            spool = form.spool
            if spool is None:
                raise MissingFile("send the image in a multipart field named 'file'")
            if spool.size == 0:
                raise EmptyFile()
            title = clean_title(form.fields.get("title"))
            gallery_id = await _target_gallery(session, owner_id, form.fields.get("gallery_id"))

            existing = await repository.get_by_sha256(session, owner_id, spool.sha256)
            if existing is not None:
                if gallery_id is not None:
                    await galleries.add_image(session, gallery_id, existing.id)
                return existing, False  # the streamed copy is aborted on the way out
            quota = settings.quota_bytes
            if quota and await owners.bytes_used(session, owner_id) + spool.size > quota:
                raise QuotaExceeded(f"storing this would pass your quota of {quota} bytes")

            info = await _validate_while_completing(spool, original, validator)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the image could not be stored; try again") from exc
    # The object exists from here on: a rollback of this request's transaction deletes it.
    effects.undo(functools.partial(store.delete, key))

    created = await repository.insert_new(
        session,
        {
            "id": image_id,
            "owner_id": owner_id,
            "title": title,
            "original_filename": (spool.filename or "")[:255] or None,
            # The sniffed type the object was stored with: probe() derives it from the same head.
            "content_type": info.mime_type,
            "size_bytes": spool.size,
            # Display dimensions: what a viewer sees once EXIF orientation is applied.
            "width": info.display_width,
            "height": info.display_height,
            "frames": info.frames,
            "sha256": spool.sha256,
            "original_key": key,
        },
    )
    if not created:
        # An identical upload committed first: ours is redundant, keep theirs.
        await store.delete(key)
        existing = await repository.get_by_sha256(session, owner_id, spool.sha256)
        assert existing is not None
        return existing, False
    # The atomic quota check, last, so the owner row stays locked only until the commit.
    if not await owners.reserve_bytes(session, owner_id, spool.size, settings.quota_bytes):
        raise QuotaExceeded(f"storing this would pass your quota of {settings.quota_bytes} bytes")
    slot = await repository.take_job_slot(session, owner_id, _spacing(settings))
    await repository.add_jobs(session, image_id, JOB_KINDS, slot)
    if gallery_id is not None:
        await galleries.add_image(session, gallery_id, image_id)
    _dispatch(effects, image_id)
    image = await repository.get(session, owner_id, image_id)
    assert image is not None
    return image, True


async def _target_gallery(
    session: AsyncSession, owner_id: uuid.UUID, raw: str | None
) -> uuid.UUID | None:
    """The gallery an upload goes into: one of the owner's, or 404 before any work."""
    if not raw:
        return None
    try:
        gallery_id = uuid.UUID(raw)
    except ValueError:
        raise NotFound("gallery not found") from None
    if await galleries.get(session, owner_id, gallery_id) is None:
        raise NotFound("gallery not found")
    return gallery_id


def _dispatch(effects: Effects, image_id: uuid.UUID) -> None:
    """Queue every job's task, published once the transaction has committed."""
    for task, queue in JOB_TASKS.values():
        effects.enqueue(task, (str(image_id),), queue)


def _spacing(settings: Settings) -> dt.timedelta:
    return dt.timedelta(seconds=settings.job_owner_spacing_seconds)


async def reprocess(
    session: AsyncSession,
    effects: Effects,
    settings: Settings,
    owner_id: uuid.UUID,
    image_id: uuid.UUID,
) -> Image:
    """Run every job again: rows back to pending, tasks published after commit; 409 while a
    job is running (a worker has it in hand: it would be done twice, and billed twice)."""
    await get(session, owner_id, image_id)
    states = await repository.lock_job_states(session, image_id)
    if JobState.RUNNING in states:
        raise ProcessingInProgress("the image's jobs are still running; retry once they end")
    slot = await repository.take_job_slot(session, owner_id, _spacing(settings))
    await repository.reset_jobs_of(session, [image_id], slot)  # ownership checked above
    _dispatch(effects, image_id)
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
    effects: Effects,
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
    effects.after_commit(functools.partial(store.delete, deleted.original_key))
    effects.after_commit(
        functools.partial(store.delete_prefix, keys.image_prefix(owner_id, image_id))
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
) -> Page:
    """A keyset page of the owner's images, newest first."""
    if (
        filters.gallery_id is not None
        and await galleries.get(session, owner_id, filters.gallery_id) is None
    ):
        raise NotFound("gallery not found")
    keyset = Keyset(secret, LISTING_SCOPE, owner_id)
    rows = await repository.page(session, owner_id, filters, keyset.after(cursor), limit + 1)
    rows, next_cursor = keyset.cut(rows, limit)
    total = await repository.count(session, owner_id, filters) if include_total else None
    return Page(rows, next_cursor, total)


def variant_of(image: Image, name: str, preset_names: list[str]) -> dict[str, Any]:
    """The stored variant `name`; 404 `variant-not-ready` while it is still being made."""
    for variant in image.variants:
        if variant["name"] == name:
            return variant
    if name in preset_names and image.status is not ImageStatus.FAILED:
        raise VariantNotReady(f"the {name} variant is not ready yet")
    raise NotFound(f"no variant named {name}")
