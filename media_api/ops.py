"""Operator commands behind `media-api reprocess | gc | stats` (every owner, no HTTP)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.images import repository
from media_api.images.models import ImageStatus
from media_api.jobs.producer import JobProducer, create_producer
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import OpenMultipart, S3Store
from media_api.uploads import repository as uploads_repository

# Objects younger than this may belong to an upload whose row is not committed yet.
GC_GRACE = dt.timedelta(hours=1)


async def reprocess(
    session: AsyncSession, settings: Settings, *, all_: bool, ids: list[uuid.UUID]
) -> int:
    """Reset the jobs of the given images, of all images, or (default) of the failed ones,
    and publish them; returns how many images."""
    if ids:
        chosen = ids
    else:
        chosen = await repository.ids_by_status(session, None if all_ else ImageStatus.FAILED)
    found = await repository.reset_jobs_of(session, chosen)
    await session.commit()  # the jobs are pending before any worker sees a message
    producer = create_producer(settings)
    try:
        jobs = JobProducer(producer)
        for image_id in found:
            await asyncio.to_thread(jobs.send_jobs, image_id)
    finally:
        producer.close()
    return len(found)


@dataclass
class GcReport:
    """What gc found (and deleted or aborted, with --apply)."""

    orphan_objects: list[str] = field(default_factory=list)
    missing_originals: list[str] = field(default_factory=list)
    young_skipped: int = 0
    deleted: int = 0
    # Uploads: live ones past expiry (the sweep is behind), and S3 leftovers no live row owns.
    lapsed_uploads: list[uuid.UUID] = field(default_factory=list)
    orphan_quarantine: list[str] = field(default_factory=list)
    orphan_multipart: list[OpenMultipart] = field(default_factory=list)
    quarantine_deleted: int = 0
    multipart_aborted: int = 0


async def gc(
    session: AsyncSession, settings: Settings, *, apply: bool, grace: dt.timedelta = GC_GRACE
) -> GcReport:
    """Objects no row points at (deleted with `apply`), rows whose original is gone, and the
    upload leftovers: quarantine objects and open multipart uploads without a live upload
    (removed with `apply`), live uploads past expiry (reported only: the sweep expires them)."""
    originals, variants = await repository.stored_keys(session)
    live_keys, live_multipart = await uploads_repository.live_storage(session)
    report = GcReport(lapsed_uploads=await uploads_repository.lapsed(session))
    store = S3Store(settings)
    try:
        old = _OlderThan(grace, report)
        listed: list[tuple[str, dt.datetime]] = []
        for root in keys.ROOTS:
            listed += await asyncio.to_thread(store.list_objects, root)
        present = {key for key, _ in listed}
        known = originals | variants
        report.orphan_objects = [
            key for key, modified in listed if key not in known and old(modified)
        ]
        report.missing_originals = sorted(originals - present)
        for root in keys.UPLOAD_ROOTS:
            quarantined = await asyncio.to_thread(store.list_objects, root)
            report.orphan_quarantine += [
                key for key, modified in quarantined if key not in live_keys and old(modified)
            ]
            opened = await asyncio.to_thread(store.open_multipart_uploads, root)
            report.orphan_multipart += [
                up for up in opened if up.upload_id not in live_multipart and old(up.initiated)
            ]
        if apply:
            await _remove(store, report)
        return report
    finally:
        store.close()


class _OlderThan:
    """Whether a time is older than the grace; counts the younger ones in the report."""

    def __init__(self, grace: dt.timedelta, report: GcReport) -> None:
        self.cutoff = dt.datetime.now(dt.UTC) - grace
        self.report = report

    def __call__(self, moment: dt.datetime) -> bool:
        if moment > self.cutoff:
            self.report.young_skipped += 1
            return False
        return True


async def _remove(store: S3Store, report: GcReport) -> None:
    """Delete the orphan objects and abort the orphan multipart uploads found."""
    for key in report.orphan_objects:
        await asyncio.to_thread(store.delete, key)
        report.deleted += 1
    for key in report.orphan_quarantine:
        await asyncio.to_thread(store.delete, key)
        report.quarantine_deleted += 1
    for up in report.orphan_multipart:
        await asyncio.to_thread(store.abort_multipart, up.key, up.upload_id)
        report.multipart_aborted += 1


@dataclass(frozen=True)
class QuotaDrift:
    """One owner's drifted quota counters: (counted, actual) of each that differs."""

    owner_id: uuid.UUID
    used: tuple[int, int] | None = None  # bytes_used, what its images add up to
    reserved: tuple[int, int] | None = None  # bytes_reserved, what its live uploads hold

    def __str__(self) -> str:
        found = []
        if self.used:
            found.append(f"bytes_used {self.used[0]}, images add up to {self.used[1]}")
        if self.reserved:
            found.append(f"bytes_reserved {self.reserved[0]}, live uploads hold {self.reserved[1]}")
        return f"owner {self.owner_id}: " + "; ".join(found)


async def check_quota(session: AsyncSession, *, repair: bool) -> list[QuotaDrift]:
    """Owners whose bytes_used differs from what their images add up to, or bytes_reserved
    from what their live uploads hold (before any repair); with `repair`, each is set right."""
    used = {
        owner: (counted, actual) for owner, counted, actual in await repository.quota_drift(session)
    }
    reserved = {
        owner: (counted, held)
        for owner, counted, held in await uploads_repository.reservation_drift(session)
    }
    if repair and used:
        await repository.repair_quota(session, list(used))
    if repair and reserved:
        await uploads_repository.repair_reservations(session, list(reserved))
    return [
        QuotaDrift(owner, used.get(owner), reserved.get(owner))
        for owner in sorted(used.keys() | reserved.keys())
    ]
