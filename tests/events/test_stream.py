"""`GET /v1/events` as Server-Sent Events on a real socket: events arrive as they commit (woken
by Postgres's NOTIFY, not by the heartbeat), a reconnect with `Last-Event-ID` across a restart
of the API misses nothing and repeats nothing, another owner's events never appear, and an
open stream does not hold up `media-api serve`'s stop."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from media_api.events.listener import Listener
from media_api.main import create_app
from media_api.settings import Settings
from tests.events.test_outbox import reject_pdf
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import png
from tests.support.serving import serve, serve_process
from tests.support.waiting import wait_for

# Far longer than any wait below: an event that arrives came through the LISTEN wake-up.
HEARTBEAT = "120"
READ_SECONDS = 20


class Stream:
    """An open SSE response, read one event at a time (comments skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if not line:
                if fields:
                    return {
                        "event": fields["event"],
                        "id": int(fields["id"]),
                        "data": json.loads(fields["data"]),
                    }
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")


@contextmanager
def stream(base_url: str, caller: Caller, **headers: str) -> Iterator[Stream]:
    with httpx.stream(
        "GET",
        f"{base_url}/v1/events",
        headers={**caller.headers, "Accept": "text/event-stream", **headers},
        timeout=httpx.Timeout(10, read=READ_SECONDS),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


@pytest.fixture(scope="module")
def quiet_server(app_settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The API on a socket whose streams read the outbox only when woken (or every 2 min)."""
    slow = app_settings.model_copy(update={"sse_heartbeat_seconds": float(HEARTBEAT)})
    app = create_app(slow)
    with serve(app) as url:
        yield url, app


def test_events_arrive_as_they_commit_and_only_the_owners(
    client: TestClient, caller: Caller, quiet_server: tuple[str, FastAPI]
) -> None:
    url, app = quiet_server
    listener: Listener = app.state.media.listener
    other = new_caller(client)
    reject_pdf(client, caller)  # before the stream opens: sent first
    with stream(url, caller) as mine, stream(url, other) as theirs:
        first = mine.next()
        assert first["id"] == 1
        assert first["event"] == "upload.rejected"
        assert set(first["data"]) == {"type", "timestamp", "data"}
        assert first["data"]["type"] == "upload.rejected"

        # Committed by another app instance (another process, in a deploy): NOTIFY wakes it.
        reject_pdf(client, other)
        _, image = upload(client, caller, png(5), filename="e.png")
        second = mine.next()
        assert (second["id"], second["event"]) == (2, "image.created")
        assert second["data"]["data"]["image_id"] == image["id"]
        got = theirs.next()
        assert (got["id"], got["event"]) == (1, "upload.rejected")

        client.delete(f"/v1/images/{image['id']}", headers=caller.headers)
        following = mine.next()
        # A running worker may have announced the image's processing in between.
        while following["event"] != "image.deleted":
            following = mine.next()
        assert following["id"] > 2
    # Both streams ended: nothing of their owners is left in the process.
    wait_for(lambda: listener.owners == 0, "the streams' wake-ups to go")


def test_a_reconnect_across_a_restart_misses_and_repeats_nothing(
    client: TestClient, caller: Caller, settings: Settings, tmp_path: Path
) -> None:
    env = {"MEDIA_SSE_HEARTBEAT_SECONDS": HEARTBEAT, "MEDIA_SHUTDOWN_GRACE_SECONDS": "60"}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        serve_process(settings, tmp_path / "one", **env) as server,
        stream(server.url, caller) as live,
    ):
        reject_pdf(client, caller)
        seen = [live.next()["id"]]
        # A stream still open must not hold up the stop: it ends at once, well within the
        # 60 s of grace (serve_process's wait would give up after 30).
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        with pytest.raises((AssertionError, httpx.HTTPError)):
            live.next()  # the stream ended with the server
    # Committed while no API runs.
    reject_pdf(client, caller)
    reject_pdf(client, caller)
    with (
        serve_process(settings, tmp_path / "two", **env) as server,
        stream(server.url, caller, **{"Last-Event-ID": str(seen[-1])}) as again,
    ):
        seen += [again.next()["id"], again.next()["id"]]
        reject_pdf(client, caller)
        seen.append(again.next()["id"])
    assert seen == [1, 2, 3, 4]
