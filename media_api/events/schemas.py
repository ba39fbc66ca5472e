"""Request and response shapes: events as applications receive them, webhook endpoints and
their deliveries. The secret is in the answers that create or rotate it, never in a read."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from media_api.events.models import DeliveryState, Event, EventType
from media_api.text import CONTROLS, Refuse

MAX_URL_LENGTH = 2048


def _http_url(value: str) -> str:
    """An absolute http(s) URL with a host, in its normalized form (what is stored and
    called)."""
    try:
        url = str(HttpUrl(value))
    except ValidationError as exc:
        raise PydanticCustomError("url", "must be an absolute http or https URL") from exc
    if len(url) > MAX_URL_LENGTH:
        raise PydanticCustomError("url", f"must be at most {MAX_URL_LENGTH} characters")
    return url


def _unique(values: list[EventType]) -> list[EventType]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("unique", "must not name a type twice")
    return values


# One published pattern (a schema has room for one): http(s), then no control characters.
Url = Annotated[
    str,
    Field(
        max_length=MAX_URL_LENGTH,
        pattern=rf"^[Hh][Tt][Tt][Pp][Ss]?://[^{CONTROLS}]*$",
        examples=["https://example.com/hooks/media"],
    ),
    Refuse(CONTROLS, "must not contain control characters", published=False),
    AfterValidator(_http_url),
]
Events = Annotated[
    list[EventType],
    Field(
        max_length=len(EventType),
        description="The event types to deliver; empty (the default) delivers every type.",
        json_schema_extra={"uniqueItems": True},
    ),
    AfterValidator(_unique),
]


class WebhookIn(BaseModel):
    url: Url
    events: Events = Field(default_factory=list)


class WebhookPatch(BaseModel):
    """Only the fields sent change; `active: true` turns an endpoint the service turned off
    on again (and clears `disabled_reason`)."""

    url: Url | MISSING = MISSING
    events: Events | MISSING = MISSING
    active: StrictBool | MISSING = MISSING

    def changes(self) -> dict[str, Any]:
        """The columns to set."""
        return self.model_dump(exclude_unset=True)


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from a Webhook row

    id: uuid.UUID
    url: str
    events: list[EventType]
    active: bool
    disabled_reason: str | None = Field(
        description="Why the service turned the endpoint off (every retry of a delivery failed)."
    )
    created_at: dt.datetime


class WebhookSecret(BaseModel):
    secret: str = Field(
        description="Signs every delivery (Standard Webhooks, `whsec_...`); shown only now."
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Signs every delivery (Standard Webhooks, `whsec_...`); shown only now."
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    at: dt.datetime
    status: int | None = Field(description="The response's status; null when none came.")
    latency_ms: int
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")


class DeliveryOut(BaseModel):
    id: uuid.UUID = Field(description="Also the `webhook-id` header, after `msg_`.")
    event_id: int = Field(description="The event's id, as `GET /v1/events` numbers it.")
    type: EventType
    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    log: list[AttemptOut]
    created_at: dt.datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class EventBody(BaseModel):
    """What an application receives (the Standard Webhooks shape): a webhook's body, an SSE
    event's `data`."""

    type: EventType
    timestamp: dt.datetime = Field(
        description="When the change was made (its transaction began); `id` gives the order."
    )
    data: dict[str, Any] = Field(description="What changed; its fields depend on `type`.")

    @classmethod
    def of(cls, event: Event) -> EventBody:
        return cls(type=event.type, timestamp=event.created_at, data=event.data)


class EventOut(EventBody):
    id: int = Field(description="The event's number among yours (the SSE `id`): resume after it.")

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(id=event.seq, type=event.type, timestamp=event.created_at, data=event.data)


class EventPage(BaseModel):
    items: list[EventOut] = Field(description="Oldest first.")
    next_after: int = Field(
        description="`after` for the next page: the last item's `id`, or this page's `after` "
        "when it is empty (poll again with it)."
    )
    latest: int = Field(
        description="The `id` of your newest event: a stream or a poll that starts after it "
        "sees only what happens from now on."
    )
