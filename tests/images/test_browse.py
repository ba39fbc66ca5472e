"""Browsing: keyset pages, filters, signed URLs fetched from S3 for real."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import event

from media_api.dev.stack import free_port
from media_api.images.models import Image as ImageRow
from media_api.images.models import ImageTag
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller, upload, walk, without_urls
from tests.support.images import png
from tests.support.jobs import run_variants
from workers.context import context


@pytest.fixture(scope="module")
def api(app_settings: Settings) -> Iterator[TestClient]:
    """An API with no broker: uploads stay `processing` until a test runs the pipeline."""
    dead = app_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        yield client


def _upload_many(client: TestClient, caller: Caller, count: int, start: int) -> list[str]:
    ids = []
    for i in range(count):
        status, body = upload(client, caller, png(start + i, 24), filename=f"p{i}.png")
        assert status == 201
        ids.append(str(body["id"]))
    return ids


def test_pages_cover_everything_once_newest_first(api: TestClient) -> None:
    caller = new_caller(api)
    ids = _upload_many(api, caller, 23, start=100)
    seen = walk(api, caller, "/v1/images", limit=5)
    assert seen == list(reversed(ids))  # newest first, no duplicates, no gaps
    first = api.get("/v1/images", headers=caller.headers, params={"include_total": True}).json()
    assert first["total"] == 23
    assert len(first["items"]) == 23  # default limit 24
    assert first["next_cursor"] is None


def test_inserting_while_paging_neither_duplicates_nor_skips(api: TestClient) -> None:
    caller = new_caller(api)
    ids = _upload_many(api, caller, 12, start=300)
    seen: list[str] = []
    cursor = None
    n = 0
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/images", headers=caller.headers, params=params).json()
        seen.extend(item["id"] for item in page["items"])
        _upload_many(api, caller, 2, start=400 + n)  # newer than anything being paged
        n += 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_limit_bounds(api: TestClient, limit: int) -> None:
    caller = new_caller(api)
    resp = api.get("/v1/images", headers=caller.headers, params={"limit": limit})
    assert resp.status_code == 422


def test_cursors_are_tamper_evident_and_owner_bound(api: TestClient) -> None:
    caller, other = new_caller(api), new_caller(api)
    _upload_many(api, caller, 3, start=500)
    _upload_many(api, other, 3, start=600)
    cursor = api.get("/v1/images", headers=caller.headers, params={"limit": 1}).json()[
        "next_cursor"
    ]
    body, _, tag = cursor.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + tag
    for bad, who in (
        (forged, caller),
        ("garbage", caller),
        (cursor, other),
        (cursor + "x", caller),
    ):
        resp = api.get("/v1/images", headers=who.headers, params={"cursor": bad})
        assert resp.status_code == 400, bad
        assert resp.json()["code"] == "invalid-cursor"


def test_filters(api: TestClient, settings: Settings) -> None:
    caller = new_caller(api)
    ids = _upload_many(api, caller, 4, start=700)
    run_variants(context(settings), uuid.UUID(ids[1]))
    ready = walk(api, caller, "/v1/images", status="ready")
    processing = walk(api, caller, "/v1/images", status="processing")
    assert ready == [ids[1]]
    assert set(processing) == {ids[0], ids[2], ids[3]}

    detail = api.get(f"/v1/images/{ids[2]}", headers=caller.headers).json()
    pivot = dt.datetime.fromisoformat(detail["created_at"])
    before = walk(api, caller, "/v1/images", created_before=pivot.isoformat())
    after = walk(api, caller, "/v1/images", created_after=pivot.isoformat())
    assert before == [ids[1], ids[0]]
    assert after == [ids[3]]


def _count_statements(client: TestClient) -> Iterator[list[str]]:
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(state.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(state.engine.sync_engine, "before_cursor_execute", record)


def test_a_page_costs_the_same_statements_whatever_its_size(api: TestClient) -> None:
    caller = new_caller(api)
    _upload_many(api, caller, 30, start=800)
    counts = []
    for limit in (2, 30):
        counter = _count_statements(api)
        statements = next(counter)
        resp = api.get("/v1/images", headers=caller.headers, params={"limit": limit})
        assert len(resp.json()["items"]) == limit
        counts.append(len([s for s in statements if "images" in s]))
        next(counter, None)
    assert counts[0] == counts[1] == 1  # one SELECT over images per page, no N+1


def _tamper(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query[name] = ("0" if query[name][0] != "0" else "1") + query[name][1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_signed_urls_serve_the_bytes_and_refuse_tampering(
    api: TestClient, settings: Settings
) -> None:
    caller = new_caller(api)
    data = png(900, size=400)
    _, body = upload(api, caller, data, filename="../../etc/pass wd.png")
    original = body["original"]
    resp = httpx.get(original["url"])
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-disposition"] == 'inline; filename="pass-wd.png"'
    expires = dt.datetime.fromisoformat(original["expires_at"])
    assert dt.timedelta(minutes=14) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=15)
    assert httpx.get(_tamper(original["url"], "X-Amz-Signature")).status_code == 403
    assert body["variants"] == []  # nothing ready yet
    download = httpx.get(body["download"]["url"])  # the same bytes, saved rather than shown
    assert download.content == data
    assert download.headers["content-disposition"] == 'attachment; filename="pass-wd.png"'

    run_variants(context(settings), uuid.UUID(str(body["id"])))
    ready = api.get(f"/v1/images/{body['id']}", headers=caller.headers).json()
    thumb = next(v for v in ready["variants"] if v["name"] == "thumb")
    fetched = httpx.get(thumb["url"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(fetched.content)) as img:
        assert img.size == (256, 256)


def test_expired_url_is_refused(app_settings: Settings) -> None:
    short = app_settings.model_copy(update={"signed_url_ttl_seconds": 1})
    with TestClient(create_app(short)) as client:
        caller = new_caller(client)
        _, body = upload(client, caller, png(950, 24))
        url = body["original"]["url"]
        import time

        time.sleep(2.1)
        assert httpx.get(url).status_code == 403


def test_urls_are_signed_for_the_public_endpoint(app_settings: Settings) -> None:
    public = app_settings.model_copy(update={"s3_public_endpoint_url": "https://media.example"})
    with TestClient(create_app(public)) as client:
        caller = new_caller(client)
        _, body = upload(client, caller, png(960, 24))
        assert body["original"]["url"].startswith("https://media.example/")


def test_redirects_to_fresh_urls(api: TestClient, settings: Settings) -> None:
    caller = new_caller(api)
    _, body = upload(api, caller, png(970, size=300))
    image_id = str(body["id"])
    original = api.get(
        f"/v1/images/{image_id}/original", headers=caller.headers, follow_redirects=False
    )
    assert original.status_code == 307
    assert httpx.get(original.headers["location"]).status_code == 200
    pending = api.get(f"/v1/images/{image_id}/variants/thumb", headers=caller.headers)
    assert (pending.status_code, pending.json()["code"]) == (404, "variant-not-ready")

    run_variants(context(settings), uuid.UUID(image_id))
    thumb = api.get(
        f"/v1/images/{image_id}/variants/thumb", headers=caller.headers, follow_redirects=False
    )
    assert thumb.status_code == 307
    assert httpx.get(thumb.headers["location"]).headers["content-type"] == "image/webp"
    unknown = api.get(f"/v1/images/{image_id}/variants/poster", headers=caller.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not-found")


def test_patch_changes_only_the_title(api: TestClient) -> None:
    caller = new_caller(api)
    image = upload(api, caller, png(990, 24), title="before")[1]
    path = f"/v1/images/{image['id']}"

    def patch(body: dict[str, object]) -> httpx.Response:
        return api.patch(path, headers=caller.headers, json=body)

    renamed = patch({"title": "  Sunset over Rome  "})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Sunset over Rome"
    assert without_urls(renamed.json()) == {**without_urls(image), "title": "Sunset over Rome"}
    assert patch({}).json()["title"] == "Sunset over Rome"  # nothing sent, nothing changed
    assert patch({"sha256": "0" * 64}).json()["sha256"] == image["sha256"]  # not changeable
    assert patch({"title": "   "}).json()["title"] is None
    assert patch({"title": "back"}).json()["title"] == "back"
    assert patch({"title": None}).json()["title"] is None
    too_long = patch({"title": "x" * 301})
    assert (too_long.status_code, too_long.json()["code"]) == (422, "validation-error")
    assert api.get(path, headers=caller.headers).json()["title"] is None
    other = new_caller(api)
    refused = api.patch(path, headers=other.headers, json={"title": "mine"})
    assert refused.status_code == 404
    assert api.get(path, headers=caller.headers).json()["title"] is None


def _tag(client: TestClient, caller: Caller, image_id: str, name: str) -> None:
    """Attach a tag row as the tagging worker would (the test plays the worker)."""

    async def insert() -> None:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            image = await session.get(ImageRow, uuid.UUID(image_id))
            assert image is not None
            session.add(
                ImageTag(
                    image_id=image.id,
                    name=name,
                    owner_id=caller.owner_id,
                    image_created_at=image.created_at,
                    kind="label",
                    confidence=0.9,
                    model="test",
                    model_version="1",
                )
            )
            await session.commit()

    assert client.portal is not None
    client.portal.call(insert)


def test_tag_filter_pages_through_tagged_images_only(api: TestClient) -> None:
    caller, other = new_caller(api), new_caller(api)
    ids = _upload_many(api, caller, 7, start=1000)
    for image_id in ids[::2]:
        _tag(api, caller, image_id, "cat")
    _tag(api, caller, ids[1], "dog")
    theirs = _upload_many(api, other, 1, start=1100)
    _tag(api, other, theirs[0], "cat")

    cats = walk(api, caller, "/v1/images", tag="cat", limit=2)
    assert cats == list(reversed(ids[::2]))
    assert walk(api, caller, "/v1/images", tag="dog") == [ids[1]]
    assert walk(api, caller, "/v1/images", tag="cat", status="processing") == cats
    assert walk(api, caller, "/v1/images", tag="unicorn") == []
    total = api.get(
        "/v1/images", headers=caller.headers, params={"tag": "cat", "include_total": True}
    )
    assert total.json()["total"] == 4
