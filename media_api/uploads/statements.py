"""Upload SQL, built once as Core statements: the async API and the sync sweep execute them.

Each function returns a statement and runs nothing (`media_api.uploads.repository` executes
them for the API). Leases use the statement's clock, not the transaction's, and are fenced by
`lease_id`: a holder that lost its lease changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    Update,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from media_api.accounts.models import Owner
from media_api.uploads.models import ENDED_STATES, LIVE_STATES, Upload, UploadState


def insert_upload(values: dict[str, Any]) -> Insert:
    """A new upload row (`values` as the model's attributes)."""
    return insert(Upload).values(**values)


def get(owner_id: uuid.UUID, upload_id: uuid.UUID) -> Select[Upload]:
    """One upload of this owner; another owner's id reads as absent."""
    return select(Upload).where(Upload.id == upload_id, Upload.owner_id == owner_id)


def lease_free() -> ColumnElement[bool]:
    """Nobody holds the lease, or its holder let it lapse."""
    return or_(Upload.lease_id.is_(None), Upload.lease_until < func.statement_timestamp())


def acquire_lease(
    owner_id: uuid.UUID, upload_id: uuid.UUID, lease_id: uuid.UUID, duration: dt.timedelta
) -> Update:
    """Take the lease as `lease_id` for `duration` if it is free; no row when it is held."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.owner_id == owner_id, lease_free())
        .values(
            lease_id=lease_id,
            lease_until=func.statement_timestamp() + duration,
            takeover_wanted=False,
        )
    )


def want_takeover(owner_id: uuid.UUID, upload_id: uuid.UUID) -> Update:
    """Ask the holder to let go (it sees this when renewing); returns the id if the row exists."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.owner_id == owner_id)
        .values(takeover_wanted=True)
        .returning(Upload.id)
    )


def renew_lease(upload_id: uuid.UUID, lease_id: uuid.UUID, duration: dt.timedelta) -> Update:
    """Extend our lease; returns `takeover_wanted`, no row when the lease is lost."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id)
        .values(lease_until=func.statement_timestamp() + duration)
        .returning(Upload.takeover_wanted)
    )


def release_lease(upload_id: uuid.UUID, lease_id: uuid.UUID) -> Update:
    """Let go of our lease (nothing happens if another holder has it now)."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id)
        .values(lease_id=None, lease_until=None)
    )


def record_progress(
    upload_id: uuid.UUID,
    lease_id: uuid.UUID,
    expected: int,
    received: int,
    parts: list[dict[str, Any]],
    tail: bytes | None,
    expires_in: dt.timedelta,
) -> Update:
    """Commit what arrived: the new offset, parts and tail, and a later expiry; only while we
    hold the lease and the offset is still `expected`. Returns the new expiry, or no row."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id, Upload.received == expected)
        .values(
            received=received,
            parts=parts,
            tail=tail,
            expires_at=func.now() + expires_in,
            updated_at=func.now(),
        )
        .returning(Upload.expires_at)
    )


def take_part_number(upload_id: uuid.UUID, lease_id: uuid.UUID) -> Update:
    """The next S3 part number, never handed out twice (a stalled holder and the next one
    never write the same part); no row when the lease is lost."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id)
        .values(next_part=Upload.next_part + 1)
        .returning(Upload.next_part - 1)
    )


def set_multipart(upload_id: uuid.UUID, lease_id: uuid.UUID, s3_upload_id: str) -> Update:
    """Record the S3 multipart upload the parts go to; no row when the lease is lost or one
    is recorded already."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id, Upload.s3_upload_id.is_(None))
        .values(s3_upload_id=s3_upload_id)
        .returning(Upload.id)
    )


def set_content_type(upload_id: uuid.UUID, lease_id: uuid.UUID, content_type: str) -> Update:
    """The type sniffed from the first bytes (the object and its parts are stored with it)."""
    return (
        update(Upload)
        .where(Upload.id == upload_id, Upload.lease_id == lease_id)
        .values(content_type=content_type)
        .returning(Upload.id)
    )


def delete_upload(upload_id: uuid.UUID) -> Delete:
    """Remove the row (termination, once its reservation is given back)."""
    return delete(Upload).where(Upload.id == upload_id)


def accept(upload_id: uuid.UUID, image_id: uuid.UUID, sha256: bytes) -> Update:
    """End an upload as the image `image_id` (new, or the owner's copy of the same bytes)."""
    return _end(upload_id, state=UploadState.ACCEPTED, image_id=image_id, sha256=sha256)


def reject(upload_id: uuid.UUID, error: dict[str, Any]) -> Update:
    """End an upload refused: `error` is the problem document it was answered with."""
    return _end(upload_id, state=UploadState.REJECTED, error=error)


def _end(upload_id: uuid.UUID, **values: Any) -> Update:
    # The tail is no use once the upload ended; the reservation is released beside this.
    return (
        update(Upload)
        .where(Upload.id == upload_id)
        .values(tail=None, updated_at=func.now(), **values)
    )


def release_reservation(which: ColumnElement[bool]) -> Update:
    """Give back what the matching uploads hold of their owners' quota, in one statement that
    also zeroes `reserved_bytes`, so a repeated release gives back nothing. Returns
    (owner_id, bytes given back) per owner."""
    # The old amounts, locked: RETURNING only sees the new (zero) value.
    held = (
        select(Upload.id, Upload.owner_id, Upload.reserved_bytes)
        .where(which, Upload.reserved_bytes > 0)
        .with_for_update()
        .cte("held")
    )
    zeroed = (
        update(Upload)
        .where(Upload.id == held.c.id)
        .values(reserved_bytes=0)
        .returning(held.c.owner_id, held.c.reserved_bytes.label("amount"))
        .cte("zeroed")
    )
    per_owner = (
        select(zeroed.c.owner_id, func.sum(zeroed.c.amount).label("amount"))
        .group_by(zeroed.c.owner_id)
        .cte("per_owner")
    )
    return (
        update(Owner)
        .where(Owner.id == per_owner.c.owner_id)
        .values(bytes_reserved=func.greatest(Owner.bytes_reserved - per_owner.c.amount, 0))
        .returning(Owner.id, per_owner.c.amount)
    )


def expire(limit: int, error: dict[str, Any]) -> Update:
    """Live uploads past their expiry whose lease is free, oldest first, at most `limit`,
    skipping rows another transaction holds: `expired`, tail dropped. Returns their ids (the
    caller releases their reservations in the same transaction)."""
    due = (
        select(Upload.id)
        .where(Upload.state.in_(LIVE_STATES), Upload.expires_at < func.now(), lease_free())
        .order_by(Upload.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(Upload)
        .where(Upload.id.in_(due.scalar_subquery()))
        .values(
            state=UploadState.EXPIRED,
            tail=None,
            error=error,
            lease_id=None,
            lease_until=None,
            updated_at=func.now(),
        )
        .returning(Upload.id)
    )


def held_by_live_uploads() -> ColumnElement[int]:
    """What the owner's live uploads hold (correlated to `Owner`), for the quota check."""
    return (
        select(func.coalesce(func.sum(Upload.reserved_bytes), 0))
        .where(Upload.owner_id == Owner.id, Upload.state.in_(LIVE_STATES))
        .scalar_subquery()
    )


def reservation_drift() -> Select[uuid.UUID, int, int]:
    """(owner, bytes_reserved, what its live uploads hold) wherever the two differ."""
    held = held_by_live_uploads()
    return (
        select(Owner.id, Owner.bytes_reserved, held)
        .where(Owner.bytes_reserved != held)
        .order_by(Owner.id)
    )


def repair_reservations(owner_ids: list[uuid.UUID]) -> tuple[Update, Update]:
    """Ended uploads of these owners hold nothing; each owner's bytes_reserved is what its
    live uploads hold. Run both, in this order, after locking the owner rows."""
    ended = (
        update(Upload)
        .where(Upload.owner_id.in_(owner_ids), Upload.state.not_in(LIVE_STATES))
        .where(Upload.reserved_bytes > 0)
        .values(reserved_bytes=0)
    )
    counted = (
        update(Owner).where(Owner.id.in_(owner_ids)).values(bytes_reserved=held_by_live_uploads())
    )
    return ended, counted


# Expiry and gc.


def ended_before(age: dt.timedelta, limit: int) -> Select[uuid.UUID, str, str | None]:
    """(id, object key, multipart id) of ended uploads unchanged for `age`, oldest first, at
    most `limit`, locked and skipping rows another transaction holds: the sweep deletes them."""
    return (
        select(Upload.id, Upload.object_key, Upload.s3_upload_id)
        .where(Upload.state.in_(ENDED_STATES), Upload.updated_at < func.now() - age)
        .order_by(Upload.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def delete_ended(upload_ids: list[uuid.UUID]) -> Delete:
    """Delete these uploads if they ended (a live one is never deleted here)."""
    return delete(Upload).where(Upload.id.in_(upload_ids), Upload.state.in_(ENDED_STATES))


def lapsed() -> Select[uuid.UUID]:
    """Live uploads past their expiry, oldest first: any that stay mean the sweep is behind."""
    return (
        select(Upload.id)
        .where(Upload.state.in_(LIVE_STATES), Upload.expires_at < func.now())
        .order_by(Upload.expires_at)
    )


def live_storage() -> Select[str, str | None]:
    """(object key, multipart id) of every live upload: what gc must leave alone."""
    return select(Upload.object_key, Upload.s3_upload_id).where(Upload.state.in_(LIVE_STATES))


# Direct uploads.


def start_multipart(upload_id: uuid.UUID, s3_upload_id: str, parts: list[dict[str, Any]]) -> Update:
    """Record the multipart upload a direct upload's parts go to, and their plan
    (`[{"n": 1, "size": ...}]`): `complete` checks the client's list against it."""
    values = {"s3_upload_id": s3_upload_id, "parts": parts}
    return update(Upload).where(Upload.id == upload_id).values(**values)


def start_validating(upload_id: uuid.UUID, lease_id: uuid.UUID) -> Update:
    """Every byte is in the object: `validating`, offset = length, the tail dropped; only while
    we hold the lease of an upload still `receiving`."""
    return (
        update(Upload)
        .where(
            Upload.id == upload_id,
            Upload.lease_id == lease_id,
            Upload.state == UploadState.RECEIVING,
        )
        .values(
            state=UploadState.VALIDATING, received=Upload.length, tail=None, updated_at=func.now()
        )
    )
