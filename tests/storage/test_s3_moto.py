"""Fast unit tests of the adapter's own logic against moto (no network)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from pydantic import SecretStr

from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import AsyncS3Store, S3Store

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


# --- the streaming upload (async face) ------------------------------------------------------


class GatedParts:
    """Stands in for `upload_part`: holds each call until the test releases it, and records how
    many ran at once (the real call follows, so the object is still checked end to end)."""

    def __init__(self, store: S3Store) -> None:
        self.real = store.client.upload_part
        self.gate = threading.Semaphore(0)
        self.started = 0
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, **kwargs: Any) -> Any:
        with self.lock:
            self.started += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if not self.gate.acquire(timeout=30):
                raise TimeoutError("the test never released this part")
            return self.real(**kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def gated(moto_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> GatedParts:
    parts = GatedParts(moto_store)
    monkeypatch.setattr(moto_store.client, "upload_part", parts)
    return parts


async def _yield_to_the_loop() -> None:
    """Let every runnable task step; a task still pending after this is really waiting."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_streaming_upload_of_one_part_is_a_single_put_at_the_end(
    moto_store: S3Store,
) -> None:
    upload = AsyncS3Store(moto_store).streaming_upload("small", "image/gif")
    async with upload:
        await upload.write(b"GIF89a")
        await upload.write(b"rest")
        assert moto_store.list_multipart_uploads() == []  # nothing was sent yet
        assert not moto_store.exists("small")
        stored = await upload.complete()
    assert "-" not in stored.etag
    assert moto_store.get_bytes("small") == b"GIF89arest"
    assert moto_store.client.head_object(Bucket="unit", Key="small")["ContentType"] == "image/gif"


async def test_streaming_upload_sends_parts_while_writing_and_round_trips(
    moto_store: S3Store,
) -> None:
    data = bytes(range(256)) * (11 * MB // 256) + b"tail"
    upload = AsyncS3Store(moto_store).streaming_upload("big", "image/png")
    async with upload:
        for start in range(0, len(data), 300_000):
            await upload.write(data[start : start + 300_000])
        # The first part landed before the last write (the second part waited for it).
        assert moto_store.list_multipart_uploads() == ["big"]
        stored = await upload.complete()
    assert stored.etag.endswith("-3")
    assert stored.size == len(data)
    assert moto_store.get_bytes("big") == data
    assert moto_store.client.head_object(Bucket="unit", Key="big")["ContentType"] == "image/png"


async def test_a_full_part_waits_for_the_part_in_flight(
    moto_store: S3Store, gated: GatedParts
) -> None:
    upload = AsyncS3Store(moto_store).streaming_upload("bp", "image/jpeg")
    async with upload:
        await upload.write(b"a" * (5 * MB))  # part 1 leaves; this write does not wait for it
        second = asyncio.create_task(upload.write(b"b" * (5 * MB)))
        await _yield_to_the_loop()
        assert not second.done()  # part 2 is full, but part 1 is still in flight
        gated.gate.release()  # part 1 lands
        await second  # so part 2 leaves
        await upload.write(b"c" * MB)  # fills the next part: no waiting
        gated.gate.release(2)  # part 2 and the last part
        stored = await upload.complete()
    assert gated.started == 3
    assert gated.most_at_once == 1
    assert stored.etag.endswith("-3")
    assert moto_store.get_bytes("bp") == b"a" * (5 * MB) + b"b" * (5 * MB) + b"c" * MB


async def test_leaving_the_block_without_completing_aborts(moto_store: S3Store) -> None:
    upload = AsyncS3Store(moto_store).streaming_upload("left", "image/jpeg")
    async with upload:
        await upload.write(b"x" * (11 * MB))
        assert moto_store.list_multipart_uploads() == ["left"]
    assert moto_store.list_multipart_uploads() == []
    assert not moto_store.exists("left")


async def test_an_error_after_completing_deletes_the_object(moto_store: S3Store) -> None:
    upload = AsyncS3Store(moto_store).streaming_upload("done", "image/jpeg")

    async def fail_after_completing() -> None:
        async with upload:
            await upload.write(b"x" * (6 * MB))
            await upload.complete()
            assert moto_store.exists("done")
            raise ValueError("validation failed")

    with pytest.raises(ValueError, match="validation failed"):
        await fail_after_completing()
    assert not moto_store.exists("done")
    assert moto_store.list_multipart_uploads() == []


async def test_a_failed_part_surfaces_and_the_upload_is_aborted(
    moto_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = moto_store.client.upload_part

    def flaky(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "busy"}}, "UploadPart")
        return real(**kwargs)

    monkeypatch.setattr(moto_store.client, "upload_part", flaky)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"z" * MB

    with pytest.raises(ClientError, match="SlowDown"):
        await AsyncS3Store(moto_store).put_stream("flaky", chunks(), "image/jpeg")
    assert moto_store.list_multipart_uploads() == []
    assert not moto_store.exists("flaky")


async def test_abort_after_a_cancelled_write_waits_for_the_part_in_flight(
    moto_store: S3Store, gated: GatedParts
) -> None:
    upload = AsyncS3Store(moto_store).streaming_upload("cut", "image/jpeg")
    await upload.write(b"a" * (5 * MB))
    blocked = asyncio.create_task(upload.write(b"b" * (5 * MB)))
    await _yield_to_the_loop()
    blocked.cancel()  # e.g. the request is cancelled while waiting on backpressure
    with pytest.raises(asyncio.CancelledError):
        await blocked
    aborting = asyncio.create_task(upload.abort())
    await _yield_to_the_loop()
    assert not aborting.done()  # aborting under a running part could leave it behind
    gated.gate.release()
    await aborting
    assert gated.started == 1  # the cancelled write's part never left
    assert moto_store.list_multipart_uploads() == []
    assert not moto_store.exists("cut")
    await upload.abort()  # idempotent


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
    assert variant.startswith(keys.variants_prefix(owner, image))
    assert variant == keys.variant_key(owner, image, "thumb", "webp")


def test_every_key_lies_under_a_root_that_gc_lists() -> None:
    import uuid

    owner, image = uuid.uuid4(), uuid.uuid4()
    original = keys.original_key(owner, image)
    assert original.startswith(keys.originals_prefix(owner))
    for key in (original, keys.variant_key(owner, image, "thumb", "webp")):
        assert [root for root in keys.ROOTS if key.startswith(root)] != []
