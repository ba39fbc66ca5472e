"""Events the workers announce (image.ready, image.failed, image.tagged), in the transaction
of the change: the same statements as the API's, run sync; the deliveries are sent after
commit by the caller (`send_after_commit`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from media_api.events import statements
from media_api.events.models import EventType
from media_api.jobs.producer import JobProducer

log = logging.getLogger(__name__)


def record(
    session: Session, owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]
) -> list[uuid.UUID]:
    """Write the event, its deliveries and the wake-up; returns the deliveries to send."""
    event_id, _ = session.execute(statements.insert_event(owner_id, type_, data)).one()
    deliveries = list(session.scalars(statements.insert_deliveries(owner_id, event_id, type_)))
    session.execute(statements.notify(owner_id))
    return deliveries


def send_after_commit(producer: JobProducer, deliveries: list[uuid.UUID]) -> None:
    """Best effort: a delivery not sent now is sent by the sweep."""
    for delivery_id in deliveries:
        try:
            producer.send_delivery(delivery_id)
        except Exception:
            log.warning("could not publish delivery %s; the sweep will retry", delivery_id)
