"""HTTP routes for images: parse, call the service, shape the response."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from media_api.api.deps import (
    CurrentOwner,
    Cursor,
    DateTime,
    Limit,
    SessionDep,
    SettingsDep,
    SignerDep,
    StateDep,
    StoreDep,
    Tag,
    UnitOfWorkDep,
    upload_rate_limit,
)
from media_api.errors import (
    MediaError,
    NotFound,
    ServerBusy,
    ServiceUnavailable,
    ValidationFailed,
    is_unreachable,
    problem_responses,
)
from media_api.images import service
from media_api.images.errors import (
    FileTooLarge,
    IncompleteUpload,
    InvalidMultipart,
    MissingFile,
    ProcessingInProgress,
    QuotaExceeded,
    StorageUnavailable,
    VariantNotReady,
)
from media_api.images.models import TITLE_MAX, ImageStatus
from media_api.images.multipart import FORM_OVERHEAD_BYTES
from media_api.images.repository import ImageFilter, SortBy
from media_api.images.schemas import (
    ImageOut,
    ImagePage,
    ImagePatch,
    ImageSummary,
    SimilarImage,
    SimilarPage,
)
from media_api.imaging.probe import (
    CorruptImage,
    EmptyFile,
    ImageTooLarge,
    ProbeError,
    UnsupportedMediaType,
)
from media_api.metrics import counted
from media_api.pagination import DEFAULT_LIMIT, InvalidCursor
from media_api.settings import Settings
from media_api.storage.signing import Signer
from media_api.text import SINGLE_LINE_PATTERN, SingleLine

router = APIRouter(prefix="/v1/images", tags=["images"])

Sort = Annotated[
    SortBy, Query(description="`taken_at`: by capture time; images without one come last.")
]
HasDuplicates = Annotated[
    bool | None, Query(description="Only images with (true) or without (false) near-duplicates.")
]

REDIRECT = {
    "description": "To a fresh signed URL (a presigned S3 GET).",
    "headers": {"Location": {"description": "The signed URL.", "schema": {"type": "string"}}},
}

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {
                            "type": "string",
                            "maxLength": TITLE_MAX,
                            "pattern": SINGLE_LINE_PATTERN,
                        },
                        "gallery_id": {"type": "string", "format": "uuid"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    dependencies=[Depends(upload_rate_limit)],
    responses={
        200: {"description": "Same bytes already uploaded: the existing image.", "model": ImageOut},
        **problem_responses(
            InvalidMultipart,
            MissingFile,
            EmptyFile,
            IncompleteUpload,
            NotFound,  # gallery_id names no gallery of the caller's
            FileTooLarge,
            QuotaExceeded,
            UnsupportedMediaType,
            ValidationFailed,  # a text field: control characters, too long, not a UUID
            CorruptImage,
            ImageTooLarge,
            StorageUnavailable,
            ServerBusy,
        ),
    },
)
async def upload_image(
    request: Request,
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    store: StoreDep,
    uow: UnitOfWorkDep,
    settings: SettingsDep,
    signer: SignerDep,
    state: StateDep,
) -> ImageOut:
    """Upload one image (multipart field `file`); validated, stored, then processed."""
    # A declared length beyond the limit is refused before reading a byte of the body.
    declared = request.headers.get("content-length")
    limit = settings.max_upload_bytes
    metrics = state.metrics
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD_BYTES:
        metrics.uploads.labels(outcome="rejected", code=FileTooLarge.code).inc()
        raise FileTooLarge(f"the file is over the limit of {limit} bytes")
    # End the authentication's transaction now: the body may take seconds to arrive, and an
    # idle transaction would hold a pooled connection (and row locks) all that time.
    await session.commit()
    with metrics.upload_seconds.time():
        try:
            image, created = await service.upload(
                session,
                store,
                uow,
                state.validator,
                settings,
                owner,
                counted(request.stream(), metrics.upload_received_bytes),
                request.headers.get("content-type"),
            )
        except ClientDisconnect as exc:
            metrics.uploads.labels(outcome="rejected", code=IncompleteUpload.code).inc()
            raise IncompleteUpload("the client disconnected before the upload finished") from exc
        except (MediaError, ProbeError) as exc:
            metrics.uploads.labels(outcome="rejected", code=exc.code).inc()
            raise
        except Exception as exc:
            # A dependency out of reach (answered 503) or a bug (500): counted, so it can alert.
            code = ServiceUnavailable.code if is_unreachable(exc) else "internal-error"
            metrics.uploads.labels(outcome="error", code=code).inc()
            raise
    metrics.uploads.labels(outcome="created" if created else "duplicate", code="").inc()
    if created:
        metrics.upload_bytes.inc(image.size_bytes)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return ImageOut.of(image, signer)


@router.get("", responses=problem_responses(InvalidCursor, NotFound))
async def list_images(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    signer: SignerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Sort = SortBy.CREATED_AT,
    status_: Annotated[ImageStatus | None, Query(alias="status")] = None,
    tag: Tag = None,
    gallery_id: uuid.UUID | None = None,
    created_before: DateTime | None = None,
    created_after: DateTime | None = None,
    taken_before: DateTime | None = None,
    taken_after: DateTime | None = None,
    has_duplicates: HasDuplicates = None,
    include_total: bool = False,
) -> ImagePage:
    """The caller's images, newest first (by upload, or by capture time), a keyset page at a
    time."""
    filters = ImageFilter(
        status=status_,
        tag=tag,
        gallery_id=gallery_id,
        created_before=created_before,
        created_after=created_after,
        taken_before=taken_before,
        taken_after=taken_after,
        has_duplicates=has_duplicates,
    )
    return await image_page(
        session, owner, filters, settings, signer, cursor, limit, include_total, sort
    )


async def image_page(
    session: AsyncSession,
    owner: uuid.UUID,
    filters: ImageFilter,
    settings: Settings,
    signer: Signer,
    cursor: str | None,
    limit: int,
    include_total: bool,
    sort: SortBy = SortBy.CREATED_AT,
) -> ImagePage:
    """One page of the owner's images as the listing routes answer it."""
    page = await service.list_images(
        session,
        owner,
        filters,
        cursor=cursor,
        limit=limit,
        include_total=include_total,
        secret=settings.jwt_secret,
        sort=sort,
    )
    return ImagePage.of(page.items, page.next_cursor, page.total, signer)


@router.get("/{image_id}", responses=problem_responses(NotFound))
async def get_image(
    image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep, signer: SignerDep
) -> ImageOut:
    """An image with its processing state and signed URLs."""
    return ImageOut.of(await service.get(session, owner, image_id), signer)


@router.get("/{image_id}/similar", responses=problem_responses(NotFound))
async def similar_images(
    image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep, signer: SignerDep
) -> SimilarPage:
    """The owner's near-duplicates of this image (resized, recompressed or cropped copies),
    nearest first; empty until the thumbnails job has hashed it."""
    pairs = await service.similar(session, owner, image_id)
    return SimilarPage(
        items=[
            SimilarImage(id=image.id, distance=distance, image=ImageSummary.of(image, signer))
            for image, distance in pairs
        ]
    )


@router.get(
    "/{image_id}/original",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={307: REDIRECT, **problem_responses(NotFound)},
)
async def get_original(
    image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep, signer: SignerDep
) -> RedirectResponse:
    """Redirect to a fresh signed URL of the original (the API never proxies bytes)."""
    image = await service.get(session, owner, image_id)
    signed = signer.original(image.original_key, image.content_type, image.original_filename)
    return RedirectResponse(signed.url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get(
    "/{image_id}/variants/{name}",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={307: REDIRECT, **problem_responses(NotFound, VariantNotReady)},
)
async def get_variant(
    image_id: uuid.UUID,
    name: SingleLine,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    signer: SignerDep,
) -> RedirectResponse:
    """Redirect to a fresh signed URL of one variant; 404 `variant-not-ready` until made."""
    image = await service.get(session, owner, image_id)
    presets = [preset.name for preset in settings.variant_presets]
    variant = service.variant_of(image, name, presets)
    signed = signer.variant(variant["key"], variant["content_type"], image.original_filename, name)
    return RedirectResponse(signed.url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.patch("/{image_id}", responses=problem_responses(NotFound))
async def update_image(
    image_id: uuid.UUID,
    body: ImagePatch,
    owner: CurrentOwner,
    session: SessionDep,
    signer: SignerDep,
) -> ImageOut:
    """Change the title (`null` or blank removes it); fields not sent stay as they are."""
    changes = body.model_dump(exclude_unset=True)
    return ImageOut.of(await service.update(session, owner, image_id, changes), signer)


@router.post(
    "/{image_id}/reprocess",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(upload_rate_limit)],
    responses=problem_responses(NotFound, ProcessingInProgress),
)
async def reprocess_image(
    image_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    uow: UnitOfWorkDep,
    settings: SettingsDep,
    signer: SignerDep,
) -> ImageOut:
    """Run the image's jobs again (after a preset change, or to retry a failure); 409 while
    one of them is running."""
    image = await service.reprocess(session, uow, settings, owner, image_id)
    return ImageOut.of(image, signer)


@router.delete(
    "/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(NotFound)
)
async def delete_image(
    image_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    store: StoreDep,
    uow: UnitOfWorkDep,
) -> None:
    """Delete the image, its original and every variant."""
    await service.delete(session, store, uow, owner, image_id)
