"""Delivering an event to a webhook endpoint: claim the attempt, POST the body signed the
Standard Webhooks way, record the attempt in the delivery's log, then schedule what follows
(a countdown for a short wait, the sweep for a long one; past the schedule the delivery
fails, the endpoint is turned off and a `webhook.disabled` event recorded)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from media_api.events import statements
from media_api.events.models import DeliveryState, EventType
from media_api.events.schemas import EventBody
from media_api.jobs.producer import JobProducer
from media_api.settings import Settings
from workers import events, repository
from workers.addresses import checked_transport
from workers.context import WorkerContext

log = logging.getLogger(__name__)

# A wait shorter than this is a Celery countdown; a longer one is left to the sweep (Redis
# hands long-ETA messages out again after its visibility timeout: the row is the schedule).
COUNTDOWN_LIMIT_SECONDS = 60.0
# Seconds between the soft time limit (the attempt recorded as failed) and the kill.
KILL_GRACE_SECONDS = 5
BATCH = 500
USER_AGENT = "media-service-webhooks/1"


def attempt_limit(settings: Settings) -> int:
    """The longest an attempt may take (connect and response, each within the timeout, plus
    the resolver and the database): the task's soft time limit, after which the attempt is
    recorded as failed. The claim's lease and the hard limit allow a few seconds more."""
    return math.ceil(2 * settings.webhook_timeout_seconds) + 2


def claim_lease(settings: Settings) -> dt.timedelta:
    """How long a claimed attempt is left alone: past the hard time limit."""
    return dt.timedelta(seconds=attempt_limit(settings) + KILL_GRACE_SECONDS + 1)


@dataclass(frozen=True)
class Target:
    """A claimed attempt: where to send what."""

    delivery_id: uuid.UUID
    attempts: int
    webhook_id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    secret: str
    body: str


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: the status (None without a response) or the error."""

    at: dt.datetime
    status: int | None
    latency_ms: int
    error: str | None

    def entry(self) -> dict[str, Any]:
        """As the delivery's log keeps it."""
        return {
            "at": self.at.isoformat(),
            "status": self.status,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


def deliver(ctx: WorkerContext, producer: JobProducer, delivery_id: uuid.UUID) -> str:
    """One attempt of one delivery, if it is due; returns what happened."""
    with ctx.sessions.begin() as session:
        target = claim(session, delivery_id, claim_lease(ctx.settings))
    if target is None:
        return "nothing to send: delivered, failed, not due, in flight or the endpoint is off"
    if target.attempts > len(ctx.settings.webhook_retry_schedule) + 1:
        # Earlier attempts were killed before they were recorded (a receiver that trickles
        # its answer past the task's limits): the schedule is over all the same.
        cut = Attempt(dt.datetime.now(dt.UTC), None, 0, "attempts cut off by the time limit")
        return record(ctx, producer, target, cut)
    started = dt.datetime.now(dt.UTC)
    try:
        attempt = post(target, ctx.settings)
    except SoftTimeLimitExceeded:  # httpx bounds each read, not the whole answer
        spent = round((dt.datetime.now(dt.UTC) - started).total_seconds() * 1000)
        attempt = Attempt(started, None, spent, "no complete answer within the attempt's limit")
    return record(ctx, producer, target, attempt)


def body(type_: EventType, created_at: dt.datetime, data: dict[str, Any]) -> str:
    """The Standard Webhooks payload `{type, timestamp, data}`, as SSE and the JSON page
    carry it."""
    return EventBody(type=type_, timestamp=created_at, data=data).model_dump_json()


def claim(session: Session, delivery_id: uuid.UUID, lease: dt.timedelta) -> Target | None:
    """Start an attempt (one more counted, leased); None when there is nothing to send."""
    row = session.execute(statements.claim_delivery(delivery_id, lease)).one_or_none()
    if row is None:
        return None
    type_, created_at, data = session.execute(statements.event_body(row.event_id)).one()
    return Target(
        delivery_id,
        row.attempts,
        row.webhook_id,
        row.owner_id,
        row.url,
        row.secret,
        body(type_, created_at, data),
    )


def signed_headers(target: Target, now: dt.datetime) -> dict[str, str]:
    """`webhook-id` (the same on every retry), `webhook-timestamp`, `webhook-signature`."""
    msg_id = f"msg_{target.delivery_id}"
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": Webhook(target.secret).sign(msg_id, now, target.body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def post(target: Target, settings: Settings) -> Attempt:
    """POST the signed body: no redirects, no proxy from the environment, only addresses the
    settings allow; the response's body is never read."""
    at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        with (
            httpx.Client(
                transport=checked_transport(settings.webhook_allow_private),
                timeout=settings.webhook_timeout_seconds,
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream(
                "POST", target.url, content=target.body.encode(), headers=signed_headers(target, at)
            ) as response,
        ):
            status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    latency_ms = round((time.perf_counter() - started) * 1000)
    return Attempt(at, status, latency_ms, error)


def record(ctx: WorkerContext, producer: JobProducer, target: Target, attempt: Attempt) -> str:
    """Keep the attempt and settle what follows; messages leave after the commit."""
    schedule = ctx.settings.webhook_retry_schedule
    wait: float | None = None
    with ctx.sessions.begin() as session:
        if attempt.error is None:
            outcome = DeliveryState.DELIVERED
        elif target.attempts <= len(schedule):
            outcome, wait = DeliveryState.PENDING, schedule[target.attempts - 1]
        else:
            outcome = DeliveryState.FAILED
        retry_in = None if wait is None else dt.timedelta(seconds=wait)
        session.execute(
            statements.record_attempt(target.delivery_id, attempt.entry(), outcome, retry_in)
        )
        if outcome is DeliveryState.FAILED:
            disable(session, target, attempt)
    if wait is not None and wait < COUNTDOWN_LIMIT_SECONDS:
        _send(producer, target.delivery_id, wait)
    if outcome is DeliveryState.PENDING:
        return f"attempt {target.attempts} failed ({attempt.error}); next in {wait:g}s"
    return f"{outcome} after {target.attempts} attempts"


def disable(session: Session, target: Target, attempt: Attempt) -> None:
    """Turn the endpoint off and announce it (`webhook.disabled`, sent after commit by the
    workers' session hook like every other event of theirs)."""
    reason = (
        f"delivery {target.delivery_id} failed {target.attempts} attempts; last: {attempt.error}"
    )[:300]
    row = session.execute(statements.disable_webhook(target.webhook_id, reason)).one_or_none()
    if row is None:
        return  # already off (or deleted)
    log.warning("webhook %s turned off: %s", target.webhook_id, reason)
    data = {"webhook_id": str(target.webhook_id), "url": row.url, "reason": reason}
    events.announce(session, row.owner_id, EventType.WEBHOOK_DISABLED, data)


def _send(producer: JobProducer, delivery_id: uuid.UUID, countdown: float | None) -> None:
    """Best effort: a retry not sent now is sent by the sweep."""
    try:
        producer.send_delivery(delivery_id, countdown=countdown)
    except Exception:
        log.warning("could not publish delivery %s; the sweep will retry", delivery_id)


def sweep_deliveries(ctx: WorkerContext, producer: JobProducer) -> int | None:
    """Send again the pending deliveries due more than a grace ago (never sent, lost, leased
    by a worker that died, or due after a long wait); None when another worker is sweeping."""
    grace = dt.timedelta(seconds=ctx.settings.job_pending_grace_seconds)
    with ctx.sessions.begin() as session:
        if not repository.sweep_lock(session):
            return None
        due = list(session.scalars(statements.stale_deliveries(grace, BATCH)))
        if due:
            session.execute(statements.touch_deliveries(due))
    for delivery_id in due:
        _send(producer, delivery_id, None)
    if due:
        log.info("sweep: sent %d webhook deliveries again", len(due))
    return len(due)
