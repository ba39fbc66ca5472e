"""Finalizing an upload whose bytes sit in quarantine, against real Postgres (rolled back after
each test) and the real SeaweedFS store; the validation runs inline, the producer is a fake.

A refusal is recorded before it is raised and the caller commits it: `uow.committed()` below
stands for that commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import IO

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import repository as owners
from media_api.accounts.models import Owner
from media_api.errors import MediaError, ServerBusy
from media_api.images.errors import QuotaExceeded
from media_api.images.models import Image
from media_api.imaging.probe import (
    CorruptImage,
    ImageInfo,
    ProbeError,
    ProbeLimits,
    UnsupportedMediaType,
)
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import DOWNLOAD_CHUNK_BYTES, AsyncS3Store, S3Store, Sink
from media_api.unit_of_work import UnitOfWork
from media_api.uploads import repository, service
from media_api.uploads.errors import Sha256Mismatch, SizeMismatch
from media_api.uploads.models import Upload, UploadKind, UploadState
from tests.support.fakes import FakeProducer, InlineValidator
from tests.support.images import noise_png, png

DAY = dt.timedelta(days=1)


class CountingStore(AsyncS3Store):
    """The real store, counting the downloads of whole objects."""

    downloads = 0

    async def download_to(
        self, key: str, fileobj: Sink, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> int:
        self.downloads += 1
        return await super().download_to(key, fileobj, chunk_bytes)


class BusyValidator(InlineValidator):
    """Every validation slot taken."""

    async def validate(self, spool: object) -> ImageInfo:
        raise ServerBusy("every validation slot is taken; retry shortly")


class StuckValidator(InlineValidator):
    """A validation that never ends, holding on to the file it was given."""

    def __init__(self, limits: ProbeLimits) -> None:
        super().__init__(limits)
        self.spool: IO[bytes] | None = None
        self.started = asyncio.Event()

    async def validate(self, spool: IO[bytes]) -> ImageInfo:
        self.spool = spool
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")


class Finalizing:
    """One owner's uploads put in quarantine and finalized, with a fresh unit of work each."""

    def __init__(
        self, db: AsyncSession, settings: Settings, store: S3Store, owner_id: uuid.UUID
    ) -> None:
        self.db, self.settings, self.sync, self.owner_id = db, settings, store, owner_id
        self.store = CountingStore(store)
        self.validator = InlineValidator(settings.probe_limits)
        self.producer = FakeProducer()
        self.uow = UnitOfWork(self.producer)

    async def upload(
        self, data: bytes, *, length: int | None = None, sha256: bytes | None = None
    ) -> Upload:
        """An upload row (its quota reserved) whose bytes are all in its quarantine object."""
        upload = await repository.create(
            self.db,
            owner_id=self.owner_id,
            kind=UploadKind.DIRECT,
            length=length or len(data),
            quota=0,
            expires_in=DAY,
            filename="a.png",
            title="Cat",
            expected_sha256=sha256,
        )
        assert upload is not None
        self.sync.put_bytes(upload.object_key, data, "application/octet-stream")
        return upload

    async def finalize(self, upload: Upload) -> tuple[Image, bool]:
        self.uow = UnitOfWork(self.producer)
        return await service.finalize(
            self.db, self.uow, self.store, self.validator, self.settings, upload
        )

    async def refused(self, upload: Upload, error: type[MediaError | ProbeError]) -> None:
        """Finalizing refuses with `error`; once committed, nothing of the upload is left."""
        with pytest.raises(error):
            await self.finalize(upload)
        assert (upload.state, upload.error and upload.error["code"]) == (
            UploadState.REJECTED,
            error.code,
        )
        assert self.sync.exists(upload.object_key)  # until the rejection is committed
        await self.uow.committed()
        assert not self.sync.exists(upload.object_key)
        assert self.originals() == []
        assert await self.images() == 0
        assert await self.held() == (0, 0)
        assert upload.reserved_bytes == 0
        assert self.producer.sent == []

    def content_type(self, key: str) -> str:
        return self.sync.client.head_object(Bucket=self.sync.bucket, Key=key)["ContentType"]

    def originals(self) -> list[str]:
        return self.sync.list_keys(keys.originals_prefix(self.owner_id))

    async def images(self) -> int:
        count = select(func.count()).where(Image.owner_id == self.owner_id)
        return int(await self.db.scalar(count) or 0)

    async def held(self) -> tuple[int, int]:
        """The owner's (bytes_used, bytes_reserved)."""
        row = (
            await self.db.execute(
                select(Owner.bytes_used, Owner.bytes_reserved).where(Owner.id == self.owner_id)
            )
        ).one()
        return int(row[0]), int(row[1])


@pytest.fixture
async def uploads(
    db: AsyncSession, app_settings: Settings, store: S3Store
) -> AsyncIterator[Finalizing]:
    owner = await owners.add_owner(db, f"{uuid.uuid4()}@finalize.test")
    yield Finalizing(db, app_settings, store, owner.id)
    # The rows roll back; the objects would be orphans to the session's other tests (gc).
    for prefix in (keys.originals_prefix(owner.id), keys.quarantine_prefix(owner.id)):
        store.delete_prefix(prefix)


async def test_an_image_is_promoted_and_its_jobs_sent_after_commit(uploads: Finalizing) -> None:
    data = png(1)
    upload = await uploads.upload(data, sha256=hashlib.sha256(data).digest())
    assert await uploads.held() == (0, len(data))

    image, created = await uploads.finalize(upload)

    assert created
    assert (image.title, image.original_filename, image.content_type) == (
        "Cat",
        "a.png",
        "image/png",
    )
    assert (image.size_bytes, image.sha256) == (len(data), hashlib.sha256(data).digest())
    assert image.original_key == keys.original_key(uploads.owner_id, image.id)
    assert sorted(job.kind for job in image.jobs) == ["tagging", "thumbnails"]
    assert (upload.state, upload.image_id, upload.sha256) == (
        UploadState.ACCEPTED,
        image.id,
        image.sha256,
    )
    assert (upload.reserved_bytes, upload.error) == (0, None)
    assert await uploads.held() == (len(data), 0)  # the reservation became the image's size
    # The original is in place before the commit (a worker must find it); nothing sent yet.
    assert uploads.originals() == [image.original_key]
    assert uploads.content_type(image.original_key) == "image/png"
    assert uploads.sync.exists(upload.object_key)
    assert uploads.producer.sent == []

    await uploads.uow.committed()
    assert [args for _, args, _ in uploads.producer.sent] == [(str(image.id),)] * 2
    assert not uploads.sync.exists(upload.object_key)
    assert uploads.originals() == [image.original_key]


async def test_a_rollback_removes_the_promoted_original_and_keeps_the_upload(
    uploads: Finalizing,
) -> None:
    upload = await uploads.upload(png(2))
    await uploads.finalize(upload)
    assert len(uploads.originals()) == 1
    await uploads.uow.rolled_back()
    assert uploads.originals() == []
    assert uploads.sync.exists(upload.object_key)  # the upload may be finalized again
    assert uploads.producer.sent == []


async def test_a_pdf_is_refused_from_its_head_without_a_download(uploads: Finalizing) -> None:
    upload = await uploads.upload(b"%PDF-1.7\n" + bytes(4096))
    await uploads.refused(upload, UnsupportedMediaType)
    assert upload.error is not None
    assert (upload.error["status"], upload.error["type"]) == (
        415,
        "https://media-service.dev/problems/unsupported-media-type",
    )
    assert uploads.store.downloads == 0


async def test_a_truncated_image_is_refused_after_its_decode(uploads: Finalizing) -> None:
    upload = await uploads.upload(noise_png(64)[:-100])
    await uploads.refused(upload, CorruptImage)
    assert upload.error is not None
    assert upload.error["status"] == 422
    assert uploads.store.downloads == 1


async def test_a_size_other_than_declared_is_refused(uploads: Finalizing) -> None:
    data = png(3)
    upload = await uploads.upload(data, length=len(data) + 1)
    await uploads.refused(upload, SizeMismatch)


async def test_a_sha256_other_than_declared_is_refused(uploads: Finalizing) -> None:
    upload = await uploads.upload(png(4), sha256=hashlib.sha256(b"other").digest())
    await uploads.refused(upload, Sha256Mismatch)


async def test_a_quota_refusal_after_the_copy_takes_back_the_image_and_the_copy(
    uploads: Finalizing,
) -> None:
    uploads.settings = uploads.settings.model_copy(update={"quota_bytes": 10})
    upload = await uploads.upload(png(5))
    await uploads.refused(upload, QuotaExceeded)


async def test_duplicate_bytes_are_accepted_as_the_existing_image(uploads: Finalizing) -> None:
    first, _ = await uploads.finalize(await uploads.upload(png(6)))
    await uploads.uow.committed()
    sent = len(uploads.producer.sent)
    upload = await uploads.upload(png(6))

    again, created = await uploads.finalize(upload)

    assert (again.id, created) == (first.id, False)
    assert (upload.state, upload.image_id, upload.reserved_bytes) == (
        UploadState.ACCEPTED,
        first.id,
        0,
    )
    assert await uploads.held() == (first.size_bytes, 0)
    await uploads.uow.committed()
    assert uploads.originals() == [first.original_key]
    assert not uploads.sync.exists(upload.object_key)
    assert len(uploads.producer.sent) == sent


async def test_a_busy_validator_records_nothing_and_keeps_the_upload(
    uploads: Finalizing,
) -> None:
    uploads.validator = BusyValidator(uploads.settings.probe_limits)
    upload = await uploads.upload(png(7))
    with pytest.raises(ServerBusy):
        await uploads.finalize(upload)
    assert (upload.state, upload.reserved_bytes) == (UploadState.RECEIVING, upload.length)
    assert (uploads.uow.on_commit, uploads.uow.on_rollback) == ([], [])
    assert uploads.sync.exists(upload.object_key)


async def test_a_cancelled_finalization_closes_its_file_and_records_nothing(
    uploads: Finalizing,
) -> None:
    uploads.validator = validator = StuckValidator(uploads.settings.probe_limits)
    upload = await uploads.upload(png(8))
    task = asyncio.create_task(uploads.finalize(upload))
    await validator.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert validator.spool is not None
    assert validator.spool.closed
    assert (upload.state, upload.reserved_bytes) == (UploadState.RECEIVING, upload.length)
    assert (uploads.uow.on_commit, uploads.uow.on_rollback) == ([], [])


async def test_bytes_swapped_after_validation_are_never_promoted(uploads: Finalizing) -> None:
    """A presigned PUT URL stays valid until it expires: a client that PUTs other bytes while
    the first ones are validated gets nothing stored."""
    upload = await uploads.upload(png(40))
    sync, store = uploads.sync, uploads.store
    copy = store.copy

    async def swap_then_copy(source: str, dest: str, content_type: str, **kw: str | None) -> None:
        sync.put_bytes(source, b"%PDF-1.7 swapped in", "application/octet-stream")
        await copy(source, dest, content_type, **kw)

    store.copy = swap_then_copy  # type: ignore[method-assign]
    await uploads.refused(upload, Sha256Mismatch)
