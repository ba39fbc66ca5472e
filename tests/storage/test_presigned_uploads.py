"""Presigned PUT and UploadPart URLs against the real SeaweedFS: the signed size is enforced."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from media_api.storage.s3 import S3Store

MB = 1024 * 1024
TTL = dt.timedelta(minutes=5)


def _key() -> str:
    return f"tests/presigned/{uuid.uuid4()}"


def _chunked(data: bytes) -> Iterator[bytes]:
    """A body httpx sends with Transfer-Encoding: chunked (no Content-Length)."""
    yield data[: len(data) // 2]
    yield data[len(data) // 2 :]


def _refused(resp: httpx.Response) -> bool:
    """SeaweedFS rebuilds the canonical request from the request's own Content-Length."""
    return resp.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in resp.text


def test_put_with_the_signed_length_stores_the_bytes(store: S3Store) -> None:
    key = _key()
    data = os.urandom(100_000)
    signed = store.presign_put(key, len(data), TTL)
    assert "X-Amz-SignedHeaders=content-length%3Bhost&" in signed.url
    resp = httpx.put(signed.url, content=data)
    assert resp.status_code == 200, resp.text
    assert store.get_bytes(key) == data
    assert dt.timedelta(minutes=4) < signed.expires_at - dt.datetime.now(dt.UTC)


def test_unsigned_content_type_does_not_break_the_signature(store: S3Store) -> None:
    """Browsers PUT a File with its Content-Type; only content-length and host are signed."""
    key = _key()
    data = b"\xff\xd8\xff" + os.urandom(997)
    url = store.presign_put(key, len(data), TTL).url
    resp = httpx.put(url, content=data, headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    assert store.get_bytes(key) == data


@pytest.mark.parametrize("delta", [1, -1])
def test_put_with_another_length_is_refused(store: S3Store, delta: int) -> None:
    key = _key()
    size = 100_000
    url = store.presign_put(key, size, TTL).url
    assert _refused(httpx.put(url, content=os.urandom(size + delta)))
    assert not store.exists(key)


def test_chunked_put_without_content_length_is_refused(store: S3Store) -> None:
    key = _key()
    data = os.urandom(100_000)
    url = store.presign_put(key, len(data), TTL).url
    resp = httpx.put(url, content=_chunked(data))
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in resp.request.headers
    assert _refused(resp)
    assert not store.exists(key)


def test_upload_part_urls_bind_length_and_part_and_complete(store: S3Store) -> None:
    key = _key()
    upload_id = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    first, last = os.urandom(5 * MB), os.urandom(1234)
    try:
        url_1 = store.presign_upload_part(key, upload_id, 1, len(first), TTL).url
        url_2 = store.presign_upload_part(key, upload_id, 2, len(last), TTL).url
        query = dict(parse_qsl(urlsplit(url_1).query))
        assert (query["partNumber"], query["uploadId"]) == ("1", upload_id)

        # Wrong sizes, a chunked body, and part 1's URL used for part 2: all refused.
        assert _refused(httpx.put(url_1, content=first + b"x"))
        assert _refused(httpx.put(url_1, content=first[:-1]))
        assert _refused(httpx.put(url_1, content=_chunked(first)))
        parts = urlsplit(url_1)
        other_part = urlunsplit(
            parts._replace(query=urlencode({**dict(parse_qsl(parts.query)), "partNumber": "2"}))
        )
        assert _refused(httpx.put(other_part, content=first))
        listed = store.client.list_parts(Bucket=store.bucket, Key=key, UploadId=upload_id)
        assert listed.get("Parts", []) == []

        etags = []
        for url, body in ((url_1, first), (url_2, last)):
            resp = httpx.put(url, content=body, timeout=30)
            assert resp.status_code == 200, resp.text
            etags.append(resp.headers["etag"])
        store.client.complete_multipart_upload(
            Bucket=store.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]
            },
        )
        upload_id = ""
        assert store.get_bytes(key) == first + last
    finally:
        if upload_id:
            store.client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload_id)
        store.delete(key)
