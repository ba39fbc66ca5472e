"""Direct uploads: the client PUTs its bytes to presigned S3 URLs (one PUT, or one per part of
a multipart upload), then asks to complete; completion assembles the object, checks its size
and hands it to finalization (docs/uploads-design.md, section 3)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.cleanup import run_to_the_end
from media_api.errors import MediaError, NotFound, problem_document
from media_api.images import service as images
from media_api.images.errors import StorageUnavailable
from media_api.images.models import Image
from media_api.settings import Settings
from media_api.storage.s3 import MAX_PARTS, AsyncS3Store, SignedUrl
from media_api.unit_of_work import UnitOfWork
from media_api.uploads import repository, service
from media_api.uploads.errors import (
    InvalidParts,
    SizeMismatch,
    UploadGone,
    UploadIncomplete,
    UploadLocked,
)
from media_api.uploads.models import Upload, UploadKind, UploadState

log = logging.getLogger(__name__)

SIGNED_URL_MAX = dt.timedelta(days=7)  # SigV4's ceiling
# What CompleteMultipartUpload answers when the client's part list is wrong: its to fix.
_PART_REFUSALS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


@dataclass(frozen=True)
class Offer:
    """A new direct upload and where its bytes go: `url` for one PUT, else `parts`."""

    upload: Upload
    part_size: int
    url: SignedUrl | None = None
    parts: list[SignedUrl] = field(default_factory=list)


def part_sizes(length: int, chunk: int) -> tuple[int, list[int]]:
    """(part size, each part's size): parts of `chunk` bytes (more if S3's 10,000 parts would
    not hold the file), the last one the remainder."""
    part_size = max(chunk, -(-length // MAX_PARTS))
    full, rest = divmod(length, part_size)
    return part_size, [part_size] * full + ([rest] if rest else [])


async def create(
    session: AsyncSession,
    uow: UnitOfWork,
    store: AsyncS3Store,
    settings: Settings,
    owner_id: uuid.UUID,
    *,
    filename: str,
    size: int,
    sha256: str | None = None,
    title: str | None = None,
    gallery_id: uuid.UUID | None = None,
) -> Offer:
    """A direct upload holding `size` bytes of the quota, with its presigned URLs. A file
    above one part gets a multipart upload, aborted if the transaction rolls back."""
    upload = await service.create(
        session,
        settings,
        owner_id,
        UploadKind.DIRECT,
        size,
        filename=filename,
        title=title,
        gallery_id=str(gallery_id) if gallery_id else None,
        expected_sha256=bytes.fromhex(sha256) if sha256 else None,
    )
    ttl = min(service.expiry(settings), SIGNED_URL_MAX)
    key = upload.object_key
    if size <= settings.s3_multipart_chunk_bytes:
        return Offer(upload, size, url=store.presign_put(key, size, ttl))
    part_size, sizes = part_sizes(size, settings.s3_multipart_chunk_bytes)
    s3_upload_id = await _start_multipart(uow, store, key)
    plan = [{"n": number, "size": part} for number, part in enumerate(sizes, 1)]
    await repository.start_multipart(session, upload.id, s3_upload_id, plan)
    urls = [
        store.presign_upload_part(key, s3_upload_id, number, part, ttl)
        for number, part in enumerate(sizes, 1)
    ]
    return Offer(upload, part_size, parts=urls)


async def _start_multipart(uow: UnitOfWork, store: AsyncS3Store, key: str) -> str:
    """CreateMultipartUpload, with its abort registered for a rollback even if the request is
    cancelled meanwhile."""
    started: list[str] = []

    async def start() -> None:
        s3_upload_id = await store.create_multipart(key, "application/octet-stream")
        uow.undo(functools.partial(store.abort_multipart, key, s3_upload_id))
        started.append(s3_upload_id)

    try:
        await run_to_the_end(start())
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the upload could not be started; try again") from exc
    return started[0]


async def accepted_image(session: AsyncSession, owner_id: uuid.UUID, upload: Upload) -> Image:
    """The image an accepted upload became (repeating `complete` answers it again)."""
    if upload.image_id is None:
        raise UploadGone("the image this upload became was deleted")
    return await images.get(session, owner_id, upload.image_id)


def check_live(upload: Upload) -> None:
    """410 for an upload that ended without an image."""
    if upload.state in (UploadState.REJECTED, UploadState.EXPIRED):
        raise UploadGone(f"the upload is {upload.state.value}; start a new one")


async def assemble(
    session: AsyncSession,
    uow: UnitOfWork,
    store: AsyncS3Store,
    upload: Upload,
    lease_id: uuid.UUID,
    parts: list[tuple[int, str]],
) -> Upload:
    """Put the object together (CompleteMultipartUpload) and check its size, then mark the
    upload `validating`. A wrong part list (422) or a missing object (409) changes nothing; a
    wrong size rejects the upload (recorded: the caller commits it) and raises."""
    try:
        if upload.s3_upload_id is None:
            if parts:
                raise InvalidParts("a file sent in one PUT completes without parts")
        else:
            await _complete_multipart(store, upload, upload.s3_upload_id, parts)
        size = await store.size(upload.object_key)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the upload could not be assembled; try again") from exc
    if size is None:
        raise UploadIncomplete("nothing was uploaded yet: PUT the file to its URL first")
    if size != upload.length:
        refusal = SizeMismatch(f"the stored file has {size} bytes, {upload.length} declared")
        await reject(session, uow, store, upload, refusal)
        raise refusal
    validating = await repository.start_validating(session, upload.id, lease_id)
    if validating is None:
        raise UploadLocked("the upload was taken over by another request; retry shortly")
    return validating


async def _complete_multipart(
    store: AsyncS3Store, upload: Upload, s3_upload_id: str, parts: list[tuple[int, str]]
) -> None:
    """CompleteMultipartUpload with the client's parts, which must be exactly 1..n."""
    count = len(upload.parts)
    if sorted(number for number, _ in parts) != list(range(1, count + 1)):
        raise InvalidParts(f"name parts 1 to {count}, each once, with the ETag its PUT answered")
    try:
        await store.complete_multipart(upload.object_key, s3_upload_id, parts)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in _PART_REFUSALS:
            raise InvalidParts(f"storage refused the parts ({code}); check the ETags") from err
        if code != "NoSuchUpload":  # completed by an earlier attempt: the size check decides
            raise


async def reject(
    session: AsyncSession, uow: UnitOfWork, store: AsyncS3Store, upload: Upload, exc: MediaError
) -> None:
    """End the upload `rejected` with `exc`'s problem, its reservation given back and its
    object deleted after commit (as finalization rejects)."""
    document = problem_document(exc)
    assert document is not None
    await service.reject(session, uow, upload.id, document)
    uow.after_commit(functools.partial(store.delete, upload.object_key))


async def get(session: AsyncSession, owner_id: uuid.UUID, upload_id: uuid.UUID) -> Upload:
    """One of the owner's uploads (any kind), or 404."""
    upload = await repository.get(session, owner_id, upload_id)
    if upload is None:
        raise NotFound("upload not found")
    return upload
