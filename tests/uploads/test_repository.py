"""Upload rows against real Postgres: quota reservation, idempotent release, lease, fenced
progress and expiry (each test's transaction rolls back)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import repository as owners
from media_api.accounts.models import Owner
from media_api.uploads import repository
from media_api.uploads.models import Upload, UploadKind, UploadState

DAY = dt.timedelta(days=1)
LEASE = dt.timedelta(seconds=10)
EXPIRED = {"code": "upload-expired"}


async def _owner(db: AsyncSession) -> uuid.UUID:
    return (await owners.add_owner(db, f"{uuid.uuid4()}@uploads.test")).id


async def _create(
    db: AsyncSession,
    owner_id: uuid.UUID,
    length: int = 600,
    *,
    quota: int = 0,
    expires: dt.timedelta = DAY,
) -> Upload:
    upload = await repository.create(
        db, owner_id=owner_id, kind=UploadKind.TUS, length=length, quota=quota, expires_in=expires
    )
    assert upload is not None
    return upload


async def _reserved(db: AsyncSession, owner_id: uuid.UUID) -> int:
    return int(await db.scalar(select(Owner.bytes_reserved).where(Owner.id == owner_id)) or 0)


async def test_reservation_is_refused_over_quota_and_counted_by_the_post_path(
    db: AsyncSession,
) -> None:
    owner_id = await _owner(db)
    upload = await _create(db, owner_id, 600, quota=1000)
    assert (upload.state, upload.received, upload.reserved_bytes) == (UploadState.RECEIVING, 0, 600)
    assert upload.object_key.endswith(f"{owner_id}/{upload.id}")

    refused = await repository.create(
        db, owner_id=owner_id, kind=UploadKind.DIRECT, length=401, quota=1000, expires_in=DAY
    )
    assert refused is None
    assert await _reserved(db, owner_id) == 600
    # The POST path counts the reservation: its early check and its atomic one.
    assert await owners.bytes_held(db, owner_id) == 600
    assert not await owners.reserve_bytes(db, owner_id, 401, 1000)
    assert await owners.reserve_bytes(db, owner_id, 400, 1000)
    assert await owners.bytes_held(db, owner_id) == 1000


async def test_release_gives_back_once(db: AsyncSession) -> None:
    owner_id = await _owner(db)
    one, two = await _create(db, owner_id, 600), await _create(db, owner_id, 300)
    assert await _reserved(db, owner_id) == 900

    assert await repository.release_reservation(db, [one.id, two.id]) == 900
    assert await repository.release_reservation(db, [one.id, two.id]) == 0
    assert await _reserved(db, owner_id) == 0
    again = await repository.get(db, owner_id, one.id)
    assert again is not None
    assert again.reserved_bytes == 0


async def test_a_lease_is_refused_to_another_until_it_lapses(db: AsyncSession) -> None:
    owner_id = await _owner(db)
    upload = await _create(db, owner_id)
    first, second = uuid.uuid4(), uuid.uuid4()

    held = await repository.acquire_lease(db, owner_id, upload.id, first, dt.timedelta(seconds=0.3))
    assert held is not None
    assert held.lease_id == first
    assert await repository.acquire_lease(db, owner_id, upload.id, second, LEASE) is None
    assert await repository.acquire_lease(db, await _owner(db), upload.id, second, LEASE) is None
    assert await repository.want_takeover(db, owner_id, upload.id)
    assert await repository.renew_lease(db, upload.id, first, dt.timedelta(seconds=0.3)) is True
    assert await repository.renew_lease(db, upload.id, second, LEASE) is None
    await repository.release_lease(db, upload.id, second)  # not its lease: nothing changes
    assert await repository.acquire_lease(db, owner_id, upload.id, second, LEASE) is None

    await asyncio.sleep(0.4)  # the first holder stopped renewing
    taken = await repository.acquire_lease(db, owner_id, upload.id, second, LEASE)
    assert taken is not None
    assert (taken.lease_id, taken.takeover_wanted) == (second, False)
    await repository.release_lease(db, upload.id, second)
    assert await repository.acquire_lease(db, owner_id, upload.id, first, LEASE) is not None


async def test_progress_is_fenced_by_lease_and_offset(db: AsyncSession) -> None:
    owner_id = await _owner(db)
    upload = await _create(db, owner_id)
    holder = uuid.uuid4()
    assert await repository.acquire_lease(db, owner_id, upload.id, holder, LEASE) is not None
    part = [{"n": 1, "size": 100, "etag": "e1"}]

    async def progress(lease_id: uuid.UUID, expected: int) -> bool:
        return None is not await repository.record_progress(
            db,
            upload.id,
            lease_id,
            expected=expected,
            received=150,
            parts=part,
            tail=b"t" * 50,
            expires_in=DAY,
        )

    assert not await progress(uuid.uuid4(), 0)  # not the holder
    assert not await progress(holder, 10)  # not the committed offset
    assert await progress(holder, 0)
    assert not await progress(holder, 0)  # a retry of the same write
    stored = await repository.get(db, owner_id, upload.id)
    assert stored is not None
    assert (stored.received, stored.parts, stored.tail) == (150, part, b"t" * 50)


async def test_expiry_takes_only_live_lapsed_unleased_uploads(db: AsyncSession) -> None:
    owner_id = await _owner(db)
    past = -dt.timedelta(minutes=1)
    lapsed = await _create(db, owner_id, 100, expires=past)
    fresh = await _create(db, owner_id, 200)
    ended = await _create(db, owner_id, 300, expires=past)
    leased = await _create(db, owner_id, 400, expires=past)
    await db.execute(
        update(Upload)
        .where(Upload.id == ended.id)
        .values(state=UploadState.ACCEPTED, reserved_bytes=0)
    )
    await db.execute(update(Owner).where(Owner.id == owner_id).values(bytes_reserved=700))
    assert await repository.acquire_lease(db, owner_id, leased.id, uuid.uuid4(), LEASE)

    expired = await repository.expire(db, 100, EXPIRED)
    assert lapsed.id in expired
    assert not {fresh.id, ended.id, leased.id} & set(expired)
    row = await repository.get(db, owner_id, lapsed.id)
    assert row is not None
    assert (row.state, row.tail, row.error, row.reserved_bytes) == (
        UploadState.EXPIRED,
        None,
        EXPIRED,
        0,
    )
    assert await _reserved(db, owner_id) == 600
    assert lapsed.id not in await repository.expire(db, 100, EXPIRED)
