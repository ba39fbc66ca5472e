"""The API's job SQL (async): the shared statements of `statements.py`, executed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.jobs import statements
from media_api.jobs.contract import JobKind
from media_api.jobs.models import ImageJob, JobState


async def take_slot(
    session: AsyncSession, owner_id: uuid.UUID, spacing: dt.timedelta
) -> dt.datetime:
    """The owner's next slot in the fair claim order (`statements.take_slot`)."""
    slot: dt.datetime | None = await session.scalar(statements.take_slot(owner_id, spacing))
    assert slot is not None, "the owner row exists (its credential was just checked)"
    return slot


async def add_pending(
    session: AsyncSession, image_id: uuid.UUID, kinds: Iterable[JobKind], fair_at: dt.datetime
) -> list[ImageJob]:
    """The image's pending jobs, in the claim order at `fair_at`; returned as written."""
    stmt = statements.add_pending(image_id, kinds, fair_at).returning(ImageJob)
    return list(await session.scalars(stmt))


async def lock_states(session: AsyncSession, image_id: uuid.UUID) -> list[JobState]:
    """The image's job states, locked until commit (concurrent reprocess calls queue here)."""
    return list((await session.execute(statements.lock_states(image_id))).scalars())


async def counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(kind, state, count) over every owner, for the metrics scrape and `media-api stats`."""
    rows = await session.execute(statements.counts())
    return [(str(kind.value), str(state.value), int(n)) for kind, state, n in rows.all()]
