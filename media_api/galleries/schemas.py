"""Request and response shapes for galleries."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import MISSING, BaseModel, Field

from media_api.galleries.models import Gallery
from media_api.text import multi_line, single_line

Name = Annotated[str, Field(min_length=1, max_length=200), single_line]
Description = Annotated[str, Field(max_length=2000), multi_line]


class GalleryIn(BaseModel):
    name: Name
    description: Description | None = None


class GalleryPatch(BaseModel):
    """Only the fields sent are changed; a gallery always has a name (`null` is refused), a
    description can be removed with `null`."""

    name: Name | MISSING = MISSING
    description: Description | None = None


class GalleryOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, gallery: Gallery) -> GalleryOut:
        return cls(
            id=gallery.id,
            name=gallery.name,
            description=gallery.description,
            created_at=gallery.created_at,
            updated_at=gallery.updated_at,
        )


class GalleryPage(BaseModel):
    items: list[GalleryOut]
    next_cursor: str | None
    total: int | None = None
