"""Upload rows: one per tus or direct upload, its progress, quota reservation and lease."""

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
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk, text_enum
from media_api.images.models import TITLE_MAX


class UploadKind(enum.StrEnum):
    TUS = "tus"
    DIRECT = "direct"


class UploadState(enum.StrEnum):
    """`receiving` until the last byte, `validating` while finalized, then one of the ends."""

    RECEIVING = "receiving"
    VALIDATING = "validating"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"


LIVE_STATES = (UploadState.RECEIVING, UploadState.VALIDATING)
ENDED_STATES = (UploadState.ACCEPTED, UploadState.REJECTED, UploadState.EXPIRED)


class Upload(UUIDPk, Timestamped, Base):
    """An upload not yet (or just) turned into an image; the bytes sit under the quarantine
    prefix, the part of them below one S3 part in `tail` (see docs/uploads-design.md)."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_owner_created", "owner_id", "created_at"),
        # The sweep: live uploads past expiry, and ended ones old enough to delete.
        Index(
            "ix_uploads_live_expires",
            "expires_at",
            postgresql_where=text("state IN ('receiving', 'validating')"),
        ),
        Index(
            "ix_uploads_ended_updated",
            "updated_at",
            postgresql_where=text("state IN ('accepted', 'rejected', 'expired')"),
        ),
        CheckConstraint("length > 0", name="length_positive"),
        CheckConstraint("received >= 0 AND received <= length", name="received_within_length"),
        CheckConstraint("reserved_bytes >= 0", name="reserved_nonnegative"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    kind: Mapped[UploadKind] = mapped_column(text_enum(UploadKind, "upload_kind"))
    state: Mapped[UploadState] = mapped_column(
        text_enum(UploadState, "upload_state"), default=UploadState.RECEIVING
    )
    length: Mapped[int] = mapped_column(BigInteger)
    # The tus offset ("offset" is an SQL keyword): bytes stored, in parts and the tail.
    received: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # What this upload holds of the owner's quota; zeroed by the statement that gives it back.
    reserved_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    gallery_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("galleries.id", ondelete="SET NULL")
    )
    # The raw Upload-Metadata header, echoed on HEAD ("metadata" is taken by the declarative base).
    upload_metadata: Mapped[str | None] = mapped_column("metadata", String(4096))
    content_type: Mapped[str | None] = mapped_column(String(100))
    object_key: Mapped[str] = mapped_column(String(512))
    s3_upload_id: Mapped[str | None] = mapped_column(String(1024))
    # [{"n": 1, "size": 8388608, "etag": "..."}] of the parts sent.
    parts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    next_part: Mapped[int] = mapped_column(Integer, server_default=text("1"), default=1)
    tail: Mapped[bytes | None] = mapped_column(LargeBinary)
    expected_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    image_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The lock across API processes (statements.acquire_lease).
    lease_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    takeover_wanted: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"), default=False
    )
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
