"""HTTP routes for webhook endpoints and their deliveries."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from media_api.api.deps import CurrentOwner, Cursor, Limit, SessionDep, SettingsDep, UnitOfWorkDep
from media_api.errors import NotFound, problem_responses
from media_api.events import webhooks as service
from media_api.events.repository import DeliveryRow
from media_api.events.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
    WebhookSecret,
)
from media_api.events.webhooks import WebhookInactive, WebhookLimit
from media_api.pagination import DEFAULT_LIMIT, InvalidCursor

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

NOT_FOUND = problem_responses(NotFound)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(WebhookLimit))
async def create_webhook(
    body: WebhookIn, owner: CurrentOwner, session: SessionDep
) -> WebhookCreated:
    """A new endpoint; the answer holds its signing secret, shown only this once."""
    webhook = await service.create(session, owner, body.url, list(body.events))
    return WebhookCreated.model_validate(webhook, from_attributes=True)


@router.get("", responses=problem_responses(InvalidCursor))
async def list_webhooks(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> WebhookPage:
    """The caller's endpoints, newest first, a keyset page at a time."""
    rows, next_cursor = await service.page(session, owner, cursor, limit, settings.jwt_secret)
    return WebhookPage(items=[WebhookOut.model_validate(w) for w in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", responses=NOT_FOUND)
async def get_webhook(
    webhook_id: uuid.UUID, owner: CurrentOwner, session: SessionDep
) -> WebhookOut:
    """One endpoint (without its secret)."""
    return WebhookOut.model_validate(await service.get(session, owner, webhook_id))


@router.patch("/{webhook_id}", responses=NOT_FOUND)
async def update_webhook(
    webhook_id: uuid.UUID, body: WebhookPatch, owner: CurrentOwner, session: SessionDep
) -> WebhookOut:
    """Change the URL or the event types, or turn the endpoint off or on again."""
    webhook = await service.update(session, owner, webhook_id, body.changes())
    return WebhookOut.model_validate(webhook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_webhook(webhook_id: uuid.UUID, owner: CurrentOwner, session: SessionDep) -> None:
    """Delete the endpoint and its deliveries."""
    await service.delete(session, owner, webhook_id)


@router.post("/{webhook_id}/rotate-secret", responses=NOT_FOUND)
async def rotate_secret(
    webhook_id: uuid.UUID, owner: CurrentOwner, session: SessionDep
) -> WebhookSecret:
    """A new signing secret, shown only this once; the old one signs nothing more."""
    return WebhookSecret(secret=await service.rotate_secret(session, owner, webhook_id))


@router.get("/{webhook_id}/deliveries", responses=problem_responses(InvalidCursor, NotFound))
async def list_deliveries(
    webhook_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> DeliveryPage:
    """The endpoint's deliveries, newest first, each with the log of its attempts."""
    rows, next_cursor = await service.deliveries(
        session, owner, webhook_id, cursor, limit, settings.jwt_secret
    )
    return DeliveryPage(items=[_delivery(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(NotFound, WebhookInactive),
)
async def retry_delivery(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    uow: UnitOfWorkDep,
) -> DeliveryOut:
    """Send the delivery again now, whatever its state, with the whole retry schedule ahead."""
    return _delivery(await service.retry(session, uow, owner, webhook_id, delivery_id))


def _delivery(row: DeliveryRow) -> DeliveryOut:
    d = row.delivery
    return DeliveryOut(
        id=d.id,
        event_id=row.seq,
        type=row.type,
        state=d.state,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        log=[AttemptOut.model_validate(entry) for entry in d.log],
        created_at=d.created_at,
    )
