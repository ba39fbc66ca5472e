"""Committed upload rows and the S3 leftovers an upload can have (an open multipart upload
with one part, a quarantine object), for the sweep and gc tests, which run outside any test
transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from media_api.accounts import repository as owners
from media_api.accounts.models import Owner
from media_api.storage import keys
from media_api.storage.s3 import S3Store
from media_api.uploads import repository as uploads
from media_api.uploads.models import Upload, UploadKind, UploadState

DAY = dt.timedelta(days=1)
PART = b"p" * 1024


class Seeder:
    """Committed owners and uploads, with the S3 leftovers an upload can have."""

    def __init__(self, engine: AsyncEngine, store: S3Store) -> None:
        self.engine, self.store = engine, store

    def session(self) -> AsyncSession:
        return AsyncSession(self.engine, expire_on_commit=False)

    async def owner(self) -> uuid.UUID:
        async with self.session() as session:
            owner = await owners.add_owner(session, f"{uuid.uuid4()}@example.test")
            await session.commit()
            return owner.id

    async def upload(
        self, owner_id: uuid.UUID, kind: UploadKind, *, multipart: bool = False, put: bool = False
    ) -> Upload:
        """An upload holding 1000 bytes of quota, with an open multipart upload (one part
        sent) and/or its quarantine object."""
        async with self.session() as session:
            upload = await uploads.create(
                session, owner_id=owner_id, kind=kind, length=1000, quota=0, expires_in=DAY
            )
            assert upload is not None
            await session.commit()
        if multipart:
            s3_id = self.store.create_multipart(upload.object_key, "application/octet-stream")
            self.store.upload_part(upload.object_key, s3_id, 1, PART)
            await self.change(upload.id, s3_upload_id=s3_id)
            upload.s3_upload_id = s3_id
        if put:
            self.store.put_bytes(upload.object_key, b"bytes", "application/octet-stream")
        return upload

    async def change(self, upload_id: uuid.UUID, **values: Any) -> None:
        """UPDATE the upload's row with `values`, committed."""
        async with self.session() as session:
            await session.execute(update(Upload).where(Upload.id == upload_id).values(**values))
            await session.commit()

    async def lapse(self, upload_id: uuid.UUID) -> None:
        """Push the upload's expiry into the past."""
        await self.change(upload_id, expires_at=func.now() - dt.timedelta(minutes=1))

    async def age(self, upload_id: uuid.UUID, state: UploadState, ago: dt.timedelta) -> None:
        """End the upload (its reservation kept, as a lost release would) `ago` in the past."""
        await self.change(upload_id, state=state, updated_at=func.now() - ago)

    async def row(self, upload_id: uuid.UUID) -> Upload | None:
        async with self.session() as session:
            return await session.get(Upload, upload_id)

    async def reserved(self, owner_id: uuid.UUID) -> int:
        async with self.session() as session:
            value = await session.scalar(select(Owner.bytes_reserved).where(Owner.id == owner_id))
            assert value is not None
            return value

    def open_multipart(self, owner_id: uuid.UUID) -> set[str]:
        """Ids of the multipart uploads open under the owner's quarantine prefix."""
        opened = self.store.open_multipart_uploads(keys.quarantine_prefix(owner_id))
        return {up.upload_id for up in opened}

    def objects(self, owner_id: uuid.UUID) -> set[str]:
        """Keys under the owner's quarantine prefix."""
        return set(self.store.list_keys(keys.quarantine_prefix(owner_id)))
