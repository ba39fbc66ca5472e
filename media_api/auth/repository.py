"""SQL for owners and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.auth.models import ApiKey, Owner


async def add_owner(session: AsyncSession, email: str, password_hash: str | None = None) -> Owner:
    """Insert an owner and flush, so its id is usable at once."""
    owner = Owner(email=email, password_hash=password_hash)
    session.add(owner)
    await session.flush()
    return owner


async def add_api_key(
    session: AsyncSession, owner_id: uuid.UUID, name: str, prefix: str, secret_hash: bytes
) -> ApiKey:
    """Insert a key row (the secret itself is never stored)."""
    key = ApiKey(owner_id=owner_id, name=name, prefix=prefix, secret_hash=secret_hash)
    session.add(key)
    await session.flush()
    return key


async def active_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    """The unrevoked key with this prefix, if any."""
    stmt = select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def touch_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Record use, at most once a minute per key, so auth does not write on every request."""
    now = dt.datetime.now(dt.UTC)
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - dt.timedelta(minutes=1))
        )
        .values(last_used_at=now)
    )


async def owner_by_email(session: AsyncSession, email: str) -> Owner | None:
    """The owner with this email, if any."""
    return (await session.execute(select(Owner).where(Owner.email == email))).scalar_one_or_none()
