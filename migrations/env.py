"""Alembic environment: runs against the URL media_api.db hands over (psycopg, sync)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import media_api.models  # noqa: F401 - registers every table on Base.metadata
from media_api.db import Base
from media_api.settings import Settings

config = context.config
url = config.attributes.get("url") or Settings().sync_database_url


def run_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade --sql`)."""
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Apply migrations over a real connection, all in one transaction."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
