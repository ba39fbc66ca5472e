"""Capture facts, capture-time order and near-duplicates, through the API and the thumbnails
job against the real stack. Expected facts come from `exifread`, an independent reader."""

from __future__ import annotations

import datetime as dt
import io
import re
import uuid
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import exifread  # type: ignore[import-untyped]
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import ExifTags, Image

from media_api.dev.stack import free_port
from media_api.imaging.formats import CORE_FORMATS
from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller, upload, walk
from tests.support.corpus import CORPUS
from tests.support.images import jpeg
from tests.support.jobs import run_variants
from workers.context import WorkerContext
from workers.context import context as worker_context

CANON = CORPUS / "valid/jpeg_camera_canon40d_exif.jpg"
IPHONE = CORPUS / "valid/heic_iphone_photo.heic"
HOSTILE = CORPUS / "malicious/xss_in_all_metadata.jpg"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# Phones shoot HEIF: accepted here on top of the default formats.
FORMATS = {"allowed_formats": CORE_FORMATS | {"HEIF"}}


@pytest.fixture(scope="module")
def offline(app_settings: Settings) -> Iterator[TestClient]:
    """An API whose broker is down: the test runs the thumbnails job itself, in order."""
    dead = app_settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{free_port()}/0", **FORMATS}
    )
    with TestClient(create_app(dead)) as client:
        yield client


def context(settings: Settings, **update: object) -> WorkerContext:
    """The worker's context, accepting what the API accepts (and `update`)."""
    base = worker_context(settings)
    changed = settings.model_copy(update={**FORMATS, **update})
    return WorkerContext(changed, base.engine, base.sessions, base.store)


@pytest.fixture
def owner(offline: TestClient) -> Caller:
    return new_caller(offline)


def _processed(
    client: TestClient, caller: Caller, ctx: WorkerContext, data: bytes, name: str = "p.jpg"
) -> dict[str, Any]:
    """Upload, run the thumbnails job, and return the detail."""
    status, body = upload(client, caller, data, filename=name)
    assert status == 201, body
    assert run_variants(ctx, uuid.UUID(str(body["id"]))).startswith("ready")
    return _detail(client, caller, str(body["id"]))


def _detail(client: TestClient, caller: Caller, image_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/images/{image_id}", headers=caller.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _expose(client: TestClient, caller: Caller, on: bool) -> None:
    resp = client.patch("/v1/auth/me", headers=caller.headers, json={"expose_location": on})
    assert resp.status_code == 200, resp.text
    assert resp.json()["expose_location"] is on


def _exif(path: Any) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return dict(exifread.process_file(fh, details=False))


def _number(tag: Any) -> float:
    value = tag.values[0]
    return float(Fraction(value.num, value.den)) if hasattr(value, "num") else float(value)


def _degrees(tag: Any, ref: Any) -> float:
    d, m, s = (float(Fraction(v.num, v.den)) for v in tag.values)
    sign = -1 if str(ref) in ("S", "W") else 1
    return sign * (d + m / 60 + s / 3600)


def test_camera_facts_read_back_as_the_file_holds_them(
    offline: TestClient, owner: Caller, settings: Settings
) -> None:
    tags = _exif(CANON)
    body = _processed(offline, owner, context(settings), CANON.read_bytes())
    meta = body["metadata"]
    taken = dt.datetime.strptime(str(tags["EXIF DateTimeOriginal"]), "%Y:%m:%d %H:%M:%S")
    # No offset in the file: the wall-clock time, without one.
    assert meta["taken_at"] == taken.isoformat()
    assert body["taken_at"] == taken.isoformat()
    assert meta["camera"] == {"make": str(tags["Image Make"]), "model": str(tags["Image Model"])}
    exposure = meta["exposure"]
    assert exposure["iso"] == int(_number(tags["EXIF ISOSpeedRatings"]))
    assert exposure["f_number"] == pytest.approx(_number(tags["EXIF FNumber"]))
    assert exposure["exposure_time"] == pytest.approx(_number(tags["EXIF ExposureTime"]))
    assert exposure["focal_length"] == pytest.approx(_number(tags["EXIF FocalLength"]))
    assert meta["location"] is None


def test_location_is_shown_only_when_the_owner_turns_it_on(
    offline: TestClient, owner: Caller, settings: Settings, store: S3Store
) -> None:
    tags = _exif(IPHONE) if _readable(IPHONE) else None
    body = _processed(offline, owner, context(settings), IPHONE.read_bytes(), "p.heic")
    meta = body["metadata"]
    assert meta["camera"]["make"] == "Apple"
    assert meta["location"] is None  # off by default
    assert dt.datetime.fromisoformat(meta["taken_at"]).utcoffset() is not None

    _expose(offline, owner, True)
    shown = _detail(offline, owner, body["id"])["metadata"]["location"]
    assert shown is not None
    if tags is not None:
        lat = _degrees(tags["GPS GPSLatitude"], tags["GPS GPSLatitudeRef"])
        lon = _degrees(tags["GPS GPSLongitude"], tags["GPS GPSLongitudeRef"])
        assert (shown["latitude"], shown["longitude"]) == (pytest.approx(lat), pytest.approx(lon))
    else:  # exifread cannot parse this HEIC's box layout: Pillow's reader of the same block
        gps = _pillow_gps(IPHONE.read_bytes())
        assert shown["latitude"] == pytest.approx(gps[0])
        assert shown["longitude"] == pytest.approx(gps[1])
    # Variants carry no metadata at all, location included.
    for variant in body["variants"]:
        key = next(v for v in _row_variants(offline, owner, body["id"]) if v == variant["name"])
        assert key
    _assert_variants_bare(store, owner, body)

    _expose(offline, owner, False)
    assert _detail(offline, owner, body["id"])["metadata"]["location"] is None


def _readable(path: Any) -> bool:
    try:
        _exif(path)
    except Exception:
        return False
    return True


def _pillow_gps(data: bytes) -> tuple[float, float]:
    import pillow_heif  # type: ignore[import-untyped]

    pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(data)) as im:
        gps = im.getexif().get_ifd(ExifTags.IFD.GPSInfo)

    def deg(values: Any, ref: str) -> float:
        d, m, s = (float(v) for v in values)
        return (-1 if ref in ("S", "W") else 1) * (d + m / 60 + s / 3600)

    return deg(gps[2], gps[1]), deg(gps[4], gps[3])


def _row_variants(client: TestClient, caller: Caller, image_id: str) -> list[str]:
    return [v["name"] for v in _detail(client, caller, image_id)["variants"]]


def _assert_variants_bare(store: S3Store, caller: Caller, body: dict[str, Any]) -> None:
    for variant in body["variants"]:
        data = _fetch(variant["url"])
        with Image.open(io.BytesIO(data)) as im:
            assert not im.getexif(), variant["name"]
            assert "icc_profile" not in im.info
            assert "xmp" not in im.info


def _fetch(url: str) -> bytes:
    import httpx

    resp = httpx.get(url)
    assert resp.status_code == 200
    return resp.content


def test_store_location_false_keeps_it_out_of_the_database(
    offline: TestClient, owner: Caller, settings: Settings
) -> None:
    ctx = context(settings)
    private = context(settings, store_location=False)
    _expose(offline, owner, True)
    body = _processed(offline, owner, private, IPHONE.read_bytes(), "p.heic")
    assert body["metadata"]["camera"]["make"] == "Apple"
    assert body["metadata"]["location"] is None
    with ctx.sessions() as session:
        from media_api.images.models import Image as ImageRow

        row = session.get(ImageRow, uuid.UUID(body["id"]))
        assert row is not None
        assert row.photo is not None
        assert "location" not in row.photo  # the row itself has none to leak


def test_hostile_metadata_is_stored_clean_or_dropped(
    offline: TestClient, owner: Caller, settings: Settings
) -> None:
    ctx = context(settings)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "A" * 60_000  # near the 64 KiB a JPEG segment holds
    exif[ExifTags.Base.Model] = "Cam\x00era\x07\x1b[31m"
    exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    exif_ifd[ExifTags.Base.LensModel] = "<script>alert(1)</script>"
    exif_ifd[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG", exif=exif.tobytes())
    for data in (buf.getvalue(), HOSTILE.read_bytes()):
        body = _processed(offline, owner, ctx, data)
        meta = body["metadata"]
        assert meta is not None
        texts = [meta["lens"], meta["colour_profile"]]
        if meta["camera"]:
            texts += [meta["camera"]["make"], meta["camera"]["model"]]
        for text in texts:
            if text is not None:
                assert len(text) <= 128
                assert not CONTROL.search(text)
    built = _detail(offline, owner, _last_id(offline, owner, 2))["metadata"]
    assert built["taken_at"] is None
    assert built["camera"]["make"] == "A" * 128
    assert built["camera"]["model"] == "Camera[31m"
    assert built["lens"] == "<script>alert(1)</script>"  # text, escaped by whoever renders it


def _last_id(client: TestClient, caller: Caller, nth: int) -> str:
    """The id of the caller's nth-newest image (1 = newest)."""
    return walk(client, caller, "/v1/images")[nth - 1]


def _dated(seed: int, taken: str | None) -> bytes:
    return jpeg(Image.new("RGB", (48, 32), (seed * 40 % 256, 90, 140)), taken=taken)


def test_listing_sorts_and_filters_by_capture_time(
    offline: TestClient, owner: Caller, settings: Settings
) -> None:
    ctx = context(settings)
    taken = ["2019:06:01 10:00:00", None, "2021:01:01 00:00:00", "2020:03:15 12:30:00", None]
    ids = [
        _processed(offline, owner, ctx, _dated(seed, when))["id"] for seed, when in enumerate(taken)
    ]
    dated = sorted(
        ((when, image_id) for when, image_id in zip(taken, ids, strict=True) if when),
        reverse=True,
    )
    undated = sorted((i for w, i in zip(taken, ids, strict=True) if w is None), reverse=True)
    expected = [image_id for _, image_id in dated] + undated

    # One page, and one image per page: the same order, the undated after the rest.
    assert walk(offline, owner, "/v1/images", sort="taken_at") == expected
    assert walk(offline, owner, "/v1/images", sort="taken_at", limit=1) == expected

    within = walk(
        offline,
        owner,
        "/v1/images",
        sort="taken_at",
        taken_after="2019-12-31T00:00:00Z",
        taken_before="2021-01-01T00:00:00Z",
    )
    assert within == [ids[3]]

    # A cursor is bound to its sort.
    first = offline.get("/v1/images", headers=owner.headers, params={"limit": 1}).json()
    resp = offline.get(
        "/v1/images",
        headers=owner.headers,
        params={"limit": 1, "sort": "taken_at", "cursor": first["next_cursor"]},
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid-cursor"


def _encoded(pixels: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    pixels.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_near_duplicates_are_found_and_distinct_photos_are_not(
    offline: TestClient, owner: Caller, settings: Settings
) -> None:
    ctx = context(settings)
    photo = Image.fromarray(skimage.data.astronaut())
    w, h = photo.size
    copies = {
        "resized": _encoded(photo.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "recompressed": _encoded(photo, quality=50),
        "cropped": _encoded(photo.crop((w // 20, h // 20, w - w // 20, h - h // 20))),
    }
    others = {
        name: _encoded(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        for name in ("coffee", "chelsea", "rocket")
    }
    original = _processed(offline, owner, ctx, _encoded(photo))["id"]
    copy_ids = {name: _processed(offline, owner, ctx, data)["id"] for name, data in copies.items()}
    other_ids = {name: _processed(offline, owner, ctx, data)["id"] for name, data in others.items()}

    detail = _detail(offline, owner, original)
    assert set(detail["near_duplicates"]) == set(copy_ids.values())
    similar = offline.get(f"/v1/images/{original}/similar", headers=owner.headers).json()
    distances = [item["distance"] for item in similar["items"]]
    assert distances == sorted(distances)
    assert all(0 <= d <= settings.duplicate_distance for d in distances)
    assert {item["id"] for item in similar["items"]} == set(copy_ids.values())
    assert all(item["image"]["id"] == item["id"] for item in similar["items"])
    for other in other_ids.values():
        assert _detail(offline, owner, other)["near_duplicates"] == []
    # The pairs hold both ways: each copy lists the original.
    for copy in copy_ids.values():
        assert original in _detail(offline, owner, copy)["near_duplicates"]

    group = {original, *copy_ids.values()}
    assert set(walk(offline, owner, "/v1/images", has_duplicates="true")) == group
    assert set(walk(offline, owner, "/v1/images", has_duplicates="false")) == set(
        other_ids.values()
    )

    # Gone with a deleted copy; another owner never sees them.
    assert (
        offline.delete(f"/v1/images/{copy_ids['cropped']}", headers=owner.headers).status_code
        == 204
    )
    assert copy_ids["cropped"] not in _detail(offline, owner, original)["near_duplicates"]
    stranger = new_caller(offline)
    assert (
        offline.get(f"/v1/images/{original}/similar", headers=stranger.headers).status_code == 404
    )
    # The same picture from another owner is linked to nothing of the first owner's.
    theirs = _processed(offline, stranger, ctx, copies["resized"])["id"]
    assert _detail(offline, stranger, theirs)["near_duplicates"] == []
    assert theirs not in _detail(offline, owner, original)["near_duplicates"]


def test_account_settings_refuse_what_they_do_not_know(offline: TestClient, owner: Caller) -> None:
    resp = offline.patch("/v1/auth/me", headers=owner.headers, json={"expose_locaton": True})
    assert resp.status_code == 422
    assert offline.get("/v1/auth/me", headers=owner.headers).json()["expose_location"] is False


def test_a_capture_time_filter_outside_the_calendar_is_refused(
    offline: TestClient, owner: Caller
) -> None:
    for bound in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        resp = offline.get("/v1/images", headers=owner.headers, params={"taken_before": bound})
        assert resp.status_code == 422, resp.text
        assert resp.json()["code"] == "validation-error"
