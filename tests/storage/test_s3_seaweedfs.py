"""The S3 adapter against the real SeaweedFS of the session (SigV4 checked)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from media_api.settings import Settings
from media_api.storage.s3 import AsyncS3Store, ObjectNotFoundError, S3Store

MB = 1024 * 1024


def _key() -> str:
    return f"tests/{uuid.uuid4()}"


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_put_presign_get(store: S3Store) -> None:
    key = _key()
    store.put_bytes(key, b"hello seaweed", "text/plain")
    signed = store.presign_get(
        key,
        dt.timedelta(minutes=5),
        content_type="text/plain",
        disposition='inline; filename="hello.txt"',
    )
    resp = httpx.get(signed.url)
    assert resp.status_code == 200
    assert resp.content == b"hello seaweed"
    assert resp.headers["content-type"] == "text/plain"
    assert resp.headers["content-disposition"] == 'inline; filename="hello.txt"'
    assert dt.timedelta(minutes=4) < signed.expires_at - dt.datetime.now(dt.UTC)


def test_tampered_signature_is_refused(store: S3Store) -> None:
    key = _key()
    store.put_bytes(key, b"secret", "text/plain")
    url = store.presign_get(key, dt.timedelta(minutes=5)).url
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert httpx.get(_with_param(url, "X-Amz-Signature", flipped)).status_code == 403
    # A valid signature for one key does not open another.
    other = url.replace(key, _key())
    assert httpx.get(other).status_code == 403
    assert httpx.get(url).status_code == 200


def test_expired_url_is_refused(store: S3Store) -> None:
    key = _key()
    store.put_bytes(key, b"brief", "text/plain")
    url = store.presign_get(key, dt.timedelta(seconds=1)).url
    time.sleep(2.1)
    assert httpx.get(url).status_code == 403


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_large_body_goes_multipart_and_round_trips(settings: Settings) -> None:
    store = S3Store(settings.model_copy(update={"s3_multipart_chunk_bytes": 5 * MB}))
    data = os.urandom(12 * MB + 123)
    key = _key()
    stored = store.put_stream(key, _chunks(data, 64 * 1024), "application/octet-stream")
    assert stored.size == len(data)
    assert stored.etag.endswith("-3")  # three parts: 5 MB + 5 MB + the rest
    assert hashlib.sha256(store.get_bytes(key)).digest() == hashlib.sha256(data).digest()
    store.close()


def test_failed_stream_leaves_no_object_and_no_open_upload(settings: Settings) -> None:
    store = S3Store(settings.model_copy(update={"s3_multipart_chunk_bytes": 5 * MB}))
    key = _key()

    def broken() -> Iterator[bytes]:
        yield os.urandom(6 * MB)  # enough to start the multipart upload
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(key, broken(), "application/octet-stream")
    assert not store.exists(key)
    assert key not in store.list_multipart_uploads()
    store.close()


async def test_async_stream_put_and_abort(store: S3Store) -> None:
    astore = AsyncS3Store(store)
    key = _key()

    async def body() -> AsyncIterator[bytes]:
        for piece in (b"a" * 1000, b"b" * 1000):
            await asyncio.sleep(0)
            yield piece

    stored = await astore.put_stream(key, body(), "text/plain")
    assert stored.size == 2000
    assert store.get_bytes(key) == b"a" * 1000 + b"b" * 1000

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 10
        raise ValueError("bad input")

    failed_key = _key()
    with pytest.raises(ValueError, match="bad input"):
        await astore.put_stream(failed_key, failing(), "text/plain")
    assert not store.exists(failed_key)


async def test_a_cancelled_upload_ends_only_once_it_has_cleaned_up(settings: Settings) -> None:
    """A request cancelled while a part is on the wire (a deploy's grace over), and cancelled
    again while it cleans up, still ends only after its abort has landed: shutdown waits for
    requests in flight, then closes the store, so nothing may outlive the request."""
    store = S3Store(settings.model_copy(update={"s3_multipart_chunk_bytes": 5 * MB}))
    landing = threading.Event()

    def hold_the_part(**_: object) -> None:  # a part leaves only once the test says so
        landing.wait(30)

    store.client.meta.events.register("before-send.s3.UploadPart", hold_the_part)
    astore = AsyncS3Store(store)
    key = _key()
    part_sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(5 * MB)  # a full part: it leaves in a thread
        part_sent.set()
        await asyncio.Event().wait()  # the rest never comes

    async def turns(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    request = asyncio.ensure_future(astore.put_stream(key, body(), "application/octet-stream"))
    await part_sent.wait()
    request.cancel()
    await turns(3)  # the cancellation reaches the body; the cleanup waits for the part
    request.cancel()  # and again
    await turns(3)
    assert not request.done()
    landing.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert key not in store.list_multipart_uploads()
    assert not store.exists(key)
    store.close()


def test_delete_and_delete_prefix(store: S3Store) -> None:
    prefix = f"tests/{uuid.uuid4()}/"
    for name in ("a", "b", "c"):
        store.put_bytes(prefix + name, b"x", "text/plain")
    store.delete(prefix + "a")
    store.delete(prefix + "a")  # idempotent
    assert sorted(store.list_keys(prefix)) == [prefix + "b", prefix + "c"]
    assert store.delete_prefix(prefix) == 2
    assert store.list_keys(prefix) == []
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes(prefix + "b")


def test_wrong_credentials_are_refused(settings: Settings) -> None:
    from pydantic import SecretStr

    bad = S3Store(settings.model_copy(update={"s3_secret_key": SecretStr("not-the-secret")}))
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|403"):
        bad.check()
    bad.close()


def test_ensure_bucket_creates_and_is_idempotent(settings: Settings) -> None:
    bucket = f"media-test-{uuid.uuid4().hex[:12]}"
    store = S3Store(settings.model_copy(update={"s3_bucket": bucket}))
    with pytest.raises(Exception, match=r"404|NoSuchBucket|Not Found"):
        store.check()
    store.ensure_bucket()
    store.ensure_bucket()
    store.check()
    store.client.delete_bucket(Bucket=bucket)
    store.close()
