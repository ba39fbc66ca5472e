"""The upload service's rules over a fake store and producer (the database stays real, rolled
back after each test): milliseconds each, beside the HTTP tests that cover the same paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import repository as owners
from media_api.accounts.service import create_owner_with_key
from media_api.errors import NotFound
from media_api.galleries import service as galleries
from media_api.images import repository, service
from media_api.images.errors import QuotaExceeded, StorageUnavailable
from media_api.images.models import Image
from media_api.imaging.probe import CorruptImage, ImageInfo, UnsupportedMediaType
from media_api.settings import Settings
from media_api.storage import keys
from media_api.unit_of_work import UnitOfWork
from tests.support.fakes import FakeProducer, FakeStore, InlineValidator
from tests.support.images import noise_png, png

BOUNDARY = "rules"


def _form(data: bytes, **fields: str) -> tuple[AsyncIterator[bytes], str]:
    """A multipart body with the file `data` and text `fields`, and its Content-Type."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return body(), f"multipart/form-data; boundary={BOUNDARY}"


class Uploads:
    """One owner uploading through the service, with fakes for the store and the producer."""

    def __init__(self, db: AsyncSession, settings: Settings, owner_id: uuid.UUID) -> None:
        self.db, self.settings, self.owner_id = db, settings, owner_id
        self.store = FakeStore()
        self.producer = FakeProducer()
        self.uow = UnitOfWork(self.producer)

    async def upload(self, data: bytes, **fields: str) -> tuple[Image, bool]:
        body, content_type = _form(data, **fields)
        return await service.upload(
            self.db,
            self.store,
            self.uow,
            InlineValidator(self.settings.probe_limits),
            self.settings,
            self.owner_id,
            body,
            content_type,
        )


@pytest.fixture
async def uploads(db: AsyncSession, app_settings: Settings) -> Uploads:
    owner_id, _ = await create_owner_with_key(db, f"{uuid.uuid4()}@example.com")
    return Uploads(db, app_settings, owner_id)


async def test_a_new_image_is_stored_once_and_its_jobs_sent_after_commit(
    uploads: Uploads,
) -> None:
    image, created = await uploads.upload(png(1), title=" Cat ")
    assert created
    assert (image.title, image.content_type, [t.name for t in image.tags]) == (
        "Cat",
        "image/png",
        [],
    )
    assert sorted(job.kind for job in image.jobs) == ["tagging", "thumbnails"]
    assert list(uploads.store.objects) == [image.original_key]
    assert uploads.store.open == set()
    assert uploads.producer.sent == []  # nothing leaves before the commit
    await uploads.uow.committed()
    assert len(uploads.producer.sent) == 2
    assert list(uploads.store.objects) == [image.original_key]


async def test_duplicate_bytes_return_the_existing_image_and_leave_nothing_stored(
    uploads: Uploads,
) -> None:
    first, _ = await uploads.upload(png(2))
    again, created = await uploads.upload(png(2))
    assert (again.id, created) == (first.id, False)
    assert list(uploads.store.objects) == [first.original_key]
    assert uploads.store.open == set()


async def test_a_quota_refusal_leaves_nothing_stored(uploads: Uploads) -> None:
    uploads.settings = uploads.settings.model_copy(update={"quota_bytes": 10})
    with pytest.raises(QuotaExceeded):
        await uploads.upload(png(3))
    assert (uploads.store.objects, uploads.store.open) == ({}, set())


async def test_a_refused_head_makes_no_store_call(uploads: Uploads) -> None:
    with pytest.raises(UnsupportedMediaType):
        await uploads.upload(b"%PDF-1.7\n" + bytes(4096))
    assert uploads.store.calls == []


async def test_the_gallery_target_404s_before_any_store_work(uploads: Uploads) -> None:
    with pytest.raises(NotFound, match="gallery not found"):
        await uploads.upload(png(4), gallery_id=str(uuid.uuid4()))
    # Begun (a buffer: the real one sends nothing before a part is full), never completed.
    assert "complete" not in [call for call, _ in uploads.store.calls]
    assert (uploads.store.objects, uploads.store.open) == ({}, set())


async def test_an_upload_goes_into_the_owners_gallery(uploads: Uploads) -> None:
    gallery = await galleries.create(uploads.db, uploads.owner_id, "trip", None)
    image, _ = await uploads.upload(png(5), gallery_id=str(gallery.id))
    again, _ = await uploads.upload(png(5), gallery_id=str(gallery.id))  # idempotent
    assert again.id == image.id


async def test_a_rollback_removes_the_stored_object(uploads: Uploads) -> None:
    image, _ = await uploads.upload(png(6))
    assert list(uploads.store.objects) == [image.original_key]
    await uploads.uow.rolled_back()
    assert uploads.store.objects == {}
    assert uploads.producer.sent == []


async def test_a_bad_image_outranks_a_storage_error(uploads: Uploads) -> None:
    uploads.store.fail_complete = True
    with pytest.raises(CorruptImage):
        await uploads.upload(noise_png(64)[:-100])  # truncated: the decode fails
    with pytest.raises(StorageUnavailable):
        await uploads.upload(png(8))
    assert (uploads.store.objects, uploads.store.open) == ({}, set())


# record_upload: what the tus and direct finalizations call with an object already in S3.

PNG_INFO = ImageInfo("PNG", "image/png", 32, 32, 1, 32, 32, 1)


def _stored(owner_id: uuid.UUID, sha256: bytes, size: int = 100) -> service.StoredFile:
    image_id = uuid.uuid4()
    key = keys.original_key(owner_id, image_id)
    return service.StoredFile(image_id, key, PNG_INFO, size, sha256, "a.png")


async def test_record_upload_writes_the_image_and_sends_its_jobs_after_commit_only(
    uploads: Uploads,
) -> None:
    file = _stored(uploads.owner_id, bytes(range(32)))
    image, created = await service.record_upload(
        uploads.db,
        uploads.uow,
        uploads.settings,
        uploads.owner_id,
        file,
        title="Cat",
        gallery_id=None,
    )
    assert created
    assert (image.id, image.original_key, image.size_bytes) == (file.image_id, file.key, 100)
    assert sorted(job.kind for job in image.jobs) == ["tagging", "thumbnails"]
    assert await owners.bytes_held(uploads.db, uploads.owner_id) == 100
    assert uploads.producer.sent == []
    await uploads.uow.committed()
    assert [args for _, args, _ in uploads.producer.sent] == [(str(image.id),)] * 2


async def test_record_upload_of_known_bytes_returns_the_existing_image_and_sends_nothing(
    uploads: Uploads,
) -> None:
    first, _ = await uploads.upload(png(10))
    gallery = await galleries.create(uploads.db, uploads.owner_id, "trip", None)
    used = await owners.bytes_held(uploads.db, uploads.owner_id)
    uow = UnitOfWork(producer := FakeProducer())
    file = _stored(uploads.owner_id, first.sha256, size=first.size_bytes)
    again, created = await service.record_upload(
        uploads.db,
        uow,
        uploads.settings,
        uploads.owner_id,
        file,
        title=None,
        gallery_id=gallery.id,
    )
    assert (again.id, created) == (first.id, False)
    assert await repository.in_gallery(uploads.db, gallery.id, first.id)
    assert await owners.bytes_held(uploads.db, uploads.owner_id) == used
    assert (uow.sends, uow.on_rollback) == ([], [])  # nothing to send, nothing to undo
    await uow.committed()
    assert producer.sent == []
