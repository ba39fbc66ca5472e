"""The gallery uploads with tus (tus-js-client): a network drop resumes by itself, and after a
reload the same file picked again goes on from where the server stopped."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import CDPSession, Page, Request, expect

from tests.api.web.conftest import Browsing
from tests.support.callers import Caller, new_caller
from tests.support.corpus import CORPUS
from tests.support.images import noise_png, png

pytestmark = pytest.mark.slow

CREATE = "POST /v1/uploads/tus"
DONE = re.compile("processing|ready")
# Chromium reports each request the emulated outage refused in the console.
OFFLINE_ERROR = "net::ERR_INTERNET_DISCONNECTED"
CHUNK = 8 * 1024 * 1024  # the page's PATCH size
UNFINISHED = "Object.keys(localStorage).filter(k => k.startsWith('tus::'))"
STATIC = files("media_api.api.web") / "static"
# dist/tus.min.js of tus-js-client 4.3.1 as npm publishes it (`npm pack tus-js-client@4.3.1`).
TUS_MIN_JS_SHA256 = "8cbb1b63fccc3bba0ae73ad1deb160ce046c3750851d0c3e94921ae3ef070eb8"
# Chromium reports the refused file's answer in the console.
EXPECTED_415 = "the server responded with a status of 415"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three of the page's chunks, on disk: picked again after a reload it is the same file
    (name, size, date), and Playwright hands the browser a path faster than 20 MB of bytes."""
    path = tmp_path_factory.mktemp("tus-web") / "big.png"
    path.write_bytes(noise_png(4600))
    assert 2 * CHUNK < path.stat().st_size < 3 * CHUNK
    return path


def signed_in(browsing: Browsing, caller: Caller) -> Page:
    page = browsing.page
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#count")).to_have_text("0 images")
    return page


def throttle(page: Page, bytes_per_second: int) -> CDPSession:
    """Chromium's upload throttle, so a transfer can be caught in the middle; detaching the
    session lifts it (and lets Playwright's offline switch take effect)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )
    return cdp


def tus_requests(page: Page) -> list[Request]:
    """Every tus request the page sends from now on."""
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if "/v1/uploads/tus" in r.url else None)
    return sent


def until(page: Page, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll `condition`, letting the page run meanwhile (Playwright's sync API handles its
    events only inside its own calls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        page.wait_for_timeout(50)


def upload_state(api: httpx.Client, upload_url: str) -> dict[str, object]:
    body: dict[str, object] = api.get(f"/v1/uploads/{upload_url.rsplit('/', 1)[1]}").json()
    return body


def test_a_picked_file_goes_up_with_tus(desktop: Browsing, client: TestClient) -> None:
    caller = new_caller(client)
    page = signed_in(desktop, caller)
    sent = tus_requests(page)
    photo = png(400, (40, 30))
    page.locator("#files").set_input_files(
        files=[{"name": "tus.png", "mimeType": "image/png", "buffer": photo}]
    )
    expect(page.locator("#uploads li")).to_have_attribute("data-state", DONE)
    expect(page.locator("#grid li")).to_have_count(1)
    expect(page.locator("#count")).to_have_text("1 image")

    assert [r.method for r in sent] == ["POST", "PATCH"]
    assert sent[1].headers["upload-offset"] == "0"
    api = httpx.Client(base_url=desktop.base_url, headers=caller.headers)
    upload = upload_state(api, sent[1].url)
    assert upload["state"] == "accepted"
    assert upload["offset"] == upload["length"] == len(photo)
    assert page.locator("#grid li").get_attribute("data-id") == upload["image_id"]
    (image,) = api.get("/v1/images").json()["items"]
    assert image["filename"] == "tus.png"
    assert "POST /v1/images" not in desktop.watch.requests
    assert page.evaluate(UNFINISHED) == []  # finished: nothing kept for resuming

    # The same bytes again: the server answers with the image it has.
    page.locator("#files").set_input_files(
        files=[{"name": "again.png", "mimeType": "image/png", "buffer": photo}]
    )
    again = page.locator("#uploads li").filter(has_text="again.png")
    expect(again.locator(".status")).to_contain_text("(already uploaded)")
    expect(page.locator("#count")).to_have_text("1 image")
    assert upload_state(api, sent[-1].url)["image_id"] == upload["image_id"]
    assert desktop.watch.errors == []


def test_a_file_that_is_no_image_is_refused_with_the_servers_words(
    desktop: Browsing, client: TestClient
) -> None:
    page = signed_in(desktop, new_caller(client))
    pdf = (CORPUS / "malicious" / "disguised_pdf.jpg").read_bytes()
    page.locator("#files").set_input_files(
        files=[{"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": pdf}]
    )
    row = page.locator("#uploads li")
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".status")).to_contain_text("Unsupported media type")
    expect(row.get_by_role("button", name="Retry")).to_have_count(0)  # it would fail again
    assert page.evaluate(UNFINISHED) == []  # and there is nothing to resume
    assert [e for e in desktop.watch.errors if EXPECTED_415 not in e] == []


def test_tus_js_client_is_vendored_as_published() -> None:
    script = (STATIC / "tus.min.js").read_bytes()
    assert hashlib.sha256(script).hexdigest() == TUS_MIN_JS_SHA256
    licence = (STATIC / "tus-js-client.LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("The MIT License (MIT)")
    assert "tus - Resumable File Uploads" in licence


def test_a_network_drop_resumes_by_itself(
    desktop: Browsing, client: TestClient, big_file: Path
) -> None:
    caller = new_caller(client)
    page = signed_in(desktop, caller)
    sent = tus_requests(page)
    slow = throttle(page, 8_000_000)
    page.locator("#files").set_input_files(big_file)
    page.wait_for_function("() => document.querySelector('#uploads progress')?.value > 0.05")
    slow.detach()
    page.context.set_offline(True)
    row = page.locator("#uploads li")
    expect(row.locator(".status")).to_have_text("offline: waiting for the network")
    assert page.evaluate("navigator.onLine") is False
    page.context.set_offline(False)
    expect(row).to_have_attribute("data-state", DONE, timeout=60_000)
    expect(page.locator("#grid li")).to_have_count(1)

    # One upload, asked where it stood once the network was back, and continued from there.
    methods = [r.method for r in sent]
    assert methods.count("POST") == 1
    assert "HEAD" in methods
    assert {r.url for r in sent[1:]} == {sent[1].url}
    api = httpx.Client(base_url=desktop.base_url, headers=caller.headers)
    upload = upload_state(api, sent[1].url)
    assert upload["state"] == "accepted"
    assert upload["offset"] == upload["length"] == big_file.stat().st_size
    assert len(api.get("/v1/images").json()["items"]) == 1
    assert [e for e in desktop.watch.errors if OFFLINE_ERROR not in e] == []


def test_after_a_reload_the_same_file_resumes(
    desktop: Browsing, client: TestClient, big_file: Path
) -> None:
    caller = new_caller(client)
    page = signed_in(desktop, caller)
    api = httpx.Client(base_url=desktop.base_url, headers=caller.headers)
    slow = throttle(page, 8_000_000)
    with page.expect_request(lambda r: r.method == "PATCH") as first:
        page.locator("#files").set_input_files(big_file)
    upload_url = first.value.url
    until(page, lambda: int(str(upload_state(api, upload_url)["offset"])) > 0, "a part stored")
    slow.detach()
    page.reload()
    expect(page.locator("#count")).to_have_text("0 images")  # still signed in (this tab)

    sent = tus_requests(page)
    page.locator("#files").set_input_files(big_file)
    row = page.locator("#uploads li")
    expect(row).to_have_attribute("data-state", "resumable")
    expect(row.get_by_role("button", name="Start over")).to_be_visible()
    row.get_by_role("button", name="Resume").click()
    expect(row).to_have_attribute("data-state", DONE, timeout=60_000)
    expect(page.locator("#grid li")).to_have_count(1)

    # The same upload went on where the server stopped: less than the whole file went twice.
    assert [r.method for r in sent][:2] == ["HEAD", "PATCH"]
    assert {r.url for r in sent} == {upload_url}
    resumed_at = int(sent[1].headers["upload-offset"])
    size = big_file.stat().st_size
    assert 0 < resumed_at < size
    upload = upload_state(api, upload_url)
    assert upload["state"] == "accepted"
    assert upload["offset"] == upload["length"] == size
    assert len(api.get("/v1/images").json()["items"]) == 1
    assert page.evaluate(UNFINISHED) == []
    assert desktop.watch.errors == []
