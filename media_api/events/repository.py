"""The API's event SQL (async): recording an event in the caller's transaction, reading them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.events import statements
from media_api.events.models import Event, EventType, Webhook, WebhookDelivery
from media_api.pagination import Position


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
    row = (await session.execute(statements.record_event(owner_id, type_, data))).one()
    event_id, seq, deliveries, _ = row
    return Recorded(event_id, seq, list(deliveries or []))


async def latest(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """The number of the owner's newest event (0: none yet)."""
    return int(await session.scalar(statements.latest_seq(owner_id)) or 0)


async def after(
    session: AsyncSession, owner_id: uuid.UUID, after_seq: int, limit: int
) -> list[Event]:
    """The owner's events numbered after `after_seq`, in order."""
    return list(await session.scalars(statements.events_after(owner_id, after_seq, limit)))


# Webhooks.


@dataclass
class DeliveryRow:
    """A delivery as listed: the row and its event's number and type (and the keyset's sort
    key, for paging)."""

    delivery: WebhookDelivery
    seq: int
    type: EventType
    id: uuid.UUID = field(init=False)
    created_at: dt.datetime = field(init=False)

    def __post_init__(self) -> None:
        self.id, self.created_at = self.delivery.id, self.delivery.created_at


async def count_webhooks(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """The owner's endpoints, counted with the owner's row locked (two creations in a race
    count one after the other)."""
    await session.execute(statements.lock_owner(owner_id))
    return int(await session.scalar(statements.count_webhooks(owner_id)) or 0)


async def add_webhook(
    session: AsyncSession, owner_id: uuid.UUID, url: str, events: list[str], secret: str
) -> Webhook:
    """Insert and flush, so the id and timestamps are usable at once."""
    webhook = Webhook(owner_id=owner_id, url=url, events=events, secret=secret)
    session.add(webhook)
    await session.flush()
    await session.refresh(webhook)
    return webhook


async def get_webhook(
    session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID
) -> Webhook | None:
    """One of the owner's endpoints; another owner's id reads as absent."""
    stmt = select(Webhook).where(Webhook.id == webhook_id, Webhook.owner_id == owner_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def webhook_page(
    session: AsyncSession, owner_id: uuid.UUID, after: Position | None, limit: int
) -> list[Webhook]:
    """Newest first, keyset on (created_at, id)."""
    stmt = select(Webhook).where(Webhook.owner_id == owner_id)
    if after is not None:
        stmt = stmt.where(tuple_(Webhook.created_at, Webhook.id) < (after.at, after.id))
    stmt = stmt.order_by(Webhook.created_at.desc(), Webhook.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def change_webhook(
    session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID, values: dict[str, Any]
) -> Webhook | None:
    """Apply a partial update; None when the owner has no such endpoint."""
    result = await session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.owner_id == owner_id)
        .values(**values)
        .returning(Webhook)
    )
    return result.scalar_one_or_none()


async def remove_webhook(session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
    """Delete the endpoint (its deliveries cascade)."""
    result = await session.execute(
        delete(Webhook)
        .where(Webhook.id == webhook_id, Webhook.owner_id == owner_id)
        .returning(Webhook.id)
    )
    return result.scalar_one_or_none() is not None


async def delivery_page(
    session: AsyncSession, webhook_id: uuid.UUID, after: Position | None, limit: int
) -> list[DeliveryRow]:
    """The endpoint's deliveries, newest first, keyset on (created_at, id)."""
    stmt = (
        select(WebhookDelivery, Event.seq, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.webhook_id == webhook_id)
    )
    if after is not None:
        stmt = stmt.where(
            tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < (after.at, after.id)
        )
    stmt = stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit)
    return [DeliveryRow(*row) for row in (await session.execute(stmt)).all()]


async def get_delivery(
    session: AsyncSession, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryRow | None:
    """One of the endpoint's deliveries."""
    stmt = (
        select(WebhookDelivery, Event.seq, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else DeliveryRow(*row)


async def retry_delivery(
    session: AsyncSession, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> bool:
    """Make the delivery pending and due now; False when the endpoint has no such delivery."""
    result = await session.execute(statements.retry_delivery(webhook_id, delivery_id))
    return result.scalar_one_or_none() is not None
