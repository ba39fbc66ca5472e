"""Webhook endpoint rules: owner-scoped CRUD, the secret shown once (at creation and at
rotation), the deliveries' log, and a delivery sent again on demand."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.errors import MediaError, NotFound
from media_api.events import repository
from media_api.events.models import Webhook
from media_api.events.repository import DeliveryRow
from media_api.pagination import Keyset
from media_api.unit_of_work import UnitOfWork

SCOPE = "webhooks"
DELIVERIES_SCOPE = "webhook-deliveries"


# Endpoints per owner: every event makes a delivery for each, in the change's transaction.
MAX_WEBHOOKS = 25


class WebhookInactive(MediaError):
    status_code = 409
    code = "webhook-inactive"
    title = "Webhook inactive"


class WebhookLimit(MediaError):
    status_code = 409
    code = "webhook-limit"
    title = "Too many webhooks"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def create(
    session: AsyncSession, owner_id: uuid.UUID, url: str, events: list[str]
) -> Webhook:
    """A new, active endpoint with a fresh secret; at most MAX_WEBHOOKS per owner."""
    if await repository.count_webhooks(session, owner_id) >= MAX_WEBHOOKS:
        raise WebhookLimit(f"at most {MAX_WEBHOOKS} webhooks; delete one first")
    return await repository.add_webhook(session, owner_id, url, events, new_secret())


async def get(session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    """One of the owner's endpoints, or 404."""
    webhook = await repository.get_webhook(session, owner_id, webhook_id)
    if webhook is None:
        raise NotFound("webhook not found")
    return webhook


async def page(
    session: AsyncSession, owner_id: uuid.UUID, cursor: str | None, limit: int, secret: str
) -> tuple[list[Webhook], str | None]:
    """One page, newest first, and the cursor of the next (None on the last page)."""
    keyset = Keyset(secret, SCOPE, owner_id)
    rows = await repository.webhook_page(session, owner_id, keyset.after(cursor), limit + 1)
    return keyset.cut(rows, limit)


async def update(
    session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID, changes: dict[str, Any]
) -> Webhook:
    """Change url, events or active; turning it on again forgets why it was turned off."""
    if changes.get("active") is True:
        changes["disabled_reason"] = None
    if not changes:
        return await get(session, owner_id, webhook_id)
    webhook = await repository.change_webhook(session, owner_id, webhook_id, changes)
    if webhook is None:
        raise NotFound("webhook not found")
    return webhook


async def delete(session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Delete the endpoint and its deliveries."""
    if not await repository.remove_webhook(session, owner_id, webhook_id):
        raise NotFound("webhook not found")


async def rotate_secret(session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID) -> str:
    """A new secret; deliveries from now on are signed with it."""
    secret = new_secret()
    if await repository.change_webhook(session, owner_id, webhook_id, {"secret": secret}) is None:
        raise NotFound("webhook not found")
    return secret


async def deliveries(
    session: AsyncSession,
    owner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    cursor: str | None,
    limit: int,
    secret: str,
) -> tuple[list[DeliveryRow], str | None]:
    """One page of the endpoint's deliveries, newest first."""
    await get(session, owner_id, webhook_id)
    keyset = Keyset(secret, f"{DELIVERIES_SCOPE}:{webhook_id}", owner_id)
    rows = await repository.delivery_page(session, webhook_id, keyset.after(cursor), limit + 1)
    return keyset.cut(rows, limit)


async def retry(
    session: AsyncSession,
    uow: UnitOfWork,
    owner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
) -> DeliveryRow:
    """Send the delivery again now (delivered or failed ones too), with the whole schedule
    ahead; only to an active endpoint (an inactive one is sent nothing)."""
    webhook = await get(session, owner_id, webhook_id)
    if not await repository.retry_delivery(session, webhook_id, delivery_id):
        raise NotFound("delivery not found")
    if not webhook.active:
        raise WebhookInactive("the webhook is turned off; turn it on (PATCH active) first")
    uow.send_deliveries([delivery_id])
    row = await repository.get_delivery(session, webhook_id, delivery_id)
    assert row is not None  # just updated, in this transaction
    return row
