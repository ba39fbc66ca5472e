"""The gallery follows the owner's event stream (GET /v1/events, read with fetch): tiles change
without a reload and without the poller; when the stream fails, the poller brings them along."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Request, Response, Route, expect

from tests.api.web.conftest import Browsing
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import png

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("web_worker")]

STREAM = "**/v1/events*"
# Chromium reports every non-2xx response in the console; these are the tests' own.
EXPECTED_503 = "the server responded with a status of 503"
OFFLINE_ERROR = "net::ERR_INTERNET_DISCONNECTED"
# Every tile status the grid showed, in order (tiles are replaced, not changed in place).
RECORD_STATUSES = """() => {
    window.statuses = [];
    new MutationObserver((changes) => {
        for (const change of changes)
            for (const node of change.addedNodes)
                if (node.dataset && node.dataset.status) window.statuses.push(node.dataset.status);
    }).observe(document.getElementById("grid"), {childList: true});
    window.notReloaded = true;
}"""


def processing_listings(page: Page) -> list[str]:
    """The poller's requests (`GET /v1/images?status=processing`) from now on."""
    seen: list[str] = []

    def sent(request: Request) -> None:
        if "/v1/images?" in request.url and "status=processing" in request.url:
            seen.append(request.url)

    page.on("request", sent)
    return seen


def signed_in(browsing: Browsing, caller: Caller, images: str = "0 images") -> Page:
    page = browsing.page
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#count")).to_have_text(images)
    return page


def pick(page: Page, name: str, seed: int) -> None:
    page.locator("#files").set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": png(seed, (40, 30))}]
    )


def is_stream(message: Request | Response) -> bool:
    """A request (or its answer) for the event stream, not the JSON page the page reads first."""
    request = message if isinstance(message, Request) else message.request
    return "/v1/events" in request.url and "limit=" not in request.url


def test_tiles_follow_the_stream_without_a_reload_or_the_poller(
    desktop: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    page = desktop.page
    listings = processing_listings(page)
    with page.expect_response(is_stream) as stream:
        signed_in(desktop, caller)
    assert stream.value.status == 200
    assert stream.value.request.headers["accept"] == "text/event-stream"
    page.evaluate(RECORD_STATUSES)

    # An upload through the page: processing, then ready, by its events.
    pick(page, "live.png", 301)
    expect(page.locator("#uploads li")).to_have_attribute("data-state", "ready", timeout=60_000)
    tile = page.locator("#grid li")
    expect(tile).to_have_attribute("data-status", "ready")
    expect(tile.locator("img.loaded")).to_have_count(1)
    statuses = page.evaluate("window.statuses")
    assert "processing" in statuses
    assert statuses.index("processing") < statuses.index("ready")

    # An image uploaded elsewhere joins the grid, and one deleted elsewhere leaves it.
    status, elsewhere = upload(client, caller, png(302, (40, 30)), filename="elsewhere.png")
    assert status == 201
    expect(page.locator("#count")).to_have_text("2 images")
    other = page.locator(f"#grid li[data-id='{elsewhere['id']}']")
    expect(other).to_have_attribute("data-status", "ready", timeout=60_000)
    assert client.delete(f"/v1/images/{elsewhere['id']}", headers=caller.headers).status_code == 204
    expect(other).to_have_count(0)
    expect(page.locator("#count")).to_have_text("1 image")

    assert page.evaluate("window.notReloaded") is True
    assert listings == []
    assert desktop.watch.errors == []


def test_when_the_stream_fails_the_poller_brings_the_tile(
    desktop: Browsing, client: TestClient
) -> None:
    page = desktop.page
    refused: list[str] = []

    def unavailable(route: Route) -> None:
        refused.append(route.request.url)
        problem = {"type": "about:blank", "title": "Service Unavailable", "status": 503}
        route.fulfill(status=503, content_type="application/problem+json", body=json.dumps(problem))

    page.route(STREAM, unavailable)
    listings = processing_listings(page)
    signed_in(desktop, new_caller(client))
    page.evaluate(RECORD_STATUSES)
    pick(page, "polled.png", 303)
    expect(page.locator("#uploads li")).to_have_attribute("data-state", "ready", timeout=60_000)
    expect(page.locator("#grid li")).to_have_attribute("data-status", "ready")
    assert page.evaluate("window.notReloaded") is True
    assert refused  # the stream was tried
    assert listings  # and the poller stood in
    assert [e for e in desktop.watch.errors if EXPECTED_503 not in e] == []


def test_a_dropped_stream_resumes_after_the_last_event(
    desktop: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    page = desktop.page
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if is_stream(r) else None)
    listings = processing_listings(page)
    signed_in(desktop, caller)
    status, image = upload(client, caller, png(304, (40, 30)), filename="gone.png")
    assert status == 201
    tile = page.locator(f"#grid li[data-id='{image['id']}']")
    expect(tile).to_have_attribute("data-status", "ready", timeout=60_000)
    assert len(streams) == 1
    assert "last-event-id" not in streams[0].headers

    # The network drops; meanwhile the image is deleted elsewhere.
    page.context.set_offline(True)
    assert client.delete(f"/v1/images/{image['id']}", headers=caller.headers).status_code == 204
    page.wait_for_timeout(300)
    page.context.set_offline(False)
    # Back: the stream goes on after the last event it saw, and the deletion comes through.
    expect(tile).to_have_count(0, timeout=30_000)
    expect(page.locator("#count")).to_have_text("0 images")
    resumed = [r.headers.get("last-event-id") for r in streams[1:]]
    assert resumed, "no reconnection"
    assert all(seq is not None and int(seq) >= 2 for seq in resumed), resumed
    assert listings == []  # not the poller: nothing was processing
    assert [e for e in desktop.watch.errors if OFFLINE_ERROR not in e] == []
