"""Tag rows, shaped for the `?tag=` listing filter."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import DateTime, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base


class ImageTag(Base):
    """One tag of one image, with the model that produced it (a new model can re-tag).

    `owner_id` and `image_created_at` copy the image's, so `GET /v1/images?tag=cat` walks one
    index in keyset order, newest first, instead of filtering every image of the owner.
    """

    __tablename__ = "image_tags"
    __table_args__ = (
        Index("ix_image_tags_listing", "owner_id", "name", "image_created_at", "image_id"),
    )

    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    image_created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # "label" (a model class) or "category" (derived from the label hierarchy).
    kind: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
