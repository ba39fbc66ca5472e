"""Every corpus file through the real HTTP API and stack: the manifest's verdict and code,
and nothing left behind by a rejection."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media_api.imaging.formats import KNOWN_FORMATS
from media_api.main import create_app
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, job_states, new_caller, upload, without_urls
from tests.support.corpus import MIME_TYPES, POLICY_FORMAT, ROWS, Row, acceptable_codes, params
from tests.support.leftovers import assert_nothing_left

STATUS = {
    "unsupported-media-type": 415,
    "corrupt-image": 422,
    "image-too-large": 422,
    "empty-file": 400,
}
# Where the manifest allows several codes (notes like "415 also fine"), any of their statuses.
ANY_REJECTION = {400, 415, 422}

POLICIES = {
    "core": None,  # the default allowlist: JPEG, PNG, GIF, WebP
    "all-formats": KNOWN_FORMATS,  # TIFF, BMP, AVIF and HEIF switched on
}


@pytest.fixture(scope="module", params=list(POLICIES))
def policy_client(
    request: pytest.FixtureRequest, app_settings: Settings
) -> Iterator[tuple[str, TestClient, Caller]]:
    """An API per allowlist policy, and one owner per API (so no upload dedupes by accident)."""
    formats = POLICIES[request.param]
    settings = (
        app_settings
        if formats is None
        else app_settings.model_copy(update={"allowed_formats": formats})
    )
    with TestClient(create_app(settings)) as client:
        yield request.param, client, new_caller(client)


def _expected(row: Row, policy: str) -> tuple[str, str]:
    """(verdict, reason) under this policy: an ext:* row is unsupported unless allowlisted."""
    if row.policy != "core" and policy == "core":
        return "reject", "unsupported-media-type"
    return row.verdict, row.reason


@pytest.mark.parametrize("row", params(ROWS))
def test_corpus_row_through_the_api(
    row: Row,
    policy_client: tuple[str, TestClient, Caller],
    store: S3Store,
    upload_tmp: Path,
) -> None:
    policy, client, caller = policy_client
    data = row.path.read_bytes()
    # The client's name and type are lies on purpose: only the bytes may decide.
    status, body = upload(client, caller, data, filename="upload.jpg", content_type="image/jpeg")
    assert status < 500, body
    verdict, reason = _expected(row, policy)

    if verdict == "accept":
        assert status == 201, body
        assert body["content_type"] == MIME_TYPES[row.format]
        assert (body["width"], body["height"]) == (row.display_width, row.display_height)
        assert body["frames"] == row.frames
        assert body["size"] == row.size
        assert body["sha256"] == row.sha256
        assert body["status"] == "processing"
        assert job_states(body) == {"thumbnails": "pending", "tagging": "pending"}
        key = keys.original_key(caller.owner_id, uuid.UUID(body["id"]))
        assert hashlib.sha256(store.get_bytes(key)).hexdigest() == row.sha256
        again = client.get(f"/v1/images/{body['id']}", headers=caller.headers).json()
        assert without_urls(again) == without_urls(body)
    else:
        assert body["code"] in (acceptable_codes(row) if reason == row.reason else {reason}), body
        if reason == row.reason and len(acceptable_codes(row)) > 1:
            assert status in ANY_REJECTION
        else:
            assert status == STATUS[body["code"]], body
        assert body["status"] == status
        assert "upload.jpg" not in body["detail"]
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)


def test_the_corpus_covers_every_extension_policy() -> None:
    assert {row.policy for row in ROWS} == {"core", *POLICY_FORMAT}
