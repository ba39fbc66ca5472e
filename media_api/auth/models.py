"""Owner rows: every image and gallery belongs to exactly one owner."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk


class Owner(UUIDPk, Timestamped, Base):
    """An account; password_hash stays empty for owners that only use API keys."""

    __tablename__ = "owners"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
