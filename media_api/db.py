"""Declarative base, engines, sessions and migrations (Alembic from code, no alembic.ini)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Enum, MetaData, func
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import migrations
from media_api.settings import Settings

# Stable constraint names, so Alembic autogenerate and hand-written migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every mapped table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UUIDPk:
    """Random UUID primary keys: ids are safe to expose and never reveal counts."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamped:
    """Server-side timestamps, so every writer (API, workers, SQL) agrees on the clock."""

    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


def text_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A StrEnum column stored as text with a CHECK, not a Postgres ENUM type: adding a value
    is then a plain constraint change instead of an ALTER TYPE that cannot run in a
    transaction."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


def create_engine(settings: Settings) -> AsyncEngine:
    """The API's async engine; pool_pre_ping survives a database restart."""
    return create_async_engine(
        settings.async_database_url,
        pool_size=settings.db_pool_size,
        pool_pre_ping=True,
        connect_args={"timeout": settings.db_connect_timeout_seconds},  # asyncpg's
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(settings: Settings) -> Config:
    """An Alembic config pointing at the packaged scripts and the configured database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = settings.sync_database_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    command.upgrade(alembic_config(settings), revision)
