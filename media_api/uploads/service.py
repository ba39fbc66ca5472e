"""Upload rules: finalizing an upload whose bytes are all in its quarantine object.

The object is checked as `POST /v1/images` checks a body (type from the first bytes, limits, full
decode), then deduplicated or promoted to an original's key. A refusal (4xx) is recorded on the
upload before it is raised: the caller commits that, then answers the problem. A 5xx (storage,
no validation slot) records nothing: the upload stays `validating` and may be finalized again.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
import uuid
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.cleanup import run_to_the_end
from media_api.errors import MediaError, problem_document
from media_api.events import service as events
from media_api.events.models import EventType
from media_api.images.errors import FileTooLarge, QuotaExceeded, StorageUnavailable
from media_api.images.models import Image
from media_api.images.service import (
    StoredFile,
    clean_title,
    duplicate_of,
    record_upload,
    target_gallery,
)
from media_api.images.upload import Spool, Validation, accepted_mime_type, check_fields
from media_api.imaging import probe as imaging
from media_api.imaging.probe import EmptyFile
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import ObjectNotFoundError, Sink, SourceChangedError, StoredObject
from media_api.text import clean_filename
from media_api.unit_of_work import UnitOfWork
from media_api.uploads import repository
from media_api.uploads.errors import Sha256Mismatch, SizeMismatch
from media_api.uploads.models import Upload, UploadKind


async def create(
    session: AsyncSession,
    settings: Settings,
    owner_id: uuid.UUID,
    kind: UploadKind,
    length: int,
    *,
    filename: str | None = None,
    title: str | None = None,
    gallery_id: str | None = None,
    metadata: str | None = None,
    expected_sha256: bytes | None = None,
) -> Upload:
    """A new upload of `length` bytes, checked as `POST /v1/images` checks its fields (title
    422, gallery 404, size 400/413) and holding that much of the quota (413), before any byte."""
    if length == 0:
        raise EmptyFile("the file is empty")
    if length > settings.max_upload_bytes:
        raise FileTooLarge(f"the file is over the limit of {settings.max_upload_bytes} bytes")
    check_fields({"title": title} if title is not None else {})
    target = await target_gallery(session, owner_id, gallery_id)
    upload = await repository.create(
        session,
        owner_id=owner_id,
        kind=kind,
        length=length,
        quota=settings.quota_bytes,
        expires_in=expiry(settings),
        filename=(clean_filename(filename)[:255] or None) if filename else None,
        title=clean_title(title),
        gallery_id=target,
        metadata=metadata,
        expected_sha256=expected_sha256,
    )
    if upload is None:
        quota = settings.quota_bytes
        raise QuotaExceeded(f"storing this would pass your quota of {quota} bytes")
    return upload


def expiry(settings: Settings) -> dt.timedelta:
    """How long an upload lives past its last progress."""
    return dt.timedelta(seconds=settings.upload_expiry_seconds)


class QuarantineStore(Protocol):
    """What finalization needs of the store (`storage.s3.AsyncS3Store`)."""

    async def get_range(self, key: str, start: int, end: int) -> bytes: ...
    async def download_to(self, key: str, fileobj: Sink) -> StoredObject: ...
    async def copy(
        self, source_key: str, dest_key: str, content_type: str, *, if_match: str | None = None
    ) -> None: ...
    async def delete(self, key: str) -> None: ...


async def finalize(
    session: AsyncSession,
    uow: UnitOfWork,
    store: QuarantineStore,
    validator: Validation,
    settings: Settings,
    upload: Upload,
) -> tuple[Image, bool]:
    """Turn a complete upload into an image: (image, True), or (the owner's image with the same
    bytes, False). Either way the upload ends `accepted`, its reservation is given back (the
    image's size is counted instead) and its quarantine object is deleted after commit. A refusal
    ends it `rejected` with the problem, likewise, and is raised."""
    upload_id, quarantine = upload.id, upload.object_key
    try:
        try:
            # Anonymous (O_TMPFILE), closed whatever happens: nothing of it survives the process.
            with tempfile.TemporaryFile(dir=settings.upload_tmp_dir, prefix="upload-") as temp:
                spool = Spool(temp, upload.filename)
                info, etag = await _validated(store, validator, settings, upload, spool)
            return await _accept(session, uow, store, settings, upload, spool, info, etag)
        except (BotoCoreError, ClientError, ObjectNotFoundError) as exc:
            # A missing object too: a concurrent finalization took it; the retry sees the end.
            raise StorageUnavailable("the upload could not be read or stored; try again") from exc
    except (MediaError, imaging.ProbeError) as exc:
        error = _problem(exc)
        if error is None:
            raise
        await reject(session, uow, upload_id, error)
        uow.after_commit(functools.partial(store.delete, quarantine))
        raise


async def reject(
    session: AsyncSession, uow: UnitOfWork, upload_id: uuid.UUID, error: dict[str, Any]
) -> Upload:
    """End the upload `rejected` with the problem `error`, its reservation given back, and
    announce it (`upload.rejected`), all in the session's transaction."""
    await repository.release_reservation(session, [upload_id])
    upload = await repository.reject(session, upload_id, error)
    data = {"upload_id": str(upload.id), "kind": upload.kind.value, "error": error}
    await events.announce(session, uow, upload.owner_id, EventType.UPLOAD_REJECTED, data)
    return upload


async def _accept(
    session: AsyncSession,
    uow: UnitOfWork,
    store: QuarantineStore,
    settings: Settings,
    upload: Upload,
    spool: Spool,
    info: imaging.ImageInfo,
    etag: str,
) -> tuple[Image, bool]:
    """Dedupe or promote the validated file (the object of ETag `etag`); the upload ends
    `accepted` either way."""
    upload_id, owner_id, quarantine = upload.id, upload.owner_id, upload.object_key
    title, gallery_id = upload.title, upload.gallery_id
    # A savepoint: a refusal after the image's row was written (quota, gallery) takes it back,
    # so that the rejection alone is committed.
    async with session.begin_nested():
        await repository.release_reservation(session, [upload_id])  # the image's size instead
        existing = await duplicate_of(session, owner_id, spool.sha256, gallery_id)
        if existing is not None:
            image, created = existing, False
        else:
            image_id = uuid.uuid4()
            key = keys.original_key(owner_id, image_id)
            file = StoredFile(image_id, key, info, spool.size, spool.sha256, spool.filename)
            image, created = await _promote(
                session, uow, store, settings, owner_id, (quarantine, etag), file, title, gallery_id
            )
        await repository.accept(session, upload_id, image.id, spool.sha256)
    uow.after_commit(functools.partial(store.delete, quarantine))
    return image, created


async def _validated(
    store: QuarantineStore,
    validator: Validation,
    settings: Settings,
    upload: Upload,
    spool: Spool,
) -> tuple[imaging.ImageInfo, str]:
    """The checks of `POST /v1/images` on the quarantine object, downloaded into `spool`
    (hashed on the way, one chunk in memory); a PDF is refused from its head alone. Returns
    what the probe found and the ETag of the object checked."""
    head = await store.get_range(upload.object_key, 0, imaging.SNIFF_BYTES)
    accepted_mime_type(head, settings.allowed_formats)
    downloaded = await store.download_to(upload.object_key, spool)
    if spool.size != upload.length:
        raise SizeMismatch(f"the stored file has {spool.size} bytes, {upload.length} declared")
    if upload.expected_sha256 is not None and spool.sha256 != upload.expected_sha256:
        raise Sha256Mismatch("the stored bytes do not have the sha256 that was declared")
    spool.file.seek(0)  # flushed: the validation process reopens the file by its descriptor
    await validator.precheck(spool.file)
    return await validator.validate(spool.file), downloaded.etag


async def _promote(
    session: AsyncSession,
    uow: UnitOfWork,
    store: QuarantineStore,
    settings: Settings,
    owner_id: uuid.UUID,
    validated: tuple[str, str],
    file: StoredFile,
    title: str | None,
    gallery_id: uuid.UUID | None,
) -> tuple[Image, bool]:
    """Copy the validated object (key, ETag) to the original's key (before commit: a worker
    must find it) and record the image. The copy goes on rollback, and after commit unless it
    became the original. A presigned PUT stays valid until it expires: only the object that was
    validated is copied."""
    (quarantine, etag), mime_type = validated, file.info.mime_type
    delete_original = functools.partial(store.delete, file.key)
    uow.undo(delete_original)
    try:
        # A cancel must not return before the copy landed, or the undo could run before it.
        await run_to_the_end(store.copy(quarantine, file.key, mime_type, if_match=etag))
    except SourceChangedError:
        raise Sha256Mismatch("the stored bytes changed while they were validated") from None
    try:
        image, created = await record_upload(
            session, uow, settings, owner_id, file, title=title, gallery_id=gallery_id
        )
    except BaseException:
        uow.after_commit(delete_original)  # a refusal commits the upload's rejection
        raise
    if not created:
        uow.after_commit(delete_original)  # an identical upload committed first
    return image, created


def _problem(exc: MediaError | imaging.ProbeError) -> dict[str, Any] | None:
    """The problem document a refusal is answered with; None for a 5xx (ours: try again)."""
    document = problem_document(exc)
    return None if document is None or document["status"] >= 500 else document
