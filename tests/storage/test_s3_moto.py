"""Fast unit tests of the adapter's own logic against moto (no network)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from moto import mock_aws
from pydantic import SecretStr

from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import S3Store

MB = 1024 * 1024


@pytest.fixture
def moto_store() -> Iterator[S3Store]:
    with mock_aws():
        settings = Settings(
            s3_endpoint_url=None,
            s3_public_endpoint_url="https://cdn.example.test",
            s3_bucket="unit",
            s3_access_key="AKIDEXAMPLE",
            s3_secret_key=SecretStr("unit-secret"),
            s3_multipart_chunk_bytes=5 * MB,
        )
        store = S3Store(settings)
        store.ensure_bucket()
        yield store
        store.close()


def test_small_stream_is_a_single_put(moto_store: S3Store) -> None:
    stored = moto_store.put_stream("k", iter([b"ab", b"cd"]), "image/png")
    assert stored.size == 4
    assert "-" not in stored.etag  # a multipart ETag would end in -<parts>
    head = moto_store.client.head_object(Bucket="unit", Key="k")
    assert head["ContentType"] == "image/png"


def test_parts_are_cut_at_the_configured_size(moto_store: S3Store) -> None:
    chunks = [b"z" * MB] * 11  # 11 MB in 1 MB chunks -> parts of 5, 5, 1
    stored = moto_store.put_stream("big", iter(chunks), "image/jpeg")
    assert stored.etag.endswith("-3")
    assert stored.size == 11 * MB
    assert moto_store.get_bytes("big") == b"z" * (11 * MB)


def test_error_mid_stream_aborts_the_upload(moto_store: S3Store) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"y" * (6 * MB)
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        moto_store.put_stream("half", chunks(), "image/jpeg")
    assert moto_store.list_multipart_uploads() == []
    assert not moto_store.exists("half")


def test_presign_uses_public_endpoint_and_response_overrides(moto_store: S3Store) -> None:
    signed = moto_store.presign_get(
        "originals/a/b",
        dt.timedelta(minutes=15),
        content_type="image/webp",
        disposition='inline; filename="cat.webp"',
    )
    parts = urlsplit(signed.url)
    query = parse_qs(parts.query)
    assert parts.netloc == "cdn.example.test"
    assert parts.path == "/unit/originals/a/b"
    assert query["X-Amz-Expires"] == ["900"]
    assert query["response-content-type"] == ["image/webp"]
    assert query["response-content-disposition"] == ['inline; filename="cat.webp"']


def test_key_formats_are_deterministic() -> None:
    import uuid

    owner, image = uuid.uuid4(), uuid.uuid4()
    assert keys.original_key(owner, image) == f"originals/{owner}/{image}"
    variant = keys.variant_key(owner, image, "thumb", "webp")
    assert variant.startswith(keys.image_prefix(owner, image))
    assert variant == keys.variant_key(owner, image, "thumb", "webp")
