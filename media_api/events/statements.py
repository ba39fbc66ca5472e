"""Event SQL, built once as Core statements: the async API and the sync workers execute them.

An event is recorded in the transaction of the change it announces (the outbox): its number
comes from the owner's row, locked until commit, the deliveries to the owner's endpoints are
created beside it, and `pg_notify` (delivered by Postgres only at commit) wakes live streams.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Select, Update, func, insert, literal, select, true, update

from media_api.accounts.models import Owner
from media_api.events.models import DeliveryState, Event, EventType, Webhook, WebhookDelivery

CHANNEL = "media_events"
"""The Postgres NOTIFY channel; the payload is the owner's id."""


def record_event(owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]) -> Select[Any]:
    """One statement: the event, numbered from the owner's row (locked until commit, so an
    owner's events commit in order); a delivery to each active endpoint of the owner that
    wants its type (an endpoint with no types wants all); and the wake-up, which Postgres
    sends only at commit. Returns (event id, seq, the deliveries' ids)."""
    seq = (
        update(Owner)
        .where(Owner.id == owner_id)
        .values(event_seq=Owner.event_seq + 1)
        .returning(Owner.event_seq)
        .cte("seq")
    )
    event = (
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
        .cte("event")
    )
    # Every column given: a statement nested in a CTE gets no Python-side defaults.
    wanted = (
        select(
            func.gen_random_uuid(),
            Webhook.id,
            event.c.id,
            literal(DeliveryState.PENDING.value),
            literal(0),
            literal([], WebhookDelivery.log.type),
        )
        .select_from(Webhook)
        .join(event, true())  # the one event row beside each endpoint
        .where(
            Webhook.owner_id == owner_id,
            Webhook.active,
            (func.cardinality(Webhook.events) == 0)
            | (literal(type_.value) == func.any(Webhook.events)),
        )
    )
    deliveries = (
        insert(WebhookDelivery)
        .from_select(["id", "webhook_id", "event_id", "state", "attempts", "log"], wanted)
        .returning(WebhookDelivery.id)
        .cte("deliveries")
    )
    return select(
        event.c.id,
        event.c.seq,
        select(func.array_agg(deliveries.c.id)).scalar_subquery(),
        func.pg_notify(CHANNEL, str(owner_id)),
    )


def latest_seq(owner_id: uuid.UUID) -> Select[int]:
    """The number of the owner's newest event."""
    return select(Owner.event_seq).where(Owner.id == owner_id)


def events_after(owner_id: uuid.UUID, after_seq: int, limit: int) -> Select[Event]:
    """The owner's events numbered after `after_seq`, in order."""
    return (
        select(Event)
        .where(Event.owner_id == owner_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )


# Webhooks.

CLAIM_EARLY = dt.timedelta(seconds=1)
"""A retry's message may arrive this much before its row says it is due (clocks differ)."""


def claim_delivery(delivery_id: uuid.UUID, lease: dt.timedelta) -> Update:
    """Start an attempt: a pending, due delivery of an active endpoint counts one more attempt
    and is leased (its next attempt moved past the attempt's end, so the sweep leaves it
    alone meanwhile; a worker killed mid-attempt lets the lease lapse). A message that arrives
    for a delivery that is done, leased or not due yet claims nothing. Returns what the
    attempt needs."""
    return (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.webhook_id == Webhook.id,
            Webhook.active,
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.next_attempt_at <= func.now() + CLAIM_EARLY,
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=func.now() + lease,
        )
        .returning(
            WebhookDelivery.attempts,
            WebhookDelivery.event_id,
            Webhook.id.label("webhook_id"),
            Webhook.owner_id,
            Webhook.url,
            Webhook.secret,
        )
    )


def event_body(event_id: int) -> Select[tuple[EventType, dt.datetime, dict[str, Any]]]:
    """What a delivery sends of its event: (type, created_at, data)."""
    return select(Event.type, Event.created_at, Event.data).where(Event.id == event_id)


def record_attempt(
    delivery_id: uuid.UUID,
    entry: dict[str, Any],
    state: DeliveryState,
    retry_in: dt.timedelta | None,
) -> Update:
    """Append the attempt to the delivery's log and set what follows: delivered, failed, or
    pending with the next attempt `retry_in` from now."""
    values: dict[str, Any] = {
        "state": state,
        "log": WebhookDelivery.log.op("||")(literal([entry], WebhookDelivery.log.type)),
        "last_error": entry["error"],
    }
    if retry_in is not None:
        values["next_attempt_at"] = func.now() + retry_in
    return update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)


def disable_webhook(webhook_id: uuid.UUID, reason: str) -> Update:
    """Turn an endpoint off (the service's doing); returns (owner_id, url) when it was on."""
    return (
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.active)
        .values(active=False, disabled_reason=reason)
        .returning(Webhook.owner_id, Webhook.url)
    )


def stale_deliveries(grace: dt.timedelta, limit: int) -> Select[uuid.UUID]:
    """Pending deliveries of active endpoints due more than `grace` ago: never sent (broker
    down), lost, leased by a worker that died, or due after a wait too long for a countdown."""
    return (
        select(WebhookDelivery.id)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(
            Webhook.active,
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.next_attempt_at <= func.now() - grace,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )


def touch_deliveries(delivery_ids: list[uuid.UUID]) -> Update:
    """Sent again now: the next sweep waits a grace again before sending them once more."""
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(delivery_ids))
        .values(next_attempt_at=func.now())
    )


def retry_delivery(webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Update:
    """Pending again, due now, with the whole schedule ahead (its log keeps the earlier
    attempts). Returns its id when the endpoint has it."""
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
        .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=func.now())
        .returning(WebhookDelivery.id)
    )


def lock_owner(owner_id: uuid.UUID) -> Select[uuid.UUID]:
    """The owner's row, locked until commit."""
    return select(Owner.id).where(Owner.id == owner_id).with_for_update()


def count_webhooks(owner_id: uuid.UUID) -> Select[int]:
    """How many endpoints the owner has."""
    return select(func.count()).select_from(Webhook).where(Webhook.owner_id == owner_id)
