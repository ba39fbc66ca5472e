"""The image view's capture facts and similar-photos strip, and the grid's capture-time order,
in headless Chromium against the real stack and a real worker. Expected facts come from the
files themselves (Pillow), not from the API's answers, wherever the file holds them."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import ExifTags, Image, ImageCms
from playwright.sync_api import Browser, Locator, Page, Route, expect

from tests.api.web.conftest import DESKTOP, Browsing, open_page
from tests.support.callers import new_caller, upload, walk
from tests.support.corpus import CORPUS
from tests.support.waiting import wait_for, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("web_worker")]

CANON = CORPUS / "valid/jpeg_camera_canon40d_exif.jpg"
HOSTILE = CORPUS / "malicious/xss_in_all_metadata.jpg"
# Markup in a title: were it parsed, the broken <img> would run its handler (and log a 404).
HOSTILE_TITLE = '<img src=x onerror="window.pwned = 1">'
# The browser's zone is 14 hours off UTC: a naive capture time read as UTC would change day.
ZONE = "Pacific/Kiritimati"
GPS_TAKEN = "2001:02:03 04:05:06"
GPS = {"lat": (52.0, 22.0, 12.79), "lon": (4.0, 53.0, 42.6), "alt": 12.5}


@pytest.fixture
def gb(browser: Browser, live_server: str) -> Iterator[Browsing]:
    """A desktop browser in British English far from UTC: date formats the test can spell out."""
    yield from open_page(browser, live_server, DESKTOP, locale="en-GB", timezone_id=ZONE)


def encoded(pixels: Image.Image, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    pixels.convert("RGB").save(
        buf, "JPEG", quality=quality, exif=(exif if exif is not None else Image.Exif()).tobytes()
    )
    return buf.getvalue()


def geotagged(pixels: Image.Image) -> bytes:
    """A JPEG with a GPS position, an altitude and a capture time."""
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = GPS_TAKEN
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS["lat"]
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = GPS["lon"]
    gps[ExifTags.GPS.GPSAltitudeRef] = b"\x00"
    gps[ExifTags.GPS.GPSAltitude] = GPS["alt"]
    return encoded(pixels, exif=exif)


def degrees(dms: tuple[float, float, float]) -> float:
    d, m, s = dms
    return d + m / 60 + s / 3600


def canon_expected() -> dict[str, str]:
    """The capture facts as the page should word them, read off the file with Pillow."""
    with Image.open(CANON) as im:
        exif = im.getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        icc = im.info["icc_profile"]
    taken = dt.datetime.strptime(sub[ExifTags.Base.DateTimeOriginal], "%Y:%m:%d %H:%M:%S")
    make, model = exif[ExifTags.Base.Make], exif[ExifTags.Base.Model]
    assert model.startswith(make)  # "Canon" + "Canon EOS 40D": the make is said once
    seconds = float(sub[ExifTags.Base.ExposureTime])
    assert seconds < 1
    profile = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    return {
        "Taken": f"{taken.day} {taken:%b %Y}, {taken:%H:%M:%S}",  # en-GB, as the camera recorded
        "Camera": model,
        "Exposure": f"ISO {sub[ExifTags.Base.ISOSpeedRatings]}, "
        f"f/{float(sub[ExifTags.Base.FNumber]):g}, 1/{round(1 / seconds)} s, "
        f"{float(sub[ExifTags.Base.FocalLength]):g} mm",
        "Colour profile": profile.strip(),
    }


def capture_facts(viewer: Locator) -> dict[str, str]:
    """The viewer's capture facts section as {name: text}."""
    section = viewer.locator("section.capture")
    return dict(
        zip(
            section.locator("dt").all_inner_texts(),
            section.locator("dd").all_inner_texts(),
            strict=True,
        )
    )


def grid_ids(page: Page) -> list[str]:
    ids = page.locator("#grid li").evaluate_all("lis => lis.map(li => li.dataset.id)")
    assert isinstance(ids, list)
    return [str(i) for i in ids]


def load_all(page: Page) -> None:
    """Follow the listing's cursors to the end, a page a click (what scrolling does too)."""
    more = page.get_by_role("button", name="Load more")
    while more.is_visible():
        before = page.locator("#grid li").count()
        more.click()
        expect(page.locator("#grid li")).not_to_have_count(before)


def unnamed_controls(page: Page, scope: str) -> list[str]:
    result = page.eval_on_selector_all(
        f"{scope} input, {scope} select, {scope} button",
        """els => els.filter(e => {
            const named = (e.labels && e.labels.length) || e.getAttribute('aria-label')
                || (e.tagName === 'BUTTON' && e.textContent.trim());
            return !named;
        }).map(e => e.outerHTML.slice(0, 80))""",
    )
    assert isinstance(result, list)
    return result


def small_pages(page: Page, limit: int) -> list[str]:
    """The grid's listing requests ask for `limit` items a page (a few images then span several
    pages); returns the URLs that went out, as the page sent them."""
    sent: list[str] = []

    def shrink(route: Route) -> None:
        url = route.request.url
        sent.append(url)
        route.continue_(url=re.sub(r"([?&]limit=)24\b", rf"\g<1>{limit}", url))

    page.route(re.compile(r".*/v1/images\?(?!.*status=).*limit=24.*"), shrink)
    return sent


def test_capture_facts_similar_photos_and_capture_time_order(
    gb: Browsing, client: TestClient
) -> None:
    caller = new_caller(client)
    resp = client.patch("/v1/auth/me", headers=caller.headers, json={"expose_location": True})
    assert resp.status_code == 200
    assert resp.json()["expose_location"] is True

    astronaut = Image.fromarray(skimage.data.astronaut())
    w, h = astronaut.size
    files: list[tuple[str, bytes, dict[str, str]]] = [
        ("canon.jpg", CANON.read_bytes(), {}),
        ("chelsea-gps.jpg", geotagged(Image.fromarray(skimage.data.chelsea())), {}),
        ("astronaut.jpg", encoded(astronaut), {}),
        ("astronaut-half.jpg", encoded(astronaut.resize((w // 2, h // 2), Image.LANCZOS)), {}),
        ("astronaut-q50.jpg", encoded(astronaut, quality=50), {}),
        ("coffee.jpg", encoded(Image.fromarray(skimage.data.coffee())), {}),
        ("hostile.jpg", HOSTILE.read_bytes(), {"title": HOSTILE_TITLE}),
    ]
    ids: dict[str, str] = {}
    for name, data, fields in files:
        status, body = upload(client, caller, data, filename=name, **fields)
        assert status == 201, body
        ids[name] = str(body["id"])
    details = {
        name: wait_for_status(client, caller, image_id, "ready", timeout=120)
        for name, image_id in ids.items()
    }
    copies = {ids["astronaut-half.jpg"], ids["astronaut-q50.jpg"]}

    def duplicates_of(name: str) -> set[str]:
        body = client.get(f"/v1/images/{ids[name]}", headers=caller.headers).json()
        return set(body["near_duplicates"])

    wait_for(lambda: duplicates_of("astronaut.jpg") == copies, "the copies to be linked", 60)

    page, watch = gb.page, gb.watch
    sent = small_pages(page, 3)  # seven images: three pages
    page.goto(f"/#key={caller.token}")
    expect(page.locator("#count")).to_have_text("7 images")
    expect(page.locator("#grid li")).to_have_count(3)
    load_all(page)
    expect(page.locator("#grid li")).to_have_count(7)
    viewer = page.get_by_role("dialog")

    # 1. The Canon photo's capture facts, worded as photographers write them.
    page.get_by_role("button", name="canon.jpg").click()
    expect(viewer.get_by_role("heading", name="canon.jpg")).to_be_visible()
    expect(viewer.get_by_role("heading", name="Capture")).to_be_visible()
    facts = capture_facts(viewer)
    assert facts == canon_expected()
    assert "f/7.1" in facts["Exposure"]
    assert "1/160 s" in facts["Exposure"]
    assert "Lens" not in facts  # nothing in the file: left out, not "null"
    taken = viewer.locator("section.capture time")
    expect(taken).to_have_attribute("datetime", details["canon.jpg"]["metadata"]["taken_at"])
    expect(viewer.locator(".similar-button")).to_have_count(0)
    expect(viewer.get_by_role("heading", name="Similar photos")).to_have_count(0)
    gb.screenshot("photo-1-capture-facts")
    page.keyboard.press("Escape")

    # 2. A geotagged photo: position to five decimals and altitude (the owner turned them on).
    page.get_by_role("button", name="chelsea-gps.jpg").click()
    expect(viewer.get_by_role("heading", name="chelsea-gps.jpg")).to_be_visible()
    expect(viewer.locator("section.capture")).to_be_visible()
    facts = capture_facts(viewer)
    assert facts["Location"] == f"{degrees(GPS['lat']):.5f}, {degrees(GPS['lon']):.5f}"
    assert facts["Altitude"] == f"{GPS['alt']:g} m"
    assert facts["Taken"] == "3 Feb 2001, 04:05:06"  # GPS_TAKEN, in en-GB
    page.keyboard.press("Escape")

    # 3. The astronaut: exactly its two copies, as thumbnails; the keyboard opens one.
    page.get_by_role("button", name="astronaut.jpg", exact=True).click()
    expect(viewer.get_by_role("heading", name="astronaut.jpg")).to_be_visible()
    strip = viewer.locator(".similar-button")
    expect(strip).to_have_count(2)
    expect(viewer.get_by_role("heading", name="Similar photos")).to_be_visible()
    assert set(strip.evaluate_all("bs => bs.map(b => b.dataset.id)")) == copies
    names = strip.evaluate_all("bs => bs.map(b => b.getAttribute('aria-label'))")
    assert sorted(names) == ["astronaut-half.jpg", "astronaut-q50.jpg"]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#viewer .similar-button img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    thumbs = strip.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(0 < width <= 400 for width in thumbs)  # thumbnails, not the originals (512 px)
    # Coffee, the one unlike the others, is not offered; the page made no facts up either.
    assert ids["coffee.jpg"] not in strip.evaluate_all("bs => bs.map(b => b.dataset.id)")
    assert unnamed_controls(page, "#viewer") == []
    gb.screenshot("photo-2-similar")
    viewer.get_by_role("button", name="astronaut-half.jpg").focus()
    page.keyboard.press("Enter")
    expect(viewer.get_by_role("heading", name="astronaut-half.jpg")).to_be_visible()
    back = viewer.locator(".similar-button")
    expect(back).to_have_count(2)
    assert set(back.evaluate_all("bs => bs.map(b => b.dataset.id)")) == {
        ids["astronaut.jpg"],
        ids["astronaut-q50.jpg"],
    }
    viewer.get_by_role("button", name="astronaut-q50.jpg").click()
    expect(viewer.get_by_role("heading", name="astronaut-q50.jpg")).to_be_visible()
    page.keyboard.press("Escape")

    # 4. A distinct photo has no strip.
    page.get_by_role("button", name="coffee.jpg").click()
    expect(viewer.get_by_role("heading", name="coffee.jpg")).to_be_visible()
    expect(viewer.locator("section.capture, section.similar-photos")).to_have_count(0)
    page.keyboard.press("Escape")

    # 5. Hostile text from the file and the title: shown as text, never run.
    page.get_by_role("button", name=HOSTILE_TITLE).click()
    expect(viewer.get_by_role("heading", level=2)).to_have_text(HOSTILE_TITLE)
    meta: dict[str, Any] = details["hostile.jpg"]["metadata"]
    facts = capture_facts(viewer)
    camera = meta["camera"] or {}
    assert "<script>" in (camera.get("model") or "") + (meta["lens"] or "")
    if camera.get("model"):
        assert "<script>alert(1)</script>" in facts["Camera"]
    if meta["lens"]:
        assert facts["Lens"] == meta["lens"]
    assert viewer.locator("script, img[src='x']").count() == 0
    assert page.locator("#grid img[src='x']").count() == 0
    assert page.evaluate("window.pwned") is None
    page.keyboard.press("Escape")

    # 6. Date taken: the dated photos first, newest capture first; pages follow the cursors.
    default = grid_ids(page)
    assert default == walk(client, caller, "/v1/images")
    assert default[-1] == ids["canon.jpg"]  # the first upload
    sent.clear()
    page.get_by_label("Sort by").select_option(label="Date taken")
    expect(page.locator("#grid li").first).to_have_attribute("data-id", ids["canon.jpg"])
    expect(page.locator("#grid li")).to_have_count(3)
    load_all(page)
    by_capture = grid_ids(page)
    assert by_capture[:2] == [ids["canon.jpg"], ids["chelsea-gps.jpg"]]  # 2008, then 2001
    assert by_capture == walk(client, caller, "/v1/images", sort="taken_at")
    assert len(set(by_capture)) == 7
    assert len(sent) == 3, sent
    assert all("sort=taken_at" in url for url in sent), sent
    assert sum("cursor=" in url for url in sent) == 2
    expect(page.locator("#count")).to_have_text("7 images")
    gb.screenshot("photo-3-date-taken")

    # The choice holds for the tab, and goes with signing out.
    page.reload()
    expect(page.get_by_label("Sort by")).to_have_value("taken_at")
    expect(page.locator("#grid li").first).to_have_attribute("data-id", ids["canon.jpg"])
    page.get_by_role("button", name="Clear").click()  # clears filters, not the order
    expect(page.get_by_label("Sort by")).to_have_value("taken_at")
    expect(page.locator("#grid li").first).to_have_attribute("data-id", ids["canon.jpg"])
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    assert watch.errors == []
    assert watch.foreign == []


def test_exposure_and_time_wording(gb: Browsing) -> None:
    """The page's wording for values the corpus lacks: long exposures, offsets, a make once."""
    page = gb.page
    page.goto("/")
    said = page.evaluate(
        """async () => {
            const p = await import('/static/photo.js');
            return {
                shutters: [1 / 4000, 1 / 3, 0.4, 0.5, 1, 1.3, 30].map(p.shutter),
                exposure: p.exposure({iso: 3200, f_number: 8.0, exposure_time: 0.01,
                                      focal_length: 23.5}),
                partial: p.exposure({iso: null, f_number: 2.8, exposure_time: null,
                                     focal_length: null}),
                none: p.exposure({iso: null, f_number: null, exposure_time: null,
                                  focal_length: null}),
                offset: p.takenAt('2021-07-04T23:30:00+02:00'),
                utc: p.takenAt('2021-07-04T23:30:00Z'),
                naive: p.takenAt('1999-12-31T23:59:59'),
                cameras: [{make: 'Canon', model: 'Canon EOS 40D'},
                          {make: 'FUJIFILM', model: 'X-T4'},
                          {make: null, model: 'Pixel 8'}, {make: '', model: ''}].map(p.camera),
                where: [p.position({latitude: -33.8688, longitude: 151.20929, altitude: null}),
                        p.altitude({latitude: 0, longitude: 0, altitude: null})],
            };
        }"""
    )
    assert said == {
        "shutters": ["1/4000 s", "1/3 s", "0.4 s", "1/2 s", "1 s", "1.3 s", "30 s"],
        "exposure": "ISO 3200, f/8, 1/100 s, 23.5 mm",
        "partial": "f/2.8",
        "none": None,
        "offset": "4 Jul 2021, 23:30:00 (UTC+02:00)",  # as recorded there, not moved here
        "utc": "4 Jul 2021, 23:30:00 (UTC)",
        "naive": "31 Dec 1999, 23:59:59",
        "cameras": ["Canon EOS 40D", "FUJIFILM X-T4", "Pixel 8", None],
        "where": ["-33.86880, 151.20929", None],
    }
    assert gb.watch.errors == []
