"""Receiving a tus upload across requests and API processes: the lease a request holds on
the upload, and one request body cut into S3 parts and the row's tail (docs/uploads-design.md,
"Life of a tus PATCH")."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from media_api.cleanup import run_to_the_end
from media_api.images.errors import FileTooLarge
from media_api.images.upload import accepted_mime_type
from media_api.imaging import probe as imaging
from media_api.settings import Settings
from media_api.storage.s3 import MIN_PART_BYTES, AsyncS3Store
from media_api.uploads import repository, tus
from media_api.uploads.errors import ChecksumMismatch
from media_api.uploads.lease import Hold, LeaseLost
from media_api.uploads.models import Upload, UploadState


async def chunks(
    body: AsyncIterable[bytes], let_go: asyncio.Event, idle_seconds: float
) -> AsyncIterator[bytes]:
    """The body's chunks until it ends, is silent for `idle_seconds`, or `let_go` is set:
    the last two end it as a disconnect would (what came is stored)."""
    iterator = aiter(body)
    while not let_go.is_set():
        next_chunk = asyncio.ensure_future(anext(iterator))
        stop = asyncio.ensure_future(let_go.wait())
        done, _ = await asyncio.wait(
            {next_chunk, stop}, timeout=idle_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        stop.cancel()
        if next_chunk not in done:
            next_chunk.cancel()
            await asyncio.gather(next_chunk, return_exceptions=True)
            return
        try:
            chunk = next_chunk.result()
        except StopAsyncIteration:
            return
        yield chunk


class Receiver:
    """Writes request bodies at the upload's offset: each full part goes to the upload's S3
    multipart upload as it fills, the rest (under 5 MiB) to the row's tail. Progress is
    committed after each part, or only at the end when the body carries a checksum."""

    def __init__(
        self,
        session: AsyncSession,
        store: AsyncS3Store,
        settings: Settings,
        upload: Upload,
        hold: Hold,
        checksum: tus.Checksum | None = None,
    ) -> None:
        self.session, self.store, self.settings = session, store, settings
        self.upload, self.hold, self.checksum = upload, hold, checksum
        self.buffer = bytearray(upload.tail or b"")
        self.in_parts = upload.received - len(self.buffer)
        self.parts: list[dict[str, Any]] = list(upload.parts)
        self.hasher = checksum.hasher() if checksum else None

    @property
    def offset(self) -> int:
        """Bytes received so far, committed or not."""
        return self.in_parts + len(self.buffer)

    async def write(self, chunk: bytes) -> None:
        """Take one chunk of the body; full parts leave at once."""
        if self.offset + len(chunk) > self.upload.length:
            raise FileTooLarge("the body goes past Upload-Length")
        self.buffer += chunk
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.upload.content_type is None and len(self.buffer) >= imaging.SNIFF_BYTES:
            await self._sniff()
        while len(self.buffer) >= self.store.sync.part_bytes:
            await self._send(self._cut(self.store.sync.part_bytes))
            if self.hasher is None:
                await self._commit()

    async def finish(self) -> Upload:
        """Store what is left: a part if it is big enough, or the tail. Raises 460 (nothing of
        this body kept) when the body does not match its checksum."""
        checksum, hasher = self.checksum, self.hasher
        if checksum is not None and hasher is not None and not checksum.matches(hasher):
            raise ChecksumMismatch("the body does not match Upload-Checksum; send it again")
        complete = self.offset == self.upload.length
        if self.upload.content_type is None and complete:
            await self._sniff()  # a file shorter than the sniff needs
        # The last piece of a multipart upload may be any size; any other at least 5 MiB.
        # A complete file that never filled a part stays in the tail, put whole by `seal`.
        last_part = complete and self.buffer and self.upload.s3_upload_id is not None
        if last_part or (not complete and len(self.buffer) >= MIN_PART_BYTES):
            await self._send(self._cut(len(self.buffer)))
        await self._commit()
        return self.upload

    def _cut(self, size: int) -> bytes:
        with memoryview(self.buffer) as view:  # one copy, released before the resize
            part = bytes(view[:size])
        del self.buffer[:size]
        return part

    async def _sniff(self) -> None:
        head = bytes(self.buffer[: imaging.SNIFF_BYTES])
        content_type = accepted_mime_type(head, self.settings.allowed_formats)
        await self._fenced(
            await repository.set_content_type(
                self.session, self.upload.id, self.hold.lease_id, content_type
            )
        )
        _stored(self.upload, content_type=content_type)

    async def _send(self, part: bytes) -> None:
        upload, lease_id = self.upload, self.hold.lease_id
        key, content_type = upload.object_key, upload.content_type or "application/octet-stream"
        if upload.s3_upload_id is None:
            s3_upload_id = await self.store.create_multipart(key, content_type)
            recorded = await repository.set_multipart(
                self.session, upload.id, lease_id, s3_upload_id
            )
            if not recorded:
                await run_to_the_end(self.store.abort_multipart(key, s3_upload_id))
            await self._fenced(recorded)
            _stored(upload, s3_upload_id=s3_upload_id)
        number = await repository.take_part_number(self.session, upload.id, lease_id)
        await self._fenced(number is not None)
        assert number is not None
        assert upload.s3_upload_id is not None
        etag = await self.store.upload_part(key, upload.s3_upload_id, number, part)
        self.parts.append({"n": number, "size": len(part), "etag": etag})
        self.in_parts += len(part)

    async def _commit(self) -> None:
        upload = self.upload
        tail = bytes(self.buffer) if self.buffer else None
        if self.offset == upload.received and self.parts == upload.parts and tail == upload.tail:
            return
        expires_at = await repository.record_progress(
            self.session,
            upload.id,
            self.hold.lease_id,
            expected=upload.received,
            received=self.offset,
            parts=self.parts,
            tail=tail,
            expires_in=dt.timedelta(seconds=self.settings.upload_expiry_seconds),
        )
        await self._fenced(expires_at is not None)
        _stored(
            upload,
            received=self.offset,
            parts=list(self.parts),
            tail=tail,
            expires_at=expires_at,
        )

    async def _fenced(self, written: bool) -> None:
        """Commit a write made under the lease; LeaseLost (nothing more stored) if it was not."""
        if not written:
            await self.session.rollback()
            self.hold.lost = True
            raise LeaseLost("another request took this upload over; HEAD, then continue")
        await self.session.commit()


async def seal(session: AsyncSession, store: AsyncS3Store, upload: Upload, hold: Hold) -> None:
    """Every byte is committed: assemble the object (complete the multipart upload, or put
    the tail) and mark the upload `validating`. Safe to repeat after a crash midway."""
    if upload.state != UploadState.RECEIVING:
        return
    key = upload.object_key
    if upload.s3_upload_id is None:
        put = store.sync.put_bytes
        await asyncio.to_thread(put, key, upload.tail or b"", upload.content_type or "")
    else:
        parts = [(part["n"], part["etag"]) for part in upload.parts]
        try:
            await store.complete_multipart(key, upload.s3_upload_id, parts)
        except ClientError as err:
            # Completed already by a request that died before recording it: the object is there.
            if err.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
    if await repository.start_validating(session, upload.id, hold.lease_id) is None:
        await session.rollback()
        hold.lost = True
        raise LeaseLost("another request took this upload over; HEAD, then continue")
    await session.commit()


def _stored(upload: Upload, **values: Any) -> None:
    """Mirror what a statement just wrote on the row object, as loaded (not as a change
    the session would flush: every write here is fenced by the lease)."""
    for name, value in values.items():
        set_committed_value(upload, name, value)
