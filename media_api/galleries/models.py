"""Gallery rows and gallery membership."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import DateTime, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk


class Gallery(UUIDPk, Timestamped, Base):
    """An album; deleting it leaves its images alone."""

    __tablename__ = "galleries"
    __table_args__ = (Index("ix_galleries_owner_created", "owner_id", "created_at", "id"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class GalleryImage(Base):
    """Membership: an image can be in many galleries, once each."""

    __tablename__ = "gallery_images"
    __table_args__ = (
        # Listing a gallery's images, and removing an image from all galleries on delete.
        Index("ix_gallery_images_image", "image_id"),
    )

    gallery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    added_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
