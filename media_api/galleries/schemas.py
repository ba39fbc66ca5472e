"""Request and response shapes for galleries."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import MISSING, BaseModel, ConfigDict, Field

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
    model_config = ConfigDict(from_attributes=True)  # read from a Gallery row

    id: uuid.UUID
    name: str
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class GalleryPage(BaseModel):
    items: list[GalleryOut]
    next_cursor: str | None
    total: int | None = None
