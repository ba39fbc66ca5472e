"""Owner rows: every image and gallery belongs to exactly one owner."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk


class Owner(UUIDPk, Timestamped, Base):
    """An account; password_hash stays empty for owners that only use API keys."""

    __tablename__ = "owners"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Bytes of originals stored, kept in step with image rows in the same transactions, so
    # the quota check is one atomic UPDATE instead of a SUM over all of the owner's images.
    bytes_used: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # Bytes held by unfinished uploads (uploads.reserved_bytes); the quota counts both.
    bytes_reserved: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # The last event's number (events.seq): taken with this row locked, so an owner's
    # events commit in order.
    event_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    # Whether the API shows the GPS position read from photos (stored unless
    # MEDIA_STORE_LOCATION is false): off until the owner turns it on.
    expose_location: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"), default=False
    )
    # The next slot of this owner's jobs in the fair claim order (images.repository).
    job_clock: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(UUIDPk, Timestamped, Base):
    """A long-lived credential for programs; only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    # The public part of the key, used to find the row without scanning hashes.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
