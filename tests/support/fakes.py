"""Fakes of the services' outside world, so their rules are tested in milliseconds."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import IO, Any

from botocore.exceptions import ClientError

from media_api.imaging import probe as imaging
from media_api.jobs.producer import JobProducer
from media_api.storage.s3 import StoredObject


class FakeProducer(JobProducer):
    """The real `JobProducer` over a broker that is a list: `sent` holds each task as
    (name, args, queue) and `request_ids` its request id, in order. `fail` is a broker outage."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(self)  # publishes to itself
        self.fail = fail
        self.sent: list[tuple[str, tuple[Any, ...], str]] = []
        self.request_ids: list[str | None] = []

    def send_task(self, name: str, args: Sequence[Any] | None = None, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, tuple(args or ()), options["queue"]))
        self.request_ids.append(options.get("headers", {}).get("request_id"))


class FakeStore:
    """An object store in memory with the upload face of `AsyncS3Store`. `objects` holds what
    is stored, `open` the uploads begun and neither completed nor aborted, `calls` every
    (operation, key) in order. `fail_complete` is S3 refusing the last request."""

    def __init__(self, *, fail_complete: bool = False) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.open: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.fail_complete = fail_complete

    def streaming_upload(self, key: str, content_type: str) -> FakeUpload:
        self.calls.append(("start", key))
        self.open.add(key)
        return FakeUpload(self, key, content_type)

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.objects.pop(key, None)


class FakeUpload:
    """One streaming upload of a `FakeStore`; idempotent abort, like the real one."""

    def __init__(self, store: FakeStore, key: str, content_type: str) -> None:
        self.store, self.key, self.content_type = store, key, content_type
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.store.calls.append(("write", self.key))
        self.data += data

    async def complete(self) -> StoredObject:
        self.store.calls.append(("complete", self.key))
        if self.store.fail_complete:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "x"}}, "Complete")
        self.store.open.discard(self.key)
        self.store.objects[self.key] = (bytes(self.data), self.content_type)
        return StoredObject(self.key, len(self.data), hashlib.md5(self.data).hexdigest())  # noqa: S324

    async def abort(self) -> None:
        self.store.calls.append(("abort", self.key))
        self.store.open.discard(self.key)
        self.store.objects.pop(self.key, None)


class InlineValidator:
    """The upload's image checks run in a thread of the test's process, not a process pool."""

    def __init__(self, limits: imaging.ProbeLimits) -> None:
        self.limits = limits

    async def precheck(self, spool: IO[bytes]) -> None:
        await asyncio.to_thread(imaging.check_jpeg_scans, spool, self.limits)

    async def validate(self, spool: IO[bytes]) -> imaging.ImageInfo:
        return await asyncio.to_thread(imaging.probe, spool, self.limits)

    def follow(self, spool: IO[bytes]) -> None:
        """Validated after the last byte (the pool's followed decodes: tests/images)."""
        return
