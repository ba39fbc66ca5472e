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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from media_api.cleanup import run_to_the_end
from media_api.settings import Settings
from media_api.storage import sigv4

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        CopyObjectRequestTypeDef,
        GetObjectOutputTypeDef,
        GetObjectRequestTypeDef,
        ObjectIdentifierTypeDef,
    )

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's floor for every part but the last
MAX_PARTS = 10_000  # S3's ceiling on the parts of one multipart upload
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    """What a put returns: enough to record the object without another request."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class SignedUrl:
    """A presigned URL and the moment it stops working."""

    url: str
    expires_at: dt.datetime


class OpenMultipart(NamedTuple):
    """A multipart upload not yet completed or aborted (what the sweep and gc look for)."""

    key: str
    upload_id: str
    initiated: dt.datetime


class Sink(Protocol):
    """Where `download_to` writes: a file opened for binary writing, or a wrapper that hashes."""

    def write(self, data: bytes, /) -> object: ...


class SourceChangedError(Exception):
    """A conditional copy's source is no longer the object it was meant to be."""


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


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _is_missing(err: ClientError) -> bool:
    return _code(err) in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _quoted(etag: str) -> str:
    """ETags as S3 wants them back in CompleteMultipartUpload, whether or not a client kept
    the quotes of the `ETag` header."""
    return f'"{etag.strip(chr(34))}"'


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
        with self._body(key) as body:
            return body.read()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object: fewer if it is shorter, none if it ends before start."""
        if end <= start:
            return b""
        try:
            with self._body(key, f"bytes={start}-{end - 1}") as body:
                return body.read()
        except ClientError as err:
            if _code(err) == "InvalidRange":  # start at or past the end
                return b""
            raise

    def download_to(
        self, key: str, fileobj: Sink, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> StoredObject:
        """Stream an object into `fileobj`, one chunk in memory at a time; returns its size and
        the ETag of exactly the bytes written."""
        response = self._get(key)
        body, size = response["Body"], 0
        with body:  # (`as` would give the raw stream, without iter_chunks)
            for chunk in body.iter_chunks(chunk_bytes):
                fileobj.write(chunk)
                size += len(chunk)
        return StoredObject(key=key, size=size, etag=response["ETag"].strip('"'))

    def _body(self, key: str, byte_range: str | None = None) -> StreamingBody:
        """GetObject's body; a missing key raises ObjectNotFoundError."""
        return self._get(key, byte_range)["Body"]

    def _get(self, key: str, byte_range: str | None = None) -> GetObjectOutputTypeDef:
        request: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            request["Range"] = byte_range
        try:
            return self.client.get_object(**request)
        except ClientError as err:
            if _is_missing(err):
                raise ObjectNotFoundError(key) from err
            raise

    def copy(
        self, source_key: str, dest_key: str, content_type: str, *, if_match: str | None = None
    ) -> None:
        """Server-side copy (promotion out of quarantine), with the content type replaced; with
        `if_match`, only if the source still has that ETag (else SourceChangedError)."""
        request: CopyObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": dest_key,
            "CopySource": {"Bucket": self.bucket, "Key": source_key},
            "MetadataDirective": "REPLACE",
            "ContentType": content_type,
        }
        if if_match:
            request["CopySourceIfMatch"] = _quoted(if_match)
        try:
            self.client.copy_object(**request)
        except ClientError as err:
            if _is_missing(err):
                raise ObjectNotFoundError(source_key) from err
            if _code(err) in {"PreconditionFailed", "412"}:
                raise SourceChangedError(source_key) from err
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

    def size(self, key: str) -> int | None:
        """The object's size in bytes (HEAD, no body); None when the key does not exist."""
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if _is_missing(err):
                return None
            raise
        return resp["ContentLength"]

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

    def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload; its id is what every later part call names."""
        resp = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )
        return resp["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Send part `number` (1..10000); returns its ETag, without quotes."""
        resp = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return resp["ETag"].strip('"')

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        """Assemble the (number, etag) parts in order into the object; returns its ETag."""
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": _quoted(etag)} for number, etag in sorted(parts)
        ]
        resp = self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": completed},
        )
        return resp["ETag"].strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload and its parts; one already gone is fine (idempotent)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as err:
            if _code(err) not in {"NoSuchUpload", "404"}:
                raise

    def open_multipart_uploads(self, prefix: str = "") -> list[OpenMultipart]:
        """Every multipart upload still open under a prefix, across all pages."""
        found: list[OpenMultipart] = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            found.extend(
                OpenMultipart(u["Key"], u["UploadId"], u["Initiated"])
                for u in page.get("Uploads", [])
            )
        return found

    def list_multipart_uploads(self, prefix: str = "") -> list[str]:
        """Keys of multipart uploads still open (a leak if any remain after a failure)."""
        return [upload.key for upload in self.open_multipart_uploads(prefix)]

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
            return self._sign("GET", self._public, key, ttl, now, params=overrides)
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

    def presign_put(self, key: str, size: int, ttl: dt.timedelta) -> SignedUrl:
        """A PUT URL that accepts exactly `size` bytes: `content-length` is signed."""
        return self._presign_sized_put(key, size, ttl, {})

    def presign_upload_part(
        self, key: str, upload_id: str, number: int, size: int, ttl: dt.timedelta
    ) -> SignedUrl:
        """An UploadPart URL for part `number` of exactly `size` bytes."""
        params = {"partNumber": str(number), "uploadId": upload_id}
        return self._presign_sized_put(key, size, ttl, params)

    def _presign_sized_put(
        self, key: str, size: int, ttl: dt.timedelta, params: dict[str, str]
    ) -> SignedUrl:
        # Our signer, not botocore's: whether its query signer keeps content-length is not
        # something to depend on. On plain AWS, botocore's resolved endpoint (path style).
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        endpoint = self._public or self._signer.meta.endpoint_url
        headers = {"content-length": str(size)}
        return self._sign("PUT", endpoint, key, ttl, now, headers=headers, params=params)

    def _sign(
        self,
        method: str,
        endpoint: str,
        key: str,
        ttl: dt.timedelta,
        now: dt.datetime,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> SignedUrl:
        url = sigv4.presign(
            method=method,
            endpoint=endpoint,
            path=f"/{self.bucket}/{key}",
            access_key=self._access_key,
            secret_key=self._secret_key,
            region=self._region,
            expires_seconds=int(ttl.total_seconds()),
            now=now,
            headers=headers,
            params=params,
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
        self.parts: list[tuple[int, str]] = []

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
        if self.upload_id is None:
            self.upload_id = self.store.create_multipart(self.key, self.content_type)
        number = len(self.parts) + 1
        self.parts.append((number, self.store.upload_part(self.key, self.upload_id, number, part)))

    def finish(self) -> StoredObject:
        if self.upload_id is None:
            return self.store.put_bytes(self.key, bytes(self.buffer), self.content_type)
        if self.buffer:
            self.send_part(bytes(self.buffer))
            self.buffer.clear()
        etag = self.store.complete_multipart(self.key, self.upload_id, self.parts)
        return StoredObject(key=self.key, size=self.size, etag=etag)

    def abort(self) -> None:
        if self.upload_id is not None:
            self.store.abort_multipart(self.key, self.upload_id)
            self.upload_id = None  # no second request for an upload already gone


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

    async def copy(
        self, source_key: str, dest_key: str, content_type: str, *, if_match: str | None = None
    ) -> None:
        """Server-side copy with the content type replaced (conditional with `if_match`)."""
        copy = functools.partial(self.sync.copy, if_match=if_match)
        await asyncio.to_thread(copy, source_key, dest_key, content_type)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object."""
        return await asyncio.to_thread(self.sync.get_range, key, start, end)

    async def download_to(
        self, key: str, fileobj: Sink, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> StoredObject:
        """Stream an object into `fileobj` from a thread (the writes happen there too)."""
        return await asyncio.to_thread(self.sync.download_to, key, fileobj, chunk_bytes)

    async def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload; returns its id."""
        return await asyncio.to_thread(self.sync.create_multipart, key, content_type)

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Send one part; returns its ETag."""
        return await asyncio.to_thread(self.sync.upload_part, key, upload_id, number, data)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> str:
        """Assemble the parts into the object; returns its ETag."""
        return await asyncio.to_thread(self.sync.complete_multipart, key, upload_id, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload (idempotent)."""
        await asyncio.to_thread(self.sync.abort_multipart, key, upload_id)

    async def open_multipart_uploads(self, prefix: str = "") -> list[OpenMultipart]:
        """Every multipart upload still open under a prefix."""
        return await asyncio.to_thread(self.sync.open_multipart_uploads, prefix)

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

    def presign_put(self, key: str, size: int, ttl: dt.timedelta) -> SignedUrl:
        """A PUT URL for exactly `size` bytes (local computation, synchronous)."""
        return self.sync.presign_put(key, size, ttl)

    def presign_upload_part(
        self, key: str, upload_id: str, number: int, size: int, ttl: dt.timedelta
    ) -> SignedUrl:
        """An UploadPart URL for part `number` of exactly `size` bytes (synchronous)."""
        return self.sync.presign_upload_part(key, upload_id, number, size, ttl)

    async def size(self, key: str) -> int | None:
        """The object's size; None when it does not exist."""
        return await asyncio.to_thread(self.sync.size, key)
