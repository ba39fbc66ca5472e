"""HTTP routes for images: parse, call the service, shape the response."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status
from starlette.requests import ClientDisconnect

from media_api.deps import CurrentOwner, EffectsDep, SessionDep, SettingsDep, StoreDep
from media_api.errors import MediaError
from media_api.images import service
from media_api.images.errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageTooLarge,
    IncompleteUpload,
    InvalidMultipart,
    MissingFile,
    StorageUnavailable,
    UnsupportedMediaType,
)
from media_api.images.ingest import FORM_OVERHEAD_BYTES
from media_api.images.schemas import ImageOut

router = APIRouter(prefix="/v1/images", tags=["images"])

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
                        "title": {"type": "string", "maxLength": service.TITLE_MAX},
                        "gallery_id": {"type": "string", "format": "uuid"},
                    },
                }
            }
        },
    }
}


def _problem_responses(*errors: type[MediaError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries listing the stable problem codes each status can carry."""
    codes: dict[int, list[str]] = {}
    for error in errors:
        codes.setdefault(error.status_code, []).append(f"`{error.code}`")
    return {
        status_code: {
            "description": "problem+json: " + ", ".join(names),
            "content": {"application/problem+json": {}},
        }
        for status_code, names in codes.items()
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "Same bytes already uploaded: the existing image."},
        **_problem_responses(
            InvalidMultipart,
            MissingFile,
            EmptyFile,
            IncompleteUpload,
            FileTooLarge,
            UnsupportedMediaType,
            CorruptImage,
            ImageTooLarge,
            StorageUnavailable,
        ),
    },
)
async def upload_image(
    request: Request,
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    store: StoreDep,
    effects: EffectsDep,
    settings: SettingsDep,
) -> ImageOut:
    """Upload one image (multipart field `file`); validated, stored, then processed."""
    # A declared length beyond the limit is refused before reading a byte of the body.
    declared = request.headers.get("content-length")
    limit = settings.max_upload_bytes
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise FileTooLarge(f"the file is over the limit of {limit} bytes")
    try:
        image, created = await service.upload(
            session,
            store,
            effects,
            settings,
            owner,
            request.stream(),
            request.headers.get("content-type"),
        )
    except ClientDisconnect as exc:
        raise IncompleteUpload("the client disconnected before the upload finished") from exc
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return ImageOut.of(image)


@router.get("/{image_id}")
async def get_image(image_id: uuid.UUID, owner: CurrentOwner, session: SessionDep) -> ImageOut:
    """An image with its processing state."""
    return ImageOut.of(await service.get(session, owner, image_id))


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(
    image_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    store: StoreDep,
    effects: EffectsDep,
) -> None:
    """Delete the image, its original and every variant."""
    await service.delete(session, store, effects, owner, image_id)
