"""HTTP routes for direct uploads (presigned S3 URLs) and the state of any upload; the
finalization both kinds of upload end with."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.api.deps import (
    CurrentOwner,
    SessionDep,
    SettingsDep,
    SignerDep,
    StateDep,
    StoreDep,
    UnitOfWorkDep,
    upload_rate_limit,
)
from media_api.errors import (
    MediaError,
    NotFound,
    ServerBusy,
    ValidationFailed,
    problem_responses,
)
from media_api.images.errors import FileTooLarge, QuotaExceeded, StorageUnavailable
from media_api.images.models import Image
from media_api.images.schemas import ImageOut
from media_api.imaging.probe import CorruptImage, ImageTooLarge, ProbeError, UnsupportedMediaType
from media_api.resources import AppState
from media_api.unit_of_work import UnitOfWork
from media_api.uploads import direct, service
from media_api.uploads.errors import (
    InvalidParts,
    Sha256Mismatch,
    SizeMismatch,
    UploadGone,
    UploadIncomplete,
    UploadLocked,
)
from media_api.uploads.lease import holding
from media_api.uploads.models import Upload, UploadKind, UploadState
from media_api.uploads.schemas import (
    CompleteIn,
    DirectUploadIn,
    PartUrl,
    UploadOffer,
    UploadOut,
)

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


async def finalize(
    state: AppState, session: AsyncSession, uow: UnitOfWork, upload: Upload
) -> tuple[Image, bool]:
    """`service.finalize` within the process's finalization slots (503 `server-busy` past
    `MEDIA_VALIDATION_WAIT_SECONDS`). A refusal is committed (the upload `rejected`, its
    object deleted) before it is answered: the request's own transaction rolls back. Counted
    in `media_uploads_total` like `POST /v1/images`."""
    try:
        async with asyncio.timeout(state.settings.validation_wait_seconds):
            await state.finalizing.acquire()
    except TimeoutError:
        raise ServerBusy("every validation slot is taken; retry shortly") from None
    counted = state.metrics.uploads
    try:
        image, created = await service.finalize(
            session, uow, state.store, state.validator, state.settings, upload
        )
    except (MediaError, ProbeError) as exc:
        if upload.state == UploadState.REJECTED:
            counted.labels(outcome="rejected", code=exc.code).inc()
            await session.commit()
            await uow.committed()
        raise
    finally:
        state.finalizing.release()
    counted.labels(outcome="created" if created else "duplicate", code="").inc()
    if created:
        state.metrics.upload_bytes.inc(image.size_bytes)
    return image, created


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model_exclude_none=True,
    dependencies=[Depends(upload_rate_limit)],
    responses={
        201: {
            "description": "The upload, with the URLs to PUT its bytes to.",
            "headers": {
                "Location": {"description": "The upload's state.", "schema": {"type": "string"}}
            },
        },
        **problem_responses(
            NotFound,  # gallery_id names no gallery of the caller's
            FileTooLarge,
            QuotaExceeded,
            ValidationFailed,
            StorageUnavailable,
        ),
    },
)
async def create_upload(
    body: DirectUploadIn,
    request: Request,
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    store: StoreDep,
    uow: UnitOfWorkDep,
    settings: SettingsDep,
) -> UploadOffer:
    """Start a direct upload: the quota is reserved and presigned URLs answered, one `url` for
    a file up to one part (`PUT` it whole), else `parts` of `part_size` bytes (the last the
    remainder). Each URL takes exactly its bytes; then `POST .../complete`."""
    offer = await direct.create(
        session,
        uow,
        store,
        settings,
        owner,
        filename=body.filename,
        size=body.size,
        sha256=body.sha256,
        title=body.title,
        gallery_id=body.gallery_id,
    )
    upload = offer.upload
    response.headers["Location"] = str(request.url_for("get_upload", upload_id=upload.id))
    if offer.url is not None:
        return UploadOffer(id=upload.id, url=offer.url.url, expires_at=upload.expires_at)
    parts = [PartUrl(number=n, url=signed.url) for n, signed in enumerate(offer.parts, 1)]
    return UploadOffer(
        id=upload.id, parts=parts, part_size=offer.part_size, expires_at=upload.expires_at
    )


@router.post(
    "/{upload_id}/complete",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "The new image, processing."},
        200: {
            "description": "Same bytes already uploaded, or completed before: the image.",
            "model": ImageOut,
        },
        **problem_responses(
            NotFound,
            UploadIncomplete,
            UploadGone,
            QuotaExceeded,
            UnsupportedMediaType,
            InvalidParts,
            SizeMismatch,
            Sha256Mismatch,
            CorruptImage,
            ImageTooLarge,
            UploadLocked,
            StorageUnavailable,
            ServerBusy,
        ),
    },
)
async def complete_upload(
    upload_id: uuid.UUID,
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    uow: UnitOfWorkDep,
    state: StateDep,
    signer: SignerDep,
    body: Annotated[CompleteIn | None, Body()] = None,
) -> ImageOut:
    """Every byte is uploaded: assemble, validate and store the image (`201`; `200` for bytes
    already stored, or when repeated). A refusal rejects the upload and deletes its bytes."""
    parts = [(part.number, part.etag) for part in (body.parts or [])] if body else []
    lease = holding(state.sessions, session, state.settings, owner, upload_id, UploadKind.DIRECT)
    async with lease as (upload, hold):
        assert hold is not None
        image, created = await _completed(state, session, uow, owner, upload, hold.lease_id, parts)
        await session.commit()  # before the lease is let go
        await uow.committed()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return ImageOut.of(image, signer)


async def _completed(
    state: AppState,
    session: AsyncSession,
    uow: UnitOfWork,
    owner: uuid.UUID,
    upload: Upload,
    lease_id: uuid.UUID,
    parts: list[tuple[int, str]],
) -> tuple[Image, bool]:
    """The leased upload's image: again if accepted, else assembled (if still receiving) and
    finalized (also what a `validating` upload a crash left behind needs)."""
    if upload.state == UploadState.ACCEPTED:
        return await direct.accepted_image(session, owner, upload), False
    direct.check_live(upload)
    if upload.state == UploadState.RECEIVING:
        try:
            upload = await direct.assemble(session, uow, state.store, upload, lease_id, parts)
        except MediaError:
            if upload.state == UploadState.REJECTED:
                await session.commit()
                await uow.committed()
            raise
        await session.commit()  # a retry after a 5xx finalizes again, without assembling
    return await finalize(state, session, uow, upload)


@router.get("/{upload_id}", responses=problem_responses(NotFound))
async def get_upload(upload_id: uuid.UUID, owner: CurrentOwner, session: SessionDep) -> UploadOut:
    """Where an upload (tus or direct) stands: its offset, state, image or error."""
    return UploadOut.of(await direct.get(session, owner, upload_id))
