"""S3 adapter with a sync face (workers) and an async face (API, via threads).

boto3 is used for both: its clients are thread-safe, presigning is local computation, and the
async face only needs to move blocking calls off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from media_api.cleanup import run_to_the_end
from media_api.settings import Settings
from media_api.storage import sigv4

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's floor for every part but the last

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    """What a put returns: enough to record the object without another request."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class SignedUrl:
    """A presigned GET and the moment it stops working."""

    url: str
    expires_at: dt.datetime


class ObjectNotFoundError(Exception):
    """The key does not exist in the bucket."""


def _client(settings: Settings, endpoint_url: str | None) -> S3Client:
    config = Config(
        signature_version="s3v4",
        # Path style works with SeaweedFS, MinIO and AWS alike, without wildcard DNS.
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
        # The service hashes every upload itself (sha256); extra checksums cost CPU for nothing.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=config,
    )
    return client


def _is_missing(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3Store:
    """Sync operations on one bucket."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.part_bytes = settings.s3_multipart_chunk_bytes
        self.client = _client(settings, settings.s3_endpoint_url)
        # Presigned URLs must name the host clients will reach, which may differ from ours.
        public = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        self._signer = _client(settings, public)
        self._public = public
        self._region = settings.s3_region
        self._access_key = settings.s3_access_key
        self._secret_key = settings.s3_secret_key.get_secret_value()

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (idempotent)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if not _is_missing(err):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def check(self) -> None:
        """Raise unless the bucket is reachable with our credentials (readiness)."""
        self.client.head_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, body: bytes, content_type: str) -> StoredObject:
        """Single-request put for bodies that fit one part (variants, small originals)."""
        resp = self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
        )
        return StoredObject(key=key, size=len(body), etag=resp["ETag"].strip('"'))

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        """Stream any number of chunks with memory bounded by one part.

        Bodies smaller than one part go in one PUT; larger ones become a multipart upload
        that is aborted on any failure, so a failed put never leaves a partial object.
        """
        upload = _MultipartUpload(self, key, content_type)
        try:
            for chunk in chunks:
                upload.feed(chunk)
            return upload.finish()
        except BaseException:
            upload.abort()
            raise

    def get_bytes(self, key: str) -> bytes:
        """Read a whole object (workers read originals they are about to decode anyway)."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if _is_missing(err):
                raise ObjectNotFoundError(key) from err
            raise

    def exists(self, key: str) -> bool:
        """True when the key exists (HEAD, no body)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if _is_missing(err):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Delete one key; deleting a missing key is not an error (idempotent)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under a prefix, in batches of S3's maximum (1000)."""
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            objects: list[ObjectIdentifierTypeDef] = [
                {"Key": obj["Key"]} for obj in page.get("Contents", [])
            ]
            if objects:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
                deleted += len(objects)
        return deleted

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under a prefix (tests and gc)."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def list_objects(self, prefix: str = "") -> list[tuple[str, dt.datetime]]:
        """(key, last modified) of every object under a prefix (gc needs the age)."""
        found: list[tuple[str, dt.datetime]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            found.extend((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []))
        return found

    def list_multipart_uploads(self) -> list[str]:
        """Keys of multipart uploads still open (a leak if any remain after a failure)."""
        resp = self.client.list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in resp.get("Uploads", [])]

    def presign_get(
        self,
        key: str,
        ttl: dt.timedelta,
        *,
        content_type: str | None = None,
        disposition: str | None = None,
    ) -> SignedUrl:
        """A GET URL signed for the public endpoint; pure computation, no request."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        overrides = {}
        if content_type:
            overrides["response-content-type"] = content_type
        if disposition:
            overrides["response-content-disposition"] = disposition
        if self._public is not None:
            # Path-style URL on a known endpoint: the fast signer (same bytes as botocore's).
            url = sigv4.presign_get(
                endpoint=self._public,
                path=f"/{self.bucket}/{key}",
                access_key=self._access_key,
                secret_key=self._secret_key,
                region=self._region,
                expires_seconds=int(ttl.total_seconds()),
                now=now,
                params=overrides,
            )
        else:
            # Plain AWS: let botocore resolve the regional endpoint.
            params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if content_type:
                params["ResponseContentType"] = content_type
            if disposition:
                params["ResponseContentDisposition"] = disposition
            url = self._signer.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=int(ttl.total_seconds())
            )
        return SignedUrl(url=url, expires_at=now + ttl)

    def close(self) -> None:
        """Release pooled connections."""
        self.client.close()
        self._signer.close()


class _MultipartUpload:
    """Buffers chunks into parts; starts a multipart upload only once a part is full.

    Cutting parts (`add`, `next_part`) is local; only `send_part`, `finish` and `abort` make
    requests, so the async face can run just those in threads.
    """

    def __init__(self, store: S3Store, key: str, content_type: str) -> None:
        self.store = store
        self.key = key
        self.content_type = content_type
        self.buffer = bytearray()
        self.size = 0
        self.upload_id: str | None = None
        self.parts: list[CompletedPartTypeDef] = []

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        self.size += len(chunk)

    def next_part(self) -> bytes | None:
        """A full part cut from the front of the buffer, or None while it is still filling."""
        part_bytes = self.store.part_bytes
        if len(self.buffer) < part_bytes:
            return None
        with memoryview(self.buffer) as view:  # one copy, and released before the resize
            part = bytes(view[:part_bytes])
        del self.buffer[:part_bytes]
        return part

    def feed(self, chunk: bytes) -> None:
        self.add(chunk)
        while (part := self.next_part()) is not None:
            self.send_part(part)

    def send_part(self, part: bytes) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:
            self.upload_id = client.create_multipart_upload(
                Bucket=bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        number = len(self.parts) + 1
        resp = client.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part
        )
        self.parts.append({"ETag": resp["ETag"], "PartNumber": number})

    def finish(self) -> StoredObject:
        if self.upload_id is None:
            return self.store.put_bytes(self.key, bytes(self.buffer), self.content_type)
        if self.buffer:
            self.send_part(bytes(self.buffer))
            self.buffer.clear()
        resp = self.store.client.complete_multipart_upload(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        return StoredObject(key=self.key, size=self.size, etag=resp["ETag"].strip('"'))

    def abort(self) -> None:
        if self.upload_id is not None:
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )
            self.upload_id = None  # aborting twice would be a 404


class StreamingUpload:
    """An object written while its bytes still arrive: one part in flight, one filling.

    Each full part leaves in a thread while the caller goes on writing the next; a write that
    fills a part waits for the previous one to land (backpressure). As an `async with` block it
    leaves nothing unless `complete()` succeeded and the block exits normally: otherwise the
    multipart upload is aborted, or the completed object deleted.
    """

    def __init__(self, store: S3Store, key: str, content_type: str) -> None:
        self.key = key
        self._store = store
        self._upload = _MultipartUpload(store, key, content_type)
        # The one S3 call running in a thread; owned here so an abort can wait for it to land.
        self._in_flight: asyncio.Task[None] | None = None
        self._stored: StoredObject | None = None

    async def __aenter__(self) -> StreamingUpload:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None or self._stored is None:
            # A cancelled request (a deploy's grace over) must still clean up, and must not
            # end before it has: shutdown waits for requests in flight, then closes the store.
            await run_to_the_end(self.abort())

    async def write(self, data: bytes) -> None:
        """Buffer `data`; a part that fills up is sent once the previous one has landed."""
        self._upload.add(data)
        while len(self._upload.buffer) >= self._store.part_bytes:
            await self._settle()
            part = self._upload.next_part()
            assert part is not None
            self._start(functools.partial(self._upload.send_part, part))

    async def complete(self) -> StoredObject:
        """Send the rest and finish: a single PUT if no part has left yet."""
        await self._settle()
        self._start(self._finish)
        await self._settle()
        assert self._stored is not None
        return self._stored

    async def abort(self) -> None:
        """Leave nothing behind, idempotently; a failure is only logged (it must not mask why)."""
        if self._in_flight is not None:
            # A part or the completion may still be running: abort only once it has landed.
            await asyncio.wait([self._in_flight])
            if not self._in_flight.cancelled():
                self._in_flight.exception()  # reported by write/complete, or moot now
            self._in_flight = None
        try:
            if self._stored is not None:
                await asyncio.to_thread(self._store.delete, self.key)
                self._stored = None
            else:
                await asyncio.to_thread(self._upload.abort)
        except (BotoCoreError, ClientError):
            log.exception("could not discard the upload of %s", self.key)

    def _start(self, work: Callable[[], None]) -> None:
        self._in_flight = asyncio.create_task(asyncio.to_thread(work))

    async def _settle(self) -> None:
        """Wait for the call in flight and raise its error; shielded so it always lands."""
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)
            self._in_flight = None

    def _finish(self) -> None:
        self._stored = self._upload.finish()


class AsyncS3Store:
    """The async face: the same operations, run in worker threads off the event loop."""

    def __init__(self, store: S3Store) -> None:
        self.sync = store

    async def check(self) -> None:
        """Readiness probe."""
        await asyncio.to_thread(self.sync.check)

    def streaming_upload(self, key: str, content_type: str) -> StreamingUpload:
        """An upload to write as the bytes arrive; no request is made until a part is full."""
        return StreamingUpload(self.sync, key, content_type)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str
    ) -> StoredObject:
        """Stream an async body; each part is sent from a thread while the next one fills."""
        async with self.streaming_upload(key, content_type) as upload:
            async for chunk in chunks:
                await upload.write(chunk)
            return await upload.complete()

    async def delete(self, key: str) -> None:
        """Delete one key."""
        await asyncio.to_thread(self.sync.delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete everything under a prefix."""
        return await asyncio.to_thread(self.sync.delete_prefix, prefix)

    def presign_get(
        self,
        key: str,
        ttl: dt.timedelta,
        *,
        content_type: str | None = None,
        disposition: str | None = None,
    ) -> SignedUrl:
        """Presigning is local computation, so it stays synchronous."""
        return self.sync.presign_get(key, ttl, content_type=content_type, disposition=disposition)
