"""Alembic migrations; a package so the scripts ship inside the installed distribution."""
