"""Run Alembic from code, so the installed package migrates without an alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from media_api.settings import Settings


def alembic_config(settings: Settings) -> Config:
    """An Alembic config pointing at the packaged scripts and the configured database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = settings.sync_database_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    command.upgrade(alembic_config(settings), revision)
