"""`GET /v1/events`: the caller's events, live (Server-Sent Events) or a page at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from media_api.api.deps import CurrentOwner, SessionDep, StateDep
from media_api.events import feed
from media_api.events.feed import MAX_LIMIT, MAX_SEQ
from media_api.events.models import Event
from media_api.events.schemas import EventBody, EventPage
from media_api.resources import AppState

router = APIRouter(prefix="/v1/events", tags=["events"])

EVENT_STREAM = "text/event-stream"

STREAM_DESCRIPTION = (
    "With `Accept: text/event-stream`: Server-Sent Events, one per event as it commits "
    "(`event:` its type, `id:` its number, `data:` `{type, timestamp, data}`), and a comment "
    "every MEDIA_SSE_HEARTBEAT_SECONDS. Otherwise a JSON page."
)


@router.get(
    "",
    response_model=EventPage,
    responses={
        200: {
            "description": STREAM_DESCRIPTION,
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    },
)
async def list_events(
    request: Request,
    owner: CurrentOwner,
    session: SessionDep,
    state: StateDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Events numbered after this one (0: all).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="JSON page size.")] = MAX_LIMIT,
    last_event_id: Annotated[
        int,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_SEQ,
            description="Sent by an SSE client when it reconnects: the later of it and "
            "`after` is where reading resumes.",
        ),
    ] = 0,
) -> Response | EventPage:
    """Your events, oldest first, after `after` (or `Last-Event-ID`): webhooks' events, for
    clients that poll or keep a stream open. Each event's `id` numbers it among yours
    without gaps."""
    start = max(after, last_event_id)  # a stream only moves on: its Last-Event-ID is later
    if wants_stream(request.headers.get("accept", "")):
        return _stream(state, owner, start)
    return await feed.page(session, owner, start, limit)


def wants_stream(accept: str) -> bool:
    """True when the `Accept` header names `text/event-stream` (EventSource sends only that)."""
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


def _stream(state: AppState, owner: uuid.UUID, after: int) -> EventSourceResponse:
    """The SSE response; it ends when the client goes or the server shuts down (sse-starlette
    watches uvicorn's exit flag), and the session of the request is closed before it starts."""
    heartbeat = state.settings.sse_heartbeat_seconds
    events = feed.follow(state.sessions, state.listener, owner, after, heartbeat)
    return EventSourceResponse(_messages(events), ping=heartbeat)


async def _messages(events: AsyncIterator[Event]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        body = EventBody.of(event).model_dump_json()
        yield ServerSentEvent(data=body, event=event.type.value, id=str(event.seq))
