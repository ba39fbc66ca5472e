"""The web gallery driven in headless Chromium against the real stack and a real worker."""

from __future__ import annotations

import base64
import io
import re
import uuid
from urllib.parse import urlsplit

import blurhash  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect

from media_api.main import create_app
from media_api.settings import Settings
from tests.api.web.conftest import DESKTOP, Browsing, open_page
from tests.imaging.test_tagging import CAT_LABELS, skimage_photo
from tests.support.callers import new_caller, upload
from tests.support.corpus import CORPUS
from tests.support.images import noise_jpeg, png
from tests.support.serving import serve
from tests.support.waiting import wait_for, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("web_worker")]

PASSWORD = "correct horse battery"
# Chromium reports every non-2xx response in the console; this one is the test's bad file.
EXPECTED_415 = "the server responded with a status of 415"


def drop_files(page: Page, selector: str, files: dict[str, tuple[str, bytes]]) -> None:
    """Drag and drop: a `drop` event whose DataTransfer holds real File objects."""
    payload = [
        {"name": name, "type": mime, "data": base64.b64encode(data).decode()}
        for name, (mime, data) in files.items()
    ]
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def token_of(page: Page) -> str:
    token = page.evaluate("sessionStorage.getItem('media.credential')")
    assert isinstance(token, str)
    return token


def loaded_images(page: Page, selector: str) -> list[dict[str, object]]:
    result = page.eval_on_selector_all(
        selector,
        """imgs => imgs.map(i => ({src: i.currentSrc, ok: i.complete && i.naturalWidth > 0,
                                    w: i.naturalWidth, variant: i.dataset.variant || null}))""",
    )
    assert isinstance(result, list)
    return result


def test_upload_browse_filter_and_view(desktop: Browsing, settings: Settings) -> None:
    page, watch = desktop.page, desktop.watch
    page.goto("/")

    # 1. A new account through the page.
    email = f"web-{uuid.uuid4().hex[:8]}@example.com"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Upload")).to_be_visible()
    expect(page.locator("#count")).to_have_text("0 images")
    expect(page.locator("#account")).to_have_text(f"Signed in as {email}")
    api = httpx.Client(
        base_url=desktop.base_url, headers={"Authorization": f"Bearer {token_of(page)}"}
    )

    page.get_by_label("New gallery").fill("Cats")
    page.get_by_role("button", name="Create gallery").click()
    expect(page.locator("#notice")).to_have_text("Gallery Cats created.")

    # 2. Two photos dropped, one PDF named .jpg picked: progress, then a status per file.
    chelsea, coffee = skimage_photo("chelsea.png"), skimage_photo("coffee.png")
    drop_files(
        page,
        "#drop",
        {"chelsea.png": ("image/png", chelsea), "coffee.png": ("image/png", coffee)},
    )
    bad = (CORPUS / "malicious" / "disguised_pdf.jpg").read_bytes()
    page.locator("#files").set_input_files(
        files=[{"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": bad}]
    )
    rows = page.locator("#uploads li")
    expect(rows).to_have_count(3)
    failed = rows.filter(has_text="holiday.jpg")
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed.locator(".status")).to_contain_text("Unsupported media type")
    for name in ("chelsea.png", "coffee.png"):
        row = rows.filter(has_text=name)
        expect(row).to_have_attribute("data-state", "ready", timeout=90_000)
        expect(row.locator(".status")).to_have_text("ready")
        assert row.locator("progress").evaluate("p => p.value") == 1  # the bar went all the way

    # 3. The grid: two thumbnails from signed S3 URLs over their BlurHash placeholders.
    tiles = page.locator("#grid li")
    expect(tiles).to_have_count(2)
    expect(page.locator("#count")).to_have_text("2 images")
    expect(page.locator("#grid img.loaded")).to_have_count(2)
    s3_host = urlsplit(settings.s3_endpoint_url or "").netloc
    for img in loaded_images(page, "#grid img"):
        assert img["ok"]
        assert urlsplit(str(img["src"])).netloc == s3_host
        assert "X-Amz-Signature=" in str(img["src"])
    expect(page.locator("#grid canvas.placeholder")).to_have_count(2)
    # Newest first: coffee was dropped second... unless it finished first; the API decides.
    listed = api.get("/v1/images").json()["items"]
    page.wait_for_function(
        "names => [...document.querySelectorAll('#grid li button')]"
        ".map(b => b.ariaLabel).join('/') === names",
        arg="/".join(item["filename"] for item in listed),
    )
    desktop.screenshot("1-uploaded")

    # 4. Filter by a tag the model gave the cat (tagging runs after the thumbnails).
    wait_for(
        lambda: len(api.get("/v1/images", params={"tag": "cat"}).json()["items"]) == 1,
        "the cat photo to be tagged",
        timeout=90,
    )
    page.get_by_label("Tag").fill("cat")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(tiles).to_have_count(1)
    expect(page.locator("#count")).to_have_text("1 image tagged “cat”")
    cat_tile = page.get_by_role("button", name="chelsea.png")
    expect(cat_tile).to_be_visible()
    desktop.screenshot("2-filtered-by-tag")

    # 5. Open it with the keyboard: large variant, facts, tags, jobs, download link.
    cat_tile.focus()
    page.keyboard.press("Enter")
    viewer = page.get_by_role("dialog")
    expect(viewer).to_be_visible()
    expect(viewer.get_by_role("heading", name="chelsea.png")).to_be_visible()
    image_id = page.locator("#grid li").get_attribute("data-id")
    detail = api.get(f"/v1/images/{image_id}").json()
    large = next(v for v in detail["variants"] if v["name"] == "large")
    expect(viewer.locator("img.loaded")).to_have_count(1)
    (shown,) = loaded_images(page, "#viewer img")
    assert shown["ok"]
    assert shown["variant"] == "large"
    assert shown["w"] == large["width"]
    facts = dict(
        zip(
            viewer.locator("dt").all_inner_texts(),
            viewer.locator("dd").all_inner_texts(),
            strict=True,
        )
    )
    assert facts["Dimensions"] == f"{detail['width']} \u00d7 {detail['height']} px"
    assert facts["Type"] == "image/png"
    assert facts["Status"] == "ready"
    assert facts["Size"].endswith("KB")
    shown_tags = viewer.locator("button.tag").evaluate_all(
        "bs => bs.map(b => [b.dataset.tag, b.querySelector('.confidence').textContent])"
    )
    assert shown_tags == [[t["name"], f"{round(t['confidence'] * 100)}%"] for t in detail["tags"]]
    assert {"cat", "animal"} <= {name for name, _ in shown_tags}
    assert CAT_LABELS & {name for name, _ in shown_tags}
    for kind in ("thumbnails", "tagging"):
        expect(viewer.locator(f"tr[data-job='{kind}'] td").first).to_have_text("done")
    href = viewer.get_by_role("link", name="Download original").get_attribute("href")
    assert href is not None
    download = httpx.get(href)
    assert download.status_code == 200
    assert download.content == chelsea
    assert download.headers["content-disposition"].startswith("attachment;")
    desktop.screenshot("3-image-view")

    # 6. Add it to the gallery, close with Escape (focus goes back to the tile), browse the gallery.
    viewer.get_by_label("Gallery").select_option(label="Cats")
    viewer.get_by_role("button", name="Add to gallery").click()
    expect(page.locator("#notice")).to_have_text("Added to Cats.")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(cat_tile).to_be_focused()
    page.get_by_role("button", name="Clear").click()
    expect(tiles).to_have_count(2)
    page.get_by_label("Gallery", exact=True).select_option(label="Cats")
    expect(page.locator("#count")).to_have_text("1 image in Cats")
    expect(tiles).to_have_count(1)
    expect(page.get_by_role("button", name="chelsea.png")).to_be_visible()
    desktop.screenshot("4-gallery")

    assert [e for e in watch.errors if EXPECTED_415 not in e] == []
    assert watch.foreign == []


def test_phone_sized_infinite_scroll_with_a_dev_key_link(
    phone: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    for seed in range(30):
        status, _ = upload(client, caller, png(seed, (40, 30)), filename=f"swatch-{seed:02d}.png")
        assert status == 201
    page = phone.page
    page.goto(f"/#key={caller.token}")  # what `make dev` prints
    expect(page.locator("#count")).to_have_text("30 images")
    assert page.evaluate("location.hash") == ""  # the key leaves the address bar
    tiles = page.locator("#grid li")
    expect(tiles).to_have_count(24)  # the first page
    page.locator("#sentinel").scroll_into_view_if_needed()
    expect(tiles).to_have_count(30)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    labels = tiles.locator("button").evaluate_all(
        "bs => bs.map(b => b.ariaLabel.replace(/ \\(.*\\)$/, ''))"
    )
    assert labels == [f"swatch-{seed:02d}.png" for seed in reversed(range(30))]
    # Tiles uploaded elsewhere catch up with the worker on their own, without a reload.
    expect(page.locator("#grid li[data-status='processing']")).to_have_count(0, timeout=90_000)
    expect(page.locator("#grid img.loaded")).to_have_count(30)
    phone.screenshot("5-phone")

    # Fits the phone: no sideways scrolling, several columns, finger-sized controls.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    columns = page.evaluate(
        "getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    assert columns >= 3
    small = page.eval_on_selector_all(
        "button:not([hidden]), input:not([type=file]), select",
        "els => els.filter(e => e.offsetParent && e.getBoundingClientRect().height < 44)"
        ".map(e => e.outerHTML.slice(0, 80))",
    )
    assert small == []
    assert phone.watch.errors == []
    assert phone.watch.foreign == []


def test_every_control_has_a_name_and_the_keyboard_reaches_the_uploader(
    desktop: Browsing, client: TestClient
) -> None:
    page = desktop.page
    page.goto("/")
    unlabeled = page.eval_on_selector_all(
        "input, select, button",
        """els => els.filter(e => {
            const named = (e.labels && e.labels.length) || e.getAttribute('aria-label')
                || (e.tagName === 'BUTTON' && e.textContent.trim());
            return !named;
        }).map(e => e.outerHTML.slice(0, 80))""",
    )
    assert unlabeled == []

    # Playwright turns file-chooser interception on without waiting for Chromium to confirm;
    # a listener from the start makes sure it is on before Enter opens the chooser.
    page.on("filechooser", lambda _: None)
    caller = new_caller(client)
    page.get_by_text("Use an API key").click()
    page.get_by_label("API key").fill(caller.token)
    page.keyboard.press("Enter")
    expect(page.locator("#count")).to_have_text("0 images")
    page.locator("body").focus()
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
        if reached[-1] == "Choose files":
            break
    assert "Choose files" in reached, reached
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()


def throttle_uploads(page: Page, bytes_per_second: int) -> None:
    """Chromium's network emulation (-1: no limit): uploads that take seconds, not milliseconds."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 20 if bytes_per_second > 0 else 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )


def test_the_progress_bar_follows_a_slow_upload(desktop: Browsing, client: TestClient) -> None:
    photo = noise_jpeg(1200, 900)
    assert len(photo) > 600_000
    page = desktop.page
    page.goto(f"/#key={new_caller(client).token}")
    expect(page.locator("#count")).to_have_text("0 images")
    throttle_uploads(page, 400_000)  # a couple of seconds on the wire: the bar has to move
    page.evaluate(
        """() => { window.seen = [];
                   setInterval(() => document.querySelectorAll('#uploads progress')
                     .forEach(p => window.seen.push(p.value)), 50); }"""
    )
    page.locator("#files").set_input_files(
        files=[{"name": "noise.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    expect(page.locator("#uploads li")).to_have_attribute(
        "data-state", re.compile("processing|ready"), timeout=60_000
    )
    seen = page.evaluate("window.seen")
    partial = sorted({v for v in seen if 0 < v < 1})
    assert len(partial) >= 3, seen  # several steps between empty and full
    assert seen == sorted(seen)  # it never goes backwards
    expect(page.locator("#uploads li")).to_have_attribute("data-state", "ready", timeout=90_000)


def test_a_batch_of_uploads_is_followed_by_one_poll(desktop: Browsing, client: TestClient) -> None:
    page = desktop.page
    page.goto(f"/#key={new_caller(client).token}")
    expect(page.locator("#count")).to_have_text("0 images")
    batch = [
        {"name": f"batch-{n}.png", "mimeType": "image/png", "buffer": png(100 + n, (40, 30))}
        for n in range(8)
    ]
    page.locator("#files").set_input_files(files=batch)
    rows = page.locator("#uploads li")
    expect(rows).to_have_count(8)
    expect(page.locator("#uploads li[data-state='ready']")).to_have_count(8, timeout=90_000)
    expect(page.locator("#grid li[data-status='ready']")).to_have_count(8)
    expect(page.locator("#count")).to_have_text("8 images")
    detail = re.compile(r"GET /v1/images/[0-9a-f-]{36}")
    details = [r for r in desktop.watch.requests if detail.fullmatch(r)]
    # Each image is asked about once, when it has left the processing list; the waiting
    # itself is one listing request a round for the whole batch.
    assert len(details) <= len(batch), details
    assert len(set(details)) == len(details)
    assert desktop.watch.errors == []


def test_step_through_the_grid_in_the_view(desktop: Browsing, client: TestClient) -> None:
    caller = new_caller(client)
    for n in range(3):
        assert upload(client, caller, png(200 + n, (40, 30)), filename=f"step-{n}.png")[0] == 201
    page = desktop.page
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#count")).to_have_text("3 images")
    page.get_by_role("button", name=re.compile("^step-2.png")).click()  # the newest, first
    viewer = page.get_by_role("dialog")
    heading = viewer.get_by_role("heading", level=2)
    expect(heading).to_have_text("step-2.png")
    expect(viewer.get_by_role("button", name="Previous")).to_be_disabled()
    page.keyboard.press("ArrowRight")
    expect(heading).to_have_text("step-1.png")
    viewer.get_by_role("button", name="Next").click()
    expect(heading).to_have_text("step-0.png")
    expect(viewer.get_by_role("button", name="Next")).to_be_disabled()
    viewer.get_by_role("button", name="Previous").focus()
    page.keyboard.press("ArrowLeft")
    expect(heading).to_have_text("step-1.png")
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name=re.compile("^step-1.png"))).to_be_focused()
    assert desktop.watch.errors == []


def test_delete_from_the_view_and_sign_out(desktop: Browsing, client: TestClient) -> None:
    caller = new_caller(client)
    kept = upload(client, caller, png(1, (40, 30)), filename="kept.png")[1]
    doomed = upload(client, caller, png(2, (40, 30)), filename="doomed.png")[1]
    page = desktop.page
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#count")).to_have_text("2 images")
    page.get_by_role("button", name=re.compile("^kept.png")).click()
    viewer = page.get_by_role("dialog")
    viewer.get_by_label("Title").fill("Kept for later")
    viewer.get_by_role("button", name="Save title").click()
    expect(page.locator("#notice")).to_have_text("Title saved.")
    expect(viewer.get_by_role("heading", name="Kept for later")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name=re.compile("^Kept for later"))).to_be_visible()
    renamed = client.get(f"/v1/images/{kept['id']}", headers=caller.headers).json()
    assert renamed["title"] == "Kept for later"

    page.on("dialog", lambda dialog: dialog.accept())  # "Delete doomed.png ...?"
    page.get_by_role("button", name=re.compile("^doomed.png")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete image").click()
    expect(page.locator("#notice")).to_have_text("Image deleted.")
    expect(page.locator("#count")).to_have_text("1 image")
    expect(page.locator("#grid li")).to_have_count(1)
    assert page.locator("#grid li").get_attribute("data-id") == kept["id"]
    assert client.get(f"/v1/images/{doomed['id']}", headers=caller.headers).status_code == 404

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#grid li")).to_have_count(0)  # nothing left for the next person
    assert page.evaluate("sessionStorage.length") == 0
    assert desktop.watch.errors == []


def test_a_refused_credential_returns_to_sign_in(desktop: Browsing) -> None:
    page = desktop.page
    page.goto("/#key=mk_not-a-real-key")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("signed out")
    assert page.evaluate("sessionStorage.getItem('media.credential')") is None


def test_wrong_password_shows_the_problem(desktop: Browsing) -> None:
    page = desktop.page
    page.goto("/")
    page.get_by_label("Email").fill("nobody@example.test")
    page.get_by_label("Password").fill("wrong password here")
    page.get_by_role("button", name="Sign in", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).not_to_be_empty()
    problem = httpx.post(
        f"{desktop.base_url}/v1/auth/token",
        data={"username": "nobody@example.test", "password": "wrong password here"},
    ).json()
    expect(alert).to_contain_text(problem["title"])


@pytest.mark.parametrize("size", [(32, 32), (17, 9)])
def test_the_page_decodes_blurhash_like_the_reference(
    desktop: Browsing, size: tuple[int, int]
) -> None:
    photo = Image.open(io.BytesIO(skimage_photo("coffee.png"))).convert("RGB").resize((16, 11))
    rows = [[photo.getpixel((x, y)) for x in range(16)] for y in range(11)]
    hash_ = blurhash.encode(rows, 4, 3)
    width, height = size
    page = desktop.page
    page.goto("/")
    rgba = page.evaluate(
        "async ([h, w, ht]) => Array.from((await import('/static/blurhash.js')).decode(h, w, ht))",
        [hash_, width, height],
    )
    expected = blurhash.decode(hash_, width, height)
    worst = max(
        abs(rgba[4 * (y * width + x) + c] - expected[y][x][c])
        for y in range(height)
        for x in range(width)
        for c in range(3)
    )
    assert worst <= 1  # rounding only
    assert set(rgba[3::4]) == {255}


def test_key_links_say_as_whom_and_can_be_turned_off(
    browser: Browser, desktop: Browsing, client: TestClient, app_settings: Settings
) -> None:
    caller = new_caller(client)
    email = client.get("/v1/auth/me", headers=caller.headers).json()["email"]
    page = desktop.page
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#notice")).to_have_text(
        f"Signed in with the key from the link as {email}."
    )
    expect(page.locator("#account")).to_have_text(f"Signed in as {email}")

    # The default: a link cannot sign anybody in (any site could send you one).
    closed = app_settings.model_copy(update={"web_key_links": False})
    with serve(create_app(closed)) as url:
        for other in open_page(browser, url, DESKTOP):
            other.page.goto(f"/#key={caller.token}")
            expect(other.page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(other.page.get_by_role("alert")).to_contain_text("Sign-in links are turned off")
            assert other.page.evaluate("sessionStorage.getItem('media.credential')") is None
            assert other.page.evaluate("location.hash") == ""


def test_signing_out_cancels_uploads_in_flight(desktop: Browsing, client: TestClient) -> None:
    first, second = new_caller(client), new_caller(client)
    page = desktop.page
    page.goto(f"/#key={first.token}")
    expect(page.locator("#count")).to_have_text("0 images")
    throttle_uploads(page, 100_000)
    page.locator("#files").set_input_files(
        files=[{"name": "private.jpg", "mimeType": "image/jpeg", "buffer": noise_jpeg(800, 600)}]
    )
    expect(page.locator("#uploads li")).to_have_attribute("data-state", "uploading")
    page.get_by_role("button", name="Sign out").click()
    throttle_uploads(page, -1)
    page.get_by_text("Use an API key").click()
    page.get_by_label("API key").fill(second.token)
    page.keyboard.press("Enter")
    expect(page.locator("#count")).to_have_text("0 images")
    page.wait_for_timeout(1500)  # time enough for a late response to land, were it allowed to
    expect(page.locator("#grid li")).to_have_count(0)
    expect(page.locator("#uploads li")).to_have_count(0)
    for caller in (first, second):  # the upload was cancelled, not finished for anyone
        listed = client.get("/v1/images", headers=caller.headers).json()["items"]
        assert listed == []


def test_a_thumbnail_that_fails_to_load_gets_fresh_urls(
    desktop: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    image = upload(client, caller, png(300, (40, 30)), filename="flaky.png")[1]
    wait_for_status(client, caller, str(image["id"]), "ready")
    page = desktop.page
    failed: list[str] = []

    def refuse_once(route: Route) -> None:
        if not failed:
            failed.append(route.request.url)
            route.abort()  # what an expired signed URL amounts to for the <img>
        else:
            route.continue_()

    page.route(re.compile(r".*/variants/.*thumb.*"), refuse_once)
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#grid img.loaded")).to_have_count(1)
    assert len(failed) == 1
    # The tile asked for its image again (fresh signed URLs) and redrew itself with them.
    assert f"GET /v1/images/{image['id']}" in desktop.watch.requests


def test_a_failed_delete_says_why_and_keeps_the_image(
    desktop: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    upload(client, caller, png(301, (40, 30)), filename="keep-me.png")
    page = desktop.page
    page.route(
        re.compile(r".*/v1/images/[0-9a-f-]{36}$"),
        lambda route: (
            route.fulfill(
                status=503,
                content_type="application/problem+json",
                body='{"title": "Service unavailable", "code": "service-unavailable"}',
            )
            if route.request.method == "DELETE"
            else route.continue_()
        ),
    )
    page.goto(f"/#key={caller.token}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=re.compile("^keep-me.png")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete image").click()
    expect(page.locator("#notice")).to_have_text("Could not delete it: Service unavailable")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#grid li")).to_have_count(1)
    assert [e for e in desktop.watch.errors if "status of 503" not in e] == []
