"""Hostile text in every place a client can put it: refused with a 422 naming the field, or (a
file name) cleaned; never a 500. The rule is media_api.text's, published as a `pattern`."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import email_validator
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from media_api.accounts.schemas import EMAIL_PATTERN, SPECIAL_USE_DOMAINS
from media_api.images.errors import StorageUnavailable
from media_api.images.multipart import MAX_HEADER_BYTES, MAX_HEADERS
from media_api.storage.s3 import S3Store
from media_api.text import (
    MULTI_LINE_PATTERN,
    SINGLE_LINE_PATTERN,
    Refuse,
    SingleLine,
    clean_filename,
    encodable,
    multi_line,
    single_line,
)
from tests.support.callers import Caller, upload
from tests.support.images import png
from tests.support.leftovers import assert_nothing_left

CONTROLS = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0))]


class Fields(BaseModel):
    one: SingleLine = ""


def errors_of(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert resp.headers["content-type"] == "application/problem+json"
    assert body["code"] == "validation-error"
    errors: list[dict[str, Any]] = body["errors"]
    return errors


# pydantic's own str validation refuses a lone surrogate before media_api.text sees it.
SURROGATE = ("string_unicode", "lone_surrogate")


def refused(resp: Any, loc: list[str], kind: str | tuple[str, ...] = "control_character") -> None:
    [error] = errors_of(resp)
    assert error["loc"] == loc
    assert error["type"] in ((kind,) if isinstance(kind, str) else kind)


# -- the rule itself -----------------------------------------------------------------------


@pytest.mark.parametrize("char", CONTROLS)
def test_single_line_refuses_every_control_character(char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Fields(one=f"a{char}b")
    error = caught.value.errors()[0]
    assert error["type"] == "control_character"
    assert f"U+{ord(char):04X} at index 1" in error["msg"]


def test_single_line_keeps_everything_else() -> None:
    for text in [
        "",
        "plain",
        "a|b",
        "naïve café",
        "雪",
        "😀 emoji",
        "zero\u200bwidth",
        "\u2028",
        "\ufeff",
    ]:
        assert Fields(one=text).one == text


@pytest.mark.parametrize("marker", [single_line, multi_line, encodable])
def test_lone_surrogates_are_refused_everywhere(marker: Refuse) -> None:
    with pytest.raises(PydanticCustomError, match="U\\+D800 is half of a surrogate pair"):
        marker.check("ok\ud800")
    assert marker.check("paired \U0001f600") == "paired \U0001f600"


def test_multi_line_allows_tab_and_line_breaks_only() -> None:
    assert multi_line.check("one\r\ntwo\tthree") == "one\r\ntwo\tthree"
    for char in set(CONTROLS) - {"\t", "\n", "\r"}:
        with pytest.raises(PydanticCustomError, match="control characters"):
            multi_line.check(f"x{char}")


def test_passwords_may_hold_controls_but_not_surrogates() -> None:
    assert encodable.check("tab\tand\x01") == "tab\tand\x01"
    with pytest.raises(PydanticCustomError, match="surrogate"):
        encodable.check("\udc80")


@pytest.mark.parametrize(
    ("marker", "pattern"), [(single_line, SINGLE_LINE_PATTERN), (multi_line, MULTI_LINE_PATTERN)]
)
def test_published_pattern_says_what_the_check_does(marker: Refuse, pattern: str) -> None:
    assert marker.pattern == pattern
    published = re.compile(pattern)
    for code in [*range(0x2100), 0xFEFF, 0x1F600]:
        text = f"a{chr(code)}"
        try:
            marker.check(text)
            accepted = True
        except PydanticCustomError:
            accepted = False
        assert bool(published.fullmatch(text)) == accepted, hex(code)


def test_file_names_are_cleaned_not_refused() -> None:
    assert clean_filename("a\x00b\x1f\x7f\x85c\ud800.png") == "abc.png"
    assert clean_filename("résumé (1).png") == "résumé (1).png"


def test_email_pattern_matches_what_email_validator_refuses() -> None:
    assert set(SPECIAL_USE_DOMAINS) == set(email_validator.SPECIAL_USE_DOMAIN_NAMES)
    pattern = re.compile(EMAIL_PATTERN)
    for domain in SPECIAL_USE_DOMAINS:
        assert not pattern.fullmatch(f"me@host.{domain.upper()}")
        assert not pattern.fullmatch(f"me@{domain}")
    assert pattern.fullmatch("me@testing.example.com")


def test_storage_unavailable_says_when_to_retry() -> None:
    assert StorageUnavailable().headers["Retry-After"].isdigit()


# -- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
def gallery(client: TestClient, caller: Caller) -> str:
    resp = client.post("/v1/galleries", headers=caller.headers, json={"name": "holiday"})
    assert resp.status_code == 201, resp.text
    gallery_id: str = resp.json()["id"]
    return gallery_id


def raw_json(client: TestClient, method: str, url: str, caller: Caller, body: str) -> Any:
    """A JSON body as bytes, so it can spell a lone surrogate (`\\ud800`)."""
    headers = {**caller.headers, "Content-Type": "application/json"}
    return client.request(method, url, headers=headers, content=body.encode())


@pytest.mark.parametrize("path", ["/v1/images", "/v1/galleries/{gallery}/images"])
def test_query_strings_with_controls_are_422(
    client: TestClient, caller: Caller, gallery: str, path: str
) -> None:
    url = path.format(gallery=gallery)
    refused(client.get(f"{url}?tag=%00x", headers=caller.headers), ["query", "tag"])
    refused(client.get(f"{url}?cursor=a%1Bb", headers=caller.headers), ["query", "cursor"])
    assert client.get(f"{url}?tag=caf%C3%A9", headers=caller.headers).status_code == 200


def test_path_segments_with_controls_are_422(client: TestClient, caller: Caller) -> None:
    resp = client.get(f"/v1/images/{uuid.uuid4()}/variants/th%01umb", headers=caller.headers)
    refused(resp, ["path", "name"])


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-01-01T00:00:00", "2026-01-01"])
def test_timestamps_are_rfc3339_with_an_offset(
    client: TestClient, caller: Caller, value: str
) -> None:
    resp = client.get("/v1/images", params={"created_before": value}, headers=caller.headers)
    refused(resp, ["query", "created_before"], "datetime_format")


def test_rfc3339_timestamps_are_taken(client: TestClient, caller: Caller) -> None:
    for value in ["2026-01-01T00:00:00Z", "2026-01-01t00:00:00.5+02:00"]:
        resp = client.get("/v1/images", params={"created_after": value}, headers=caller.headers)
        assert resp.status_code == 200, resp.text


def test_gallery_names_and_descriptions(client: TestClient, caller: Caller, gallery: str) -> None:
    url = f"/v1/galleries/{gallery}"
    refused(
        client.post("/v1/galleries", headers=caller.headers, json={"name": "a\x00"}),
        ["body", "name"],
    )
    surrogate = raw_json(client, "POST", "/v1/galleries", caller, '{"name": "x\\ud800"}')
    refused(surrogate, ["body", "name"], SURROGATE)
    bad_description = {"name": "ok", "description": "bell\x07"}
    resp = client.post("/v1/galleries", headers=caller.headers, json=bad_description)
    refused(resp, ["body", "description"])
    # A gallery always has a name: null is refused, not a 500; a description can be removed.
    refused(
        client.patch(url, headers=caller.headers, json={"name": None}),
        ["body", "name"],
        "string_type",
    )
    multi = client.patch(url, headers=caller.headers, json={"description": "one\ntwo\tthree"})
    assert multi.status_code == 200, multi.text
    assert multi.json()["description"] == "one\ntwo\tthree"
    cleared = client.patch(url, headers=caller.headers, json={"description": None})
    assert (cleared.status_code, cleared.json()["description"]) == (200, None)
    assert client.patch(url, headers=caller.headers, json={}).json()["name"] == "holiday"
    surrogate = raw_json(client, "PATCH", url, caller, '{"name": "\\udfff"}')
    refused(surrogate, ["body", "name"], SURROGATE)


def test_api_key_names(client: TestClient, caller: Caller) -> None:
    resp = client.post("/v1/api-keys", headers=caller.headers, json={"name": "ci\x00"})
    refused(resp, ["body", "name"])
    surrogate = raw_json(client, "POST", "/v1/api-keys", caller, '{"name": "\\ud83d"}')
    refused(surrogate, ["body", "name"], SURROGATE)
    paired = raw_json(client, "POST", "/v1/api-keys", caller, '{"name": "\\ud83d\\ude00"}')
    assert (paired.status_code, paired.json()["name"]) == (201, "\U0001f600")


def test_image_titles(client: TestClient, caller: Caller) -> None:
    status, image = upload(client, caller, png(7101), filename="t.png", content_type="image/png")
    assert status == 201, image
    url = f"/v1/images/{image['id']}"
    refused(
        client.patch(url, headers=caller.headers, json={"title": "\x1b[31mred"}), ["body", "title"]
    )
    refused(
        raw_json(client, "PATCH", url, caller, '{"title": "\\ud800"}'),
        ["body", "title"],
        SURROGATE,
    )
    assert client.patch(url, headers=caller.headers, json={"title": None}).status_code == 200


def test_sign_up_and_sign_in(client: TestClient) -> None:
    email = f"text-{uuid.uuid4().hex[:8]}@example.com"
    nul = client.post("/v1/auth/signup", json={"email": f"a\x00{email}", "password": "x" * 12})
    assert [e["loc"] for e in errors_of(nul)] == [["body", "email"]]
    reserved = client.post("/v1/auth/signup", json={"email": "me@box.local", "password": "x" * 12})
    assert [e["loc"] for e in errors_of(reserved)] == [["body", "email"]]
    body = '{"email": "' + email + '", "password": "surrogate \\ud800 here"}'
    surrogate = client.post(
        "/v1/auth/signup", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    refused(surrogate, ["body", "password"], SURROGATE)
    # A password is hashed, never shown: a control character in it is the owner's business.
    password = "tab\tinside\x01 it"
    created = client.post("/v1/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    token = client.post("/v1/auth/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    nul_name = client.post("/v1/auth/token", data={"username": "a\x00b", "password": "whatever"})
    refused(nul_name, ["body", "username"])
    empty = client.post("/v1/auth/token", data={"username": email, "password": ""})
    assert [e["loc"] for e in errors_of(empty)] == [["body", "password"]]


def test_405_names_every_documented_method(client: TestClient, caller: Caller) -> None:
    for path, allowed in [
        ("/v1/api-keys", "GET, POST"),
        (f"/v1/images/{uuid.uuid4()}", "DELETE, GET, PATCH"),
        (f"/v1/galleries/{uuid.uuid4()}/images/{uuid.uuid4()}", "DELETE, PUT"),
    ]:
        resp = client.request("OPTIONS", path, headers=caller.headers)
        assert resp.status_code == 405
        assert resp.headers["allow"] == allowed
        assert resp.json()["code"] == "method-not-allowed"


# -- the upload's multipart body ---------------------------------------------------------------


def multipart(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    """A body from (headers, content) parts, as it goes on the wire."""
    body = b"".join(
        f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
        for headers, content in parts
    )
    return body + f"--{boundary}--\r\n".encode()


def post_multipart(client: TestClient, caller: Caller, boundary: str, body: bytes) -> Any:
    headers = {**caller.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return client.post("/v1/images", headers=headers, content=body)


FILE = 'Content-Disposition: form-data; name="file"; filename="a.png"'
MORE_HEADERS = "".join(f"\r\nX-{i}: y" for i in range(MAX_HEADERS))  # one more than allowed


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("title", b"bad\x00title", "control_character"),
        ("title", ("x" * 301).encode(), "string_too_long"),
        ("gallery_id", b"not-a-uuid", "uuid_parsing"),
        ("gallery_id", b"", "uuid_parsing"),
    ],
)
def test_upload_text_fields_are_checked(
    client: TestClient,
    caller: Caller,
    store: S3Store,
    upload_tmp: Path,
    field: str,
    value: bytes,
    kind: str,
) -> None:
    body = multipart(
        "b", (f'Content-Disposition: form-data; name="{field}"', value), (FILE, png(7102))
    )
    refused(post_multipart(client, caller, "b", body), ["body", field], kind)
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_upload_file_names_lose_their_control_characters(
    client: TestClient, caller: Caller
) -> None:
    disposition = 'Content-Disposition: form-data; name="file"; filename="be\x01ach\x7f.png"'
    resp = post_multipart(client, caller, "b", multipart("b", (disposition, png(7103))))
    assert resp.status_code == 201, resp.text
    assert resp.json()["filename"] == "beach.png"


@pytest.mark.parametrize(
    ("boundary", "parts", "detail"),
    [
        ("b" * 257, [(FILE, b"x")], "boundary"),
        ("b", [(FILE + "; x=" + "y" * MAX_HEADER_BYTES, b"x")], "header size"),
        ("b", [(FILE + MORE_HEADERS, b"x")], "header count"),
        (
            "b",
            [('Content-Disposition: form-data; name="title"', b"t" * 5000), (FILE, b"x")],
            "field",
        ),
    ],
)
def test_oversized_multipart_framing_is_400(
    client: TestClient,
    caller: Caller,
    store: S3Store,
    upload_tmp: Path,
    boundary: str,
    parts: list[tuple[str, bytes]],
    detail: str,
) -> None:
    resp = post_multipart(client, caller, boundary, multipart(boundary, *parts))
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid-multipart"
    assert detail in resp.json()["detail"]
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
