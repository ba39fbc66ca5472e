"""What one successful upload costs the database: statements counted as they are sent."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from media_api.resources import AppState
from tests.support.callers import new_caller, upload
from tests.support.images import png


def test_an_upload_writes_its_rows_without_reading_them_back(client: TestClient) -> None:
    caller = new_caller(client)
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.lstrip()[:80])

    event.listen(state.engine.sync_engine, "before_cursor_execute", count)
    try:
        status, body = upload(client, caller, png(8080), filename="a.png")
    finally:
        event.remove(state.engine.sync_engine, "before_cursor_execute", count)
    assert status == 201, body
    # The credential (select, last used), then dedupe, quota, insert, reserve, job slot, jobs,
    # and the image.created event (numbered, its deliveries, the wake-up: one statement): 9,
    # where reading the image, its jobs and its tags back after writing them made it 12.
    assert len(sent) == 9, sent
    assert sent[-1].startswith("WITH seq AS"), sent  # the event, last
    assert not any(s.startswith("SELECT") for s in sent[4:]), sent  # nothing re-read
