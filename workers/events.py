"""Events the workers announce (image.ready, image.failed, image.tagged, webhook.disabled), in
the transaction of the change: the same statement as the API's, run sync; the deliveries are
sent by a hook once the session commits (`send_on_commit`, installed by `context()`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from media_api.events import statements
from media_api.events.models import EventType
from media_api.jobs.producer import JobProducer

log = logging.getLogger(__name__)


def _record(
    session: Session, owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]
) -> list[uuid.UUID]:
    """Write the event, its deliveries and the wake-up; returns the deliveries to send."""
    _, _, deliveries, _ = session.execute(statements.record_event(owner_id, type_, data)).one()
    return list(deliveries or [])


# Where `announce` leaves a session's deliveries until it commits.
_PENDING = "event_deliveries"


def announce(session: Session, owner_id: uuid.UUID, type_: EventType, data: dict[str, Any]) -> None:
    """Record the event, its deliveries sent once the session commits (`send_on_commit`), dropped if
    it rolls back: the repository announces without knowing who commits."""
    session.info.setdefault(_PENDING, []).extend(_record(session, owner_id, type_, data))


def send_on_commit(sessions: sessionmaker[Session], producer: Callable[[], JobProducer]) -> None:
    """Send what `announce` recorded in these sessions after each commit."""

    def committed(session: Session) -> None:
        deliveries = session.info.pop(_PENDING, [])
        if deliveries:
            _send(producer(), deliveries)

    def rolled_back(session: Session) -> None:
        session.info.pop(_PENDING, None)

    event.listen(sessions, "after_commit", committed)
    event.listen(sessions, "after_rollback", rolled_back)


def _send(producer: JobProducer, deliveries: list[uuid.UUID]) -> None:
    """Best effort: a delivery not sent now is sent by the sweep."""
    for delivery_id in deliveries:
        try:
            producer.send_delivery(delivery_id)
        except Exception:
            log.warning("could not publish delivery %s; the sweep will retry", delivery_id)
