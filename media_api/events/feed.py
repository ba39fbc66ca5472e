"""Reading an owner's events: a page for clients that poll, a live feed for a stream.

Both read the outbox after a `seq`. An owner's events commit in `seq` order, so a reader that
resumes after the last one it saw misses none and repeats none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from media_api.errors import is_unreachable
from media_api.events import repository
from media_api.events.listener import Listener
from media_api.events.models import Event
from media_api.events.schemas import EventOut, EventPage

log = logging.getLogger(__name__)

MAX_LIMIT = 100
# The largest `seq` (bigint): a larger `after` is refused, not an overflow in the query.
MAX_SEQ = 2**63 - 1
# Events a stream reads at once; it reads again at once while there are more.
STREAM_BATCH = 100


async def page(session: AsyncSession, owner_id: uuid.UUID, after: int, limit: int) -> EventPage:
    """The owner's events numbered after `after`, oldest first."""
    items = [
        EventOut.of(event) for event in await repository.after(session, owner_id, after, limit)
    ]
    latest = await repository.latest(session, owner_id)
    return EventPage(items=items, next_after=items[-1].id if items else after, latest=latest)


async def follow(
    sessions: async_sessionmaker[AsyncSession],
    listener: Listener,
    owner_id: uuid.UUID,
    after: int,
    heartbeat: float,
) -> AsyncIterator[Event]:
    """The owner's events after `after`, as they commit, until the consumer stops: read at
    each wake-up from the listener and at least every `heartbeat` seconds. Each read uses a
    session of its own, so an idle stream holds no database connection."""
    with listener.subscribe(owner_id) as woken:
        while True:
            woken.clear()  # before the read: a commit during it wakes the next wait
            events = await _read(sessions, owner_id, after)
            for event in events:
                yield event
                after = event.seq
            if len(events) == STREAM_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await woken.wait()


async def _read(
    sessions: async_sessionmaker[AsyncSession], owner_id: uuid.UUID, after: int
) -> list[Event]:
    """The next events; none while the database is unreachable (the stream waits and reads
    again, instead of ending)."""
    try:
        async with sessions() as session:
            return await repository.after(session, owner_id, after, STREAM_BATCH)
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        log.warning("event stream: the database is unreachable (%r); reading again later", exc)
        return []
