"""Event SQL, built once as Core statements: the async API and the sync workers execute them.

An event is recorded in the transaction of the change it announces (the outbox): its number
comes from the owner's row, locked until commit, the deliveries to the owner's endpoints are
created beside it, and `pg_notify` (delivered by Postgres only at commit) wakes live streams.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Insert, Select, func, insert, literal, select, update

from media_api.accounts.models import Owner
from media_api.events.models import Event, EventType, Webhook, WebhookDelivery

CHANNEL = "media_events"
"""The Postgres NOTIFY channel; the payload is the owner's id."""


def insert_event(owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]) -> Insert:
    """The event, numbered from the owner's row (locked until commit, so an owner's events
    commit in order). Returns (id, seq)."""
    seq = (
        update(Owner)
        .where(Owner.id == owner_id)
        .values(event_seq=Owner.event_seq + 1)
        .returning(Owner.event_seq)
        .cte("seq")
    )
    return (
        insert(Event)
        .from_select(
            ["owner_id", "seq", "type", "data"],
            select(
                literal(owner_id),
                seq.c.event_seq,
                literal(type_.value),
                literal(data, Event.data.type),
            ),
        )
        .returning(Event.id, Event.seq)
    )


def insert_deliveries(owner_id: uuid.UUID, event_id: int, type_: EventType) -> Insert:
    """A delivery of the event to each active endpoint of the owner that wants its type (an
    endpoint with no types wants all). Returns their ids."""
    wanted = select(func.gen_random_uuid(), Webhook.id, literal(event_id)).where(
        Webhook.owner_id == owner_id,
        Webhook.active,
        (func.cardinality(Webhook.events) == 0)
        | (literal(type_.value) == func.any(Webhook.events)),
    )
    return (
        insert(WebhookDelivery)
        .from_select(["id", "webhook_id", "event_id"], wanted)
        .returning(WebhookDelivery.id)
    )


def notify(owner_id: uuid.UUID) -> Select[Any]:
    """Wake the owner's live streams once the transaction commits."""
    return select(func.pg_notify(CHANNEL, str(owner_id)))


def events_after(owner_id: uuid.UUID, after_seq: int, limit: int) -> Select[Event]:
    """The owner's events numbered after `after_seq`, in order."""
    return (
        select(Event)
        .where(Event.owner_id == owner_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )
