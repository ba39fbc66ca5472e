"""The pieces resumable and direct uploads build on, against the real SeaweedFS of the session:
multipart calls that span requests (and processes), copy, ranged reads, streamed downloads."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tracemalloc
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import AsyncS3Store, ObjectNotFoundError, S3Store, SourceChangedError

MB = 1024 * 1024


def _key() -> str:
    return f"tests/{uuid.uuid4()}"


class HashingSink:
    """Keeps only a digest and the size of each write, so memory shows what the download holds."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.writes: list[int] = []

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.writes.append(len(data))
        return len(data)


def test_parts_sent_by_one_process_are_completed_by_another(settings: Settings) -> None:
    """A tus upload's parts leave from whichever API process holds it: only the upload id and
    the (number, etag) pairs, kept in the row, cross between them."""
    first, second = S3Store(settings), S3Store(settings)
    key = keys.quarantine_key(uuid.uuid4(), uuid.uuid4())
    parts = [os.urandom(5 * MB), os.urandom(5 * MB), os.urandom(123)]
    upload_id = first.create_multipart(key, "image/png")
    etags = [(1, first.upload_part(key, upload_id, 1, parts[0]))]
    etags.append((2, second.upload_part(key, upload_id, 2, parts[1])))
    etags.append((3, second.upload_part(key, upload_id, 3, parts[2])))
    assert all('"' not in etag for _, etag in etags)
    assert not second.exists(key)  # nothing is visible before completion
    # Out of order, and with the quotes a browser's ETag header keeps on one of them.
    shuffled = [etags[2], (1, f'"{etags[0][1]}"'), etags[1]]
    etag = second.complete_multipart(key, upload_id, shuffled)
    assert etag.endswith("-3")
    assert first.get_bytes(key) == b"".join(parts)
    head = first.client.head_object(Bucket=first.bucket, Key=key)
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == 10 * MB + 123
    assert key not in first.list_multipart_uploads(keys.QUARANTINE)
    first.close()
    second.close()


def test_a_wrong_etag_is_refused_at_completion(store: S3Store) -> None:
    """Direct uploads hand the client's ETags to S3: a made-up one must not assemble."""
    key = _key()
    upload_id = store.create_multipart(key, "image/jpeg")
    store.upload_part(key, upload_id, 1, os.urandom(5 * MB))
    etag2 = store.upload_part(key, upload_id, 2, b"last")
    with pytest.raises(ClientError, match="InvalidPart"):
        store.complete_multipart(key, upload_id, [(1, "0" * 32), (2, etag2)])
    assert not store.exists(key)
    store.abort_multipart(key, upload_id)


def test_abort_discards_the_parts_and_is_idempotent(store: S3Store) -> None:
    key = _key()
    upload_id = store.create_multipart(key, "image/jpeg")
    store.upload_part(key, upload_id, 1, os.urandom(5 * MB))
    assert [u.upload_id for u in store.open_multipart_uploads(key)] == [upload_id]
    store.abort_multipart(key, upload_id)
    assert store.open_multipart_uploads(key) == []
    store.abort_multipart(key, upload_id)  # already gone: the sweep may retry
    store.abort_multipart(_key(), "no-such-upload-id")
    assert not store.exists(key)


def test_open_uploads_are_listed_by_prefix_across_pages(store: S3Store) -> None:
    owner = uuid.uuid4()
    prefix = keys.quarantine_prefix(owner)
    ids = {}
    for _ in range(5):
        key = keys.quarantine_key(owner, uuid.uuid4())
        ids[key] = store.create_multipart(key, "image/png")
    outside = _key()
    outside_id = store.create_multipart(outside, "image/png")
    pages = 0

    def small_pages(params: dict[str, Any], **_: object) -> None:
        nonlocal pages
        pages += 1
        params["MaxUploads"] = 2

    store.client.meta.events.register("provide-client-params.s3.ListMultipartUploads", small_pages)
    try:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        found = store.open_multipart_uploads(prefix)
    finally:
        store.client.meta.events.unregister(
            "provide-client-params.s3.ListMultipartUploads", small_pages
        )
    assert pages == 3  # 2 + 2 + 1: the listing followed the markers
    assert {(u.key, u.upload_id) for u in found} == set(ids.items())
    assert all(before < u.initiated <= dt.datetime.now(dt.UTC) for u in found)
    for key, upload_id in ids.items():
        store.abort_multipart(key, upload_id)
    store.abort_multipart(outside, outside_id)
    assert store.open_multipart_uploads(prefix) == []


def test_a_conditional_copy_copies_only_the_object_it_names(store: S3Store) -> None:
    source, dest = _key(), _key()
    first = store.put_bytes(source, b"validated bytes", "application/octet-stream")
    store.copy(source, dest, "image/png", if_match=first.etag)
    assert store.get_bytes(dest) == b"validated bytes"
    store.put_bytes(source, b"swapped in after", "application/octet-stream")
    with pytest.raises(SourceChangedError):
        store.copy(source, _key(), "image/png", if_match=first.etag)


@pytest.mark.parametrize("size", [1000, 12 * MB + 7])
def test_copy_replaces_the_content_type_and_keeps_the_bytes(settings: Settings, size: int) -> None:
    """Promotion out of quarantine: SeaweedFS implements CopyObject, for single-PUT objects and
    for multipart ones (whose chunks it copies on the volume servers)."""
    store = S3Store(settings.model_copy(update={"s3_multipart_chunk_bytes": 5 * MB}))
    data = os.urandom(size)
    source, dest = _key(), _key()
    store.put_stream(source, iter([data]), "application/octet-stream")
    store.copy(source, dest, "image/webp")
    assert hashlib.sha256(store.get_bytes(dest)).digest() == hashlib.sha256(data).digest()
    head = store.client.head_object(Bucket=store.bucket, Key=dest)
    assert head["ContentType"] == "image/webp"
    assert head["ContentLength"] == size
    store.delete(source)  # the copy does not depend on its source
    assert store.get_range(dest, 0, 16) == data[:16]
    with pytest.raises(ObjectNotFoundError):
        store.copy(_key(), _key(), "image/png")
    store.close()


def test_ranges_are_half_open_and_clipped(store: S3Store) -> None:
    key = _key()
    data = os.urandom(1000)
    store.put_bytes(key, data, "application/octet-stream")
    assert store.get_range(key, 0, 128) == data[:128]
    assert store.get_range(key, 500, 501) == data[500:501]
    assert store.get_range(key, 990, 2000) == data[990:]  # the object is shorter
    assert store.get_range(key, 1000, 1128) == b""  # it ends before the range
    assert store.get_range(key, 5, 5) == b""
    store.put_bytes(key, b"", "application/octet-stream")
    assert store.get_range(key, 0, 128) == b""  # S3 answers 416 for any range of nothing
    with pytest.raises(ObjectNotFoundError):
        store.get_range(_key(), 0, 128)


def test_download_streams_with_one_chunk_in_memory(settings: Settings) -> None:
    store = S3Store(settings.model_copy(update={"s3_multipart_chunk_bytes": 5 * MB}))
    key = _key()
    data = os.urandom(16 * MB + 5)
    store.put_stream(key, iter([data[i : i + MB] for i in range(0, len(data), MB)]), "image/png")
    expected = hashlib.sha256(data).digest()
    del data
    sink = HashingSink()
    tracemalloc.start()
    try:
        size = store.download_to(key, sink).size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 16 * MB + 5
    assert sink.digest.digest() == expected
    assert max(sink.writes) == MB
    assert len(sink.writes) == 17
    assert peak < 3 * MB  # one chunk read, one being written, never the object
    with pytest.raises(ObjectNotFoundError):
        store.download_to(_key(), HashingSink())
    store.close()


async def test_the_async_face_runs_the_same_calls(store: S3Store, tmp_path: Any) -> None:
    astore = AsyncS3Store(store)
    key, dest = _key(), _key()
    upload_id = await astore.create_multipart(key, "application/octet-stream")
    first = os.urandom(5 * MB)
    etags = [
        (1, await astore.upload_part(key, upload_id, 1, first)),
        (2, await astore.upload_part(key, upload_id, 2, b"tail")),
    ]
    assert [u.key for u in await astore.open_multipart_uploads(key)] == [key]
    await astore.complete_multipart(key, upload_id, etags)
    await astore.abort_multipart(key, upload_id)  # after completion: nothing to abort
    assert await astore.get_range(key, 0, 4) == first[:4]
    await astore.copy(key, dest, "image/gif")
    with (tmp_path / "spool").open("w+b") as spool:
        assert (await astore.download_to(dest, spool)).size == 5 * MB + 4
        spool.seek(0)
        assert spool.read() == first + b"tail"
    assert store.exists(key)  # completion after abort would have lost it
