"""SQL for owners and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Update, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from media_api.accounts.models import ApiKey, Owner


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
    """Record use, at most once a minute per key, so auth does not write on every request.

    SKIP LOCKED: when a concurrent request of the same key is already recording it, this one
    does not wait for that request's transaction (an upload can last seconds)."""
    now = dt.datetime.now(dt.UTC)
    stale = (
        select(ApiKey.id)
        .where(ApiKey.id == key_id)
        .where(
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - dt.timedelta(minutes=1))
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(update(ApiKey).where(ApiKey.id == stale).values(last_used_at=now))


async def owner_by_email(session: AsyncSession, email: str) -> Owner | None:
    """The owner with this email, if any."""
    return (await session.execute(select(Owner).where(Owner.email == email))).scalar_one_or_none()


async def owner_by_id(session: AsyncSession, owner_id: uuid.UUID) -> Owner | None:
    return await session.get(Owner, owner_id)


async def owner_exists(session: AsyncSession, owner_id: uuid.UUID) -> bool:
    """True while the owner row exists (a token can outlive a deleted account)."""
    return await session.get(Owner, owner_id) is not None


async def list_keys(session: AsyncSession, owner_id: uuid.UUID) -> list[ApiKey]:
    """The owner's unrevoked keys, newest first."""
    stmt = (
        select(ApiKey)
        .where(ApiKey.owner_id == owner_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list((await session.execute(stmt)).scalars())


async def revoke_key(session: AsyncSession, owner_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Mark one of the owner's keys revoked; False when there is no such active key."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.owner_id == owner_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=dt.datetime.now(dt.UTC))
        .returning(ApiKey.id)
    )
    return result.scalar_one_or_none() is not None


async def bytes_held(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """Bytes counted against the quota right now, stored plus reserved by unfinished uploads
    (a cheap early check; `reserve_bytes` is the real one)."""
    used = await session.scalar(
        select(Owner.bytes_used + Owner.bytes_reserved).where(Owner.id == owner_id)
    )
    return int(used or 0)


def count_bytes(
    owner_id: uuid.UUID, amount: int, quota: int, counter: InstrumentedAttribute[int]
) -> Update:
    """Add `amount` to `counter` (`Owner.bytes_used` or `Owner.bytes_reserved`) unless stored
    plus reserved bytes would then pass `quota` (0 = no quota); returns the owner's id, no row
    when refused. The row lock lasts until commit."""
    stmt = update(Owner).where(Owner.id == owner_id).values({counter: counter + amount})
    if quota:
        stmt = stmt.where(Owner.bytes_used + Owner.bytes_reserved + amount <= quota)
    return stmt.returning(Owner.id)


async def reserve_bytes(
    session: AsyncSession, owner_id: uuid.UUID, amount: int, quota: int
) -> bool:
    """Atomically count `amount` more stored bytes unless the quota refuses them; call it right
    before the insert it pays for (the owner row stays locked until commit)."""
    stmt = count_bytes(owner_id, amount, quota, Owner.bytes_used)
    return await session.scalar(stmt) is not None


async def release_bytes(session: AsyncSession, owner_id: uuid.UUID, amount: int) -> None:
    """Give back the bytes of a deleted image."""
    await session.execute(
        update(Owner)
        .where(Owner.id == owner_id)
        .values(bytes_used=func.greatest(Owner.bytes_used - amount, 0))
    )
