"""Request and response shapes of direct uploads and of an upload's state."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from media_api.images.schemas import Title
from media_api.storage.s3 import MAX_PARTS
from media_api.text import single_line
from media_api.uploads.models import Upload, UploadKind, UploadState

Sha256Hex = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="The file's SHA-256, in hex.")
]


class DirectUploadIn(BaseModel):
    """A file about to be uploaded straight to storage."""

    model_config = ConfigDict(extra="forbid")

    # Cleaned (control characters dropped) and cut to 255 characters, never refused.
    filename: str = Field(max_length=1024)
    size: int = Field(ge=1, description="Bytes; at most MEDIA_MAX_UPLOAD_BYTES.")
    sha256: Sha256Hex | None = None
    title: Title | None = None
    gallery_id: uuid.UUID | None = None


class PartUrl(BaseModel):
    number: int
    url: str = Field(description="A presigned UploadPart URL for exactly this part's bytes.")


class UploadOffer(BaseModel):
    """A direct upload and where its bytes go. Up to one part: `url`, PUT the whole file there
    with its exact `Content-Length`. Larger files: `parts` and `part_size`, PUT bytes
    [(n-1) * part_size, n * part_size) of the file to part n's URL and keep each answer's
    `ETag` for `complete`. The fields of the other case are absent."""

    id: uuid.UUID
    url: str | None = Field(default=None, description="One PUT of the whole file.")
    parts: list[PartUrl] | None = Field(default=None, description="One PUT per part.")
    part_size: int | None = Field(default=None, description="Bytes of every part but the last.")
    expires_at: dt.datetime = Field(description="When the URLs and the upload expire.")


class CompletedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1, le=MAX_PARTS)
    etag: Annotated[str, Field(min_length=1, max_length=1024), single_line]


class CompleteIn(BaseModel):
    """Every part with the `ETag` its PUT answered (multipart only; none for a single PUT)."""

    model_config = ConfigDict(extra="forbid")

    parts: list[CompletedPart] | None = Field(default=None, max_length=MAX_PARTS)


class UploadOut(BaseModel):
    """Where an upload stands (tus or direct)."""

    id: uuid.UUID
    kind: UploadKind
    state: UploadState
    offset: int = Field(description="Bytes received so far.")
    length: int
    image_id: uuid.UUID | None = Field(description="The image it became, once accepted.")
    error: dict[str, Any] | None = Field(
        description="The problem document it was rejected (or expired) with."
    )
    expires_at: dt.datetime

    @classmethod
    def of(cls, upload: Upload) -> UploadOut:
        return cls(
            id=upload.id,
            kind=upload.kind,
            state=upload.state,
            offset=upload.received,
            length=upload.length,
            image_id=upload.image_id,
            error=upload.error,
            expires_at=upload.expires_at,
        )
