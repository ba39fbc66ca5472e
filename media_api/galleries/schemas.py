"""Request and response shapes for galleries."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, Field

from media_api.galleries.models import Gallery


class GalleryIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


class GalleryPatch(BaseModel):
    """Only the fields sent are changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


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
