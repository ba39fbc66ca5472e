"""The upload sweep: abandoned uploads expire, and ended ones are deleted with their bytes.

Pass 1 marks live uploads past `expires_at` (lease free) `expired` and gives their quota
reservation back in one transaction, then aborts their multipart upload and deletes their
quarantine object. The row stays, so `GET /v1/uploads/{id}` shows it and tus answers 410.
Pass 2 deletes ended rows unchanged for another expiry period, after the same S3 cleanup: both
calls are idempotent, so whatever failed in pass 1 (or at acceptance) is simply done again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.orm import Session

from media_api.errors import problem_document
from media_api.storage.s3 import S3Store
from media_api.uploads import statements
from media_api.uploads.errors import UploadGone
from media_api.uploads.models import Upload
from workers import repository
from workers.context import WorkerContext

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True)
class Leftover:
    """What an ended upload may still hold in S3."""

    id: uuid.UUID
    object_key: str
    s3_upload_id: str | None


@dataclass(frozen=True)
class UploadSweep:
    """What one run did (None in a field: another worker held the sweep lock)."""

    expired: int | None
    deleted: int | None


def expired_error() -> dict[str, Any]:
    """The problem document an expired upload keeps (and tus answers with 410)."""
    document = problem_document(UploadGone("the upload expired before it was completed"))
    assert document is not None
    return document


def sweep_uploads(ctx: WorkerContext) -> UploadSweep:
    """Both passes, one batch each."""
    return UploadSweep(expire_uploads(ctx), delete_ended_uploads(ctx))


def expire_uploads(ctx: WorkerContext) -> int | None:
    """Pass 1: expire up to one batch of lapsed uploads; returns how many, or None when
    another worker is sweeping."""
    with ctx.sessions.begin() as session:
        if not repository.sweep_lock(session):
            return None
        expired = _expire(session)
    _discard_all(ctx.store, expired)
    if expired:
        log.info("upload sweep: expired %d uploads", len(expired))
    return len(expired)


def _expire(session: Session) -> list[Leftover]:
    stmt = statements.expire(BATCH, expired_error())
    rows = session.execute(stmt.returning(Upload.object_key, Upload.s3_upload_id)).all()
    expired = [Leftover(row.id, row.object_key, row.s3_upload_id) for row in rows]
    if expired:
        _release(session, [leftover.id for leftover in expired])
    return expired


def delete_ended_uploads(ctx: WorkerContext) -> int | None:
    """Pass 2: delete up to one batch of ended uploads older than the expiry period, once
    their S3 leftovers are gone (a row whose cleanup failed stays for the next run)."""
    age = dt.timedelta(seconds=ctx.settings.upload_expiry_seconds)
    with ctx.sessions.begin() as session:
        if not repository.sweep_lock(session):
            return None
        ended = [Leftover(*row) for row in session.execute(statements.ended_before(age, BATCH))]
        cleaned = _discard_all(ctx.store, ended)
        if cleaned:
            _release(session, cleaned)  # a release lost at the end would otherwise leak
            session.execute(statements.delete_ended(cleaned))
    if cleaned:
        log.info("upload sweep: deleted %d ended uploads", len(cleaned))
    return len(cleaned)


def _release(session: Session, upload_ids: list[uuid.UUID]) -> None:
    # No ORM synchronization: its row processing cannot read the CTE's RETURNING columns.
    session.execute(
        statements.release_reservation(Upload.id.in_(upload_ids)),
        execution_options={"synchronize_session": False},
    )


def _discard_all(store: S3Store, leftovers: list[Leftover]) -> list[uuid.UUID]:
    """Discard each upload's leftovers; the ids of those cleaned. Stops at the first failure:
    S3 is likely down, and each call would wait out its retries."""
    cleaned: list[uuid.UUID] = []
    for leftover in leftovers:
        if not discard(store, leftover):
            break
        cleaned.append(leftover.id)
    return cleaned


def discard(store: S3Store, leftover: Leftover) -> bool:
    """Abort the multipart upload and delete the quarantine object (both idempotent); False,
    logged, when S3 failed: the next pass tries again."""
    try:
        if leftover.s3_upload_id is not None:
            store.abort_multipart(leftover.object_key, leftover.s3_upload_id)
        store.delete(leftover.object_key)
    except (BotoCoreError, ClientError):
        log.warning("upload sweep: could not clean up upload %s", leftover.id, exc_info=True)
        return False
    return True
