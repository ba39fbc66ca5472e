"""The API's event SQL (async): recording an event in the caller's transaction, reading them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.events import statements
from media_api.events.models import Event, EventType


@dataclass(frozen=True)
class Recorded:
    """An event written to the outbox, and its deliveries to send after commit."""

    event_id: int
    seq: int
    deliveries: list[uuid.UUID] = field(default_factory=list)


async def record(
    session: AsyncSession, owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]
) -> Recorded:
    """Write the event, its deliveries and the wake-up, in the session's transaction."""
    event_id, seq = (await session.execute(statements.insert_event(owner_id, type_, data))).one()
    deliveries = await session.scalars(statements.insert_deliveries(owner_id, event_id, type_))
    await session.execute(statements.notify(owner_id))
    return Recorded(event_id, seq, list(deliveries))


async def after(
    session: AsyncSession, owner_id: uuid.UUID, after_seq: int, limit: int
) -> list[Event]:
    """The owner's events numbered after `after_seq`, in order."""
    return list(await session.scalars(statements.events_after(owner_id, after_seq, limit)))
