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


# --- the pieces of resumable and direct uploads ---------------------------------------------


def test_parts_complete_in_number_order_whatever_the_etag_quoting(moto_store: S3Store) -> None:
    upload_id = moto_store.create_multipart("q", "image/png")
    one = moto_store.upload_part("q", upload_id, 1, b"a" * (5 * MB))
    two = moto_store.upload_part("q", upload_id, 2, b"b")
    assert '"' not in one
    etag = moto_store.complete_multipart("q", upload_id, [(2, two), (1, f'"{one}"')])
    assert etag.endswith("-2")
    assert moto_store.get_bytes("q") == b"a" * (5 * MB) + b"b"
    assert moto_store.client.head_object(Bucket="unit", Key="q")["ContentType"] == "image/png"


def test_abort_tolerates_only_a_missing_upload(
    moto_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = moto_store.create_multipart("a", "image/png")
    moto_store.abort_multipart("a", upload_id)
    moto_store.abort_multipart("a", upload_id)  # NoSuchUpload: already done
    assert moto_store.open_multipart_uploads() == []

    def denied(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "Abort")

    monkeypatch.setattr(moto_store.client, "abort_multipart_upload", denied)
    with pytest.raises(ClientError, match="AccessDenied"):
        moto_store.abort_multipart("a", upload_id)


def test_open_uploads_are_filtered_by_prefix(moto_store: S3Store) -> None:
    inside = moto_store.create_multipart("quarantine/o/1", "image/png")
    moto_store.create_multipart("originals/o/2", "image/png")
    found = moto_store.open_multipart_uploads("quarantine/")
    assert [(u.key, u.upload_id) for u in found] == [("quarantine/o/1", inside)]
    assert found[0].initiated.tzinfo is not None
    assert sorted(moto_store.list_multipart_uploads()) == ["originals/o/2", "quarantine/o/1"]


def test_copy_range_and_download(moto_store: S3Store) -> None:
    data = bytes(range(256)) * 40
    moto_store.put_bytes("src", data, "application/octet-stream")
    moto_store.copy("src", "dst", "image/jpeg")
    assert moto_store.client.head_object(Bucket="unit", Key="dst")["ContentType"] == "image/jpeg"
    assert moto_store.get_range("dst", 10, 20) == data[10:20]
    assert moto_store.get_range("dst", len(data) - 3, len(data) + 100) == data[-3:]
    writes: list[bytes] = []

    class Sink:
        def write(self, chunk: bytes) -> None:
            writes.append(chunk)

    assert moto_store.download_to("dst", Sink(), chunk_bytes=4096).size == len(data)
    assert [len(w) for w in writes] == [4096, 4096, len(data) - 8192]
    assert b"".join(writes) == data


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


def test_quarantine_lies_outside_the_roots_gc_checks_against_image_rows() -> None:
    import uuid

    owner, upload = uuid.uuid4(), uuid.uuid4()
    key = keys.quarantine_key(owner, upload)
    assert key == f"quarantine/{owner}/{upload}"
    assert key.startswith(keys.quarantine_prefix(owner))
    assert [root for root in keys.UPLOAD_ROOTS if key.startswith(root)] == [keys.QUARANTINE]
    # gc would take a waiting upload's object for an orphan an hour after it arrived.
    assert [root for root in keys.ROOTS if key.startswith(root)] == []
