"""Announcing a change: its event in the outbox, its webhook deliveries sent after commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.events import repository
from media_api.events.models import EventType
from media_api.unit_of_work import UnitOfWork


async def announce(
    session: AsyncSession,
    uow: UnitOfWork,
    owner_id: uuid.UUID,
    type_: EventType,
    data: dict[str, Any],
) -> None:
    """Record the event in the session's transaction; its deliveries leave after commit."""
    recorded = await repository.record(session, owner_id, type_, data)
    uow.send_deliveries(recorded.deliveries)
