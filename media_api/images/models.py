"""Image and tag rows (job rows live in `media_api.jobs.models`)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from media_api.accounts.models import Owner
from media_api.db import Base, Timestamped, UUIDPk, text_enum
from media_api.jobs.models import ImageJob


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


TITLE_MAX = 300  # characters of an image title

# Capture-time order puts images without one after the rest: NULL sorts as -infinity, in one
# expression the listing's index and its keyset share (images.repository).
TAKEN_ORDER = "coalesce(taken_at, '-infinity'::timestamptz)"
# Each perceptual hash in four 16-bit bands, each indexed: a near-duplicate within distance t
# differs from the hash in at most floor(t / 4) bits of some band (multi-index hashing).
HASH_COLUMNS = ("phash", "phash_centre")
BANDS = 4


def band_expression(column: str, band: int) -> str:
    """One band of a hash column, exactly as its index holds it."""
    return f"(({column} >> {16 * band}) & 65535)"


def _band_indexes() -> list[Index]:
    # Not partial: Postgres keeps statistics of a plain expression index's values, and without
    # them it takes each probe for 0.5 % of the rows and scans the table (docs/benchmarks.md).
    return [
        Index(
            f"ix_images_{column}_band{band}",
            "owner_id",
            text(band_expression(column, band)),
        )
        for column in HASH_COLUMNS
        for band in range(BANDS)
    ]


class ImageStatus(enum.StrEnum):
    """`processing` until the variants exist, then `ready`; `failed` carries an error code."""

    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Image(UUIDPk, Timestamped, Base):
    """One uploaded original; its bytes live in S3 under `original_key`."""

    __tablename__ = "images"
    __table_args__ = (
        # Same bytes from the same owner are one image (the 200 "already uploaded" path).
        UniqueConstraint("owner_id", "sha256"),
        # Keyset pagination walks (owner, created_at, id) newest first.
        Index("ix_images_owner_created", "owner_id", "created_at", "id"),
        Index("ix_images_owner_taken", "owner_id", text(TAKEN_ORDER), "id"),
        *_band_indexes(),
        CheckConstraint("size_bytes >= 0", name="size_nonnegative"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    status: Mapped[ImageStatus] = mapped_column(
        text_enum(ImageStatus, "image_status"), default=ImageStatus.PROCESSING
    )
    error_code: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    original_filename: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    original_key: Mapped[str] = mapped_column(String(512))
    # Written by the thumbnails job, with status=ready, in one transaction.
    placeholder: Mapped[str | None] = mapped_column(String(100))
    # [{name, key, width, height, content_type, size}] - kept on the row so a listing page is
    # one query, with no join or N+1 for signed variant URLs.
    variants: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    # Written by the tagging job: the moderation model's score and whether it passed the
    # configured threshold (None until tagged).
    nsfw: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool | None] = mapped_column(Boolean)
    # Read from the original's metadata by the thumbnails job (imaging.photo_facts): the capture
    # time as a column to sort and filter on, the other facts as JSON (None until read).
    taken_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    photo: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # 64-bit perceptual hashes of the upright picture and of its centre (imaging.similarity),
    # signed as bigint.
    phash: Mapped[int | None] = mapped_column(BigInteger)
    phash_centre: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    # The owner's choice to show the photo's location; loaded only by the detail queries.
    expose_location: Mapped[bool] = column_property(
        select(Owner.expose_location)
        .where(Owner.id == owner_id)
        .correlate_except(Owner)
        .scalar_subquery(),
        deferred=True,
    )
    # Near-duplicate ids for the detail view, nearest first (loaded by the detail queries).
    duplicates: Mapped[list[ImageDuplicate]] = relationship(
        primaryjoin=lambda: Image.id == ImageDuplicate.image_id,
        foreign_keys=lambda: [ImageDuplicate.image_id],
        viewonly=True,
        order_by=lambda: (ImageDuplicate.distance, ImageDuplicate.other_id),
    )
    jobs: Mapped[list[ImageJob]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    # Written only by the tagging worker; read here for the detail view.
    tags: Mapped[list[ImageTag]] = relationship(
        viewonly=True, order_by=lambda: ImageTag.confidence.desc()
    )


class ImageDuplicate(Base):
    """Two images of one owner whose perceptual hashes are within the threshold; written in
    both directions by the thumbnails job, gone with either image."""

    __tablename__ = "image_duplicates"
    __table_args__ = (Index("ix_image_duplicates_other", "other_id"),)

    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    other_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    distance: Mapped[int] = mapped_column(SmallInteger)
