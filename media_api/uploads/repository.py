"""The API's upload SQL (async): the shared statements of `statements.py`, executed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts.models import Owner
from media_api.accounts.repository import count_bytes
from media_api.storage import keys
from media_api.uploads import statements
from media_api.uploads.models import Upload, UploadKind

# ORM statements returning rows refresh objects the session already holds.
_FRESH = {"populate_existing": True}
# Writes of the receiver, which mirrors them on the row object itself (`receiver._stored`):
# synchronizing would expire the columns set from the database clock.
_MIRRORED = {"synchronize_session": False}


async def create(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    kind: UploadKind,
    length: int,
    quota: int,
    expires_in: dt.timedelta,
    filename: str | None = None,
    title: str | None = None,
    gallery_id: uuid.UUID | None = None,
    metadata: str | None = None,
    expected_sha256: bytes | None = None,
) -> Upload | None:
    """A new upload holding `length` bytes of the owner's quota (0 = no quota), reserved in
    the same transaction; None when the quota refuses it (nothing written)."""
    held = count_bytes(owner_id, length, quota, Owner.bytes_reserved)
    if await session.scalar(held) is None:
        return None
    upload_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": upload_id,
        "owner_id": owner_id,
        "kind": kind,
        "length": length,
        "reserved_bytes": length,
        "object_key": keys.quarantine_key(owner_id, upload_id),
        "filename": filename,
        "title": title,
        "gallery_id": gallery_id,
        "upload_metadata": metadata,
        "expected_sha256": expected_sha256,
        "expires_at": func.now() + expires_in,
    }
    stmt = statements.insert_upload(values).returning(Upload)
    upload: Upload = (await session.scalars(stmt)).one()
    return upload


async def get(session: AsyncSession, owner_id: uuid.UUID, upload_id: uuid.UUID) -> Upload | None:
    """One upload of this owner, as stored now; another owner's id reads as absent."""
    stmt = statements.get(owner_id, upload_id).execution_options(**_FRESH)
    return (await session.scalars(stmt)).one_or_none()


async def acquire_lease(
    session: AsyncSession,
    owner_id: uuid.UUID,
    upload_id: uuid.UUID,
    lease_id: uuid.UUID,
    duration: dt.timedelta,
) -> Upload | None:
    """The upload, leased to `lease_id`; None when another holder has it (or no such row)."""
    stmt = statements.acquire_lease(owner_id, upload_id, lease_id, duration).returning(Upload)
    return (await session.scalars(stmt, execution_options=_FRESH)).one_or_none()


async def want_takeover(session: AsyncSession, owner_id: uuid.UUID, upload_id: uuid.UUID) -> bool:
    """Ask the holder to let go; False when there is no such upload."""
    return await session.scalar(statements.want_takeover(owner_id, upload_id)) is not None


async def renew_lease(
    session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID, duration: dt.timedelta
) -> bool | None:
    """Extend our lease: whether another request wants it, or None when it is lost."""
    wanted: bool | None = await session.scalar(
        statements.renew_lease(upload_id, lease_id, duration)
    )
    return wanted


async def release_lease(session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID) -> None:
    await session.execute(statements.release_lease(upload_id, lease_id))


async def record_progress(
    session: AsyncSession,
    upload_id: uuid.UUID,
    lease_id: uuid.UUID,
    *,
    expected: int,
    received: int,
    parts: list[dict[str, Any]],
    tail: bytes | None,
    expires_in: dt.timedelta,
) -> dt.datetime | None:
    """Commit progress while we hold the lease and the offset is `expected`: the new expiry,
    or None (nothing written) otherwise."""
    stmt = statements.record_progress(
        upload_id, lease_id, expected, received, parts, tail, expires_in
    )
    expires_at: dt.datetime | None = await session.scalar(stmt, execution_options=_MIRRORED)
    return expires_at


async def take_part_number(
    session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID
) -> int | None:
    """The next S3 part number for this upload; None when the lease is lost."""
    stmt = statements.take_part_number(upload_id, lease_id)
    number: int | None = await session.scalar(stmt, execution_options=_MIRRORED)
    return number


async def set_multipart(
    session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID, s3_upload_id: str
) -> bool:
    """Record the multipart upload; False when the lease is lost (the caller aborts it)."""
    stmt = statements.set_multipart(upload_id, lease_id, s3_upload_id)
    return await session.scalar(stmt, execution_options=_MIRRORED) is not None


async def set_content_type(
    session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID, content_type: str
) -> bool:
    """Record the sniffed type; False when the lease is lost."""
    stmt = statements.set_content_type(upload_id, lease_id, content_type)
    return await session.scalar(stmt, execution_options=_MIRRORED) is not None


async def delete(session: AsyncSession, upload_id: uuid.UUID) -> None:
    """Remove the row (give its reservation back first)."""
    await session.execute(statements.delete_upload(upload_id))


async def accept(
    session: AsyncSession, upload_id: uuid.UUID, image_id: uuid.UUID, sha256: bytes
) -> Upload:
    """Mark the upload accepted as `image_id`; returns it as stored now."""
    stmt = statements.accept(upload_id, image_id, sha256).returning(Upload)
    return (await session.scalars(stmt, execution_options=_FRESH)).one()


async def reject(session: AsyncSession, upload_id: uuid.UUID, error: dict[str, Any]) -> Upload:
    """Mark the upload rejected with the problem `error`; returns it as stored now."""
    stmt = statements.reject(upload_id, error).returning(Upload)
    return (await session.scalars(stmt, execution_options=_FRESH)).one()


async def release_reservation(session: AsyncSession, upload_ids: Collection[uuid.UUID]) -> int:
    """Give back what these uploads hold of the quota; the bytes given back (0 on a repeat)."""
    stmt = statements.release_reservation(Upload.id.in_(upload_ids))
    # No ORM synchronization: its row processing cannot read the CTE's RETURNING columns.
    rows = await session.execute(stmt, execution_options={"synchronize_session": False})
    return sum(int(amount) for _, amount in rows.all())


async def expire(session: AsyncSession, limit: int, error: dict[str, Any]) -> list[uuid.UUID]:
    """Mark up to `limit` lapsed live uploads `expired` and give back their reservations."""
    expired = list((await session.scalars(statements.expire(limit, error))).all())
    if expired:
        await release_reservation(session, expired)
    return expired


async def reservation_drift(session: AsyncSession) -> list[tuple[uuid.UUID, int, int]]:
    """(owner, bytes_reserved, what its live uploads hold) wherever the two differ."""
    rows = await session.execute(statements.reservation_drift())
    return [(owner, int(counted), int(held)) for owner, counted, held in rows.all()]


async def repair_reservations(session: AsyncSession, owner_ids: list[uuid.UUID]) -> None:
    """Set these owners' bytes_reserved to what their live uploads hold (rows locked first,
    so a creation in flight commits before the sum is taken)."""
    await session.execute(select(Owner.id).where(Owner.id.in_(owner_ids)).with_for_update())
    for stmt in statements.repair_reservations(owner_ids):
        await session.execute(stmt)


# Expiry and gc.


async def lapsed(session: AsyncSession) -> list[uuid.UUID]:
    """Live uploads past their expiry (the sweep is behind on them)."""
    return list((await session.scalars(statements.lapsed())).all())


async def live_storage(session: AsyncSession) -> tuple[set[str], set[str]]:
    """The object keys and multipart upload ids of every live upload (gc leaves them alone)."""
    rows = (await session.execute(statements.live_storage())).all()
    return {key for key, _ in rows}, {upload_id for _, upload_id in rows if upload_id}


# Direct uploads.


async def start_multipart(
    session: AsyncSession, upload_id: uuid.UUID, s3_upload_id: str, parts: list[dict[str, Any]]
) -> None:
    """Record the multipart upload and its plan of parts."""
    await session.execute(statements.start_multipart(upload_id, s3_upload_id, parts))


async def start_validating(
    session: AsyncSession, upload_id: uuid.UUID, lease_id: uuid.UUID
) -> Upload | None:
    """Mark the upload `validating` with every byte received; None if we lost the lease."""
    stmt = statements.start_validating(upload_id, lease_id).returning(Upload)
    return (await session.scalars(stmt, execution_options=_FRESH)).one_or_none()
